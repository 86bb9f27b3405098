package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/local/stack"
	"github.com/spoolhq/spool/platform/testkit"
)

// envInt returns the integer in environment variable name, or def.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, "%s=%q", name, v)
	require.Positive(t, n, "%s", name)
	return n
}

// requireFlags fails the test at once, with a clear message, when command
// cmd ("dispatcher", "spool send") lacks one of flags: the binaries under
// test come from SPOOL_BIN_DIR, and a missing flag means they are older than
// the tests. Without this, the test would fail later with a process that does
// not start.
func requireFlags(t *testing.T, cmd string, flags ...string) {
	t.Helper()
	args := strings.Fields(cmd)
	out, _ := exec.Command(filepath.Join(binDir, args[0]), append(args[1:], "-h")...).CombinedOutput()
	for _, f := range flags {
		if !regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(f) + `\b`).Match(out) {
			t.Fatalf("%s has no -%s flag: the binaries in %s are older than the tests: run make build", cmd, f, binDir)
		}
	}
}

// isFinal reports whether a job state is final.
func isFinal(st spoolv1.JobState) bool {
	switch st {
	case spoolv1.JobState_JOB_STATE_COMPLETED, spoolv1.JobState_JOB_STATE_ABORTED,
		spoolv1.JobState_JOB_STATE_REJECTED, spoolv1.JobState_JOB_STATE_CANCELLED:
		return true
	}
	return false
}

// waitJob polls GetJob on the ingestor until cond holds and returns that
// job. Errors are tolerated (the ingestor may be restarting) until timeout.
func waitJob(t *testing.T, s *stack.Stack, req *spoolv1.GetJobRequest, timeout time.Duration, what string, cond func(*spoolv1.Job) bool) *spoolv1.Job {
	t.Helper()
	client := spoolv1.NewIngestServiceClient(dial(t, s.Ingestor.Addr))
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last *spoolv1.Job
	var lastErr error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := client.GetJob(ctx, req)
		cancel()
		if err == nil {
			last = resp.GetJob()
			if cond(last) {
				return last
			}
		}
		lastErr = err
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (last job: %v, last error: %v)", what, timeout, last, lastErr)
		}
		<-tick.C
	}
}

// streamFile sends path to the ingestor in chunk mode with header, the way
// the CLI does, and returns the answer.
func streamFile(t *testing.T, addr, path string, header *spoolv1.FileHeader) *spoolv1.StreamFileResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stream, err := spoolv1.NewIngestServiceClient(dial(t, addr)).StreamFile(ctx)
	require.NoError(t, err)
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	// Send answers io.EOF when the server ended the stream; its reason
	// comes from CloseAndRecv.
	err = stream.Send(&spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Header{Header: header}})
	buf := make([]byte, 64<<10)
	for err == nil {
		n, rerr := f.Read(buf)
		if n > 0 {
			chunk := append([]byte(nil), buf[:n]...)
			err = stream.Send(&spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Chunk{Chunk: chunk}})
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		require.NoError(t, rerr)
	}
	if !errors.Is(err, io.EOF) {
		require.NoError(t, err)
	}
	resp, err := stream.CloseAndRecv()
	require.NoError(t, err)
	return resp
}

// jobReport is what ReportJob returned.
type jobReport struct {
	entries []*spoolv1.LedgerEntry
	summary *spoolv1.ReportSummary
}

// byRow returns the entries by row number, failing on a row listed twice.
func (r jobReport) byRow(t *testing.T) map[int64]*spoolv1.LedgerEntry {
	t.Helper()
	m := make(map[int64]*spoolv1.LedgerEntry, len(r.entries))
	for _, e := range r.entries {
		require.NotContains(t, m, e.GetRow(), "row %d listed twice in the report", e.GetRow())
		m[e.GetRow()] = e
	}
	return m
}

// reportJob reads the whole ReportJob stream of jobID from addr.
func reportJob(t *testing.T, addr, jobID string) jobReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := spoolv1.NewDispatchServiceClient(dial(t, addr)).ReportJob(ctx, &spoolv1.ReportJobRequest{JobId: jobID})
	require.NoError(t, err)
	var r jobReport
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		switch m := msg.GetMsg().(type) {
		case *spoolv1.ReportJobResponse_Entry:
			require.Nil(t, r.summary, "entry after the summary")
			r.entries = append(r.entries, m.Entry)
		case *spoolv1.ReportJobResponse_Summary:
			r.summary = m.Summary
		}
	}
	require.NotNil(t, r.summary, "report ended without a summary")
	return r
}

// sinkTx is the sink's record of one transaction.
type sinkTx struct {
	Job          string `json:"job"`
	Row          int64  `json:"row"`
	Applied      int64  `json:"applied"`
	Deduplicated int64  `json:"deduplicated"`
	Key          string `json:"key"`
	Traceparent  string `json:"traceparent"`
	// Reference is the sink's id for the transaction, as its answer said.
	Reference string `json:"reference"`
}

// sinkLedger returns the sink's record of every transaction of jobID, by row.
func sinkLedger(t *testing.T, s *stack.Stack, jobID string) map[int64]sinkTx {
	t.Helper()
	resp, err := http.Get(s.Sink.Addr + "/transactions?job=" + jobID)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	got := map[int64]sinkTx{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var tx sinkTx
		require.NoError(t, json.Unmarshal(sc.Bytes(), &tx))
		got[tx.Row] = tx
	}
	require.NoError(t, sc.Err())
	return got
}

// sinkTotals is the sink's /stats answer, with every counter.
type sinkTotals struct {
	Requests     int64 `json:"requests"`
	Distinct     int64 `json:"distinct"`
	Duplicates   int64 `json:"duplicates"`
	Failed       int64 `json:"failed"`
	Rejected     int64 `json:"rejected"`
	Deduplicated int64 `json:"deduplicated"`
	Hung         int64 `json:"hung"`
	Resets       int64 `json:"resets"`
	Refused      int64 `json:"refused"`
	RefusedRows  int64 `json:"refused_rows"`
	Throttled    int64 `json:"throttled"`
	Down         int64 `json:"down"`
}

// seen is every request that reached the sink, whatever became of it.
func (s sinkTotals) seen() int64 { return s.Requests + s.Failed + s.Rejected + s.Deduplicated }

// getSinkTotals reads the sink's counters, of jobID or of everything when
// jobID is empty.
func getSinkTotals(t *testing.T, s *stack.Stack, jobID string) sinkTotals {
	t.Helper()
	url := s.Sink.Addr + "/stats"
	if jobID != "" {
		url += "?job=" + jobID
	}
	var st sinkTotals
	getJSON(t, url, &st)
	return st
}

// killer SIGKILLs a random dispatcher about every interval (uniform jitter
// of ±50 %, from a seeded source) and restarts it, until stopped.
type killer struct {
	kills atomic.Int64
	stop  chan struct{}
	done  chan struct{}
	err   error
	once  sync.Once
}

func startKiller(t *testing.T, s *stack.Stack, seed uint64, interval time.Duration) *killer {
	t.Helper()
	k := &killer{stop: make(chan struct{}), done: make(chan struct{})}
	rng := rand.New(rand.NewPCG(seed, seed^0xc4a05))
	go func() {
		defer close(k.done)
		for {
			wait := interval/2 + time.Duration(rng.Int64N(int64(interval)+1))
			select {
			case <-k.stop:
				return
			case <-time.After(wait):
			}
			p := s.Dispatchers[rng.IntN(len(s.Dispatchers))]
			if err := p.Kill(); err != nil {
				k.err = err
				return
			}
			k.kills.Add(1)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			err := p.Restart(ctx, s.Ready(p))
			cancel()
			if err != nil {
				k.err = err
				return
			}
		}
	}()
	// Registered after the stack's cleanup, so it runs first: the stack is
	// never stopped while a dispatcher is being restarted. The test reads the
	// count and error from its own Stop; this one only ends the kills when the
	// test ended early, so its result is not needed.
	t.Cleanup(func() { _, _ = k.Stop() })
	return k
}

// Stop ends the kills, waits until every dispatcher is back up, and
// returns the number of kills and the first error.
func (k *killer) Stop() (int64, error) {
	k.once.Do(func() { close(k.stop) })
	<-k.done
	return k.kills.Load(), k.err
}

// startCLI starts bin/spool with the stack's environment and returns it
// running; the process is killed at cleanup if it is still there.
func startCLI(t *testing.T, s *stack.Stack, args ...string) (*exec.Cmd, *testkit.Buffer, <-chan error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "spool"), args...)
	cmd.Env = envOf(s)
	cmd.Dir = t.TempDir()
	out := &testkit.Buffer{} // the process's output, read while it runs
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		done <- cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		// Killing a process that already ended is a harmless error.
		_ = cmd.Process.Kill()
		<-exited
	})
	return cmd, out, done
}
