package dispatchrpc

import (
	"context"
	"sync"
	"time"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// sharedReads lets every watcher of one job share its reads of the job
// table: a read younger than fresh is handed to whoever asks, and asks
// during a read wait for it rather than read again. So a job costs about
// one table read per watch interval however many watch it, and a crowd of
// watchers (a dashboard left open in many tabs) cannot spend the table's
// capacity that deliveries need.
//
// Entries are counted by their watchers and dropped with the last one, so
// the map holds the jobs being watched and nothing else.
type sharedReads struct {
	jobs    Jobs
	fresh   time.Duration
	timeout time.Duration

	mu      sync.Mutex
	watched map[string]*watchedJob
}

type watchedJob struct {
	watchers int
	job      *spoolv1.Job // the last read that succeeded; nil before one
	at       time.Time    // when that read was asked for
	reading  *read        // the read under way; nil when none
}

// read is one table read, shared by whoever waits on done.
type read struct {
	done chan struct{}
	job  *spoolv1.Job
	err  error
}

func newSharedReads(jobs Jobs, fresh, timeout time.Duration) *sharedReads {
	return &sharedReads{jobs: jobs, fresh: fresh, timeout: timeout, watched: map[string]*watchedJob{}}
}

// join counts a watcher of id in; leave, called once when its watch ends,
// counts it out.
func (s *sharedReads) join(id string) (leave func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.watched[id]
	if w == nil {
		w = &watchedJob{}
		s.watched[id] = w
	}
	w.watchers++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if w.watchers--; w.watchers == 0 {
				delete(s.watched, id)
			}
		})
	}
}

// get returns the job as read at most fresh before now, reading it when
// no such read is known. Only a joined watcher may call it. The read runs
// on a context of its own, bounded by timeout: one watcher going away must
// not fail the read the others wait for. A failed read is handed to those
// who waited for it and forgotten. The job returned is shared: callers
// must not change it.
func (s *sharedReads) get(ctx context.Context, id string, now time.Time) (*spoolv1.Job, error) {
	s.mu.Lock()
	w := s.watched[id]
	if w.job != nil && now.Sub(w.at) < s.fresh {
		job := w.job
		s.mu.Unlock()
		return job, nil
	}
	r := w.reading
	if r == nil {
		r = &read{done: make(chan struct{})}
		w.reading = r
		go s.read(ctx, id, w, r, now)
	}
	s.mu.Unlock()
	select {
	case <-r.done:
		return r.job, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *sharedReads) read(ctx context.Context, id string, w *watchedJob, r *read, at time.Time) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	r.job, r.err = s.jobs.Get(rctx, id)
	cancel()
	s.mu.Lock()
	w.reading = nil
	if r.err == nil {
		w.job, w.at = r.job, at
	}
	s.mu.Unlock()
	close(r.done)
}
