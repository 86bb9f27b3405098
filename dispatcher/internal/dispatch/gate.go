package dispatch

import (
	"context"
	"errors"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/spoolhq/spool/dispatcher/internal/consume"
	"github.com/spoolhq/spool/dispatcher/internal/deadletter"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/envelope"
	"github.com/spoolhq/spool/platform/jobstore"
)

// Jobs is the part of the job store the gate reads.
type Jobs interface {
	Get(ctx context.Context, id string) (*spoolv1.Job, error)
	// ExpireIfAbandoned ends a RECEIVING job whose stream lease has passed
	// as ABORTED, and returns the job as it then is.
	ExpireIfAbandoned(ctx context.Context, j *spoolv1.Job) (*spoolv1.Job, error)
}

// gate reads the job (cached) and decides whether its messages may be
// delivered now. ok false means the message is settled by d.
func (h *Handler) gate(ctx context.Context, m consume.Message) (*spoolv1.Job, consume.Disposition, bool) {
	e := m.Envelope
	job, err := h.cache.get(ctx, e.GetJobId())
	if errors.Is(err, jobstore.ErrNotFound) {
		// Left alone: after maxReceiveCount receives the queue moves it to
		// the dead-letter queue, where a person can look.
		h.log.WarnContext(ctx, "message of an unknown job left", "job_id", e.GetJobId(), "row", e.GetRow(), "message_id", m.ID)
		return nil, consume.Leave, false
	}
	if err != nil {
		h.log.WarnContext(ctx, "read job; message left", "job_id", e.GetJobId(), "message_id", m.ID, "error", err)
		return nil, consume.Leave, false
	}
	if job.GetState() == spoolv1.JobState_JOB_STATE_RECEIVING {
		if exp := job.GetLeaseExpiresAt(); exp == nil || !exp.AsTime().Before(h.o.Now()) {
			return nil, consume.After(h.receivingDelay(m.ReceiveCount)), false
		}
		ectx, cancel := context.WithTimeout(ctx, h.o.CallTimeout)
		j, err := h.jobs.ExpireIfAbandoned(ectx, job)
		cancel()
		if err != nil {
			h.log.WarnContext(ctx, "expire abandoned job; message left", "job_id", e.GetJobId(), "message_id", m.ID, "error", err)
			return nil, consume.Leave, false
		}
		if j.GetState() != job.GetState() {
			h.log.InfoContext(ctx, "abandoned job ended", "job_id", e.GetJobId(), "state", j.GetState().String())
		}
		h.cache.put(e.GetJobId(), j, nil)
		job = j
	}
	switch job.GetState() {
	case spoolv1.JobState_JOB_STATE_SEALED, spoolv1.JobState_JOB_STATE_COMPLETED:
		// None of these waits is a delivery attempt: nothing is claimed, so
		// no retry budget is used.
		if wait := h.deliverAfterWait(job); wait > 0 {
			return nil, consume.After(wait), false
		}
		if job.GetPaused() || canaryHolds(job, e.GetRow()) {
			return nil, consume.After(h.pausedDelay(m.ReceiveCount)), false
		}
		// A V2 envelope's values are named from the job's columns here,
		// before anything reads them; from here on it is a V1 envelope.
		if err := envelope.Expand(e, job.GetColumns()); err != nil {
			h.log.ErrorContext(ctx, "envelope does not match its job; dead-lettered", "job_id", e.GetJobId(), "row", e.GetRow(), "message_id", m.ID, "error", err)
			return nil, consume.DeadLetter(deadletter.Reason{Reason: "undeliverable envelope: " + err.Error()}), false
		}
		return job, consume.Disposition{}, true
	case spoolv1.JobState_JOB_STATE_RECEIVING:
		return nil, consume.After(h.receivingDelay(m.ReceiveCount)), false
	case spoolv1.JobState_JOB_STATE_ABORTED, spoolv1.JobState_JOB_STATE_REJECTED, spoolv1.JobState_JOB_STATE_CANCELLED:
		h.count.Add(e.GetJobId(), jobstore.Counts{Dropped: 1})
		return nil, consume.Delete, false
	default:
		h.log.WarnContext(ctx, "message of a job in an unexpected state left", "job_id", e.GetJobId(), "message_id", m.ID, "state", job.GetState().String())
		return nil, consume.Leave, false
	}
}

// jobCache keeps job records for a short while, so that gating costs one
// read per job per TTL per dispatcher rather than one per row, and
// concurrent deliveries of one job share a single read.
type jobCache struct {
	jobs    Jobs
	ttl     time.Duration
	timeout time.Duration
	now     func() time.Time
	seen    func(jobID string)
	// guard sees every job read from the store before it is cached, and
	// returns it as it then is (see Handler.guard).
	guard func(ctx context.Context, j *spoolv1.Job) *spoolv1.Job

	group singleflight.Group
	mu    sync.Mutex
	byID  map[string]cached
}

type cached struct {
	job *spoolv1.Job
	err error // only jobstore.ErrNotFound is cached
	at  time.Time
}

func newJobCache(jobs Jobs, ttl, timeout time.Duration, now func() time.Time, seen func(string), guard func(context.Context, *spoolv1.Job) *spoolv1.Job) *jobCache {
	if seen == nil {
		seen = func(string) {}
	}
	if guard == nil {
		guard = func(_ context.Context, j *spoolv1.Job) *spoolv1.Job { return j }
	}
	return &jobCache{jobs: jobs, ttl: ttl, timeout: timeout, now: now, seen: seen, guard: guard, byID: map[string]cached{}}
}

// get returns the job, read at most ttl ago. Every delivery of a job waits
// on one shared read, so that read has a deadline of its own: a read that
// hangs fails after timeout, and each caller may stop waiting sooner, when
// its own ctx ends.
func (c *jobCache) get(ctx context.Context, id string) (*spoolv1.Job, error) {
	if e, ok := c.fresh(id); ok {
		return e.job, e.err
	}
	ch := c.group.DoChan(id, func() (any, error) {
		// A flight that ended between the look above and this one has
		// just filled the cache: use it rather than read again.
		if e, ok := c.fresh(id); ok {
			if e.err != nil {
				return nil, e.err
			}
			return e.job, nil
		}
		// The read outlives any one caller, as others may be waiting on it,
		// but not its own deadline.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
		defer cancel()
		j, err := c.jobs.Get(rctx, id)
		if err == nil {
			j = c.guard(rctx, j)
		}
		if err == nil || errors.Is(err, jobstore.ErrNotFound) {
			c.put(id, j, err)
		}
		if err == nil {
			c.seen(id)
		}
		return j, err
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*spoolv1.Job), nil
	}
}

// fresh returns the cached entry for id when it was read less than ttl ago.
func (c *jobCache) fresh(id string) (cached, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byID[id]
	return e, ok && c.now().Sub(e.at) < c.ttl
}

func (c *jobCache) put(id string, j *spoolv1.Job, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Forget expired entries now and then, so jobs long finished do not
	// pile up in a dispatcher that runs for months.
	if len(c.byID) > 1024 {
		for k, e := range c.byID {
			if c.now().Sub(e.at) >= c.ttl {
				delete(c.byID, k)
			}
		}
	}
	c.byID[id] = cached{job: j, err: err, at: c.now()}
}
