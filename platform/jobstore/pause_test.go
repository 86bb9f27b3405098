package jobstore_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

func TestSetPaused(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	_, err := s.Create(ctx, &spoolv1.Job{JobId: "p1"})
	require.NoError(t, err)

	j, err := s.SetPaused(ctx, "p1", true)
	require.NoError(t, err)
	require.True(t, j.GetPaused())
	require.Equal(t, spoolv1.JobState_JOB_STATE_RECEIVING, j.GetState(), "pausing is a flag, not a state")
	j, err = s.Get(ctx, "p1")
	require.NoError(t, err)
	require.True(t, j.GetPaused())

	// The flag survives sealing and counting.
	_, err = s.Seal(ctx, "p1", jobstore.Ingest{Received: 2, Published: 2})
	require.NoError(t, err)
	w := newCounter(s, "p1", "d1")
	w.add(t, jobstore.Counts{Delivered: 1})
	j, err = s.Get(ctx, "p1")
	require.NoError(t, err)
	require.True(t, j.GetPaused())
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, j.GetState())

	// Pausing twice is no error.
	_, err = s.SetPaused(ctx, "p1", true)
	require.NoError(t, err)
	j, err = s.SetPaused(ctx, "p1", false)
	require.NoError(t, err)
	require.False(t, j.GetPaused())

	w.add(t, jobstore.Counts{Delivered: 1})
	j, err = s.Complete(ctx, "p1", jobstore.Settled{Delivered: 2})
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, j.GetState())
	require.EqualValues(t, 2, j.GetDelivered())
	j, err = s.SetPaused(ctx, "p1", true)
	require.ErrorIs(t, err, jobstore.ErrState, "a completed job cannot be paused")
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, j.GetState(), "the job is returned with the error")

	_, err = s.SetPaused(ctx, "nope", true)
	require.ErrorIs(t, err, jobstore.ErrNotFound)
}

func TestPauseOnThreshold(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	_, err := s.Create(ctx, &spoolv1.Job{JobId: "t1", FailureThreshold: &spoolv1.FailureThreshold{MaxFailureRate: 0.02, MinSettled: 100}})
	require.NoError(t, err)
	_, err = s.Seal(ctx, "t1", jobstore.Ingest{Received: 2000, Published: 2000})
	require.NoError(t, err)

	w := newCounter(s, "t1", "d1")
	w.add(t, jobstore.Counts{Delivered: 60, Failed: 3})
	j, paused, err := s.PauseOnThreshold(ctx, "t1")
	require.NoError(t, err)
	require.False(t, paused, "below the minimum of settled rows")
	require.False(t, j.GetPaused())

	newCounter(s, "t1", "d2").add(t, jobstore.Counts{Delivered: 35, DeadLettered: 2})
	// Dispatchers deciding at once: exactly one pauses.
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, won, err := s.PauseOnThreshold(ctx, "t1")
			assert.NoError(t, err)
			if won {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	require.EqualValues(t, 1, wins.Load())
	j, err = s.Get(ctx, "t1")
	require.NoError(t, err)
	require.True(t, j.GetPaused())
	require.Equal(t, spoolv1.PauseCause_PAUSE_CAUSE_THRESHOLD, j.GetPauseCause())
	require.Equal(t, "failure rate 5.0% over 100 settled rows exceeds 2%", j.GetPauseReason())

	// A threshold still crossed keeps the pause, with the reason brought up
	// to date.
	j, err = s.UpdateThreshold(ctx, "t1", jobstore.ThresholdChange{MaxFailureRate: proto.Float64(0.04)})
	require.NoError(t, err)
	require.True(t, j.GetPaused())
	require.Equal(t, "failure rate 5.0% over 100 settled rows exceeds 4%", j.GetPauseReason())
	// Raised above the job's figures: resumed in the same write.
	j, err = s.UpdateThreshold(ctx, "t1", jobstore.ThresholdChange{MaxFailureRate: proto.Float64(0.10), MaxFailures: proto.Int64(20)})
	require.NoError(t, err)
	require.False(t, j.GetPaused())
	require.Empty(t, j.GetPauseReason())
	require.Equal(t, spoolv1.PauseCause_PAUSE_CAUSE_UNSPECIFIED, j.GetPauseCause())
	require.InDelta(t, 0.10, j.GetFailureThreshold().GetMaxFailureRate(), 1e-9)
	require.EqualValues(t, 20, j.GetFailureThreshold().GetMaxFailures())
	require.EqualValues(t, 100, j.GetFailureThreshold().GetMinSettled())

	// Crossed again: paused again, once.
	w.add(t, jobstore.Counts{Delivered: 60, Failed: 20})
	_, paused, err = s.PauseOnThreshold(ctx, "t1")
	require.NoError(t, err)
	require.True(t, paused)
	_, paused, err = s.PauseOnThreshold(ctx, "t1")
	require.NoError(t, err)
	require.False(t, paused, "a paused job is not paused again")

	// A person's resume of a threshold pause removes the threshold: they
	// chose to go on.
	j, err = s.SetPaused(ctx, "t1", false)
	require.NoError(t, err)
	require.False(t, j.GetPaused())
	require.Nil(t, j.GetFailureThreshold())
	_, paused, err = s.PauseOnThreshold(ctx, "t1")
	require.NoError(t, err)
	require.False(t, paused)
}

func TestUpdateThresholdLeavesAPersonsPause(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	_, err := s.Create(ctx, &spoolv1.Job{JobId: "t2", FailureThreshold: &spoolv1.FailureThreshold{MaxFailures: proto.Int64(0)}})
	require.NoError(t, err)
	_, err = s.Seal(ctx, "t2", jobstore.Ingest{Received: 10, Published: 10})
	require.NoError(t, err)
	newCounter(s, "t2", "d1").add(t, jobstore.Counts{Delivered: 1, Failed: 1})
	_, paused, err := s.PauseOnThreshold(ctx, "t2")
	require.NoError(t, err)
	require.True(t, paused)
	j, err := s.SetPaused(ctx, "t2", true)
	require.NoError(t, err)
	require.Equal(t, spoolv1.PauseCause_PAUSE_CAUSE_OPERATOR, j.GetPauseCause(), "a person's pause takes over")

	j, err = s.UpdateThreshold(ctx, "t2", jobstore.ThresholdChange{MaxFailures: proto.Int64(-1)})
	require.NoError(t, err)
	require.True(t, j.GetPaused(), "only a person resumes a person's pause")
	require.Nil(t, j.GetFailureThreshold())

	_, err = s.UpdateThreshold(ctx, "t2", jobstore.ThresholdChange{MaxFailureRate: proto.Float64(3)})
	require.Error(t, err)
}

func TestCanaryPause(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	_, err := s.Create(ctx, &spoolv1.Job{JobId: "c1", Canary: &spoolv1.Canary{Rows: 5}})
	require.NoError(t, err)
	j, err := s.Seal(ctx, "c1", jobstore.Ingest{Received: 10, Published: 9, Rejected: 1, CanaryPublished: 4})
	require.NoError(t, err)
	require.EqualValues(t, 4, j.GetCanary().GetSize(), "the canary's rows the ingestor published")

	var paused bool
	j, paused, err = s.PauseCanary(ctx, "c1", "canary of 5 delivered; resume to continue")
	require.NoError(t, err)
	require.True(t, paused)
	require.Equal(t, spoolv1.PauseCause_PAUSE_CAUSE_CANARY, j.GetPauseCause())
	_, paused, err = s.PauseCanary(ctx, "c1", "canary of 5 delivered; resume to continue")
	require.NoError(t, err)
	require.False(t, paused, "decided once")

	j, err = s.SetPaused(ctx, "c1", false)
	require.NoError(t, err)
	require.True(t, j.GetCanary().GetReleased(), "a resume releases the canary")
	_, paused, err = s.PauseCanary(ctx, "c1", "canary of 5 delivered; resume to continue")
	require.NoError(t, err)
	require.False(t, paused, "a released canary pauses nothing")

	_, err = s.Create(ctx, &spoolv1.Job{JobId: "c2", Canary: &spoolv1.Canary{Rows: 5, ContinueWhenClean: true}})
	require.NoError(t, err)
	_, err = s.Seal(ctx, "c2", jobstore.Ingest{Received: 10, Published: 10})
	require.NoError(t, err)
	j, err = s.ReleaseCanary(ctx, "c2")
	require.NoError(t, err)
	require.True(t, j.GetCanary().GetReleased())
	require.True(t, j.GetCanary().GetContinueWhenClean())
	require.False(t, j.GetPaused())
}
