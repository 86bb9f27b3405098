package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/local/stack"
)

// How an operator runs payroll: a failure threshold that stops a bad file
// early, a canary, a payment date. Each is driven through the spool CLI,
// as a person would.

// guardArgs are the dispatchers' settings of these tests: counters
// flushed and job records re-read four times a second, so a threshold is
// seen crossed within about half a second of the rows that cross it, and
// held messages that come back after 10 s at most.
var guardArgs = []string{"-receiving-delay", "1s", "-counter-flush", "250ms", "-job-cache-ttl", "250ms", "-paused-delay", "10s"}

// TestFailureThresholdPausesAndRaisingResumes: every 20th row of 2 000 is
// refused (5 %) under a 2 % threshold. The job pauses itself after a
// hundred settled rows or so, saying why in spool status; raising the
// threshold to 10 % resumes it, and every row ends once.
func TestFailureThresholdPausesAndRaisingResumes(t *testing.T) {
	requireFlags(t, "sink", "reject-every")
	const rows, every = 2000, 20
	s := startStack(t, 2, func(o *stack.Options) {
		o.SinkArgs = []string{"-reject-every", fmt.Sprint(every)}
		// At 100 rows/s for the fleet, the half second before a crossing
		// is seen is about 50 rows.
		o.DispatcherArgs = append([]string{"-rate-limit", "100", "-concurrency", "8"}, guardArgs...)
	})
	out, err := runCLI(t, s, "send", "-no-watch", "-max-failure-rate", "2%", writeSample(t, rows))
	require.NoError(t, err, out)
	jobID := jobIDFrom(t, out)
	req := &spoolv1.GetJobRequest{JobId: jobID}

	paused := waitJob(t, s, req, time.Minute, "paused by its threshold", func(j *spoolv1.Job) bool {
		return j.GetPauseCause() == spoolv1.PauseCause_PAUSE_CAUSE_THRESHOLD
	})
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, paused.GetState(), "paused, not ended")
	require.Regexp(t, `^failure rate \d+\.\d% over \d+ settled rows exceeds 2%$`, paused.GetPauseReason())
	// Rows in flight finish; then nothing moves.
	var settled int64
	require.Eventually(t, func() bool {
		j := waitJob(t, s, req, time.Second, "job", func(*spoolv1.Job) bool { return true })
		n := j.GetDelivered() + j.GetFailed()
		stable := n == settled
		settled = n
		return stable
	}, 20*time.Second, 2*time.Second, "the paused job stops moving")
	require.LessOrEqual(t, settled, int64(150), "paused after about a hundred settled rows (reason: %s)", paused.GetPauseReason())
	require.Positive(t, settled)

	out, err = runCLI(t, s, "status", jobID)
	require.NoError(t, err, out)
	require.Contains(t, out, "paused: "+paused.GetPauseReason())
	require.Contains(t, out, "pause at more than 2% of at least 50 settled rows")

	out, err = runCLI(t, s, "update", jobID, "-max-failure-rate", "10%")
	require.NoError(t, err, out)
	require.Contains(t, out, "pauses at more than 10% of at least 50 settled rows")
	require.NotContains(t, out, "paused:", "a job its threshold paused resumes when the threshold is raised above its figures")

	job := waitJob(t, s, req, 2*time.Minute, "completed", func(j *spoolv1.Job) bool { return isFinal(j.GetState()) })
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, job.GetState())
	require.EqualValues(t, rows/every, job.GetFailed())
	require.EqualValues(t, rows-rows/every, job.GetDelivered())
	st := getSinkTotals(t, s, jobID)
	require.EqualValues(t, rows/every, st.Refused, "each refused row was sent once")
	got := sinkRows(t, s, jobID)
	require.Len(t, got, rows-rows/every)
	for r, n := range got {
		require.NotZero(t, r%every, "refused row %d applied", r)
		require.Equal(t, 1, n, "row %d applied %d times", r, n)
	}
	t.Logf("paused at %q; %d rows settled while paused; resumed by raising the threshold, %d delivered and %d refused",
		paused.GetPauseReason(), settled, job.GetDelivered(), job.GetFailed())
}

// TestCanaryHoldsTheRestUntilResume: with a canary of 50, exactly rows 1
// to 50 reach the destination, through two dispatchers of 16 deliveries
// each, until spool resume; then the rest, each once.
func TestCanaryHoldsTheRestUntilResume(t *testing.T) {
	const rows, canary = 400, 50
	s := startStack(t, 2, func(o *stack.Options) { o.DispatcherArgs = guardArgs })
	out, err := runCLI(t, s, "send", "-no-watch", "-canary", fmt.Sprint(canary), writeSample(t, rows))
	require.NoError(t, err, out)
	jobID := jobIDFrom(t, out)
	req := &spoolv1.GetJobRequest{JobId: jobID}

	paused := waitJob(t, s, req, time.Minute, "paused after its canary", func(j *spoolv1.Job) bool {
		return j.GetPauseCause() == spoolv1.PauseCause_PAUSE_CAUSE_CANARY
	})
	require.Equal(t, "canary of 50 delivered; resume to continue", paused.GetPauseReason())
	// Held rows come back every 10 s: give them two rounds to leak.
	require.Never(t, func() bool { return len(sinkRows(t, s, jobID)) != canary }, 12*time.Second, time.Second,
		"only the canary reaches the destination before the resume")
	got := sinkRows(t, s, jobID)
	for r := int64(1); r <= canary; r++ {
		require.Equal(t, 1, got[r], "canary row %d", r)
	}
	out, err = runCLI(t, s, "status", jobID)
	require.NoError(t, err, out)
	require.Contains(t, out, "paused: canary of 50 delivered; resume to continue")

	out, err = runCLI(t, s, "resume", jobID)
	require.NoError(t, err, out)
	job := waitJob(t, s, req, 2*time.Minute, "completed", func(j *spoolv1.Job) bool { return isFinal(j.GetState()) })
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, job.GetState())
	require.True(t, job.GetCanary().GetReleased())
	requireEachRowOnce(t, s, jobID, rows)
}

// TestDeliverAfter: a file with a payment date 20 s ahead is accepted and
// sealed at once; nothing reaches the destination before the date, every
// row after it. A second such file cancelled before its date delivers
// nothing.
func TestDeliverAfter(t *testing.T) {
	const rows = 200
	s := startStack(t, 2, func(o *stack.Options) { o.DispatcherArgs = guardArgs })
	at := time.Now().Add(20 * time.Second).Truncate(time.Second)
	date := at.UTC().Format(time.RFC3339)

	out, err := runCLI(t, s, "send", "-no-watch", "-deliver-after", date, writeSample(t, rows))
	require.NoError(t, err, out)
	jobID := jobIDFrom(t, out)
	out, err = runCLI(t, s, "send", "-no-watch", "-deliver-after", date, writeSample(t, rows+1))
	require.NoError(t, err, out)
	cancelled := jobIDFrom(t, out)

	waitJob(t, s, &spoolv1.GetJobRequest{JobId: jobID}, 30*time.Second, "sealed", func(j *spoolv1.Job) bool {
		return j.GetState() == spoolv1.JobState_JOB_STATE_SEALED
	})
	out, err = runCLI(t, s, "status", jobID)
	require.NoError(t, err, out)
	require.Contains(t, out, "waiting until "+date)
	out, err = runCLI(t, s, "cancel", cancelled)
	require.NoError(t, err, out)

	// Nothing before the date (a second's margin for the clock's
	// rounding of the check).
	for time.Until(at) > time.Second {
		require.Zero(t, getSinkTotals(t, s, "").seen(), "a request reached the destination %s before the payment date", time.Until(at))
		time.Sleep(500 * time.Millisecond)
	}
	job := waitJob(t, s, &spoolv1.GetJobRequest{JobId: jobID}, time.Minute, "completed", func(j *spoolv1.Job) bool { return isFinal(j.GetState()) })
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, job.GetState())
	require.False(t, job.GetCompletedAt().AsTime().Before(at))
	requireEachRowOnce(t, s, jobID, rows)

	c := waitJob(t, s, &spoolv1.GetJobRequest{JobId: cancelled}, time.Minute, "cancelled rows dropped", func(j *spoolv1.Job) bool {
		return j.GetDropped() == rows+1
	})
	require.Equal(t, spoolv1.JobState_JOB_STATE_CANCELLED, c.GetState())
	require.Empty(t, sinkRows(t, s, cancelled), "a job cancelled before its payment date delivers nothing")
	t.Logf("payment date %s: job completed at %s", date, job.GetCompletedAt().AsTime().UTC().Format(time.RFC3339Nano))
}
