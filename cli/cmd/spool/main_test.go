package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spoolhq/spool/cli/internal/report"
	"github.com/spoolhq/spool/cli/internal/spooltest"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

const (
	ingestorAddr = "127.0.0.1:1"
	dispA        = "127.0.0.1:2"
	dispB        = "127.0.0.1:3"
)

// harness is an app wired to an in-memory network, a map environment and
// buffers.
type harness struct {
	app            *app
	net            *spooltest.Network
	env            map[string]string
	stdout, stderr *bytes.Buffer
}

func newHarness(tb testing.TB) *harness {
	tb.Helper()
	h := &harness{net: spooltest.NewNetwork(), env: map[string]string{}, stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	var mu sync.Mutex
	clock := time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)
	h.app = newApp(strings.NewReader(""), h.stdout, h.stderr)
	h.app.lookup = func(k string) (string, bool) { v, ok := h.env[k]; return v, ok }
	h.app.setenv = func(k, v string) error { h.env[k] = v; return nil }
	h.app.dialOpts = h.net.DialOptions()
	h.app.tty = false
	h.app.watchBackoff = 0
	h.app.now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		clock = clock.Add(time.Second)
		return clock
	}
	return h
}

func (h *harness) ingest(tb testing.TB, f *spooltest.Ingest) {
	tb.Helper()
	h.net.Serve(tb, ingestorAddr, func(s grpc.ServiceRegistrar) { spoolv1.RegisterIngestServiceServer(s, f) })
}

func (h *harness) dispatch(tb testing.TB, addr string, f *spooltest.Dispatch) {
	tb.Helper()
	h.net.Serve(tb, addr, func(s grpc.ServiceRegistrar) { spoolv1.RegisterDispatchServiceServer(s, f) })
}

func (h *harness) run(args ...string) error {
	return h.app.run(context.Background(), args)
}

var created = time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)

func job(state spoolv1.JobState, delivered, failed, total int64) *spoolv1.Job {
	j := &spoolv1.Job{
		JobId: "job-1", JobKey: "payroll-2026-11", FileName: "payroll.csv", State: state,
		Columns: []string{"id", "name", "amount"}, RowsReceived: total, RowsPublished: total,
		Total: total, Delivered: delivered, Failed: failed, Retries: 3,
		CreatedAt: timestamppb.New(created),
	}
	if state != spoolv1.JobState_JOB_STATE_SEALED && state != spoolv1.JobState_JOB_STATE_RECEIVING {
		j.CompletedAt = timestamppb.New(created.Add(10 * time.Second))
	}
	return j
}

func jobProgress(j *spoolv1.Job, final bool) *spoolv1.JobProgress {
	return &spoolv1.JobProgress{Job: j, RatePerSecond: 250, Eta: durationpb.New(4 * time.Second), Final: final}
}

var answer = &spoolv1.StreamFileResponse{
	JobId: "job-1", RowsReceived: 1001, RowsPublished: 1000, RowsRejected: 1,
	Errors: []*spoolv1.RowError{{Row: 17, Column: "amount", Reason: "not a number"}},
	Job:    job(spoolv1.JobState_JOB_STATE_SEALED, 0, 0, 1000),
}

func writeFile(tb testing.TB, name, content string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), name)
	require.NoError(tb, os.WriteFile(path, []byte(content), 0o600))
	return path
}

func TestSend(t *testing.T) {
	file := "1,Jane Doe,12.50\n2,\"Smith; John\",3\n"
	tests := []struct {
		name       string
		args       []string
		watch      []*spoolv1.JobProgress
		wantErr    string
		wantCode   int
		wantStdout []string
		wantStderr []string
	}{
		{
			name:  "completed without failures exits 0",
			args:  []string{"-job-key", "payroll-2026-11", "-columns", "id, name,amount", "-delimiter", ";", "-chunk-size", "8"},
			watch: []*spoolv1.JobProgress{jobProgress(job(spoolv1.JobState_JOB_STATE_SEALED, 400, 0, 1000), false), jobProgress(job(spoolv1.JobState_JOB_STATE_COMPLETED, 1000, 0, 1000), true)},
			wantStdout: []string{
				"job job-1 (payroll.csv): SEALED\nrows: 1001 received, 1000 published, 1 rejected\n  row 17 (amount): not a number\n",
				"job job-1 COMPLETED: delivered 1000 of 1000, failed 0, retries 3\nwall time 10s, average 100 rows/s\n",
			},
			wantStderr: []string{"job job-1: SEALED, 400 of 1000 rows settled (40.0%), 250 rows/s, ETA 4s\n", "job job-1: COMPLETED, 1000 of 1000 rows settled (100.0%)"},
		},
		{
			name:       "completed with failed rows exits 1",
			args:       []string{"-chunk-size", "8"},
			watch:      []*spoolv1.JobProgress{jobProgress(job(spoolv1.JobState_JOB_STATE_COMPLETED, 990, 10, 1000), true)},
			wantErr:    "job job-1 completed with 10 failed rows (of 1000)",
			wantCode:   1,
			wantStdout: []string{"job job-1 COMPLETED: delivered 990 of 1000, failed 10, retries 3\n"},
		},
		{
			name: "unknown rows exit 1 and point at the report",
			args: []string{"-chunk-size", "8"},
			watch: []*spoolv1.JobProgress{jobProgress(func() *spoolv1.Job {
				j := job(spoolv1.JobState_JOB_STATE_COMPLETED, 997, 0, 1000)
				j.Unknown = 3
				return j
			}(), true)},
			wantErr:  "3 rows UNKNOWN: run spool report job-1",
			wantCode: 1,
		},
		{
			name: "rejected rows exit 1",
			args: []string{"-chunk-size", "8"},
			watch: []*spoolv1.JobProgress{jobProgress(func() *spoolv1.Job {
				j := job(spoolv1.JobState_JOB_STATE_COMPLETED, 1000, 0, 1000)
				j.RowsRejected = 2
				return j
			}(), true)},
			wantErr:  "job job-1 completed, but 2 rows of the file were rejected and not sent",
			wantCode: 1,
		},
		{
			name: "cancelled job exits 1 with its reason",
			args: []string{"-chunk-size", "8"},
			watch: []*spoolv1.JobProgress{jobProgress(func() *spoolv1.Job {
				j := job(spoolv1.JobState_JOB_STATE_CANCELLED, 10, 0, 1000)
				j.StateReason = "cancelled by operator"
				return j
			}(), true)},
			wantErr:    "job job-1 ended CANCELLED: cancelled by operator",
			wantCode:   1,
			wantStdout: []string{"reason: cancelled by operator\n"},
		},
		{
			name:       "no watch",
			args:       []string{"-no-watch", "-chunk-size", "8"},
			wantStdout: []string{"follow it with: spool watch job-1\n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			ingest := &spooltest.Ingest{Answer: answer}
			h.ingest(t, ingest)
			disp := &spooltest.Dispatch{Progress: tt.watch}
			h.dispatch(t, dispA, disp)
			h.env["SPOOL_INGESTOR_ADDR"] = ingestorAddr
			h.env["SPOOL_DISPATCHER_ADDRS"] = dispA

			path := writeFile(t, "payroll.csv", file)
			err := h.run(append([]string{"send"}, append(tt.args, path)...)...)
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, tt.wantCode, exitCode(err, &bytes.Buffer{}))
			for _, s := range tt.wantStdout {
				require.Contains(t, h.stdout.String(), s)
			}
			for _, s := range tt.wantStderr {
				require.Contains(t, h.stderr.String(), s)
			}

			header, chunks := ingest.Received()
			require.Equal(t, "payroll.csv", header.GetFileName())
			require.Equal(t, file, string(bytes.Join(chunks, nil)))
			for _, c := range chunks {
				require.LessOrEqual(t, len(c), 8)
			}
			if tt.watch != nil {
				require.Equal(t, []string{"job-1"}, disp.Calls())
			} else {
				require.Empty(t, disp.Calls())
			}
		})
	}
}

func TestSendHeaderFields(t *testing.T) {
	h := newHarness(t)
	ingest := &spooltest.Ingest{Answer: answer}
	h.ingest(t, ingest)
	path := writeFile(t, "nov.csv", "a;b\n")
	// Flags after the file work too.
	require.NoError(t, h.run("send", "-ingestor-addr", ingestorAddr, path, "-no-watch", "-job-key", "k-1", "-columns", " id , name ,, amount", "-delimiter", ";"))
	header, _ := ingest.Received()
	sum := sha256.Sum256([]byte("a;b\n"))
	want := &spoolv1.FileHeader{
		FileName: "nov.csv", JobKey: "k-1", Columns: []string{"id", "name", "amount"}, Csv: &spoolv1.CsvOptions{Delimiter: ";"},
		Control: &spoolv1.ControlTotals{Sha256: hex.EncodeToString(sum[:])},
	}
	require.Empty(t, cmp.Diff(want, header, protocmp.Transform()))
}

func TestSendFromStdin(t *testing.T) {
	for _, args := range [][]string{{"send", "-no-watch"}, {"send", "-no-watch", "-"}} {
		h := newHarness(t)
		ingest := &spooltest.Ingest{Answer: answer}
		h.ingest(t, ingest)
		h.env["SPOOL_INGESTOR_ADDR"] = ingestorAddr
		h.app.stdin = strings.NewReader("id,amount\n1,2\n")
		require.NoError(t, h.run(args...))
		header, chunks := ingest.Received()
		require.Equal(t, "stdin", header.GetFileName())
		require.Equal(t, "id,amount\n1,2\n", string(bytes.Join(chunks, nil)))
		require.Len(t, chunks, 1, "default chunk size holds the whole input")
	}
}

func TestSendErrors(t *testing.T) {
	tests := []struct {
		name     string
		ingest   *spooltest.Ingest
		args     []string
		wantErr  []string
		wantCode int
	}{
		{
			name:     "ingestor unreachable",
			args:     []string{"-ingestor-addr", "127.0.0.1:99"},
			wantErr:  []string{"send payroll.csv to the ingestor at 127.0.0.1:99: ", "Unavailable: ", "SPOOL_INGESTOR_ADDR"},
			wantCode: 1,
		},
		{
			name:     "ingestor rejects the header",
			ingest:   &spooltest.Ingest{Err: status.Error(codes.InvalidArgument, "column amount listed twice")},
			wantErr:  []string{"InvalidArgument: column amount listed twice"},
			wantCode: 1,
		},
		{
			name:     "rejected job",
			ingest:   &spooltest.Ingest{Answer: &spoolv1.StreamFileResponse{JobId: "job-1", Job: &spoolv1.Job{JobId: "job-1", State: spoolv1.JobState_JOB_STATE_REJECTED, StateReason: "control total mismatch"}}},
			wantErr:  []string{"job job-1 ended REJECTED: control total mismatch"},
			wantCode: 1,
		},
		{name: "two files", args: []string{"other.csv"}, wantErr: []string{"one file at a time"}, wantCode: 2},
		{name: "long delimiter", args: []string{"-delimiter", "ab"}, wantErr: []string{"-delimiter"}, wantCode: 2},
		{name: "chunk size too big", args: []string{"-chunk-size", "99999999"}, wantErr: []string{"-chunk-size"}, wantCode: 2},
		{name: "unknown flag", args: []string{"-bogus"}, wantErr: []string{"flag provided but not defined"}, wantCode: 2},
		{name: "missing file", args: []string{"-no-watch"}, wantErr: []string{"no such file"}, wantCode: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if tt.ingest != nil {
				h.ingest(t, tt.ingest)
			}
			h.env["SPOOL_INGESTOR_ADDR"] = ingestorAddr
			path := writeFile(t, "payroll.csv", "a,b\n1,2\n")
			if tt.name == "missing file" {
				path += ".gone"
			}
			err := h.run(append(append([]string{"send"}, tt.args...), path)...)
			require.Error(t, err)
			for _, s := range tt.wantErr {
				require.Contains(t, err.Error(), s)
			}
			require.NotContains(t, err.Error(), "rpc error")
			require.Equal(t, tt.wantCode, exitCode(err, &bytes.Buffer{}))
		})
	}
}

func TestWatchFailsOverToTheNextDispatcher(t *testing.T) {
	tests := []struct {
		name  string
		first *spooltest.Dispatch // nil: unreachable
	}{
		{name: "first unreachable"},
		{name: "first shutting down", first: &spooltest.Dispatch{
			Progress: []*spoolv1.JobProgress{jobProgress(job(spoolv1.JobState_JOB_STATE_SEALED, 100, 0, 1000), false)},
			End:      status.Error(codes.Unavailable, "dispatcher shutting down; watch again"),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if tt.first != nil {
				h.dispatch(t, dispA, tt.first)
			}
			second := &spooltest.Dispatch{Progress: []*spoolv1.JobProgress{jobProgress(job(spoolv1.JobState_JOB_STATE_COMPLETED, 1000, 0, 1000), true)}}
			h.dispatch(t, dispB, second)

			require.NoError(t, h.run("watch", "-dispatcher-addrs", dispA+", "+dispB, "job-1"))
			require.Equal(t, []string{"job-1"}, second.Calls())
			require.Contains(t, h.stderr.String(), "dispatcher "+dispA+": Unavailable: ")
			require.Contains(t, h.stderr.String(), "; watching on "+dispB+"\n")
			require.Contains(t, h.stdout.String(), "job job-1 COMPLETED: delivered 1000 of 1000, failed 0, retries 3\n")
		})
	}
}

func TestWatchWithNoDispatcherAnswering(t *testing.T) {
	h := newHarness(t)
	err := h.run("watch", "-dispatcher-addrs", dispA, "job-1")
	require.ErrorContains(t, err, "no dispatcher answered")
	require.ErrorContains(t, err, "SPOOL_DISPATCHER_ADDRS")
	require.Equal(t, 1, exitCode(err, &bytes.Buffer{}))
	require.Empty(t, h.stdout.String())
}

func TestWatchInterruptedSaysTheJobGoesOn(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := h.app.run(ctx, []string{"watch", "-dispatcher-addrs", dispA, "job-1"})
	require.EqualError(t, err, "stopped watching; job job-1 goes on (spool watch job-1)")
}

func TestStatus(t *testing.T) {
	j := job(spoolv1.JobState_JOB_STATE_COMPLETED, 1000, 0, 1000)
	j.SealedAt = timestamppb.New(created.Add(2 * time.Second))
	h := newHarness(t)
	h.ingest(t, &spooltest.Ingest{Jobs: map[string]*spoolv1.Job{"job-1": j}})
	h.env["SPOOL_INGESTOR_ADDR"] = ingestorAddr

	require.NoError(t, h.run("status", "job-1"))
	want := `job             job-1
key             payroll-2026-11
file            payroll.csv
state           COMPLETED
columns         id, name, amount
received        1000
published       1000
rejected        0
total           1000
delivered       1000
failed          0
retries         3
unknown         0
dead-lettered   0
duplicate rows  0
suppressed      0
dropped         0
created         2026-11-24T08:00:00Z
sealed          2026-11-24T08:00:02Z
completed       2026-11-24T08:00:10Z
`
	require.Equal(t, want, h.stdout.String())

	h.stdout.Reset()
	require.NoError(t, h.run("status", "-json", "job-1"))
	var got spoolv1.Job
	require.NoError(t, protojson.Unmarshal(h.stdout.Bytes(), &got))
	require.Empty(t, cmp.Diff(j, &got, protocmp.Transform()))

	err := h.run("status", "job-2")
	require.EqualError(t, err, "get job job-2 from "+ingestorAddr+": NotFound: job job-2 not found")

	err = h.run("status")
	require.Equal(t, 2, exitCode(err, &bytes.Buffer{}))
}

func TestStackEnvFillsUnsetVariablesOnly(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, ".spool"), 0o755))
	stackEnv := "SPOOL_INGESTOR_ADDR=" + ingestorAddr + "\nSPOOL_DISPATCHER_ADDRS=127.0.0.1:77\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, ".spool", "stack.env"), []byte(stackEnv), 0o600))
	t.Chdir(dir)

	h := newHarness(t)
	h.ingest(t, &spooltest.Ingest{Jobs: map[string]*spoolv1.Job{"job-1": job(spoolv1.JobState_JOB_STATE_SEALED, 0, 0, 10)}})
	disp := &spooltest.Dispatch{Progress: []*spoolv1.JobProgress{jobProgress(job(spoolv1.JobState_JOB_STATE_COMPLETED, 10, 0, 10), true)}}
	h.dispatch(t, dispA, disp)
	// Set in the environment: the file must not override it.
	h.env["SPOOL_DISPATCHER_ADDRS"] = dispA

	require.NoError(t, h.run("status", "job-1"), "the ingestor address comes from stack.env")
	require.Equal(t, ingestorAddr, h.env["SPOOL_INGESTOR_ADDR"])
	require.NoError(t, h.run("watch", "job-1"), "the dispatcher address comes from the environment")
	require.Equal(t, dispA, h.env["SPOOL_DISPATCHER_ADDRS"])
	require.Equal(t, []string{"job-1"}, disp.Calls())
}

func TestHelp(t *testing.T) {
	tests := []struct {
		args     []string
		stdout   []string
		stderr   []string
		wantCode int
	}{
		{args: []string{"help"}, stdout: []string{"commands:", "usage: spool send [flags] FILE.csv", "$SPOOL_INGESTOR_ADDR", "$SPOOL_DISPATCHER_ADDRS", "$SPOOL_CHUNK_SIZE", "$SPOOL_QUEUE", "$SPOOL_TABLE", ".spool/stack.env"}},
		{args: []string{"help", "watch"}, stdout: []string{"usage: spool watch [flags] JOB_ID", "$SPOOL_DISPATCHER_ADDRS"}},
		{args: []string{"-h"}, stdout: []string{"commands:"}},
		{args: []string{"send", "-h"}, stderr: []string{"usage: spool send", "-no-watch", "$SPOOL_NO_WATCH"}},
		{args: []string{}, stderr: []string{"commands:"}, wantCode: 2},
		{args: []string{"frobnicate"}, wantCode: 2},
		{args: []string{"help", "frobnicate"}, wantCode: 2},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			h := newHarness(t)
			err := h.run(tt.args...)
			require.Equal(t, tt.wantCode, exitCode(err, &bytes.Buffer{}), "err: %v", err)
			for _, s := range tt.stdout {
				require.Contains(t, h.stdout.String(), s)
			}
			for _, s := range tt.stderr {
				require.Contains(t, h.stderr.String(), s)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		want   int
		stderr string
	}{
		{name: "success", err: nil, want: 0},
		{name: "help", err: flag.ErrHelp, want: 0},
		{name: "usage", err: usagef("watch: want one JOB_ID"), want: 2, stderr: "spool: watch: want one JOB_ID\nrun 'spool help' for usage\n"},
		{name: "job outcome", err: report.Outcome(&spoolv1.Job{JobId: "j", State: spoolv1.JobState_JOB_STATE_ABORTED}), want: 1, stderr: "spool: job j ended ABORTED\n"},
		{name: "other", err: errors.New("boom"), want: 1, stderr: "spool: boom\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			require.Equal(t, tt.want, exitCode(tt.err, &stderr))
			require.Equal(t, tt.stderr, stderr.String())
		})
	}
}
