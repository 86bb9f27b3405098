package jobstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/jobevent"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/provision"
	"github.com/spoolhq/spool/platform/testkit"
)

// hooks records the jobs a store said it stored an event of.
type hooks struct {
	mu   sync.Mutex
	jobs []string
}

func (h *hooks) hook(id, _ string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.jobs = append(h.jobs, id)
}

func (h *hooks) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.jobs)
}

// newOutboxTable returns a fresh table and a clock; stores on it are made
// with storeOn.
func newOutboxTable(t *testing.T) (*dynamodb.Client, *testkit.Clock) {
	t.Helper()
	db := dynamodb.NewFromConfig(emutest.Config(emutest.Start(t, emulator.DynamoDB)))
	require.NoError(t, provision.EnsureTable(context.Background(), db, "jobs"))
	return db, testkit.NewClock(time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC))
}

func storeOn(db *dynamodb.Client, c *testkit.Clock, h *hooks) *jobstore.Store {
	return jobstore.New(db, "jobs", jobstore.WithClock(c.Now), jobstore.WithAbortAfter(time.Minute),
		jobstore.WithEventHook(h.hook), jobstore.WithRowsEvery(time.Minute))
}

// pendingIDs returns the ids of the job's pending events, and whether it
// is final.
func pendingIDs(t *testing.T, s *jobstore.Store, job string) ([]string, bool) {
	t.Helper()
	evs, final, err := s.PendingEvents(context.Background(), job)
	require.NoError(t, err)
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.ID
	}
	return ids, final
}

func sealedJob(t *testing.T, s *jobstore.Store, j *spoolv1.Job, rows int64) {
	t.Helper()
	_, err := s.Create(context.Background(), j)
	require.NoError(t, err)
	_, err = s.Seal(context.Background(), j.GetJobId(), jobstore.Ingest{Received: rows, Published: rows})
	require.NoError(t, err)
}

func TestRacingCompletionsStoreOneEvent(t *testing.T) {
	ctx := context.Background()
	db, c := newOutboxTable(t)
	var h1, h2 hooks
	d1, d2 := storeOn(db, c, &h1), storeOn(db, c, &h2)
	sealedJob(t, d1, &spoolv1.Job{JobId: "c1", FileName: "pay.csv"}, 3)
	newCounter(d1, "c1", "w").add(t, jobstore.Counts{Delivered: 2, Unknown: 1})
	ids, final := pendingIDs(t, d1, "c1")
	require.Empty(t, ids, "sealing stores no event")
	require.False(t, final)

	// Two dispatchers complete the job at once, each several times.
	var wg sync.WaitGroup
	for _, s := range []*jobstore.Store{d1, d2, d1, d2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j, err := s.Complete(ctx, "c1", jobstore.Settled{Delivered: 2, Unknown: 1})
			require.NoError(t, err)
			require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, j.GetState())
		}()
	}
	wg.Wait()
	evs, final, err := d1.PendingEvents(ctx, "c1")
	require.NoError(t, err)
	require.True(t, final)
	require.Len(t, evs, 1, "one transition, one event")
	require.Equal(t, "c1/job.completed", evs[0].ID)
	require.True(t, evs[0].Direct, "its writer sends it itself")
	e, err := jobevent.Parse(evs[0].Body)
	require.NoError(t, err)
	require.Equal(t, jobevent.Event{
		ID: "c1/job.completed", Kind: jobevent.Completed, JobID: "c1", Time: c.Now(), State: "COMPLETED", FileName: "pay.csv",
		Counts: jobevent.Counts{Total: 3, Delivered: 2, Unknown: 1},
	}, e)
	require.GreaterOrEqual(t, h1.count()+h2.count(), 1, "the winner's hook heard of it")

	listed, err := d1.Outbox(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"c1"}, listed)

	// Sent: cleared (twice is harmless), and the final job leaves the register.
	require.NoError(t, d1.ClearEvent(ctx, "c1", evs[0].ID))
	require.NoError(t, d2.ClearEvent(ctx, "c1", evs[0].ID))
	ids, final = pendingIDs(t, d1, "c1")
	require.Empty(t, ids)
	require.True(t, final)
	require.NoError(t, d1.Unlist(ctx, "c1"))
	listed, err = d1.Outbox(ctx)
	require.NoError(t, err)
	require.Empty(t, listed)
	j, err := d1.Get(ctx, "c1")
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, j.GetState(), "clearing an event leaves the job alone")
}

func TestEachAutomaticPauseIsItsOwnEvent(t *testing.T) {
	ctx := context.Background()
	db, c := newOutboxTable(t)
	var h hooks
	s := storeOn(db, c, &h)
	sealedJob(t, s, &spoolv1.Job{JobId: "p1", FailureThreshold: &spoolv1.FailureThreshold{MaxFailures: proto.Int64(1)}}, 100)
	newCounter(s, "p1", "w").add(t, jobstore.Counts{Delivered: 5, Failed: 2})

	_, paused, err := s.PauseOnThreshold(ctx, "p1")
	require.NoError(t, err)
	require.True(t, paused)
	_, paused, err = s.PauseOnThreshold(ctx, "p1")
	require.NoError(t, err)
	require.False(t, paused, "paused already: no second pause, no second event")
	ids, _ := pendingIDs(t, s, "p1")
	require.Equal(t, []string{"p1/job.paused/1"}, ids)

	// A person resumes with a threshold still crossed (they set it anew);
	// the job pauses again: a new transition, a new id.
	_, err = s.SetPaused(ctx, "p1", false)
	require.NoError(t, err)
	_, err = s.UpdateThreshold(ctx, "p1", jobstore.ThresholdChange{MaxFailures: proto.Int64(1)})
	require.NoError(t, err)
	c.Advance(time.Second)
	_, paused, err = s.PauseOnThreshold(ctx, "p1")
	require.NoError(t, err)
	require.True(t, paused)
	evs, _, err := s.PendingEvents(ctx, "p1")
	require.NoError(t, err)
	require.Len(t, evs, 2)
	require.Equal(t, "p1/job.paused/2", evs[1].ID)
	e, err := jobevent.Parse(evs[1].Body)
	require.NoError(t, err)
	require.Equal(t, "THRESHOLD", e.Cause)
	require.NotEmpty(t, e.Reason)
	require.EqualValues(t, 2, e.Counts.Failed)

	// A canary's pause.
	sealedJob(t, s, &spoolv1.Job{JobId: "k1", Canary: &spoolv1.Canary{Rows: 5}}, 100)
	_, paused, err = s.PauseCanary(ctx, "k1", "canary of 5 delivered; resume to continue")
	require.NoError(t, err)
	require.True(t, paused)
	ids, _ = pendingIDs(t, s, "k1")
	require.Equal(t, []string{"k1/job.paused/1"}, ids)
}

func TestRowsEventsAreNewHighsAtMostOncePerInterval(t *testing.T) {
	ctx := context.Background()
	db, c := newOutboxTable(t)
	var h1, h2 hooks
	d1, d2 := storeOn(db, c, &h1), storeOn(db, c, &h2)
	sealedJob(t, d1, &spoolv1.Job{JobId: "r1"}, 100)
	j, err := d1.Get(ctx, "r1")
	require.NoError(t, err)

	for _, tc := range []struct {
		name    string
		s       *jobstore.Store
		kind    jobevent.Kind
		n       int64
		advance time.Duration
		want    bool
	}{
		{"first unknown rows", d1, jobevent.RowsUnknown, 3, 0, true},
		{"the same count from another dispatcher", d2, jobevent.RowsUnknown, 3, 0, false},
		{"a higher count too soon", d2, jobevent.RowsUnknown, 5, 30 * time.Second, false},
		{"a higher count a minute later", d2, jobevent.RowsUnknown, 5, 30 * time.Second, true},
		{"a lower count later", d1, jobevent.RowsUnknown, 4, 2 * time.Minute, false},
		{"dead letters are their own kind", d1, jobevent.RowsDeadLettered, 4, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.Advance(tc.advance)
			got, err := tc.s.AnnounceRows(ctx, j, tc.kind, tc.n)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	ids, _ := pendingIDs(t, d1, "r1")
	require.Equal(t, []string{"r1/job.rows_unknown/3", "r1/job.rows_unknown/5", "r1/job.rows_dead_lettered/4"}, ids)

	// No rows event once the job is final.
	_, err = d1.Complete(ctx, "r1", jobstore.Settled{Delivered: 100})
	require.NoError(t, err)
	c.Advance(2 * time.Minute)
	got, err := d1.AnnounceRows(ctx, j, jobevent.RowsUnknown, 9)
	require.NoError(t, err)
	require.False(t, got)
}

func TestEndingStoresEventsOfAbortAndRejectOnly(t *testing.T) {
	ctx := context.Background()
	db, c := newOutboxTable(t)
	// The ingestor's store has no hook: its events are for the sweeps.
	s := jobstore.New(db, "jobs", jobstore.WithClock(c.Now), jobstore.WithAbortAfter(time.Minute), jobstore.WithEvents())

	_, err := s.Start(ctx, &spoolv1.Job{JobId: "x1"}, "s1")
	require.NoError(t, err)
	_, err = s.EndStream(ctx, "x1", "s1", spoolv1.JobState_JOB_STATE_REJECTED, "row 3: amount: not a decimal")
	require.NoError(t, err)
	evs, final, err := s.PendingEvents(ctx, "x1")
	require.NoError(t, err)
	require.True(t, final)
	require.Len(t, evs, 1)
	require.Equal(t, "x1/job.rejected", evs[0].ID)
	require.False(t, evs[0].Direct)
	e, err := jobevent.Parse(evs[0].Body)
	require.NoError(t, err)
	require.Equal(t, "row 3: amount: not a decimal", e.Reason)

	// Control totals that do not match reject at the seal.
	_, err = s.Start(ctx, &spoolv1.Job{JobId: "x2", Control: &spoolv1.ControlTotals{RowCount: proto.Int64(5)}}, "s2")
	require.NoError(t, err)
	j, err := s.Seal(ctx, "x2", jobstore.Ingest{Received: 4, Published: 4, Stream: "s2", Actual: &spoolv1.ControlTotals{RowCount: proto.Int64(4)}})
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_REJECTED, j.GetState())
	ids, _ := pendingIDs(t, s, "x2")
	require.Equal(t, []string{"x2/job.rejected"}, ids)

	// A stream not resumed in time.
	j, err = s.Start(ctx, &spoolv1.Job{JobId: "x3"}, "s3")
	require.NoError(t, err)
	c.Advance(2 * time.Minute)
	j, err = s.ExpireIfAbandoned(ctx, j)
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_ABORTED, j.GetState())
	ids, _ = pendingIDs(t, s, "x3")
	require.Equal(t, []string{"x3/job.aborted"}, ids)

	// A cancel is a person's own act: no event.
	_, err = s.Create(ctx, &spoolv1.Job{JobId: "x4"})
	require.NoError(t, err)
	_, err = s.End(ctx, "x4", spoolv1.JobState_JOB_STATE_CANCELLED, "cancelled by an operator")
	require.NoError(t, err)
	ids, _ = pendingIDs(t, s, "x4")
	require.Empty(t, ids)

	listed, err := s.Outbox(ctx)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"x1", "x2", "x3"}, listed)
}

func TestLeaseEventLetsOneSweeperSend(t *testing.T) {
	ctx := context.Background()
	db, c := newOutboxTable(t)
	var h hooks
	s := storeOn(db, c, &h)
	sealedJob(t, s, &spoolv1.Job{JobId: "l1"}, 1)
	_, err := s.Complete(ctx, "l1", jobstore.Settled{Delivered: 1})
	require.NoError(t, err)
	const id = "l1/job.completed"

	for _, tc := range []struct {
		name    string
		advance time.Duration
		want    bool
	}{
		{"first sweeper", 0, true},
		{"second sweeper at once", 0, false},
		{"lease still running", 29 * time.Second, false},
		{"lease ran out: its holder died", time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.Advance(tc.advance)
			got, err := s.LeaseEvent(ctx, "l1", id, 30*time.Second)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	ids, _ := pendingIDs(t, s, "l1")
	require.Equal(t, []string{id}, ids, "a lease leaves the event pending")
	require.NoError(t, s.ClearEvent(ctx, "l1", id))
	c.Advance(time.Minute)
	got, err := s.LeaseEvent(ctx, "l1", id, 30*time.Second)
	require.NoError(t, err)
	require.False(t, got, "sent and cleared: nothing to lease")
}

func TestAStoreWithoutEventsKeepsNone(t *testing.T) {
	ctx := context.Background()
	db, c := newOutboxTable(t)
	s := jobstore.New(db, "jobs", jobstore.WithClock(c.Now))
	sealedJob(t, s, &spoolv1.Job{JobId: "n1", Canary: &spoolv1.Canary{Rows: 1}}, 2)
	_, paused, err := s.PauseCanary(ctx, "n1", "canary of 1 delivered; resume to continue")
	require.NoError(t, err)
	require.True(t, paused)
	j, err := s.Get(ctx, "n1")
	require.NoError(t, err)
	announced, err := s.AnnounceRows(ctx, j, jobevent.RowsUnknown, 1)
	require.NoError(t, err)
	require.False(t, announced)
	_, err = s.SetPaused(ctx, "n1", false)
	require.NoError(t, err)
	j, err = s.Complete(ctx, "n1", jobstore.Settled{Delivered: 2})
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, j.GetState())

	ids, final := pendingIDs(t, s, "n1")
	require.Empty(t, ids)
	require.True(t, final)
	listed, err := s.Outbox(ctx)
	require.NoError(t, err)
	require.Empty(t, listed)
}
