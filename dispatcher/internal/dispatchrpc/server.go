// Package dispatchrpc serves DispatchService, the dispatcher's gRPC API.
// WatchJob streams a job's progress from the shared job record, so any
// dispatcher answers for any job; ReportJob and ResolveTransaction
// (report.go) read and settle the delivery ledger for the people who
// reconcile a job; the job and dead-letter controls are in control.go, the
// dispatcher's own flow control in flow.go. Every state-changing action
// is written to the audit trail before it is taken (audit.go), and
// resolutions and redrives can be made to wait for a second principal's
// approval (approve.go).
package dispatchrpc

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/positive"
)

// Jobs is the part of the job store WatchJob reads.
type Jobs interface {
	Get(ctx context.Context, id string) (*spoolv1.Job, error)
}

// Defaults for Options.
const (
	DefaultInterval    = 500 * time.Millisecond
	DefaultHeartbeat   = 5 * time.Second
	DefaultWindow      = 10 * time.Second
	DefaultReadTimeout = 10 * time.Second
)

// Options configure a Server. Zero values get the defaults.
type Options struct {
	// Interval is how often a watched job is read: its watchers share
	// the reads (see sharedReads), so that is once per interval whatever
	// their number.
	Interval time.Duration
	// Heartbeat is the longest a watcher goes without a message, so that
	// clients and proxies can tell a quiet job from a dead stream.
	Heartbeat time.Duration
	// Window is how far back the settle rate is measured.
	Window time.Duration
	// ReadTimeout bounds each read of a watched job: a read that hangs
	// fails and the next tick tries again, so the watch keeps its stream.
	ReadTimeout time.Duration
	// Shutdown is closed when the dispatcher shuts down: every watch then
	// ends with Unavailable, so graceful stop need not wait for them.
	Shutdown <-chan struct{}
	// Now and Tick are the clock; tests replace them. Tick returns a channel
	// that delivers every d, and a function that stops it.
	Now  func() time.Time
	Tick func(d time.Duration) (<-chan time.Time, func())
	Log  *slog.Logger
	// Ledger, Counter and Requeue serve ReportJob and ResolveTransaction;
	// without a Ledger those answer Unimplemented.
	Ledger  Ledger
	Counter Counter
	Requeue func(ctx context.Context, e *spoolv1.Envelope) error
	// Watched, when set, is told the id of every job a watch starts on
	// that is not final yet: someone waits for it, so the counter repair
	// must look at it even if this dispatcher delivered none of its rows.
	Watched func(jobID string)
	// DispatcherID and Flow serve GetDispatcherStatus, and Flow adds the
	// answering dispatcher's flow control to every WatchJob message.
	DispatcherID string
	Flow         FlowStatus
	// DeadLetters serves ListDeadLetters and RedriveDeadLetters; Control
	// serves PauseJob, ResumeJob and CancelJob. Without them those answer
	// Unimplemented.
	DeadLetters DeadLetters
	Control     Control
	// MaxScanLimit caps the max_scan a ListDeadLetters or
	// RedriveDeadLetters caller may ask for; 0 means no cap.
	MaxScanLimit int
	// OpenJobs serves ListOpenJobs (open.go); without it that answers
	// Unimplemented.
	OpenJobs OpenJobs
	// Audit records every state-changing operator action before it is
	// taken (audit.go) and serves ListAuditEvents; the dispatcher always
	// sets it. Without it actions are taken unrecorded (tests of other
	// concerns), and ListAuditEvents answers Unimplemented.
	Audit AuditTrail
	// Approvals keeps four-eyes requests and FourEyes says which actions
	// need one (approve.go); without Approvals no action waits.
	Approvals Approvals
	FourEyes  FourEyes
	// JobList serves ListJobs (list.go), and Renderer RenderRequests;
	// without them those answer Unimplemented.
	JobList  JobList
	Renderer Renderer
}

// FlowStatus reports a dispatcher's flow control (flow.Control).
type FlowStatus interface {
	Status() *spoolv1.FlowControl
}

// Server implements spoolv1.DispatchServiceServer.
type Server struct {
	spoolv1.UnimplementedDispatchServiceServer
	jobs    Jobs
	o       Options
	watches *sharedReads
}

// New returns a server reading jobs.
func New(jobs Jobs, o Options) *Server {
	o.Interval = positive.Or(o.Interval, DefaultInterval)
	o.Heartbeat = positive.Or(o.Heartbeat, DefaultHeartbeat)
	o.Window = positive.Or(o.Window, DefaultWindow)
	o.ReadTimeout = positive.Or(o.ReadTimeout, DefaultReadTimeout)
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Tick == nil {
		o.Tick = func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		}
	}
	o.Log = cmp.Or(o.Log, slog.Default())
	// A read counts as fresh for a little less than the interval, so that
	// a watcher whose ticker fires a hair early still reads anew.
	fresh := o.Interval - o.Interval/10
	return &Server{jobs: jobs, o: o, watches: newSharedReads(jobs, fresh, o.ReadTimeout)}
}

// errShutdown tells a watcher to reconnect, to another dispatcher if need be.
var errShutdown = status.Error(codes.Unavailable, "dispatcher shutting down; watch again")

// WatchJob sends the job's progress at once, then whenever the job
// changes, and at least every heartbeat; it ends after a message with final
// set once the job reaches a final state.
func (s *Server) WatchJob(req *spoolv1.WatchJobRequest, stream grpc.ServerStreamingServer[spoolv1.WatchJobResponse]) error {
	ctx := stream.Context()
	id := req.GetJobId()
	if id == "" {
		return status.Error(codes.InvalidArgument, "job_id is required")
	}
	tick, stop := s.o.Tick(s.o.Interval)
	defer stop()
	leave := s.watches.join(id)
	defer leave()

	job, err := s.watches.get(ctx, id, s.o.Now())
	if err != nil {
		return toStatus(ctx, err)
	}
	if s.o.Watched != nil && !isFinal(job.GetState()) {
		s.o.Watched(id)
	}
	m := &meter{window: s.o.Window}
	now := s.o.Now()
	m.add(now, jobstore.SettledOf(job).Sum())
	if done, err := s.send(stream, job, m); done || err != nil {
		return err
	}
	last, lastSent := job, now
	var at time.Time
	for {
		select {
		case <-s.o.Shutdown:
			return errShutdown
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case at = <-tick:
		}
		// The tick's time, not the clock's: it says which interval this
		// read belongs to, the same for every watcher that ticked with it.
		job, err := s.watches.get(ctx, id, at)
		if errors.Is(err, jobstore.ErrNotFound) || ctx.Err() != nil {
			return toStatus(ctx, err)
		}
		if err != nil {
			// The store is shared and its hiccups pass; the watcher keeps
			// its stream and the next tick tries again.
			s.o.Log.WarnContext(ctx, "read watched job", "job_id", id, "error", err)
			continue
		}
		now := s.o.Now()
		m.add(now, jobstore.SettledOf(job).Sum())
		if proto.Equal(job, last) && now.Sub(lastSent) < s.o.Heartbeat {
			continue
		}
		if done, err := s.send(stream, job, m); done || err != nil {
			return err
		}
		last, lastSent = job, now
	}
}

// send sends the job's progress, and reports whether that was the final
// message.
func (s *Server) send(stream grpc.ServerStreamingServer[spoolv1.WatchJobResponse], job *spoolv1.Job, m *meter) (bool, error) {
	p := Progress(job, m.rate())
	if err := stream.Send(&spoolv1.WatchJobResponse{Progress: p, Flow: s.flow()}); err != nil {
		return false, err
	}
	return p.GetFinal(), nil
}

func toStatus(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, jobstore.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	default:
		return status.Errorf(codes.Unavailable, "read job: %v", err)
	}
}

// Progress derives the figures of a job's progress from its record and the
// measured settle rate (rows per second).
func Progress(job *spoolv1.Job, rate float64) *spoolv1.JobProgress {
	p := &spoolv1.JobProgress{
		Job:           job,
		InFlight:      max(0, job.GetRowsPublished()-jobstore.SettledOf(job).Sum()),
		RatePerSecond: rate,
		Final:         isFinal(job.GetState()),
	}
	// While the file is still arriving the total is unknown; what has been
	// published so far is the best estimate of the work ahead.
	target := job.GetTotal()
	if job.GetState() == spoolv1.JobState_JOB_STATE_RECEIVING {
		target = job.GetRowsPublished()
	}
	if rate > 0 && !p.Final {
		left := float64(max(0, target-jobstore.SettledOf(job).Sum()))
		// Rounded: nanoseconds of float error mean nothing to a person.
		p.Eta = durationpb.New(time.Duration(left / rate * float64(time.Second)).Round(time.Millisecond))
	}
	return p
}

func isFinal(s spoolv1.JobState) bool {
	switch s {
	case spoolv1.JobState_JOB_STATE_COMPLETED, spoolv1.JobState_JOB_STATE_ABORTED,
		spoolv1.JobState_JOB_STATE_REJECTED, spoolv1.JobState_JOB_STATE_CANCELLED:
		return true
	}
	return false
}

// meter measures a rate over a sliding window of (time, settled) samples.
type meter struct {
	window  time.Duration
	samples []sample
}

type sample struct {
	at      time.Time
	settled int64
}

// add records a sample and forgets those no longer needed: the oldest kept
// is the last one at or before the window's start, so the rate always spans
// a full window once there is that much history.
func (m *meter) add(at time.Time, settled int64) {
	m.samples = append(m.samples, sample{at, settled})
	start := at.Add(-m.window)
	for len(m.samples) >= 2 && !m.samples[1].at.After(start) {
		m.samples = m.samples[1:]
	}
}

// rate is the settle rate in rows per second, 0 until two samples differ
// in time.
func (m *meter) rate() float64 {
	if len(m.samples) < 2 {
		return 0
	}
	first, last := m.samples[0], m.samples[len(m.samples)-1]
	dt := last.at.Sub(first.at).Seconds()
	if dt <= 0 {
		return 0
	}
	return max(0, float64(last.settled-first.settled)/dt)
}
