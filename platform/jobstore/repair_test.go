package jobstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

func TestRepairCounts(t *testing.T) {
	ctx := context.Background()
	s, clk := newClockedStore(t)

	sealed := func(t *testing.T, id string) *spoolv1.Job {
		t.Helper()
		_, err := s.Create(ctx, &spoolv1.Job{JobId: id})
		require.NoError(t, err)
		clk.Advance(time.Second)
		_, err = s.Seal(ctx, id, jobstore.Ingest{Received: 10, Published: 10})
		require.NoError(t, err)
		clk.Advance(time.Second)
		// Some deltas arrive; the rest were lost with a killed dispatcher.
		newCounter(s, id, "d1").add(t, jobstore.Counts{Delivered: 6, Retries: 2, Suppressed: 1})
		j, err := s.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, j.GetState())
		clk.Advance(time.Second)
		return j
	}

	t.Run("settles and completes", func(t *testing.T) {
		seen := sealed(t, "all")
		j, err := s.RepairCounts(ctx, "all", seen.GetUpdatedAt().AsTime(), jobstore.Settled{Delivered: 6, Failed: 1, Unknown: 1, Duplicates: 1, DeadLettered: 1})
		require.NoError(t, err)
		require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, j.GetState())
		require.EqualValues(t, 6, j.GetDelivered())
		require.EqualValues(t, 1, j.GetDuplicateRows())
		require.EqualValues(t, 1, j.GetDeadLettered())
		require.EqualValues(t, 1, j.GetFailed())
		require.EqualValues(t, 1, j.GetUnknown())
		require.EqualValues(t, 2, j.GetRetries(), "counters the ledger does not hold are left alone")
		require.EqualValues(t, 1, j.GetDuplicatesSuppressed())
		require.NotNil(t, j.GetCompletedAt())

		got, err := s.Get(ctx, "all")
		require.NoError(t, err)
		require.Empty(t, cmpJob(t, j, got))
	})

	t.Run("sets counts without completing", func(t *testing.T) {
		seen := sealed(t, "some")
		j, err := s.RepairCounts(ctx, "some", seen.GetUpdatedAt().AsTime(), jobstore.Settled{Delivered: 7})
		require.NoError(t, err)
		require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, j.GetState())
		require.EqualValues(t, 7, j.GetDelivered())
		require.True(t, j.GetUpdatedAt().AsTime().After(seen.GetUpdatedAt().AsTime()), "a repair is a change watchers see")

		// Later counts add to the repaired figures.
		newCounter(s, "some", "d2").add(t, jobstore.Counts{Delivered: 3})
		j, err = s.Get(ctx, "some")
		require.NoError(t, err)
		require.EqualValues(t, 10, j.GetDelivered())

		// A repair lowers counters as readily: the ledger says 9.
		clk.Advance(time.Second)
		j, err = s.RepairCounts(ctx, "some", j.GetUpdatedAt().AsTime(), jobstore.Settled{Delivered: 9})
		require.NoError(t, err)
		require.EqualValues(t, 9, j.GetDelivered())
		require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, j.GetState())
	})

	t.Run("a delta written after the read refuses the repair", func(t *testing.T) {
		seen := sealed(t, "raced")
		newCounter(s, "raced", "d2").add(t, jobstore.Counts{Delivered: 1})
		_, err := s.RepairCounts(ctx, "raced", seen.GetUpdatedAt().AsTime(), jobstore.Settled{Delivered: 10})
		require.ErrorIs(t, err, jobstore.ErrChanged)

		got, err := s.Get(ctx, "raced")
		require.NoError(t, err)
		require.EqualValues(t, 7, got.GetDelivered(), "the refused repair wrote nothing")
		require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, got.GetState())
	})

	t.Run("only a sealed job is repaired", func(t *testing.T) {
		j, err := s.Create(ctx, &spoolv1.Job{JobId: "receiving"})
		require.NoError(t, err)
		_, err = s.RepairCounts(ctx, "receiving", j.GetUpdatedAt().AsTime(), jobstore.Settled{Delivered: 1})
		require.ErrorIs(t, err, jobstore.ErrChanged)

		_, err = s.RepairCounts(ctx, "missing", j.GetUpdatedAt().AsTime(), jobstore.Settled{Delivered: 1})
		require.ErrorIs(t, err, jobstore.ErrChanged)
		_, err = s.Get(ctx, "missing")
		require.ErrorIs(t, err, jobstore.ErrNotFound, "a repair never creates a job")
	})
}
