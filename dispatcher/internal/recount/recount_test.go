package recount_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	"github.com/spoolhq/spool/dispatcher/internal/openjobs"
	"github.com/spoolhq/spool/dispatcher/internal/recount"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

var t0 = time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)

const (
	sealed    = spoolv1.JobState_JOB_STATE_SEALED
	completed = spoolv1.JobState_JOB_STATE_COMPLETED
)

// jobs is a job store that repairs as the real one does: only a SEALED or
// COMPLETED job whose updated_at is still the one seen.
type jobs struct {
	now func() time.Time

	mu          sync.Mutex
	byID        map[string]*spoolv1.Job
	repairs     int
	completions int
	// race, when set, runs before a repair's condition is checked, as a
	// counter write landing between the read and the repair would.
	race func(j *spoolv1.Job)
}

func (f *jobs) Get(_ context.Context, id string) (*spoolv1.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.byID[id]
	if !ok {
		return nil, jobstore.ErrNotFound
	}
	return proto.Clone(j).(*spoolv1.Job), nil
}

func (f *jobs) RepairCounts(_ context.Context, id string, seen time.Time, c jobstore.Settled) (*spoolv1.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.byID[id]
	if f.race != nil && ok {
		f.race(j)
		f.race = nil
	}
	if !ok || (j.GetState() != sealed && j.GetState() != completed) || !j.GetUpdatedAt().AsTime().Equal(seen) {
		return nil, jobstore.ErrChanged
	}
	f.repairs++
	j.Delivered, j.Failed, j.Unknown = c.Delivered, c.Failed, c.Unknown
	j.UpdatedAt = timestamppb.New(f.now())
	if j.GetState() == sealed && c.Delivered+c.Failed+c.Unknown >= j.GetTotal() {
		j.State = completed
	}
	return proto.Clone(j).(*spoolv1.Job), nil
}

func (f *jobs) Complete(_ context.Context, id string, confirmed jobstore.Settled) (*spoolv1.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.byID[id]
	if !ok {
		return nil, jobstore.ErrNotFound
	}
	if j.GetState() == completed {
		return proto.Clone(j).(*spoolv1.Job), nil
	}
	if j.GetState() != sealed || confirmed.Sum() < j.GetTotal() {
		return proto.Clone(j).(*spoolv1.Job), jobstore.ErrState
	}
	f.completions++
	j.State = completed
	j.UpdatedAt = timestamppb.New(f.now())
	return proto.Clone(j).(*spoolv1.Job), nil
}

// counts is a ledger that answers fixed counts.
type counts struct {
	mu    sync.Mutex
	byJob map[string]ledger.Count
	calls int
	err   error
}

func (f *counts) Count(_ context.Context, id string) (ledger.Count, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.byJob[id], f.err
}

type fixture struct {
	r      *recount.Repairer
	jobs   *jobs
	ledger *counts
	now    time.Time
	logs   *bytes.Buffer
}

func newFixture(t testing.TB, job *spoolv1.Job, c ledger.Count, retention ...time.Duration) *fixture {
	t.Helper()
	f := &fixture{now: t0, logs: &bytes.Buffer{}, ledger: &counts{byJob: map[string]ledger.Count{job.GetJobId(): c}}}
	now := func() time.Time { return f.now }
	f.jobs = &jobs{now: now, byID: map[string]*spoolv1.Job{job.GetJobId(): job}}
	f.r = recount.New(f.jobs, f.ledger, recount.Options{
		Interval: 5 * time.Second, After: 10 * time.Second, Now: now, Retention: append(retention, 0)[0],
		Log: slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	f.r.Note(job.GetJobId())
	return f
}

// stalled is a sealed job of 10 rows whose counters last moved ago.
func stalled(ago time.Duration, delivered int64) *spoolv1.Job {
	return &spoolv1.Job{
		JobId: "job", State: sealed, Total: 10, Delivered: delivered, Retries: 4,
		UpdatedAt: timestamppb.New(t0.Add(-ago)),
	}
}

// quiet is a ledger count whose last change was 30 s ago.
func quiet(delivered, failed, unknown int64) ledger.Count {
	return ledger.Count{Delivered: delivered, Failed: failed, Unknown: unknown, LastChange: t0.Add(-30 * time.Second).UnixMilli()}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name        string
		job         *spoolv1.Job
		count       ledger.Count
		wantCounts  int
		wantRepairs int
		// wantCompletions are completions without a repair.
		wantCompletions int
		retention       time.Duration
		created         time.Time
		want            jobstore.Settled
		wantState       spoolv1.JobState
		wantTracked     []string
	}{
		{
			name: "stalled job repaired and completed", job: stalled(30*time.Second, 7), count: quiet(8, 1, 1),
			wantCounts: 1, wantRepairs: 1, want: jobstore.Settled{Delivered: 8, Failed: 1, Unknown: 1}, wantState: completed,
		},
		{
			name: "stalled job repaired, rows still pending", job: stalled(30*time.Second, 2),
			count:      ledger.Count{Delivered: 5, Pending: 5, LastChange: t0.Add(-time.Minute).UnixMilli()},
			wantCounts: 1, wantRepairs: 1, want: jobstore.Settled{Delivered: 5}, wantState: sealed, wantTracked: []string{"job"},
		},
		{
			name: "live job untouched", job: stalled(2*time.Second, 7), count: quiet(10, 0, 0),
			want: jobstore.Settled{Delivered: 7}, wantState: sealed, wantTracked: []string{"job"},
		},
		{
			// A dispatcher settled a row a moment ago and may hold its delta.
			name: "recent ledger change waits", job: stalled(30*time.Second, 7),
			count:      ledger.Count{Delivered: 10, LastChange: t0.Add(-time.Second).UnixMilli()},
			wantCounts: 1, want: jobstore.Settled{Delivered: 7}, wantState: sealed, wantTracked: []string{"job"},
		},
		{
			name: "counts equal, no write", job: stalled(30*time.Second, 7), count: quiet(7, 0, 0),
			wantCounts: 1, want: jobstore.Settled{Delivered: 7}, wantState: sealed, wantTracked: []string{"job"},
		},
		{
			// Counted twice somewhere (a repair that raced a live
			// dispatcher): the ledger is the truth, and the repair lowers.
			name: "ledger below the record, lowered", job: stalled(30*time.Second, 7), count: quiet(6, 0, 0),
			wantCounts: 1, wantRepairs: 1, want: jobstore.Settled{Delivered: 6}, wantState: sealed, wantTracked: []string{"job"},
		},
		{
			name: "job older than the ledger's retention, not lowered", job: stalled(30*time.Second, 7), count: quiet(6, 0, 0),
			retention: time.Minute, created: t0.Add(-time.Hour),
			wantCounts: 1, want: jobstore.Settled{Delivered: 7}, wantState: sealed, wantTracked: []string{"job"},
		},
		{
			// Every row counted, but a failed completion left it SEALED.
			name: "counts right and settled, completed on the count", job: stalled(30*time.Second, 10), count: quiet(10, 0, 0),
			wantCounts: 1, wantCompletions: 1, want: jobstore.Settled{Delivered: 10}, wantState: completed,
		},
		{
			name: "receiving job waits", job: &spoolv1.Job{JobId: "job", State: spoolv1.JobState_JOB_STATE_RECEIVING, UpdatedAt: timestamppb.New(t0.Add(-time.Hour))},
			count: quiet(3, 0, 0), wantState: spoolv1.JobState_JOB_STATE_RECEIVING, wantTracked: []string{"job"},
		},
		{
			name: "final job forgotten", job: &spoolv1.Job{JobId: "job", State: completed, Total: 10, Delivered: 9, UpdatedAt: timestamppb.New(t0.Add(-time.Hour))},
			count: quiet(10, 0, 0), want: jobstore.Settled{Delivered: 9}, wantState: completed,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.created.IsZero() {
				tt.job.CreatedAt = timestamppb.New(tt.created)
			}
			f := newFixture(t, tt.job, tt.count, tt.retention)
			f.r.Check(t.Context())
			require.Equal(t, tt.wantCompletions, f.jobs.completions, "completions")

			require.Equal(t, tt.wantCounts, f.ledger.calls, "ledger counts")
			require.Equal(t, tt.wantRepairs, f.jobs.repairs, "repairs")
			j := f.job(t)
			require.Equal(t, tt.want, jobstore.Settled{Delivered: j.GetDelivered(), Failed: j.GetFailed(), Unknown: j.GetUnknown()})
			require.Equal(t, tt.wantState, j.GetState())
			require.Equal(t, tt.wantTracked, nilIfEmpty(f.r.Tracked()))
			if tt.wantRepairs > 0 {
				require.Contains(t, f.logs.String(), "job counters repaired from the ledger")
				require.Contains(t, f.logs.String(), "job_id=job")
				require.EqualValues(t, 4, j.GetRetries(), "a repair leaves the counters the ledger does not hold")
			} else {
				require.NotContains(t, f.logs.String(), "job counters repaired")
			}
		})
	}
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

func TestRefusedRepairIsTriedAgain(t *testing.T) {
	f := newFixture(t, stalled(30*time.Second, 7), quiet(10, 0, 0))
	// A late delta lands between the read and the repair.
	f.jobs.race = func(j *spoolv1.Job) {
		j.Delivered++
		j.UpdatedAt = timestamppb.New(t0.Add(-time.Millisecond))
	}
	f.r.Check(t.Context())
	require.Zero(t, f.jobs.repairs)
	require.Equal(t, []string{"job"}, f.r.Tracked())
	require.Contains(t, f.logs.String(), "counter repair refused")
	j := f.job(t)
	require.EqualValues(t, 8, j.GetDelivered(), "the late delta stands")

	// The job is live again, so the next check leaves it alone; once it
	// is quiet for the repair delay, it is repaired.
	f.r.Check(t.Context())
	require.Zero(t, f.jobs.repairs)
	f.now = f.now.Add(10 * time.Second)
	f.r.Check(t.Context())
	require.Equal(t, 1, f.jobs.repairs)
	j = f.job(t)
	require.Equal(t, completed, j.GetState())
	require.EqualValues(t, 10, j.GetDelivered())
	require.Empty(t, f.r.Tracked())
}

func TestCountsAgainOnlyAfterBackOff(t *testing.T) {
	f := newFixture(t, stalled(30*time.Second, 7), quiet(7, 0, 0))
	f.r.Check(t.Context())
	require.Equal(t, 1, f.ledger.calls)
	f.r.Check(t.Context())
	require.Equal(t, 1, f.ledger.calls, "nothing changed: the ledger is not read again at once")

	// Deltas of a killed dispatcher were lost meanwhile; after the
	// back-off the repairer counts again and finds them.
	f.ledger.byJob["job"] = quiet(10, 0, 0)
	f.now = f.now.Add(5 * time.Second)
	f.r.Check(t.Context())
	require.Equal(t, 2, f.ledger.calls)
	require.Equal(t, 1, f.jobs.repairs)
}

func TestErrorsKeepTheJob(t *testing.T) {
	f := newFixture(t, stalled(30*time.Second, 7), quiet(10, 0, 0))
	f.ledger.err = errors.New("throttled")
	f.r.Check(t.Context())
	require.Zero(t, f.jobs.repairs)
	require.Equal(t, []string{"job"}, f.r.Tracked())
	require.Contains(t, f.logs.String(), "throttled")

	f.ledger.err = nil
	f.r.Check(t.Context())
	require.Equal(t, 1, f.jobs.repairs)
}

func TestMissingJobIsForgotten(t *testing.T) {
	f := newFixture(t, stalled(30*time.Second, 7), quiet(10, 0, 0))
	f.r.Note("gone")
	require.Equal(t, []string{"gone", "job"}, f.r.Tracked())
	f.r.Check(t.Context())
	require.Empty(t, f.r.Tracked(), "gone does not exist; job completed")
}

func TestNoteForgetsTheOldestPastTheBound(t *testing.T) {
	now := t0
	r := recount.New(&jobs{}, &counts{}, recount.Options{Now: func() time.Time { return now }})
	note := func(id string) {
		now = now.Add(time.Millisecond)
		r.Note(id)
	}
	for i := range 1024 {
		note(fmt.Sprintf("job-%04d", i))
	}
	// Noting a tracked job again keeps it fresh.
	note("job-0000")
	note("job-1024")
	tracked := r.Tracked()
	require.Len(t, tracked, 1024)
	require.Contains(t, tracked, "job-0000")
	require.NotContains(t, tracked, "job-0001")
	require.Contains(t, tracked, "job-1024")
}

// register is an in-memory register of open jobs, shared by the repairers
// of one test as the table is by the dispatchers.
type register struct {
	mu     sync.Mutex
	marked map[string]time.Time
	now    func() time.Time
}

func (g *register) Mark(_ context.Context, id string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.marked[id] = g.now()
	return nil
}

func (g *register) List(context.Context) ([]string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Sorted(maps.Keys(g.marked)), nil
}

func (g *register) Unmark(_ context.Context, id string, cutoff time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m, ok := g.marked[id]; ok && m.After(cutoff) {
		return openjobs.ErrMarked
	}
	delete(g.marked, id)
	return nil
}

// job reads "job" from the fixture's store.
func (f *fixture) job(t *testing.T) *spoolv1.Job {
	t.Helper()
	j, err := f.jobs.Get(t.Context(), "job")
	require.NoError(t, err)
	return j
}

// register is an empty register on the fixture's clock.
func (f *fixture) register() *register {
	return &register{marked: map[string]time.Time{}, now: func() time.Time { return f.now }}
}

// markedElsewhere returns a register in which another dispatcher noted and
// marked "job", as one that worked on it does.
func (f *fixture) markedElsewhere(t *testing.T) *register {
	open := f.register()
	other := f.repairer(open, false)
	other.Note("job")
	other.Mark(t.Context())
	return open
}

func (f *fixture) repairer(open recount.Open, keepUnknown bool) *recount.Repairer {
	return recount.New(f.jobs, f.ledger, recount.Options{
		Interval: 5 * time.Second, After: 10 * time.Second, Now: func() time.Time { return f.now },
		Log: slog.New(slog.NewTextHandler(f.logs, nil)), Open: open, KeepUnknown: keepUnknown,
	})
}

// Every dispatcher that worked on a job is killed before its counters are
// repaired, and its messages are all gone: a dispatcher started afterwards
// never reads the job, yet finds it in the register and repairs it.
func TestJobOfKilledDispatchersIsRepairedByANewOne(t *testing.T) {
	f := newFixture(t, stalled(30*time.Second, 7), quiet(10, 0, 0))
	// The dispatcher that marked the job is SIGKILLed; its tracked jobs die
	// with it.
	open := f.markedElsewhere(t)

	fresh := f.repairer(open, false)
	fresh.Sync(t.Context())
	require.Equal(t, []string{"job"}, fresh.Tracked())
	f.now = f.now.Add(10 * time.Second)
	fresh.Check(t.Context())
	require.Equal(t, 1, f.jobs.repairs)
	j := f.job(t)
	require.Equal(t, completed, j.GetState())
	require.EqualValues(t, 10, j.GetDelivered())
	require.Empty(t, fresh.Tracked(), "final and right: forgotten")
	ids, err := open.List(t.Context())
	require.NoError(t, err)
	require.Empty(t, ids, "and out of the register")
}

// Under retry-with-key an UNKNOWN row is resent after its job completed;
// the delta that moves it to delivered was lost with a killed dispatcher.
// The completed job is repaired, and kept while the ledger counts rows
// unknown that will be resent.
func TestCompletedJobWithResentUnknownIsRepaired(t *testing.T) {
	job := &spoolv1.Job{
		JobId: "job", State: completed, Total: 10, Delivered: 8, Unknown: 2, Retries: 4,
		UpdatedAt: timestamppb.New(t0.Add(-30 * time.Second)),
	}
	f := newFixture(t, job, quiet(9, 0, 1))
	open := f.register()
	r := f.repairer(open, true)
	r.Note("job")
	r.Mark(t.Context())
	f.now = f.now.Add(10 * time.Second)
	r.Check(t.Context())
	require.Equal(t, 1, f.jobs.repairs)
	j := f.job(t)
	require.Equal(t, completed, j.GetState())
	require.Equal(t, jobstore.Settled{Delivered: 9, Unknown: 1}, jobstore.Settled{Delivered: j.GetDelivered(), Failed: j.GetFailed(), Unknown: j.GetUnknown()})
	require.Equal(t, []string{"job"}, r.Tracked(), "one row will still be resent")

	// The last resend settles; its delta is lost too.
	f.ledger.byJob["job"] = ledger.Count{Delivered: 10, LastChange: f.now.UnixMilli()}
	f.now = f.now.Add(time.Minute)
	r.Check(t.Context())
	j = f.job(t)
	require.EqualValues(t, 10, j.GetDelivered())
	require.Zero(t, j.GetUnknown())
	r.Check(t.Context())
	require.Empty(t, r.Tracked())
	ids, err := open.List(t.Context())
	require.NoError(t, err)
	require.Empty(t, ids)
}

// A job marked again lately stays in the register: the dispatcher that
// marked it may hold deltas of it.
func TestRecentlyMarkedJobStaysOpen(t *testing.T) {
	job := &spoolv1.Job{JobId: "job", State: completed, Total: 10, Delivered: 10, UpdatedAt: timestamppb.New(t0.Add(-time.Hour))}
	f := newFixture(t, job, quiet(10, 0, 0))
	open := f.markedElsewhere(t)

	r := f.repairer(open, false)
	r.Sync(t.Context())
	r.Check(t.Context())
	require.Equal(t, []string{"job"}, r.Tracked())
	f.now = f.now.Add(10 * time.Second)
	r.Check(t.Context())
	require.Empty(t, r.Tracked())
}
