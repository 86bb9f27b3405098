package dispatch

import (
	"context"
	"errors"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

// Jobs is the part of the job store the gate reads.
type Jobs interface {
	Get(ctx context.Context, id string) (*spoolv1.Job, error)
	// ExpireIfAbandoned ends a RECEIVING job whose stream lease has passed
	// as ABORTED, and returns the job as it then is.
	ExpireIfAbandoned(ctx context.Context, j *spoolv1.Job) (*spoolv1.Job, error)
}

// jobCache keeps job records for a short while, so that gating costs one
// read per job per TTL per dispatcher rather than one per row, and
// concurrent deliveries of one job share a single read.
type jobCache struct {
	jobs Jobs
	ttl  time.Duration
	now  func() time.Time
	seen func(jobID string)

	group singleflight.Group
	mu    sync.Mutex
	byID  map[string]cached
}

type cached struct {
	job *spoolv1.Job
	err error // only jobstore.ErrNotFound is cached
	at  time.Time
}

func newJobCache(jobs Jobs, ttl time.Duration, now func() time.Time, seen func(string)) *jobCache {
	if seen == nil {
		seen = func(string) {}
	}
	return &jobCache{jobs: jobs, ttl: ttl, now: now, seen: seen, byID: map[string]cached{}}
}

// get returns the job, read at most ttl ago.
func (c *jobCache) get(ctx context.Context, id string) (*spoolv1.Job, error) {
	c.mu.Lock()
	e, ok := c.byID[id]
	c.mu.Unlock()
	if ok && c.now().Sub(e.at) < c.ttl {
		return e.job, e.err
	}
	v, err, _ := c.group.Do(id, func() (any, error) {
		// The read outlives any one caller: others may be waiting on it.
		j, err := c.jobs.Get(context.WithoutCancel(ctx), id)
		if err == nil || errors.Is(err, jobstore.ErrNotFound) {
			c.put(id, j, err)
		}
		if err == nil {
			c.seen(id)
		}
		return j, err
	})
	if err != nil {
		return nil, err
	}
	return v.(*spoolv1.Job), nil
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
