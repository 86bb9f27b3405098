package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/local/stack"
)

// The files of the ingestor chaos runs are big enough that their stream
// takes a few seconds, so it can be broken half way. The resumed file is
// delivered whole, so it is smaller (SPOOL_CHAOS_INGEST_ROWS overrides
// it); the abandoned one is never delivered, so size costs little there.
const (
	defaultResumeRows = 10_000
	abandonedRows     = 30_000
)

// publishedMidStream reports whether a job is receiving and has published
// some rows: the moment to break its stream.
func publishedMidStream(j *spoolv1.Job) bool {
	return j.GetRowsPublished() > 0 || isFinal(j.GetState()) || j.GetState() == spoolv1.JobState_JOB_STATE_SEALED
}

// catchMidStream waits until the job of key has rows published, and
// returns it while its stream of rows is still running. It fails when the
// stream ended before it could be broken, which says the file is too small
// for this machine.
func catchMidStream(t *testing.T, s *stack.Stack, key string, rows int) *spoolv1.Job {
	t.Helper()
	j := waitJob(t, s, &spoolv1.GetJobRequest{JobKey: key}, time.Minute, "rows published", publishedMidStream)
	require.Equal(t, spoolv1.JobState_JOB_STATE_RECEIVING, j.GetState(),
		"the stream of %d rows ended before it could be broken: the file is too small for this machine", rows)
	require.Less(t, j.GetRowsPublished(), int64(rows))
	return j
}

// TestChaosIngestorKilledMidStream SIGKILLs the ingestor while `spool send`
// streams a file; the CLI must resume by itself, and every row must reach
// the destination exactly once. Sending the same file again with the same
// job key then sends nothing.
func TestChaosIngestorKilledMidStream(t *testing.T) {
	requireFlags(t, "spool send", "resume-for")
	rows := envInt(t, "SPOOL_CHAOS_INGEST_ROWS", defaultResumeRows)
	s := startStack(t, 3, func(o *stack.Options) {
		// One publish call at a time draws the stream out, so it can be
		// caught half way on a fast machine too.
		o.IngestorArgs = []string{"-publish-concurrency", "1"}
		o.DispatcherArgs = []string{"-receiving-delay", "1s"}
	})
	file := writeSample(t, rows)
	key := fmt.Sprintf("ingest-chaos-%d", rows)

	start := time.Now()
	_, out, done := startCLI(t, s, "send", "-job-key", key, file)
	caught := catchMidStream(t, s, key, rows)
	jobID := caught.GetJobId()

	require.NoError(t, s.Ingestor.Kill())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, s.Ingestor.Restart(ctx, s.Ready(s.Ingestor)))
	t.Logf("ingestor killed after row %d of %d was published", caught.GetRowsPublished(), rows)

	select {
	case err := <-done:
		require.NoError(t, err, "spool send:\n%s", out)
	case <-time.After(3 * time.Minute):
		t.Fatalf("spool send did not finish in 3m:\n%s", out)
	}
	require.Contains(t, out.String(), "resuming", "spool send must say it resumed:\n%s", out)
	require.Equal(t, jobID, jobIDFrom(t, out.String()))

	job := waitJob(t, s, &spoolv1.GetJobRequest{JobId: jobID}, time.Minute, "job final", func(j *spoolv1.Job) bool { return isFinal(j.GetState()) })
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, job.GetState(), "reason: %s", job.GetStateReason())
	require.EqualValues(t, rows, job.GetTotal())
	require.EqualValues(t, rows, job.GetDelivered())
	require.Zero(t, job.GetUnknown())
	requireEachRowOnce(t, s, jobID, int64(rows))
	t.Logf("ingestor chaos: rows %d, 1 kill, duplicates suppressed %d, applied twice 0, wall time %s",
		rows, job.GetDuplicatesSuppressed(), time.Since(start).Round(time.Millisecond))

	// The same file with the same key: the CLI finds the job, and the
	// destination hears nothing new.
	before := getSinkTotals(t, s, "")
	again, err := runCLI(t, s, "send", "-job-key", key, file)
	require.NoError(t, err, "spool send again:\n%s", again)
	require.Contains(t, again, "already submitted as job "+jobID)
	require.Contains(t, again, "nothing sent")
	require.Equal(t, before, getSinkTotals(t, s, ""), "re-submission reached the sink")
}

// TestChaosResubmitWithoutKey sends a file twice without a job key: the
// file's SHA-256 is its key, so the second send finds the completed job
// and the destination hears nothing new.
func TestChaosResubmitWithoutKey(t *testing.T) {
	requireFlags(t, "spool send", "resume-for")
	const rows = 200
	s := startStack(t, 2, nil)
	file := writeSample(t, rows)

	out, err := runCLI(t, s, "send", file)
	require.NoError(t, err, "spool send:\n%s", out)
	jobID := jobIDFrom(t, out)
	requireEachRowOnce(t, s, jobID, rows)

	before := getSinkTotals(t, s, "")
	out, err = runCLI(t, s, "send", file)
	require.NoError(t, err, "spool send again:\n%s", out)
	require.Contains(t, out, "already submitted as job "+jobID)
	require.Contains(t, out, "nothing sent")
	require.Equal(t, before, getSinkTotals(t, s, ""), "re-submission reached the sink")
	requireEachRowOnce(t, s, jobID, rows)
}

// TestChaosAbandonedStreamIsAborted kills `spool send` mid-stream and
// never resumes: once the abort timeout passes the job is ABORTED, the
// dispatchers drop every message of it, and nothing reaches the sink.
func TestChaosAbandonedStreamIsAborted(t *testing.T) {
	requireFlags(t, "ingestor", "abort-after")
	requireFlags(t, "dispatcher", "receiving-delay")
	rows := abandonedRows
	const abortAfter = 3 * time.Second
	s := startStack(t, 2, func(o *stack.Options) {
		o.IngestorArgs = []string{"-abort-after", abortAfter.String(), "-publish-concurrency", "1"}
		o.DispatcherArgs = []string{"-receiving-delay", "1s"}
	})
	file := writeSample(t, rows)
	key := fmt.Sprintf("abandoned-%d", rows)

	cli, out, done := startCLI(t, s, "send", "-job-key", key, file)
	caught := catchMidStream(t, s, key, rows)
	jobID := caught.GetJobId()

	require.NoError(t, cli.Process.Kill())
	err := <-done
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "spool send was killed:\n%s", out)
	t.Logf("spool send killed after row %d of %d was published", caught.GetRowsPublished(), rows)

	job := waitJob(t, s, &spoolv1.GetJobRequest{JobId: jobID}, abortAfter+30*time.Second, "job aborted",
		func(j *spoolv1.Job) bool { return isFinal(j.GetState()) })
	require.Equal(t, spoolv1.JobState_JOB_STATE_ABORTED, job.GetState(), "reason: %s", job.GetStateReason())
	require.NotEmpty(t, job.GetStateReason())

	// Every published message is dropped undelivered; only then does "the
	// sink saw nothing" prove anything.
	published := job.GetRowsPublished()
	require.Positive(t, published)
	job = waitJob(t, s, &spoolv1.GetJobRequest{JobId: jobID}, time.Minute, "every message dropped",
		func(j *spoolv1.Job) bool { return j.GetDropped() >= published })
	require.Equal(t, spoolv1.JobState_JOB_STATE_ABORTED, job.GetState())
	require.Zero(t, job.GetDelivered())
	require.Equal(t, sinkTotals{}, getSinkTotals(t, s, ""), "rows of an aborted job reached the sink")
}
