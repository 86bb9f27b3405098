// Package tally batches the job counters a dispatcher adds to the shared
// job record.
//
// Every delivery changes a counter, but writing each change would make a big
// job's record a hot key that every dispatcher hammers. Deltas are summed in
// memory instead and written once per job per flush interval: one atomic ADD
// per dispatcher per job per interval, whatever the delivery rate.
package tally

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

// Store is the part of the job store the tally writes to.
type Store interface {
	Add(ctx context.Context, id string, c jobstore.Counts) (*spoolv1.Job, error)
}

// Tally sums counter deltas per job until they are flushed. It is safe for
// concurrent use.
type Tally struct {
	store Store
	log   *slog.Logger

	mu      sync.Mutex
	pending map[string]jobstore.Counts
}

// New returns an empty tally writing to store.
func New(store Store, log *slog.Logger) *Tally {
	return &Tally{store: store, log: log, pending: map[string]jobstore.Counts{}}
}

// Add adds c to the job's pending deltas.
func (t *Tally) Add(jobID string, c jobstore.Counts) {
	if c.IsZero() {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pending[jobID] = t.pending[jobID].Plus(c)
}

// Pending returns the deltas not yet written.
func (t *Tally) Pending() map[string]jobstore.Counts {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]jobstore.Counts, len(t.pending))
	for k, v := range t.pending {
		out[k] = v
	}
	return out
}

// Flush writes every job's pending deltas, one write per job. Deltas that
// could not be written are kept for the next flush, merged with what was
// added meanwhile; deltas of a job that does not exist are dropped. It
// returns the write errors, joined.
func (t *Tally) Flush(ctx context.Context) error {
	t.mu.Lock()
	batch := t.pending
	t.pending = make(map[string]jobstore.Counts, len(batch))
	t.mu.Unlock()

	// Sequential on purpose: a dispatcher works on few jobs at a time, and
	// one write per job per interval is the whole point.
	var errs []error
	for id, c := range batch {
		_, err := t.store.Add(ctx, id, c)
		switch {
		case err == nil:
		case errors.Is(err, jobstore.ErrNotFound):
			// Nothing can ever count these: the job was never created (or
			// was removed). Keeping them would retry forever.
			t.log.Warn("counts dropped for unknown job", "job_id", id,
				"delivered", c.Delivered, "failed", c.Failed, "retries", c.Retries,
				"unknown", c.Unknown, "suppressed", c.Suppressed, "dropped", c.Dropped)
		default:
			t.Add(id, c)
			errs = append(errs, fmt.Errorf("flush counts of job %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
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
				t.log.Error("final counter flush", "error", err, "jobs_unflushed", len(t.Pending()))
			}
			return
		case <-tick.C:
			if err := t.Flush(ctx); err != nil {
				t.log.Warn("counter flush; kept for the next", "error", err)
			}
		}
	}
}
