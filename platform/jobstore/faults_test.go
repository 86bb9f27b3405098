package jobstore_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/dbfault"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/provision"
	"github.com/spoolhq/spool/platform/tablelayout"
	"github.com/spoolhq/spool/platform/testkit"
)

// newFaultyStore returns a store on a fresh table in a real dynalite,
// through a client that injects the faults its plan chooses, and the
// clock the store reads.
func newFaultyStore(t testing.TB) (*jobstore.Store, *dbfault.DB, *testkit.Clock) {
	t.Helper()
	db := dynamodb.NewFromConfig(emutest.Config(emutest.Start(t, emulator.DynamoDB)))
	require.NoError(t, provision.EnsureTable(context.Background(), db, "jobs"))
	c := testkit.NewClock(time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC))
	f := dbfault.New(db, nil)
	// Job events on: a transition's event rides on the write whose answer
	// is lost.
	return jobstore.New(f, "jobs", jobstore.WithClock(c.Now), jobstore.WithAbortAfter(time.Minute), jobstore.WithEvents()), f, c
}

// requireEvents checks the job holds exactly these pending events.
func requireEvents(t *testing.T, s *jobstore.Store, id string, want ...string) {
	t.Helper()
	evs, _, err := s.PendingEvents(context.Background(), id)
	require.NoError(t, err)
	got := []string{}
	for _, e := range evs {
		got = append(got, e.ID)
	}
	require.Equal(t, append([]string{}, want...), got)
}

// write matches writes (op) of the item with key k.
func write(op string, k tablelayout.Key) func(dbfault.Call) bool {
	return func(c dbfault.Call) bool { return c.Op == op && c.PK == k.PK && c.SK == k.SK }
}

// TestWritesAppliedTwice applies each conditional write, loses its answer
// and sends it again, as the SDK's retry does: the second send fails its
// condition, and the write must still count as done.
func TestWritesAppliedTwice(t *testing.T) {
	ctx := context.Background()
	s, f, clk := newFaultyStore(t)

	// started leaves a job receiving on stream s1.
	started := func(t *testing.T, id string) {
		t.Helper()
		_, err := s.Start(ctx, &spoolv1.Job{JobId: id}, "s1")
		require.NoError(t, err)
	}
	// jobUpdate matches an update of the job's own item.
	jobUpdate := func(id string) func(dbfault.Call) bool { return write("UpdateItem", tablelayout.Job(id)) }
	// startByKey starts the job under the key key-<id> and checks that the
	// key names it.
	startByKey := func(t *testing.T, id string) {
		t.Helper()
		_, err := s.Start(ctx, &spoolv1.Job{JobId: id, JobKey: "key-" + id}, "s1")
		require.NoError(t, err, "the key holds this submission's own claim")
		j, err := s.GetByKey(ctx, "key-"+id)
		require.NoError(t, err, "the key names a job that exists")
		require.Equal(t, id, j.GetJobId())
	}
	sealed := func(t *testing.T, id string, rows int64) {
		t.Helper()
		_, err := s.Start(ctx, &spoolv1.Job{JobId: id}, "s-"+id)
		require.NoError(t, err)
		_, err = s.Seal(ctx, id, jobstore.Ingest{Received: rows, Published: rows, Stream: "s-" + id})
		require.NoError(t, err)
	}
	tests := []struct {
		name string
		// prepare runs without faults.
		prepare func(t *testing.T, id string)
		// lose is the write whose answer is lost.
		lose  func(id string) func(dbfault.Call) bool
		fault dbfault.Fault
		// run makes the write and checks what the caller is told and the
		// table holds.
		run func(t *testing.T, id string)
	}{
		{
			name:  "create",
			lose:  func(id string) func(dbfault.Call) bool { return write("PutItem", tablelayout.Job(id)) },
			fault: dbfault.LoseRetried,
			run: func(t *testing.T, id string) {
				j, err := s.Start(ctx, &spoolv1.Job{JobId: id}, "s1")
				require.NoError(t, err)
				require.Equal(t, spoolv1.JobState_JOB_STATE_RECEIVING, j.GetState())
				_, err = s.Start(ctx, &spoolv1.Job{JobId: id}, "s2")
				require.ErrorIs(t, err, jobstore.ErrExists, "another writer's job is still taken")
			},
		},
		{
			name:  "claim of a job key",
			lose:  func(id string) func(dbfault.Call) bool { return write("PutItem", tablelayout.JobKey("key-"+id)) },
			fault: dbfault.LoseRetried,
			run:   startByKey,
		},
		{
			name:  "claim of a job key, answer lost for good",
			lose:  func(id string) func(dbfault.Call) bool { return write("PutItem", tablelayout.JobKey("key-"+id)) },
			fault: dbfault.Lose,
			run:   startByKey,
		},
		{
			name: "re-pointing of a job key",
			prepare: func(t *testing.T, id string) {
				_, err := s.Start(ctx, &spoolv1.Job{JobId: id + "-old", JobKey: "key-" + id}, "s0")
				require.NoError(t, err)
				_, err = s.End(ctx, id+"-old", spoolv1.JobState_JOB_STATE_ABORTED, "stream broke")
				require.NoError(t, err)
			},
			lose:  func(id string) func(dbfault.Call) bool { return write("UpdateItem", tablelayout.JobKey("key-"+id)) },
			fault: dbfault.LoseRetried,
			run:   startByKey,
		},
		{
			name:    "takeover",
			prepare: started,
			lose:    jobUpdate,
			fault:   dbfault.LoseRetried,
			run: func(t *testing.T, id string) {
				_, _, err := s.Takeover(ctx, id, "s2")
				require.NoError(t, err)
				require.NoError(t, s.RecordIngest(ctx, id, jobstore.Ingest{Received: 1, Stream: "s2"}))
			},
		},
		{
			name:    "progress",
			prepare: started,
			lose:    jobUpdate,
			fault:   dbfault.LoseRetried,
			run: func(t *testing.T, id string) {
				require.NoError(t, s.RecordIngest(ctx, id, jobstore.Ingest{Received: 3, Published: 3, Stream: "s1"}))
				j, err := s.Get(ctx, id)
				require.NoError(t, err)
				require.EqualValues(t, 3, j.GetRowsPublished())
			},
		},
		{
			name:    "seal",
			prepare: started,
			lose:    jobUpdate,
			fault:   dbfault.LoseRetried,
			run: func(t *testing.T, id string) {
				j, err := s.Seal(ctx, id, jobstore.Ingest{Received: 4, Published: 4, Stream: "s1"})
				require.NoError(t, err, "the job holds this stream's own seal")
				require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, j.GetState())
				require.EqualValues(t, 4, j.GetTotal())
				_, err = s.Seal(ctx, id, jobstore.Ingest{Received: 5, Published: 5, Stream: "s1"})
				require.ErrorIs(t, err, jobstore.ErrState, "a seal with other figures is not this one")
			},
		},
		{
			name:    "cancel",
			prepare: func(t *testing.T, id string) { sealed(t, id, 4) },
			lose:    jobUpdate,
			fault:   dbfault.LoseRetried,
			run: func(t *testing.T, id string) {
				j, err := s.End(ctx, id, spoolv1.JobState_JOB_STATE_CANCELLED, "by hand")
				require.NoError(t, err)
				require.Equal(t, spoolv1.JobState_JOB_STATE_CANCELLED, j.GetState())
				clk.Advance(time.Millisecond)
				_, err = s.End(ctx, id, spoolv1.JobState_JOB_STATE_CANCELLED, "by hand")
				require.ErrorIs(t, err, jobstore.ErrState, "a later end is not this one")
				requireEvents(t, s, id)
			},
		},
		{
			name:    "pause",
			prepare: func(t *testing.T, id string) { sealed(t, id, 4) },
			lose:    jobUpdate,
			fault:   dbfault.LoseRetried,
			run: func(t *testing.T, id string) {
				j, err := s.SetPaused(ctx, id, true)
				require.NoError(t, err)
				require.True(t, j.GetPaused())
			},
		},
		{
			name:    "completion",
			prepare: func(t *testing.T, id string) { sealed(t, id, 2) },
			lose:    jobUpdate,
			fault:   dbfault.LoseRetried,
			run: func(t *testing.T, id string) {
				j, err := s.Complete(ctx, id, jobstore.Settled{Delivered: 2})
				require.NoError(t, err)
				require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, j.GetState())
				requireEvents(t, s, id, id+"/job.completed")
			},
		},
		{
			name:    "canary pause",
			prepare: func(t *testing.T, id string) { sealed(t, id, 4) },
			lose:    jobUpdate,
			fault:   dbfault.LoseRetried,
			run: func(t *testing.T, id string) {
				j, paused, err := s.PauseCanary(ctx, id, "canary of 1 delivered; resume to continue")
				require.NoError(t, err)
				require.True(t, paused, "the job holds this very pause")
				require.True(t, j.GetPaused())
				requireEvents(t, s, id, id+"/job.paused/1")
			},
		},
		{
			name:    "rejection",
			prepare: started,
			lose:    jobUpdate,
			fault:   dbfault.LoseRetried,
			run: func(t *testing.T, id string) {
				j, err := s.EndStream(ctx, id, "s1", spoolv1.JobState_JOB_STATE_REJECTED, "row 2: bad")
				require.NoError(t, err)
				require.Equal(t, spoolv1.JobState_JOB_STATE_REJECTED, j.GetState())
				requireEvents(t, s, id, id+"/job.rejected")
			},
		},
		{
			name:    "counts",
			prepare: func(t *testing.T, id string) { sealed(t, id, 10) },
			lose:    func(id string) func(dbfault.Call) bool { return write("PutItem", tablelayout.JobCounter(id, "d1")) },
			fault:   dbfault.LoseRetried,
			run: func(t *testing.T, id string) {
				w := newCounter(s, id, "d1")
				w.add(t, jobstore.Counts{Delivered: 3})
				w.add(t, jobstore.Counts{Delivered: 2, Failed: 1})
				j, err := s.Get(ctx, id)
				require.NoError(t, err)
				require.EqualValues(t, 5, j.GetDelivered(), "counted once")
				require.EqualValues(t, 1, j.GetFailed())
			},
		},
		{
			name:    "repair",
			prepare: func(t *testing.T, id string) { sealed(t, id, 10) },
			lose:    func(id string) func(dbfault.Call) bool { return write("PutItem", tablelayout.JobRepair(id)) },
			fault:   dbfault.LoseRetried,
			run: func(t *testing.T, id string) {
				newCounter(s, id, "d1").add(t, jobstore.Counts{Delivered: 3})
				seen, err := s.Get(ctx, id)
				require.NoError(t, err)
				clk.Advance(time.Second)
				j, err := s.RepairCounts(ctx, id, seen.GetUpdatedAt().AsTime(), jobstore.Settled{Delivered: 4})
				require.NoError(t, err)
				require.EqualValues(t, 4, j.GetDelivered())
			},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := strings.ReplaceAll(tt.name, " ", "-")
			clk.Advance(time.Second)
			f.SetPlan(nil)
			if tt.prepare != nil {
				tt.prepare(t, id)
			}
			clk.Advance(time.Second)
			f.SetPlan(dbfault.Once(1, tt.fault, tt.lose(id)))
			before := f.Injected(tt.fault)
			tt.run(t, id)
			require.Equal(t, before+1, f.Injected(tt.fault), "case %d: the fault was injected", i)
		})
	}
}

// TestCountsExactUnderFaults writes one dispatcher's counts through
// answers lost (and retried, or given up on) and throttling, as the tally
// does: what failed is written again, whole, as the next version.
func TestCountsExactUnderFaults(t *testing.T) {
	ctx := context.Background()
	s, f, _ := newFaultyStore(t)
	_, err := s.Create(ctx, &spoolv1.Job{JobId: "j"})
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(1, 2))
	faults := []dbfault.Fault{dbfault.Pass, dbfault.LoseRetried, dbfault.Lose, dbfault.Throttle}
	f.SetPlan(func(c dbfault.Call) dbfault.Fault {
		if c.Op != "PutItem" {
			return dbfault.Pass
		}
		return faults[rng.IntN(len(faults))]
	})
	w := newCounter(s, "j", "d1")
	var failed int
	for i := range 60 {
		w.counts = w.counts.Plus(jobstore.Counts{Delivered: 1, Retries: int64(i % 2)})
		if err := w.write(); err != nil {
			require.True(t, errors.Is(err, dbfault.ErrLost) || strings.Contains(err.Error(), "throttled"), "unexpected: %v", err)
			failed++
		}
	}
	for w.write() != nil {
		failed++
	}
	f.SetPlan(nil)
	j, err := s.Get(ctx, "j")
	require.NoError(t, err)
	require.EqualValues(t, 60, j.GetDelivered())
	require.EqualValues(t, 30, j.GetRetries())
	require.Positive(t, f.Injected(dbfault.LoseRetried))
	require.Positive(t, f.Injected(dbfault.Throttle))
	require.Positive(t, failed)
}
