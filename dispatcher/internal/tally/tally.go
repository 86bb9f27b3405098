// Package tally keeps the job counters one dispatcher counts, writes them to
// the job table, and completes the jobs whose rows its writes settle.
//
// Every delivery changes a counter, but writing each change would make a big
// job's record a hot key that every dispatcher hammers. Counts are summed in
// memory instead and written once per job per flush interval.
//
// What is written is this dispatcher's cumulative counts of the job, whole,
// to its own counter item (jobstore.WriteCounts), as a version that grows
// with every write. Nothing is ever added to a stored figure, so a write
// applied twice (the SDK retries a write whose answer was lost), a write
// that failed after it was applied, or one tried again at the next flush
// leaves the job's counters exact: the newest version stands. Readers sum
// every dispatcher's item. A dispatcher killed between two flushes loses
// only what it counted since its last write; package recount repairs that
// from the ledger.
//
// A job is completed only when its delivery ledger settles every row:
// after a write whose job's counters then say every row is settled, the
// tally counts the ledger and completes the job on that count
// (jobstore.Complete), or tries again at later flushes, backing off, for
// as long as the ledger's index lags the counters.
package tally

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

// Store is the part of the job store the tally writes to.
type Store interface {
	WriteCounts(ctx context.Context, id string, w jobstore.CounterWrite) error
	Get(ctx context.Context, id string) (*spoolv1.Job, error)
	Complete(ctx context.Context, id string, confirmed jobstore.Settled) (*spoolv1.Job, error)
}

// Ledger counts a job's ledger records.
type Ledger interface {
	Count(ctx context.Context, jobID string) (ledger.Count, error)
}

const (
	// idle is how long a job's counts stay in memory once written and
	// unchanged. A job counted again later gets a new counter item, so
	// memory stays bounded in a dispatcher that runs for months.
	idle = 10 * time.Minute
	// maxCheckWait bounds the back-off between two ledger counts of a job
	// whose counters say settled while its ledger does not yet.
	maxCheckWait = time.Minute
)

// Tally keeps one dispatcher's counts per job until they are written. It
// is safe for concurrent use.
type Tally struct {
	store  Store
	ledger Ledger
	writer string
	log    *slog.Logger
	now    func() time.Time

	// flushing serialises flushes, so versions are written in order.
	flushing sync.Mutex

	mu     sync.Mutex
	jobs   map[string]*entry
	serial int64
}

// entry is what the tally holds of one job.
type entry struct {
	// writer names the counter item: the dispatcher's, and the entry's
	// serial, so an entry created again after it was forgotten starts a
	// new item.
	writer  string
	counts  jobstore.Counts // cumulative since the entry was created
	written jobstore.Counts // as last written successfully
	version int64
	changed time.Time
	// check says the job's completion is to be looked at, from next on,
	// backing off by wait.
	check bool
	next  time.Time
	wait  time.Duration
}

// New returns an empty tally writing to store as writer, which names this
// dispatcher process uniquely (its owner id), and counting l to complete
// jobs.
func New(store Store, l Ledger, writer string, log *slog.Logger, opts ...Option) *Tally {
	t := &Tally{store: store, ledger: l, writer: writer, log: log, now: time.Now, jobs: map[string]*entry{}}
	for _, o := range opts {
		o(t)
	}
	return t
}

// Option configures a Tally.
type Option func(*Tally)

// WithClock replaces time.Now, so tests can pass the back-offs and the idle
// time without waiting.
func WithClock(now func() time.Time) Option { return func(t *Tally) { t.now = now } }

// Add adds c to the job's counts.
func (t *Tally) Add(jobID string, c jobstore.Counts) {
	if c.IsZero() {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.jobs[jobID]
	if !ok {
		t.serial++
		e = &entry{writer: t.writer + "." + strconv.FormatInt(t.serial, 10)}
		t.jobs[jobID] = e
	}
	e.counts = e.counts.Plus(c)
	e.changed = t.now()
}

// Pending returns, per job, what was counted and not yet written.
func (t *Tally) Pending() map[string]jobstore.Counts {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]jobstore.Counts{}
	for id, e := range t.jobs {
		if e.counts != e.written {
			out[id] = e.counts.Minus(e.written)
		}
	}
	return out
}

// write is one job's counts to write.
type write struct {
	id string
	w  jobstore.CounterWrite
}

// Flush writes every job's counts that changed since they were last
// written, one write per job, and then looks at the completion of the jobs
// due. Counts that could not be written stay, and are written whole at the
// next flush. It returns the errors, joined.
func (t *Tally) Flush(ctx context.Context) error {
	t.flushing.Lock()
	defer t.flushing.Unlock()

	now := t.now()
	var writes []write
	var checks []string
	t.mu.Lock()
	for id, e := range t.jobs {
		switch {
		case e.counts != e.written:
			e.version++
			writes = append(writes, write{id: id, w: jobstore.CounterWrite{Writer: e.writer, Version: e.version, Counts: e.counts}})
		case e.check && !now.Before(e.next):
			checks = append(checks, id)
		case !e.check && now.Sub(e.changed) >= idle:
			delete(t.jobs, id)
		}
	}
	t.mu.Unlock()

	// Sequential on purpose: a dispatcher works on few jobs at a time, and
	// one write per job per interval is the whole point.
	var errs []error
	for _, w := range writes {
		if err := t.store.WriteCounts(ctx, w.id, w.w); err != nil {
			errs = append(errs, fmt.Errorf("flush counts of job %s: %w", w.id, err))
			continue
		}
		t.mu.Lock()
		if e, ok := t.jobs[w.id]; ok {
			e.written = w.w.Counts
			e.check, e.next, e.wait = true, time.Time{}, 0
		}
		t.mu.Unlock()
		checks = append(checks, w.id)
	}
	for _, id := range checks {
		if err := t.complete(ctx, id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// complete completes the job when its counters and then its ledger say
// every row is settled, and says when to look again.
func (t *Tally) complete(ctx context.Context, id string) error {
	again, err := t.settle(ctx, id)
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.jobs[id]
	if !ok {
		return err
	}
	if !again && err == nil {
		e.check = false
		return nil
	}
	e.wait = min(max(2*e.wait, time.Second), maxCheckWait)
	e.next = t.now().Add(e.wait)
	return err
}

// settle completes the job if its ledger settles every row; again says the
// counters say settled and the ledger does not yet.
func (t *Tally) settle(ctx context.Context, id string) (again bool, err error) {
	j, err := t.store.Get(ctx, id)
	if errors.Is(err, jobstore.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return true, fmt.Errorf("read job %s to complete it: %w", id, err)
	}
	if j.GetState() != spoolv1.JobState_JOB_STATE_SEALED || jobstore.SettledOf(j).Sum() < j.GetTotal() {
		// Rows still to settle: whoever counts the last one completes it.
		return false, nil
	}
	c, err := t.ledger.Count(ctx, id)
	if err != nil {
		return true, fmt.Errorf("count ledger of job %s to complete it: %w", id, err)
	}
	confirmed := c.Settled()
	if confirmed.Sum() < j.GetTotal() {
		// The ledger's index lags its records, or rows were counted that
		// are not settled: either way, not yet.
		t.log.DebugContext(ctx, "job settled by its counters, not yet by its ledger", "job_id", id,
			"total", j.GetTotal(), "counted", jobstore.SettledOf(j).Sum(), "ledger_settled", confirmed.Sum())
		return true, nil
	}
	done, err := t.store.Complete(ctx, id, confirmed)
	if errors.Is(err, jobstore.ErrState) {
		return false, nil
	}
	if err != nil {
		return true, fmt.Errorf("complete job %s: %w", id, err)
	}
	t.log.DebugContext(ctx, "job completed", "job_id", id, "total", done.GetTotal(), "delivered", done.GetDelivered())
	return false, nil
}

// Run flushes every interval until ctx is done, then flushes once more,
// within finalTimeout, and returns. Cancel ctx only after the last Add, so
// that the final flush carries it.
func (t *Tally) Run(ctx context.Context, interval, finalTimeout time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalTimeout)
			defer cancel()
			if err := t.Flush(fctx); err != nil {
				t.log.ErrorContext(fctx, "final counter flush", "error", err, "jobs_unflushed", len(t.Pending()))
			}
			return
		case <-tick.C:
			if err := t.Flush(ctx); err != nil {
				t.log.WarnContext(ctx, "counter flush; written again at the next", "error", err)
			}
		}
	}
}
