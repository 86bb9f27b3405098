// Package recount repairs job counters from the delivery ledger.
//
// Dispatchers batch counter deltas in memory and write them every flush
// interval (package tally), so a dispatcher killed between a ledger write
// and its next flush loses the deltas it held: the job's counters fall
// short of the ledger, and a SEALED job never sees every row settled and
// never completes. The ledger is the truth. Every dispatcher runs a
// Repairer that looks at the jobs it worked on or is watched for, and sets
// the counters of a stalled one to what the ledger holds.
//
// A repair must not race live dispatchers. It only touches a job whose
// record and ledger both went unchanged for the repair delay, far longer
// than the flush interval, so that any dispatcher still alive has written
// the deltas of the rows counted; and the write is conditional on the
// record being the one read before counting, so a delta landing meanwhile
// refuses the repair, and it is tried again later. Several dispatchers may
// repair one job at once: the condition lets one win, and the others find
// the counts right.
//
// It is its own package, not part of tally: the tally only adds what this
// process saw, while the repair reads the job record and the ledger that
// every process writes, on its own schedule.
package recount

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

// Jobs is the part of the job store a repair reads and writes.
type Jobs interface {
	Get(ctx context.Context, id string) (*spoolv1.Job, error)
	RepairCounts(ctx context.Context, id string, seen time.Time, c jobstore.Settled) (*spoolv1.Job, error)
}

// Ledger counts a job's ledger records.
type Ledger interface {
	Count(ctx context.Context, jobID string) (ledger.Count, error)
}

// Defaults for Options.
const (
	DefaultInterval = 5 * time.Second
	DefaultAfter    = 10 * time.Second
)

const (
	// maxJobs bounds the jobs tracked; past it, the one noted longest ago
	// is forgotten.
	maxJobs = 1024
	// maxWait bounds the back-off between two ledger counts of a stalled
	// job whose counts were right, such as one whose last rows wait for
	// their redelivery.
	maxWait = 5 * time.Minute
)

// Options configure a Repairer. Zero values get the defaults.
type Options struct {
	// Interval is how often the tracked jobs are looked at.
	Interval time.Duration
	// After is how long a job's record and ledger must have gone unchanged
	// before its counters are repaired: longer than any live dispatcher
	// takes to write its deltas, and than the ledger index lags.
	After time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	Log *slog.Logger
}

// Repairer tracks the jobs a dispatcher works on and repairs their
// counters when they stall. It is safe for concurrent use.
type Repairer struct {
	jobs   Jobs
	ledger Ledger
	o      Options

	mu      sync.Mutex
	tracked map[string]*entry
}

// entry is what the repairer knows of one tracked job.
type entry struct {
	noted time.Time
	// seen is the record's updated_at (Unix ms) when a ledger count last
	// found the counters right; until the record changes, the next count
	// waits until next, backing off by wait.
	seen int64
	next time.Time
	wait time.Duration
}

// New returns a repairer.
func New(jobs Jobs, l Ledger, o Options) *Repairer {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.After <= 0 {
		o.After = DefaultAfter
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Repairer{jobs: jobs, ledger: l, o: o, tracked: map[string]*entry{}}
}

// Note tracks a job until it is final. It is cheap: call it whenever the
// job is read.
func (r *Repairer) Note(jobID string) {
	now := r.o.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.tracked[jobID]; ok {
		e.noted = now
		return
	}
	if len(r.tracked) >= maxJobs {
		var oldest string
		for id, e := range r.tracked {
			if oldest == "" || e.noted.Before(r.tracked[oldest].noted) {
				oldest = id
			}
		}
		delete(r.tracked, oldest)
	}
	r.tracked[jobID] = &entry{noted: now}
}

// Tracked returns the ids of the tracked jobs, sorted.
func (r *Repairer) Tracked() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.tracked))
}

// Run looks at the tracked jobs every interval until ctx is done.
func (r *Repairer) Run(ctx context.Context) {
	tick := time.NewTicker(r.o.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			r.Check(ctx)
		}
	}
}

// Check looks at every tracked job once, and repairs those that stalled.
// Errors are logged: the next check tries again.
func (r *Repairer) Check(ctx context.Context) {
	for _, id := range r.Tracked() {
		if ctx.Err() != nil {
			return
		}
		r.check(ctx, id)
	}
}

func (r *Repairer) check(ctx context.Context, id string) {
	r.mu.Lock()
	e, ok := r.tracked[id]
	var cur entry
	if ok {
		cur = *e
	}
	r.mu.Unlock()
	if !ok {
		return
	}
	next, keep := r.look(ctx, id, cur)
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.tracked[id]; ok {
		if !keep {
			delete(r.tracked, id)
			return
		}
		// Note may have moved noted meanwhile; the rest is ours.
		e.seen, e.next, e.wait = next.seen, next.next, next.wait
	}
}

// look checks one job and returns its entry after the check, and whether to
// keep tracking it.
func (r *Repairer) look(ctx context.Context, id string, e entry) (entry, bool) {
	j, err := r.jobs.Get(ctx, id)
	if errors.Is(err, jobstore.ErrNotFound) {
		return e, false
	}
	if err != nil {
		r.o.Log.WarnContext(ctx, "read job for counter repair", "job_id", id, "error", err)
		return e, true
	}
	switch j.GetState() {
	case spoolv1.JobState_JOB_STATE_SEALED:
	case spoolv1.JobState_JOB_STATE_RECEIVING:
		return e, true
	default:
		return e, false
	}
	have := jobstore.Settled{Delivered: j.GetDelivered(), Failed: j.GetFailed(), Unknown: j.GetUnknown()}
	now := r.o.Now()
	updated := j.GetUpdatedAt().AsTime()
	if now.Sub(updated) < r.o.After {
		// Live: dispatchers are still writing, and may hold deltas.
		return e, true
	}
	if updated.UnixMilli() == e.seen && now.Before(e.next) {
		return e, true
	}
	c, err := r.ledger.Count(ctx, id)
	if err != nil {
		r.o.Log.WarnContext(ctx, "count ledger for counter repair", "job_id", id, "error", err)
		return e, true
	}
	if c.LastChange != 0 && now.Sub(time.UnixMilli(c.LastChange)) < r.o.After {
		// A row changed recently: the dispatcher that changed it may not
		// have written its delta yet.
		return e, true
	}
	want := c.Settled()
	backOff := func() entry {
		e.seen = updated.UnixMilli()
		e.wait = min(max(2*e.wait, r.o.Interval), maxWait)
		e.next = now.Add(e.wait)
		return e
	}
	switch {
	case sum(want) < sum(have):
		// Lost deltas only ever leave the counters short. Fewer settled
		// rows in the ledger means its index is behind (or something else
		// is wrong); lowering the counters could only hide it.
		r.o.Log.WarnContext(ctx, "ledger counts fewer settled rows than the job; not repaired", "job_id", id,
			"delivered", have.Delivered, "failed", have.Failed, "unknown", have.Unknown,
			"ledger_delivered", want.Delivered, "ledger_failed", want.Failed, "ledger_unknown", want.Unknown)
		return backOff(), true
	case want == have && sum(have) < j.GetTotal():
		// Right, and rows still to settle: their deltas will come.
		return backOff(), true
	}
	// Counts that differ are repaired; equal ones that settle every row
	// are written again too, so that the job, which a failed completion
	// left SEALED, completes.
	got, err := r.jobs.RepairCounts(ctx, id, updated, want)
	if errors.Is(err, jobstore.ErrChanged) {
		r.o.Log.DebugContext(ctx, "counter repair refused; job changed since read", "job_id", id)
		return e, true
	}
	if err != nil {
		r.o.Log.WarnContext(ctx, "repair job counters", "job_id", id, "error", err)
		return e, true
	}
	r.o.Log.InfoContext(ctx, "job counters repaired from the ledger", "job_id", id, "total", j.GetTotal(),
		"delivered_before", have.Delivered, "failed_before", have.Failed, "unknown_before", have.Unknown,
		"delivered", want.Delivered, "failed", want.Failed, "unknown", want.Unknown,
		"pending", c.Pending, "state", got.GetState().String())
	return entry{noted: e.noted}, got.GetState() == spoolv1.JobState_JOB_STATE_SEALED
}

func sum(c jobstore.Settled) int64 { return c.Delivered + c.Failed + c.Unknown }
