package jobstore_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/provision"
)

// newStore returns a store on a fresh table in a real dynalite.
func newStore(t *testing.T) *jobstore.Store {
	t.Helper()
	db := dynamodb.NewFromConfig(emutest.Config(emutest.Start(t, emulator.DynamoDB)))
	require.NoError(t, provision.EnsureTable(context.Background(), db, "jobs"))
	// A second call finds the table and is a no-op.
	require.NoError(t, provision.EnsureTable(context.Background(), db, "jobs"))
	return jobstore.New(db, "jobs")
}

func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)

	_, err := s.Get(ctx, "nope")
	require.ErrorIs(t, err, jobstore.ErrNotFound)

	j, err := s.Create(ctx, &spoolv1.Job{JobId: "j1", FileName: "pay.csv", Columns: []string{"a", "b"}})
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_RECEIVING, j.GetState())
	_, err = s.Create(ctx, &spoolv1.Job{JobId: "j1"})
	require.ErrorIs(t, err, jobstore.ErrExists)

	require.NoError(t, s.RecordIngest(ctx, "j1", jobstore.Ingest{Received: 5, Published: 4}))
	// Counts before the seal complete nothing.
	w := newCounter(s, "j1", "d1")
	w.add(t, jobstore.Counts{Delivered: 3, Duplicates: 1, Retries: 2})
	j, err = s.Get(ctx, "j1")
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_RECEIVING, j.GetState())
	require.EqualValues(t, 3, j.GetDelivered())

	j, err = s.Seal(ctx, "j1", jobstore.Ingest{Received: 6, Published: 5, Rejected: 1})
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, j.GetState())
	require.EqualValues(t, 5, j.GetTotal())
	require.ErrorIs(t, s.RecordIngest(ctx, "j1", jobstore.Ingest{}), jobstore.ErrState)

	w.add(t, jobstore.Counts{Suppressed: 3, Dropped: 1})
	j, err = s.Get(ctx, "j1")
	require.NoError(t, err)
	require.EqualValues(t, 4, jobstore.SettledOf(j).Sum(), "suppressed and dropped messages settle no row")
	// A second dispatcher counts a dead-lettered row: every row is settled.
	w2 := newCounter(s, "j1", "d2")
	w2.add(t, jobstore.Counts{DeadLettered: 1})
	j, err = s.Get(ctx, "j1")
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, j.GetState(), "counters alone complete nothing")
	require.EqualValues(t, 5, jobstore.SettledOf(j).Sum())
	_, err = s.Complete(ctx, "j1", jobstore.Settled{Delivered: 3, Duplicates: 1})
	require.ErrorIs(t, err, jobstore.ErrState, "a ledger count short of the total completes nothing")
	j, err = s.Complete(ctx, "j1", jobstore.SettledOf(j))
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, j.GetState(), "a dead-lettered row settles its job")
	require.EqualValues(t, 1, j.GetDeadLettered())
	_, err = s.Complete(ctx, "j1", jobstore.SettledOf(j))
	require.NoError(t, err, "completing a completed job is no error")
	// Redriven, it was sent again and its outcome is unknown.
	w2.add(t, jobstore.Counts{DeadLettered: -1, Unknown: 1})
	j, err = s.Get(ctx, "j1")
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, j.GetState())
	require.EqualValues(t, 0, j.GetDeadLettered())
	require.EqualValues(t, 1, j.GetUnknown())
	require.EqualValues(t, 3, j.GetDuplicatesSuppressed())
	require.EqualValues(t, 1, j.GetDropped())
	// Resolving it (on the first dispatcher) moves the count; the job
	// stays complete.
	w.add(t, jobstore.Counts{Unknown: -1, Delivered: 1})
	j, err = s.Get(ctx, "j1")
	require.NoError(t, err)
	require.EqualValues(t, 0, j.GetUnknown())
	require.EqualValues(t, 4, j.GetDelivered())
	require.NotNil(t, j.GetCompletedAt())

	got, err := s.Get(ctx, "j1")
	require.NoError(t, err)
	require.EqualValues(t, 4, got.GetDelivered())
	require.EqualValues(t, 1, got.GetDuplicateRows(), "a duplicate row settles the row it stands for")
	require.EqualValues(t, 2, got.GetRetries())
	require.Equal(t, []string{"a", "b"}, got.GetColumns())
}

func TestSealCompletesAJobWithoutRows(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	_, err := s.Create(ctx, &spoolv1.Job{JobId: "j2"})
	require.NoError(t, err)
	j, err := s.Seal(ctx, "j2", jobstore.Ingest{Received: 1, Rejected: 1})
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, j.GetState(), "nothing to deliver, nothing to confirm")
}

func TestConcurrentWritersAreExact(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	_, err := s.Create(ctx, &spoolv1.Job{JobId: "j3"})
	require.NoError(t, err)
	_, err = s.Seal(ctx, "j3", jobstore.Ingest{Received: 200, Published: 200})
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			w := newCounter(s, "j3", fmt.Sprint("d", i))
			for range 10 {
				w.add(t, jobstore.Counts{Delivered: 1})
			}
		})
	}
	wg.Wait()
	j, err := s.Get(ctx, "j3")
	require.NoError(t, err)
	require.EqualValues(t, 200, j.GetDelivered())
}

func TestEnd(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	_, err := s.Create(ctx, &spoolv1.Job{JobId: "j4"})
	require.NoError(t, err)
	j, err := s.End(ctx, "j4", spoolv1.JobState_JOB_STATE_ABORTED, "stream broke")
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_ABORTED, j.GetState())
	require.Equal(t, "stream broke", j.GetStateReason())
	_, err = s.Seal(ctx, "j4", jobstore.Ingest{})
	require.ErrorIs(t, err, jobstore.ErrState)
}
