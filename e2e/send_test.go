package e2e

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/local/sample"
	"github.com/spoolhq/spool/local/stack"
	"github.com/spoolhq/spool/platform/decimal"
)

// TestSendExactlyOnce sends a payroll file with the CLI through two
// dispatchers and checks that every row reached the destination once,
// and that every view of the job agrees.
func TestSendExactlyOnce(t *testing.T) {
	const rows = 3000
	s := startStack(t, 2, nil)
	file := writeSample(t, rows)

	out, err := runCLI(t, s, "send", file)
	require.NoError(t, err, "spool send:\n%s", out)
	require.Contains(t, out, "delivered 3000 of 3000")
	jobID := jobIDFrom(t, out)

	st := getSinkTotals(t, s, jobID)
	require.Equal(t, sinkTotals{Requests: rows, Distinct: rows, Duplicates: 0}, st)
	requireEachRowOnce(t, s, jobID, rows)

	// Any dispatcher answers for the whole job.
	for _, d := range s.Dispatchers {
		p := watchToEnd(t, d.Addr, jobID, 30*time.Second)
		require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, p.GetJob().GetState())
		require.EqualValues(t, rows, p.GetJob().GetTotal())
		require.EqualValues(t, rows, p.GetJob().GetDelivered())
		require.Zero(t, p.GetInFlight())
	}

	out, err = runCLI(t, s, "status", jobID)
	require.NoError(t, err, out)
	require.Contains(t, out, "COMPLETED")

	// Stopped, so that the logs hold the shutdown too.
	require.NoError(t, s.Down())
	requireJSONLogs(t, append([]*stack.Proc{s.Ingestor}, s.Dispatchers...)...)
}

// requireJSONLogs checks that every line the processes wrote to stdout and
// stderr is a JSON log record, the AWS SDK's own lines included, and that
// none is an SDK warning: on loopback, with the emulators' answers whole,
// the SDK has nothing to warn about.
func requireJSONLogs(t *testing.T, procs ...*stack.Proc) {
	t.Helper()
	for _, p := range procs {
		b, err := os.ReadFile(p.LogPath)
		require.NoError(t, err)
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		require.NotEmpty(t, lines[0], "%s logged nothing", p.Name)
		for i, l := range lines {
			var rec struct{ Level, Msg string }
			require.NoError(t, json.Unmarshal([]byte(l), &rec), "%s line %d is not JSON: %q", p.Name, i+1, l)
			require.NotEmpty(t, rec.Msg, "%s line %d has no msg: %q", p.Name, i+1, l)
			require.False(t, rec.Msg == "aws sdk" && rec.Level == "WARN", "%s line %d: %s", p.Name, i+1, l)
		}
		t.Logf("%s: %d JSON lines", p.Name, len(lines))
	}
}

// TestLargeFileThreeDispatchers is the large acceptance run: 50 000 rows
// through 3 dispatchers (SPOOL_E2E_ROWS overrides the size; -short runs
// 5 000).
func TestLargeFileThreeDispatchers(t *testing.T) {
	rows := 50_000
	if testing.Short() {
		rows = 5_000
	}
	if v := os.Getenv("SPOOL_E2E_ROWS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err)
		rows = n
	}
	s := startStack(t, 3, nil)
	file := writeSample(t, rows)

	start := time.Now()
	out, err := runCLI(t, s, "send", file)
	require.NoError(t, err, "spool send:\n%s", out)
	jobID := jobIDFrom(t, out)
	t.Logf("%d rows through 3 dispatchers in %s", rows, time.Since(start).Round(time.Millisecond))

	st := getSinkTotals(t, s, jobID)
	require.EqualValues(t, rows, st.Distinct)
	require.Zero(t, st.Duplicates)
	requireEachRowOnce(t, s, jobID, int64(rows))

	p := watchToEnd(t, s.Dispatchers[2].Addr, jobID, 30*time.Second)
	require.True(t, p.GetFinal())
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, p.GetJob().GetState())
	require.EqualValues(t, rows, p.GetJob().GetDelivered())
	require.EqualValues(t, rows, p.GetJob().GetTotal())
}

// TestBusinessKeyAcrossFiles sends a file, then a longer file that repeats
// its transactions (same employee and pay date) before new ones: the second
// job sends only the new rows, records the repeated ones DUPLICATE of the
// first job's rows, and completes.
func TestBusinessKeyAcrossFiles(t *testing.T) {
	const first, second = 300, 500
	s := startStack(t, 2, nil)
	dir := t.TempDir()
	write := func(name string, rows int) string {
		path := filepath.Join(dir, name)
		f, err := os.Create(path)
		require.NoError(t, err)
		// One seed: the longer file begins with the shorter one's rows.
		require.NoError(t, sample.Write(f, rows, 42))
		require.NoError(t, f.Close())
		return path
	}
	a, b := write("november.csv", first), write("november-corrected.csv", second)

	out, err := runCLI(t, s, "send", "-business-key", "employee_id,pay_date", "-amount-column", "amount", a)
	require.NoError(t, err, "spool send:\n%s", out)
	jobA := jobIDFrom(t, out)
	out, err = runCLI(t, s, "send", "-business-key", "employee_id,pay_date", "-amount-column", "amount", b)
	require.NoError(t, err, "spool send:\n%s", out)
	require.Contains(t, out, fmt.Sprintf("%d rows not sent", first))
	jobB := jobIDFrom(t, out)
	require.NotEqual(t, jobA, jobB)

	requireEachRowOnce(t, s, jobA, first)
	got := sinkRows(t, s, jobB)
	require.Len(t, got, second-first, "only the new rows reach the destination")
	for r := int64(first + 1); r <= second; r++ {
		require.Equal(t, 1, got[r], "row %d", r)
	}

	p := watchToEnd(t, s.Dispatchers[0].Addr, jobB, 30*time.Second)
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, p.GetJob().GetState())
	require.EqualValues(t, second-first, p.GetJob().GetDelivered())
	require.EqualValues(t, first, p.GetJob().GetDuplicateRows())

	// The second job's report names, for each repeated row, the row that
	// carries the transaction.
	out, err = runCLI(t, s, "report", "-json", jobB)
	require.NoError(t, err, out)
	dups := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var msg struct {
			Entry *struct {
				Row              string `json:"row"`
				State            string `json:"state"`
				DuplicateOfJobID string `json:"duplicateOfJobId"`
				DuplicateOfRow   string `json:"duplicateOfRow"`
			} `json:"entry"`
		}
		require.NoError(t, json.Unmarshal([]byte(line), &msg), line)
		if e := msg.Entry; e != nil && e.State == "TRANSACTION_STATE_DUPLICATE" {
			dups++
			require.Equal(t, jobA, e.DuplicateOfJobID)
			require.Equal(t, e.Row, e.DuplicateOfRow, "the same employee's row in the first file")
		}
	}
	require.Equal(t, first, dups)

	// Every repeated row failed a conditional write: DynamoDB Local
	// answers those without a checksum, which the services must not
	// mistake for a damaged answer.
	require.NoError(t, s.Down())
	requireJSONLogs(t, append([]*stack.Proc{s.Ingestor}, s.Dispatchers...)...)
}

// TestEnvelopeVersionsRollOut is the envelope's rolling upgrade: an
// ingestor still writing version 1 (SPOOL_ENVELOPE_VERSION=v1) sends a
// file, then, restarted with version 2 (the default), another, through the
// same dispatchers. Both files reach the destination whole, once, under
// their default keys, and the ledger holds the file's amounts: the
// dispatchers named version 2's values from the job's columns.
func TestEnvelopeVersionsRollOut(t *testing.T) {
	s := startStack(t, 2, func(o *stack.Options) { o.IngestorArgs = append(o.IngestorArgs, "-envelope-version", "v1") })
	send := func(rows int) string {
		file := writeSample(t, rows)
		out, err := runCLI(t, s, "send", "-amount-column", "amount", file)
		require.NoError(t, err, "spool send:\n%s", out)
		require.Contains(t, out, fmt.Sprintf("delivered %d of %d", rows, rows))
		jobID := jobIDFrom(t, out)
		requireEachRowOnce(t, s, jobID, int64(rows))
		for r, tx := range sinkLedger(t, s, jobID) {
			require.Equal(t, fmt.Sprintf("%s:%d", jobID, r), tx.Key, "row %d's idempotency key", r)
		}
		summary := reportJob(t, s.Dispatchers[0].Addr, jobID).summary
		require.Len(t, summary.GetTotals(), 1)
		require.Equal(t, spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, summary.GetTotals()[0].GetState())
		require.Equal(t, fileAmountSum(t, file), summary.GetTotals()[0].GetAmountSum(), "the ledger's amounts are the file's")
		return jobID
	}
	v1 := send(400)

	require.NoError(t, s.Ingestor.Stop(10*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, s.Ingestor.RestartWith(ctx, s.Ready(s.Ingestor), "-envelope-version", "v2"))
	v2 := send(401)

	// The ingestor's log says which version each job's rows were written in.
	logs, err := os.ReadFile(s.Ingestor.LogPath)
	require.NoError(t, err)
	written := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(logs)), "\n") {
		var rec struct {
			Msg     string `json:"msg"`
			JobID   string `json:"job_id"`
			Version string `json:"envelope_version"`
		}
		require.NoError(t, json.Unmarshal([]byte(line), &rec), line)
		if rec.Msg == "job created" {
			written[rec.JobID] = rec.Version
		}
	}
	require.Equal(t, map[string]string{v1: "v1", v2: "v2"}, written)
}

// fileAmountSum is the sum of the amount column of a sample file.
func fileAmountSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	r := csv.NewReader(f)
	header, err := r.Read()
	require.NoError(t, err)
	col := slices.Index(header, "amount")
	require.GreaterOrEqual(t, col, 0, "no amount column")
	var sum decimal.Total
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return sum.String()
		}
		require.NoError(t, err)
		sum.Add(rec[col])
	}
}
