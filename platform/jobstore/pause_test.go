package jobstore_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

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
