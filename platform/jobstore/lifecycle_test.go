package jobstore_test

import (
	"context"
	"crypto/sha256"
	"encoding"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/provision"
	"github.com/spoolhq/spool/platform/testkit"
)

// newClockedStore returns a store with a 1-minute lease on a fresh table,
// and the clock it reads.
func newClockedStore(t testing.TB) (*jobstore.Store, *testkit.Clock) {
	t.Helper()
	db := dynamodb.NewFromConfig(emutest.Config(emutest.Start(t, emulator.DynamoDB)))
	require.NoError(t, provision.EnsureTable(context.Background(), db, "jobs"))
	c := testkit.NewClock(time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC))
	return jobstore.New(db, "jobs", jobstore.WithClock(c.Now), jobstore.WithAbortAfter(time.Minute)), c
}

func TestStoresNewFields(t *testing.T) {
	ctx := context.Background()
	s, c := newClockedStore(t)
	in := &spoolv1.Job{
		JobId: "j1", JobKey: "payroll-11", FileName: "pay.csv", Columns: []string{"id", "amount"},
		BusinessKeyColumns: []string{"id"}, AmountColumn: "amount",
		Control: &spoolv1.ControlTotals{RowCount: proto.Int64(3), AmountSum: "10.50", Sha256: "ab"},
	}
	_, err := s.Start(ctx, in, "s1")
	require.NoError(t, err)

	h := sha256.New()
	h.Write([]byte("id,amount\n1,"))
	state, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	require.NoError(t, err)
	cp := &jobstore.Checkpoint{Row: 2, Offset: 40, HashState: state, Published: 1, Rejected: 1, AmountSum: "4.25"}
	c.Advance(10 * time.Second)
	require.NoError(t, s.RecordIngest(ctx, "j1", jobstore.Ingest{Received: 3, Published: 2, Rejected: 1, Stream: "s1", Checkpoint: cp}))

	got, err := s.GetByKey(ctx, "payroll-11")
	require.NoError(t, err)
	require.Empty(t, cmpJob(t, &spoolv1.Job{
		JobId: "j1", JobKey: "payroll-11", FileName: "pay.csv", Columns: []string{"id", "amount"},
		State:              spoolv1.JobState_JOB_STATE_RECEIVING,
		BusinessKeyColumns: []string{"id"}, AmountColumn: "amount",
		Control:      &spoolv1.ControlTotals{RowCount: proto.Int64(3), AmountSum: "10.50", Sha256: "ab"},
		RowsReceived: 3, RowsPublished: 2, RowsRejected: 1, ResumeRow: 2, ResumeOffset: 40,
	}, got))
	require.Equal(t, c.Now().Add(time.Minute), got.GetLeaseExpiresAt().AsTime(), "progress renews the lease")

	// A takeover hands back the whole checkpoint, hash state included.
	_, back, err := s.Takeover(ctx, "j1", "s2")
	require.NoError(t, err)
	require.Equal(t, *cp, back)

	// A checkpoint without hash or sum removes the old ones.
	require.NoError(t, s.RecordIngest(ctx, "j1", jobstore.Ingest{Stream: "s2", Checkpoint: &jobstore.Checkpoint{Row: 5}}))
	_, back, err = s.Takeover(ctx, "j1", "s3")
	require.NoError(t, err)
	require.Equal(t, jobstore.Checkpoint{Row: 5}, back)
}

// cmpJob compares jobs, ignoring the times the store sets.
func cmpJob(t testing.TB, want, got *spoolv1.Job) string {
	t.Helper()
	return cmpDiff(want, got, protocmp.IgnoreFields(&spoolv1.Job{}, "created_at", "updated_at", "lease_expires_at", "sealed_at", "completed_at"))
}

func TestExpireIfAbandoned(t *testing.T) {
	ctx := context.Background()
	s, c := newClockedStore(t)
	j, err := s.Start(ctx, &spoolv1.Job{JobId: "j1"}, "s1")
	require.NoError(t, err)

	// Within the lease nothing happens, and nothing is read.
	got, err := s.ExpireIfAbandoned(ctx, j)
	require.NoError(t, err)
	require.Same(t, j, got)

	// The stream renewed its lease after the caller's copy was taken: the
	// stale copy looks expired, but the job is not aborted.
	c.Advance(50 * time.Second)
	require.NoError(t, s.RecordIngest(ctx, "j1", jobstore.Ingest{Stream: "s1"}))
	c.Advance(20 * time.Second)
	got, err = s.ExpireIfAbandoned(ctx, j)
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_RECEIVING, got.GetState())

	c.Advance(41 * time.Second)
	got, err = s.ExpireIfAbandoned(ctx, got)
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_ABORTED, got.GetState())
	require.Equal(t, "stream not resumed within 1m0s", got.GetStateReason())

	// Ending it is idempotent: a second caller gets the aborted job.
	again, err := s.ExpireIfAbandoned(ctx, j)
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_ABORTED, again.GetState())

	// The stream that comes back too late is refused.
	require.ErrorIs(t, s.RecordIngest(ctx, "j1", jobstore.Ingest{Stream: "s1"}), jobstore.ErrState)
	_, _, err = s.Takeover(ctx, "j1", "s2")
	require.ErrorIs(t, err, jobstore.ErrState)

	// Final jobs are returned as they are.
	sealed := &spoolv1.Job{JobId: "x", State: spoolv1.JobState_JOB_STATE_SEALED, LeaseExpiresAt: j.GetLeaseExpiresAt()}
	got, err = s.ExpireIfAbandoned(ctx, sealed)
	require.NoError(t, err)
	require.Same(t, sealed, got)
}

func TestTakeoverFencesTheOldStream(t *testing.T) {
	ctx := context.Background()
	s, c := newClockedStore(t)
	_, err := s.Start(ctx, &spoolv1.Job{JobId: "j1", JobKey: "k"}, "old")
	require.NoError(t, err)
	require.NoError(t, s.RecordIngest(ctx, "j1", jobstore.Ingest{Received: 4, Stream: "old"}))

	_, _, err = s.Takeover(ctx, "j1", "new")
	require.NoError(t, err)
	c.Advance(30 * time.Second)

	for name, write := range map[string]func(stream string) error{
		"record ingest": func(st string) error { return s.RecordIngest(ctx, "j1", jobstore.Ingest{Stream: st}) },
		"end": func(st string) error {
			_, err := s.EndStream(ctx, "j1", st, spoolv1.JobState_JOB_STATE_REJECTED, "bad")
			return err
		},
		"seal":    func(st string) error { _, err := s.Seal(ctx, "j1", jobstore.Ingest{Stream: st}); return err },
		"unowned": func(string) error { return s.RecordIngest(ctx, "j1", jobstore.Ingest{}) },
	} {
		require.ErrorIs(t, write("old"), jobstore.ErrState, name)
	}
	require.NoError(t, s.RecordIngest(ctx, "j1", jobstore.Ingest{Received: 9, Published: 9, Stream: "new"}))
	j, err := s.Seal(ctx, "j1", jobstore.Ingest{Received: 9, Published: 9, Stream: "new"})
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, j.GetState())
	require.EqualValues(t, 9, j.GetTotal())
}

func TestJobKeys(t *testing.T) {
	ctx := context.Background()
	s, c := newClockedStore(t)

	_, err := s.GetByKey(ctx, "k")
	require.ErrorIs(t, err, jobstore.ErrNotFound)
	_, err = s.Start(ctx, &spoolv1.Job{JobId: "j1", JobKey: "k"}, "s1")
	require.NoError(t, err)

	// The key is taken while its job receives; the loser's job is gone.
	_, err = s.Start(ctx, &spoolv1.Job{JobId: "j2", JobKey: "k"}, "s2")
	var taken *jobstore.KeyTakenError
	require.ErrorAs(t, err, &taken)
	require.ErrorIs(t, err, jobstore.ErrKeyTaken)
	require.Equal(t, "j1", taken.Job.GetJobId())
	_, err = s.Get(ctx, "j2")
	require.ErrorIs(t, err, jobstore.ErrNotFound)

	// ... and once it is sealed.
	_, err = s.Seal(ctx, "j1", jobstore.Ingest{Stream: "s1"})
	require.NoError(t, err)
	_, err = s.Start(ctx, &spoolv1.Job{JobId: "j3", JobKey: "k"}, "s3")
	require.ErrorAs(t, err, &taken)
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, taken.Job.GetState(), "a job of 0 rows completes on sealing")

	// A key whose job failed goes to the next submission; so does one
	// whose stream was abandoned.
	for _, end := range []struct {
		name string
		fail func(id string)
	}{
		{"rejected", func(id string) {
			_, err := s.End(ctx, id, spoolv1.JobState_JOB_STATE_REJECTED, "bad")
			require.NoError(t, err)
		}},
		{"abandoned", func(string) { c.Advance(2 * time.Minute) }},
	} {
		t.Run(end.name, func(t *testing.T) {
			_, err := s.Start(ctx, &spoolv1.Job{JobId: "f1-" + end.name, JobKey: "f-" + end.name}, "a")
			require.NoError(t, err)
			end.fail("f1-" + end.name)
			_, err = s.Start(ctx, &spoolv1.Job{JobId: "f2-" + end.name, JobKey: "f-" + end.name}, "b")
			require.NoError(t, err)
			j, err := s.GetByKey(ctx, "f-"+end.name)
			require.NoError(t, err)
			require.Equal(t, "f2-"+end.name, j.GetJobId())
		})
	}
}

func TestConcurrentSubmissionsOfOneKey(t *testing.T) {
	ctx := context.Background()
	s, _ := newClockedStore(t)
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, errs[i] = s.Start(ctx, &spoolv1.Job{JobId: "j" + string(rune('a'+i)), JobKey: "k"}, "s")
		})
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		if err == nil {
			won++
			continue
		}
		require.ErrorIs(t, err, jobstore.ErrKeyTaken)
	}
	require.Equal(t, 1, won)
	j, err := s.GetByKey(ctx, "k")
	require.NoError(t, err)
	for i, err := range errs {
		if err == nil {
			require.Equal(t, "j"+string(rune('a'+i)), j.GetJobId())
		}
	}
}

func TestSealChecksControlTotals(t *testing.T) {
	ctx := context.Background()
	s, _ := newClockedStore(t)
	declared := &spoolv1.ControlTotals{RowCount: proto.Int64(3), AmountSum: "10.50", Sha256: "abc"}
	for _, tc := range []struct {
		name   string
		actual *spoolv1.ControlTotals
		state  spoolv1.JobState
		reason string
	}{
		{"match", &spoolv1.ControlTotals{RowCount: proto.Int64(3), AmountSum: "10.5", Sha256: "ABC"}, spoolv1.JobState_JOB_STATE_SEALED, ""},
		{"row count", &spoolv1.ControlTotals{RowCount: proto.Int64(2), AmountSum: "10.5", Sha256: "abc"}, spoolv1.JobState_JOB_STATE_REJECTED,
			"control totals do not match: row_count declared 3, actual 2"},
		{"amount and hash", &spoolv1.ControlTotals{RowCount: proto.Int64(3), AmountSum: "10.49", Sha256: "abd"}, spoolv1.JobState_JOB_STATE_REJECTED,
			"control totals do not match: amount_sum declared 10.50, actual 10.49; sha256 declared abc, actual abd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Start(ctx, &spoolv1.Job{JobId: tc.name, Control: declared}, "s")
			require.NoError(t, err)
			j, err := s.Seal(ctx, tc.name, jobstore.Ingest{Received: 3, Published: 3, Stream: "s", Actual: tc.actual})
			require.NoError(t, err)
			require.Equal(t, tc.state, j.GetState())
			require.Equal(t, tc.reason, j.GetStateReason())
			require.Empty(t, cmpDiff(tc.actual, j.GetActual()))
		})
	}
}

func TestCompareTotalsWithoutDeclaration(t *testing.T) {
	require.Empty(t, jobstore.CompareTotals(nil, &spoolv1.ControlTotals{RowCount: proto.Int64(1)}))
	require.Equal(t, "control totals do not match: row_count declared 1, actual not counted; amount_sum declared 1, actual not summed",
		jobstore.CompareTotals(&spoolv1.ControlTotals{RowCount: proto.Int64(1), AmountSum: "1"}, nil))
}

// TestJobKeysPerTenant: fleets sharing a table each have their own job
// keys; within one, a key names one job as before.
func TestJobKeysPerTenant(t *testing.T) {
	ctx := context.Background()
	db := dynamodb.NewFromConfig(emutest.Config(emutest.Start(t, emulator.DynamoDB)))
	require.NoError(t, provision.EnsureTable(ctx, db, "jobs"))
	tests := []struct {
		name          string
		first, second string // tenants
		wantTaken     bool
	}{
		{name: "two tenants: two jobs", first: "t1", second: "t2"},
		{name: "a tenant and none: two jobs", first: "t1", second: ""},
		{name: "one tenant: the key is taken", first: "t1", second: "t1", wantTaken: true},
		{name: "no tenant: the key is taken", wantTaken: true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := "payroll-" + string(rune('a'+i))
			a := jobstore.New(db, "jobs", jobstore.WithTenant(tt.first))
			b := jobstore.New(db, "jobs", jobstore.WithTenant(tt.second))
			_, err := a.Start(ctx, &spoolv1.Job{JobId: tt.name + "-1", JobKey: key}, "s1")
			require.NoError(t, err)
			_, err = b.Start(ctx, &spoolv1.Job{JobId: tt.name + "-2", JobKey: key}, "s2")
			if tt.wantTaken {
				require.ErrorIs(t, err, jobstore.ErrKeyTaken)
				return
			}
			require.NoError(t, err)
			for s, want := range map[*jobstore.Store]string{a: tt.name + "-1", b: tt.name + "-2"} {
				j, err := s.GetByKey(ctx, key)
				require.NoError(t, err)
				require.Equal(t, want, j.GetJobId())
				require.Equal(t, key, j.GetJobKey(), "the record keeps the caller's key")
			}
		})
	}
}
