package jobstore_test

import (
	"context"
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
	// Dispatchers may settle rows before the job is sealed: no completion yet.
	j, err = s.Add(ctx, "j1", jobstore.Counts{Delivered: 3, Duplicates: 1, Retries: 2})
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_RECEIVING, j.GetState())

	j, err = s.Seal(ctx, "j1", jobstore.Ingest{Received: 6, Published: 5, Rejected: 1})
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, j.GetState())
	require.EqualValues(t, 5, j.GetTotal())
	require.ErrorIs(t, s.RecordIngest(ctx, "j1", jobstore.Ingest{}), jobstore.ErrState)

	j, err = s.Add(ctx, "j1", jobstore.Counts{Suppressed: 3, Dropped: 1})
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, j.GetState(), "suppressed and dropped messages settle no row")
	j, err = s.Add(ctx, "j1", jobstore.Counts{DeadLettered: 1})
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, j.GetState(), "a dead-lettered row settles its job")
	require.EqualValues(t, 1, j.GetDeadLettered())
	// Redriven, it was sent again and its outcome is unknown.
	j, err = s.Add(ctx, "j1", jobstore.Counts{DeadLettered: -1, Unknown: 1})
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, j.GetState())
	require.EqualValues(t, 0, j.GetDeadLettered())
	require.EqualValues(t, 1, j.GetUnknown())
	require.EqualValues(t, 3, j.GetDuplicatesSuppressed())
	require.EqualValues(t, 1, j.GetDropped())
	// Resolving it moves the count; the job stays complete.
	j, err = s.Add(ctx, "j1", jobstore.Counts{Unknown: -1, Delivered: 1})
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

	_, err = s.Add(ctx, "missing", jobstore.Counts{Delivered: 1})
	require.ErrorIs(t, err, jobstore.ErrNotFound)
}

func TestSealCompletesWhenAllSettledFirst(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	_, err := s.Create(ctx, &spoolv1.Job{JobId: "j2"})
	require.NoError(t, err)
	_, err = s.Add(ctx, "j2", jobstore.Counts{Delivered: 3})
	require.NoError(t, err)
	j, err := s.Seal(ctx, "j2", jobstore.Ingest{Received: 3, Published: 3})
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, j.GetState())
}

func TestConcurrentAddsAreExact(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	_, err := s.Create(ctx, &spoolv1.Job{JobId: "j3"})
	require.NoError(t, err)
	_, err = s.Seal(ctx, "j3", jobstore.Ingest{Received: 200, Published: 200})
	require.NoError(t, err)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			for range 10 {
				_, err := s.Add(ctx, "j3", jobstore.Counts{Delivered: 1})
				require.NoError(t, err)
			}
		})
	}
	wg.Wait()
	j, err := s.Get(ctx, "j3")
	require.NoError(t, err)
	require.EqualValues(t, 200, j.GetDelivered())
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, j.GetState())
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
