// Package recount repairs job counters from the delivery ledger.
//
// Dispatchers count in memory and write their counts every flush interval
// (package tally), so a dispatcher killed between a ledger write and its
// next flush loses what it counted since: the job's counters fall short
// of the ledger, and a SEALED job never sees every row settled and
// never completes. The ledger is the truth. Every dispatcher runs a
// Repairer that looks at the jobs it worked on or is watched for, and sets
// the counters of a stalled one to what the ledger holds.
//
// A repair is an absolute write (jobstore.RepairCounts): the correction
// that makes the job's counters read what the ledger holds, raising or
// lowering them, so a repair applied twice, or a second repair of a job
// already right, changes nothing, and one computed while a live
// dispatcher still held counts is undone by the next. A job completes on
// the ledger's count alone (jobstore.Complete), never on counters.
//
// A repair must not race live dispatchers. It only touches a job whose
// record and ledger both went unchanged for the repair delay, far longer
// than the flush interval, so that any dispatcher still alive has written
// its counts of the rows counted; and the repair is refused when any of
// the job's items changed since it was read before counting (a count
// landing meanwhile), and tried again later. Several dispatchers may
// repair one job at once: the repair item's version lets one win, and the
// others find the counts right.
//
// Which jobs to look at is kept in a register shared by every dispatcher
// (Options.Open, package openjobs), not only in memory: under repeated
// kills, every process that worked on a job may be gone by the time its
// last rows settle, and a process started after the job's messages were
// all deleted never hears of it. A job leaves the register only once it is
// final and its counters agree with the ledger. A COMPLETED job is
// repaired too: under retry-with-key an UNKNOWN row is resent after the
// job completed, and the count moving it to Delivered can be lost like any
// other.
//
// It is its own package, not part of tally: the tally only writes what this
// process saw, while the repair reads the job record and the ledger that
// every process writes, on its own schedule.
package recount

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	"github.com/spoolhq/spool/dispatcher/internal/openjobs"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/positive"
)

// Jobs is the part of the job store a repair reads and writes.
type Jobs interface {
	Get(ctx context.Context, id string) (*spoolv1.Job, error)
	RepairCounts(ctx context.Context, id string, seen time.Time, c jobstore.Settled) (*spoolv1.Job, error)
	Complete(ctx context.Context, id string, confirmed jobstore.Settled) (*spoolv1.Job, error)
}

// Open is the register of open jobs shared by every dispatcher.
type Open interface {
	Mark(ctx context.Context, jobID string) error
	List(ctx context.Context) ([]string, error)
	// Unmark removes the job unless it was marked after cutoff
	// (openjobs.ErrMarked).
	Unmark(ctx context.Context, jobID string, cutoff time.Time) error
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
	// Open, when set, is the shared register of open jobs: the jobs this
	// process notes are marked in it, and the jobs listed in it are
	// tracked too.
	Open Open
	// Retention is how long the ledger keeps settled records (zero: for
	// ever). A job older than that may have lost records to expiry, so its
	// counters are never lowered to the ledger's count.
	Retention time.Duration
	// KeepUnknown says UNKNOWN rows are resent (retry-with-key): a
	// COMPLETED job whose ledger still counts some stays tracked, because
	// their resends will move its counters again.
	KeepUnknown bool
}

// Repairer tracks the jobs a dispatcher works on and repairs their
// counters when they stall. It is safe for concurrent use.
type Repairer struct {
	jobs   Jobs
	ledger Ledger
	o      Options

	mu      sync.Mutex
	tracked map[string]*entry
	// kick wakes the marker when a job is due to be marked open.
	kick chan struct{}
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
	// marked is when this process last marked the job open; due says it
	// should be marked (again).
	marked time.Time
	due    bool
}

// New returns a repairer.
func New(jobs Jobs, l Ledger, o Options) *Repairer {
	o.Interval = positive.Or(o.Interval, DefaultInterval)
	o.After = positive.Or(o.After, DefaultAfter)
	if o.Now == nil {
		o.Now = time.Now
	}
	o.Log = cmp.Or(o.Log, slog.Default())
	return &Repairer{jobs: jobs, ledger: l, o: o, tracked: map[string]*entry{}, kick: make(chan struct{}, 1)}
}

// markEvery is how often a job this process keeps working on is marked
// open again, and unmarkSlack how recent a mark keeps a job open: a
// dispatcher marks a job at most markEvery before it handles a message of
// it, so a repairer that saw no mark within unmarkSlack before its ledger
// count knows nobody handled one since.
func (r *Repairer) markEvery() time.Duration   { return r.o.After / 4 }
func (r *Repairer) unmarkSlack() time.Duration { return r.o.After / 2 }

// Note tracks a job until it is final. It is cheap: call it whenever the
// job is read.
func (r *Repairer) Note(jobID string) {
	now := r.o.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.tracked[jobID]; ok {
		e.noted = now
		if r.o.Open != nil && !e.due && now.Sub(e.marked) >= r.markEvery() {
			e.due = true
			r.wake()
		}
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
	r.tracked[jobID] = &entry{noted: now, due: r.o.Open != nil}
	r.wake()
}

func (r *Repairer) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Mark marks every job due in the register; a failed mark is tried again
// at the next.
func (r *Repairer) Mark(ctx context.Context) {
	if r.o.Open == nil {
		return
	}
	r.mu.Lock()
	var due []string
	for id, e := range r.tracked {
		if e.due {
			due = append(due, id)
		}
	}
	r.mu.Unlock()
	for _, id := range due {
		if err := r.o.Open.Mark(ctx, id); err != nil {
			r.o.Log.WarnContext(ctx, "mark job open", "job_id", id, "error", err)
			continue
		}
		now := r.o.Now()
		r.mu.Lock()
		if e, ok := r.tracked[id]; ok {
			e.due, e.marked = false, now
		}
		r.mu.Unlock()
	}
}

// Sync tracks every job in the register this process does not track yet.
func (r *Repairer) Sync(ctx context.Context) {
	if r.o.Open == nil {
		return
	}
	ids, err := r.o.Open.List(ctx)
	if err != nil {
		r.o.Log.WarnContext(ctx, "list open jobs", "error", err)
		return
	}
	now := r.o.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if _, ok := r.tracked[id]; !ok && len(r.tracked) < maxJobs {
			// Listed, so marked already; the first Note marks it again.
			r.tracked[id] = &entry{noted: now}
		}
	}
}

// Tracked returns the ids of the tracked jobs, sorted.
func (r *Repairer) Tracked() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.tracked))
}

// Run marks the jobs this process notes open as they come, and looks at
// the open and tracked jobs at once and then every interval, until ctx is
// done.
func (r *Repairer) Run(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-r.kick:
				r.Mark(ctx)
			}
		}
	}()
	defer func() { <-done }()
	tick := time.NewTicker(r.o.Interval)
	defer tick.Stop()
	for {
		r.Sync(ctx)
		r.Check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
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
	now := r.o.Now()
	j, err := r.jobs.Get(ctx, id)
	if errors.Is(err, jobstore.ErrNotFound) {
		return r.forget(ctx, id, e, now)
	}
	if err != nil {
		r.o.Log.WarnContext(ctx, "read job for counter repair", "job_id", id, "error", err)
		return e, true
	}
	have := jobstore.SettledOf(j)
	switch j.GetState() {
	case spoolv1.JobState_JOB_STATE_SEALED:
	case spoolv1.JobState_JOB_STATE_RECEIVING:
		return e, true
	case spoolv1.JobState_JOB_STATE_COMPLETED:
		if have.Unknown == 0 {
			// Every row delivered or rejected: nothing moves any more.
			return r.forget(ctx, id, e, now)
		}
	default:
		return r.forget(ctx, id, e, now)
	}
	updated := j.GetUpdatedAt().AsTime()
	if now.Sub(updated) < r.o.After {
		// Live: dispatchers are still writing, and may hold counts.
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
		// have written its count yet.
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
	case want.Sum() < have.Sum() && r.o.Retention > 0 && now.Sub(j.GetCreatedAt().AsTime()) > r.o.Retention:
		// Settled records of a job this old may have expired: the ledger
		// no longer knows every row.
		r.o.Log.WarnContext(ctx, "ledger counts fewer settled rows than the job, which is older than the ledger's retention; not repaired", "job_id", id,
			"delivered", have.Delivered, "failed", have.Failed, "unknown", have.Unknown, "duplicates", have.Duplicates,
			"ledger_delivered", want.Delivered, "ledger_failed", want.Failed, "ledger_unknown", want.Unknown,
			"ledger_duplicates", want.Duplicates)
		return backOff(), true
	case want == have && have.Sum() < j.GetTotal():
		// Right, and rows still to settle: their counts will come.
		return backOff(), true
	case want == have && j.GetState() == spoolv1.JobState_JOB_STATE_COMPLETED:
		if r.o.KeepUnknown && want.Unknown > 0 {
			// Right, and the unknown rows will be resent.
			return backOff(), true
		}
		return r.forget(ctx, id, backOff(), now)
	}
	var got *spoolv1.Job
	if want == have {
		// Right, and every row settled, but a failed completion (or a
		// ledger index that lagged its counters) left the job SEALED:
		// this count is the confirmation completing needs.
		got, err = r.jobs.Complete(ctx, id, want)
		if err != nil && !errors.Is(err, jobstore.ErrState) {
			r.o.Log.WarnContext(ctx, "complete job counted settled", "job_id", id, "error", err)
			return e, true
		}
		if got.GetState() == spoolv1.JobState_JOB_STATE_COMPLETED && (!r.o.KeepUnknown || want.Unknown == 0) {
			return r.forget(ctx, id, e, now)
		}
		return backOff(), true
	}
	// Counts that differ are repaired, up or down, and the job completes
	// when they settle every row.
	got, err = r.jobs.RepairCounts(ctx, id, updated, want)
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
		"delivered", want.Delivered, "failed", want.Failed, "unknown", want.Unknown, "duplicates", want.Duplicates,
		"pending", c.Pending, "state", got.GetState().String())
	next := entry{noted: e.noted, marked: e.marked, due: e.due}
	if got.GetState() == spoolv1.JobState_JOB_STATE_SEALED || (r.o.KeepUnknown && want.Unknown > 0) {
		return next, true
	}
	return r.forget(ctx, id, next, now)
}

// forget stops tracking a final job and takes it out of the register,
// unless a dispatcher marked it open again lately: it may hold counts of
// the job, which is then looked at again later.
func (r *Repairer) forget(ctx context.Context, id string, e entry, now time.Time) (entry, bool) {
	if r.o.Open == nil {
		return e, false
	}
	err := r.o.Open.Unmark(ctx, id, now.Add(-r.unmarkSlack()))
	if errors.Is(err, openjobs.ErrMarked) {
		r.o.Log.DebugContext(ctx, "final job left open; marked again lately", "job_id", id)
		return e, true
	}
	if err != nil {
		r.o.Log.WarnContext(ctx, "unmark final job", "job_id", id, "error", err)
		return e, true
	}
	return e, false
}
