// Package top is the live view of a fleet of dispatchers that `spool top`
// shows: each dispatcher's flow control toward the destination (its
// concurrency limit, deliveries in flight, the fleet's rate limit, its
// breaker) and the jobs in progress.
//
// A refresh is three steps, each in its own file: Collect asks every
// dispatcher for its status at once, each call under its own deadline, so
// one that does not answer shows as unreachable instead of holding the
// view, then asks one that answered for the open jobs (the register is
// shared, so one answer covers the fleet); Render turns the snapshot into
// lines fitted to a width; a Screen shows them, redrawn in place on a
// terminal and as plain lines elsewhere.
package top

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spoolhq/spool/cli/internal/progress"
	"github.com/spoolhq/spool/cli/internal/rpcerr"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// Dispatcher is one dispatcher's answer: its status, or why there is none.
type Dispatcher struct {
	Addr string
	ID   string
	Flow *spoolv1.FlowControl
	Err  error
}

// Job is a job in progress with its settle rate, measured between two
// snapshots; HasRate is false on the first snapshot a job appears in.
type Job struct {
	Job     *spoolv1.Job
	Rate    float64
	HasRate bool
}

// Snapshot is what the view shows at one time.
type Snapshot struct {
	At          time.Time
	Dispatchers []Dispatcher
	Jobs        []Job
	// Open is how many jobs the register holds, at least len(Jobs).
	Open int
	// JobsErr is why the jobs could not be listed; nil when they were.
	JobsErr error
}

// Collector takes snapshots of a fleet. It remembers the last snapshot's
// settled counts to measure each job's rate.
type Collector struct {
	addrs   []string
	clients []spoolv1.DispatchServiceClient
	timeout time.Duration
	limit   int32
	now     func() time.Time

	prevAt      time.Time
	prevSettled map[string]int64
}

// NewCollector returns a collector asking clients[i], which is at
// addrs[i]; each call is given timeout, and at most limit jobs are listed.
func NewCollector(addrs []string, clients []spoolv1.DispatchServiceClient, timeout time.Duration, limit int, now func() time.Time) *Collector {
	if now == nil {
		now = time.Now
	}
	return &Collector{addrs: addrs, clients: clients, timeout: timeout, limit: int32(limit), now: now}
}

// Collect takes a snapshot. It returns within about twice the timeout
// whatever the dispatchers do: once for the status calls, made at once,
// and once for the jobs, listed by the first dispatcher that answered
// (the next one is tried only if there is time left).
func (c *Collector) Collect(ctx context.Context) Snapshot {
	snap := Snapshot{Dispatchers: make([]Dispatcher, len(c.addrs))}
	var wg sync.WaitGroup
	for i, addr := range c.addrs {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, c.timeout)
			defer cancel()
			d := Dispatcher{Addr: addr}
			resp, err := c.clients[i].GetDispatcherStatus(cctx, &spoolv1.GetDispatcherStatusRequest{})
			if err != nil {
				d.Err = rpcerr.Readable(err)
			} else {
				d.ID, d.Flow = resp.GetDispatcherId(), resp.GetFlow()
			}
			snap.Dispatchers[i] = d
		})
	}
	wg.Wait()
	snap.At = c.now()
	c.listJobs(ctx, &snap)
	return snap
}

// listJobs fills the snapshot's jobs from the first dispatcher that
// answered the status call and lists them; all share one deadline.
func (c *Collector) listJobs(ctx context.Context, snap *Snapshot) {
	lctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	snap.JobsErr = errNoDispatcher
	for i, d := range snap.Dispatchers {
		if d.Err != nil {
			continue
		}
		resp, err := c.clients[i].ListOpenJobs(lctx, &spoolv1.ListOpenJobsRequest{Limit: c.limit})
		if err != nil {
			snap.JobsErr = rpcerr.Readable(err)
			if status.Code(err) == codes.Unavailable && lctx.Err() == nil {
				continue
			}
			return
		}
		snap.JobsErr = nil
		snap.Open = max(int(resp.GetOpen()), len(resp.GetJobs()))
		settled := make(map[string]int64, len(resp.GetJobs()))
		dt := snap.At.Sub(c.prevAt).Seconds()
		for _, j := range resp.GetJobs() {
			n, _ := progress.Settled(j)
			settled[j.GetJobId()] = n
			job := Job{Job: j}
			if prev, ok := c.prevSettled[j.GetJobId()]; ok && dt > 0 {
				job.Rate, job.HasRate = max(0, float64(n-prev)/dt), true
			}
			snap.Jobs = append(snap.Jobs, job)
		}
		c.prevAt, c.prevSettled = snap.At, settled
		return
	}
}

// errNoDispatcher is why there are no jobs when no dispatcher answered.
var errNoDispatcher = errors.New("no dispatcher answered")
