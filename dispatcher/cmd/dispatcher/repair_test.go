package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

// A dispatcher killed before its counter flush loses the deltas it held:
// here one delivered rows 1 to 100 (its ledger records say so) and wrote
// the deltas of 40 of them, and rows 101 to 200 are still queued. A live
// dispatcher delivers those, finds the job stalled short of its total,
// repairs the counters from the ledger, and the job completes.
func TestLostCounterDeltasAreRepaired(t *testing.T) {
	const rows, dead, flushed = 200, 100, 40
	s := newStack(t, 60*time.Second)
	dest, destURL := newDestination(t, func(int64) bool { return false })
	s.publishFrom(t, "job-r", dead+1, rows)

	ctx := t.Context()
	s.deliverAs(t, "killed", "job-r", dead)
	require.NoError(t, s.jobs.WriteCounts(ctx, "job-r", jobstore.CounterWrite{Writer: "killed", Version: 1, Counts: jobstore.Counts{Delivered: flushed}}))

	start := time.Now()
	addr, stop := startDispatcher(t, s, destURL, "live", "info", "-repair-interval", "200ms", "-repair-after", "1s")
	// The live dispatcher's own deltas stop at 140 of 200; only the repair
	// can complete the job.
	require.Eventually(t, func() bool {
		j, err := s.jobs.Get(ctx, "job-r")
		require.NoError(t, err)
		return j.GetState() == spoolv1.JobState_JOB_STATE_COMPLETED
	}, 30*time.Second, 50*time.Millisecond)
	t.Logf("job completed by repair %s after the live dispatcher started", time.Since(start))

	final := watchToEnd(t, addr, "job-r")
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, final.GetJob().GetState())
	require.EqualValues(t, rows, final.GetJob().GetDelivered(), "counters equal the ledger, no more")
	require.Zero(t, final.GetJob().GetFailed())
	require.Zero(t, final.GetJob().GetUnknown())
	require.NoError(t, stop())

	// Shutdown flushed everything; the repaired figure still stands.
	j, err := s.jobs.Get(ctx, "job-r")
	require.NoError(t, err)
	require.EqualValues(t, rows, j.GetDelivered())
	dest.mu.Lock()
	defer dest.mu.Unlock()
	require.Len(t, dest.accepted, rows-dead, "rows the killed dispatcher delivered are not sent again")
	for row := int64(dead + 1); row <= rows; row++ {
		require.Equal(t, 1, dest.accepted[fmt.Sprintf("job-r/%d", row)], "row %d delivered once", row)
	}
}

// A job whose rows were all delivered by dispatchers since killed is
// touched by no live dispatcher's gate; a watcher waiting on it is enough
// for the repair to find it, and the watch ends.
func TestWatchedStalledJobIsRepaired(t *testing.T) {
	const rows = 50
	s := newStack(t, 60*time.Second)
	_, destURL := newDestination(t, func(int64) bool { return false })
	s.publishFrom(t, "job-w", rows+1, rows)

	ctx := t.Context()
	s.settleAs(t, "killed", "job-w", rows, func(row int64) spoolv1.TransactionState {
		if row%10 == 0 {
			return spoolv1.TransactionState_TRANSACTION_STATE_REJECTED
		}
		return spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED
	})
	require.NoError(t, s.jobs.WriteCounts(ctx, "job-w", jobstore.CounterWrite{Writer: "killed", Version: 1, Counts: jobstore.Counts{Delivered: 30, Failed: 2}}))

	addr, _ := startDispatcher(t, s, destURL, "live", "info", "-repair-interval", "200ms", "-repair-after", "1s")
	final := watchToEnd(t, addr, "job-w")
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, final.GetJob().GetState())
	require.EqualValues(t, 45, final.GetJob().GetDelivered())
	require.EqualValues(t, 5, final.GetJob().GetFailed())
}
