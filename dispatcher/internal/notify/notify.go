// Package notify sends a job's events (package jobevent) to the places a
// person hears of them: a webhook and an SQS queue.
//
// Events are kept in the job record by the conditional write that made
// their transition (jobstore's outbox), and leave it only once every sink
// took them, so an event is delivered at least once however a process
// dies. Two paths send them:
//
//   - at once: the job store tells the Notifier (Kick) when this process
//     stored an event, and the Notifier sends that event (not others of
//     the job, which their own writers send), retried with backoff for
//     RetryFor, then removes it from the record;
//   - by sweep: every SweepEvery, each dispatcher lists the jobs of the
//     outbox register and sends what their records still hold: events of
//     a process that died before sending, or gave up, once they are
//     SweepAfter old (longer than the direct path tries, so the two seldom
//     overlap), and events nobody sends at once (the ingestor's) at the
//     next sweep. A sweeper leases an event in the record before sending
//     it (for SweepAfter), so of dispatchers sweeping at once one sends
//     it. A job that is final and holds no event leaves the register.
//
// A receiver may still get an event twice (a sender that died or failed
// to clear it after sending, a direct sender slower than SweepAfter, a
// sink that took it while another failed); the event's id, the same each
// time, tells.
package notify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/spoolhq/spool/platform/jobevent"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/positive"
)

// Outbox is the part of the job store that keeps events (jobstore.Store).
type Outbox interface {
	Outbox(ctx context.Context) ([]string, error)
	PendingEvents(ctx context.Context, jobID string) ([]jobstore.PendingEvent, bool, error)
	ClearEvent(ctx context.Context, jobID, eventID string) error
	LeaseEvent(ctx context.Context, jobID, eventID string, d time.Duration) (bool, error)
	Unlist(ctx context.Context, jobID string) error
}

// Sink is one place events go.
type Sink interface {
	// Send delivers one event; an error means it may not have arrived.
	Send(ctx context.Context, e jobevent.Event, body []byte) error
	// Name names the sink in logs.
	Name() string
}

// Defaults for Options.
const (
	DefaultSweepEvery  = 5 * time.Second
	DefaultSweepAfter  = 30 * time.Second
	DefaultRetryFor    = 20 * time.Second
	DefaultSendTimeout = 5 * time.Second
)

// Options configure a Notifier. Zero values get the defaults.
type Options struct {
	// SweepEvery is how often the outbox register is swept.
	SweepEvery time.Duration
	// SweepAfter is how old an event its writer sends itself must be
	// before a sweep sends it too: longer than RetryFor.
	SweepAfter time.Duration
	// RetryFor bounds how long the direct path retries one event before
	// leaving it to the sweeps.
	RetryFor time.Duration
	// SendTimeout bounds one send to one sink.
	SendTimeout time.Duration
	Log         *slog.Logger
	Now         func() time.Time
}

// Notifier sends events from the outbox to the sinks.
type Notifier struct {
	o     Options
	box   Outbox
	sinks []Sink
	kick  chan kicked

	mu sync.Mutex
	// sending holds the events this process is sending, so its own two
	// paths never send one at the same time.
	sending map[string]bool
}

// New returns a Notifier sending to sinks.
func New(box Outbox, sinks []Sink, o Options) *Notifier {
	o.SweepEvery = positive.Or(o.SweepEvery, DefaultSweepEvery)
	o.RetryFor = positive.Or(o.RetryFor, DefaultRetryFor)
	o.SweepAfter = positive.Or(o.SweepAfter, max(DefaultSweepAfter, o.RetryFor+o.SweepEvery))
	o.SendTimeout = positive.Or(o.SendTimeout, DefaultSendTimeout)
	o.Log = cmp.Or(o.Log, slog.New(slog.DiscardHandler))
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Notifier{o: o, box: box, sinks: sinks, kick: make(chan kicked, 256), sending: map[string]bool{}}
}

// kicked is an event this process stored, to send at once.
type kicked struct{ jobID, eventID string }

// Kick asks for an event this process stored to be sent now: that one
// only, as another process sends its own. It never blocks: when too many
// are waiting, the sweep sends this one.
func (n *Notifier) Kick(jobID, eventID string) {
	select {
	case n.kick <- kicked{jobID, eventID}:
	default:
	}
}

// Run sends kicked jobs' events as they come and sweeps the register every
// SweepEvery, until ctx is done.
func (n *Notifier) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case k := <-n.kick:
				n.Flush(ctx, k.jobID, k.eventID)
			}
		}
	}()
	defer wg.Wait()
	tick := time.NewTicker(n.o.SweepEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			n.Sweep(ctx)
		}
	}
}

// Sweep sends what the records of the jobs in the outbox register hold
// (an event its writer sends itself once it is SweepAfter old), and
// takes final jobs with nothing left out of the register.
func (n *Notifier) Sweep(ctx context.Context) {
	ids, err := n.box.Outbox(ctx)
	if err != nil {
		n.o.Log.WarnContext(ctx, "list jobs with events", "error", err)
		return
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			return
		}
		n.Flush(ctx, id, "")
	}
}

// Flush sends the job's pending events and removes those sent: only the
// event only when it is named (this process just stored it, and retries
// it for RetryFor), else those due for a sweep, one try each. A final job
// left with no event is taken out of the register. It returns how many
// events the job still holds.
func (n *Notifier) Flush(ctx context.Context, jobID, only string) int {
	direct := only != ""
	evs, final, err := n.box.PendingEvents(ctx, jobID)
	if err != nil {
		n.o.Log.WarnContext(ctx, "read job events", "job_id", jobID, "error", err)
		return -1
	}
	left := len(evs)
	for _, pe := range evs {
		if direct && pe.ID != only {
			continue
		}
		if !direct && pe.Direct && n.o.Now().Sub(pe.Stored) < n.o.SweepAfter {
			continue
		}
		if !n.claim(pe.ID) {
			continue
		}
		if !direct {
			// Of dispatchers sweeping at once, one sends it; the lease
			// outlasts one try, and runs out if its holder dies.
			ok, err := n.box.LeaseEvent(ctx, jobID, pe.ID, n.o.SweepAfter)
			if err != nil {
				n.o.Log.WarnContext(ctx, "lease job event", "job_id", jobID, "event_id", pe.ID, "error", err)
			}
			if !ok {
				n.release(pe.ID)
				continue
			}
		}
		sent := n.sendEvent(ctx, jobID, pe, direct)
		n.release(pe.ID)
		if !sent {
			continue
		}
		if err := n.box.ClearEvent(ctx, jobID, pe.ID); err != nil {
			// Sent, and sent again by the next sweep: a duplicate of one id.
			n.o.Log.WarnContext(ctx, "clear sent event", "job_id", jobID, "event_id", pe.ID, "error", err)
			continue
		}
		left--
	}
	if left == 0 && final {
		if err := n.box.Unlist(ctx, jobID); err != nil {
			n.o.Log.WarnContext(ctx, "unlist job from the outbox", "job_id", jobID, "error", err)
		}
	}
	return left
}

func (n *Notifier) claim(id string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sending[id] {
		return false
	}
	n.sending[id] = true
	return true
}

func (n *Notifier) release(id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.sending, id)
}

// sendEvent sends one event to every sink and reports whether all took
// it. The direct path retries with jittered backoff from 100 ms doubling
// to 5 s, for RetryFor; a sweep tries once (the next sweep is its retry).
func (n *Notifier) sendEvent(ctx context.Context, jobID string, pe jobstore.PendingEvent, direct bool) bool {
	e, err := jobevent.Parse(pe.Body)
	if err != nil {
		// A body this version cannot read is still sent as stored.
		e = jobevent.Event{ID: pe.ID, JobID: jobID}
	}
	pending := n.sinks
	deadline := n.o.Now().Add(n.o.RetryFor)
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		var failed []Sink
		for _, s := range pending {
			sctx, cancel := context.WithTimeout(ctx, n.o.SendTimeout)
			err := s.Send(sctx, e, pe.Body)
			cancel()
			if err != nil {
				n.o.Log.WarnContext(ctx, "send job event", "job_id", jobID, "event_id", pe.ID, "sink", s.Name(),
					"attempt", attempt, "error", err)
				failed = append(failed, s)
			}
		}
		if len(failed) == 0 {
			n.o.Log.InfoContext(ctx, "job event sent", "job_id", jobID, "event_id", pe.ID, "kind", string(e.Kind))
			return true
		}
		pending = failed
		if !direct || !n.o.Now().Add(wait).Before(deadline) {
			return false
		}
		t := time.NewTimer(wait/2 + rand.N(wait/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// ErrStatus means a webhook answered with a status other than 2xx.
var ErrStatus = errors.New("webhook refused the event")

func statusError(code int) error { return fmt.Errorf("status %d: %w", code, ErrStatus) }
