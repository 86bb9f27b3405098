// Package breaker stops a dispatcher from receiving while the destination
// is down, and finds out when it is back.
//
// Without it, every message received during an outage is sent, fails,
// and goes back to the queue with a backoff: each of those receives counts
// toward SQS's maxReceiveCount and each attempt toward the retry budget,
// so a long enough outage dead-letters rows that were never the problem. A
// breaker sits in front of the receive loop instead: while it is open the
// loop does not receive at all, and messages stay in the queue untouched,
// neither received nor attempted.
//
// The states are the classic three:
//
//   - Closed: receive freely. Consecutive failures (5xx, 408, a refused
//     connection, a timeout, a lost answer), or a failure rate over a
//     rolling window, open it. An acceptance or a refusal, a 422 included,
//     proves the destination is up and resets the consecutive count; a 429
//     counts neither way (see judge).
//   - Open: receive nothing for the cool-down.
//   - Half-open: one probe. The receive loop that gets it receives a single
//     message; an answer showing the destination up (an acceptance or a
//     refusal) closes the breaker, a failure reopens it with twice the
//     cool-down, capped, so a long outage is probed ever less often.
//
// Outcomes of requests that were in flight when the breaker opened arrive
// while it is open; they are ignored, as they describe the outage already
// acted on. In half-open state the first outcome decides, the probe's or a
// late one's: a late success shows the destination up as well as the
// probe would, and a late failure only costs another cool-down.
package breaker

import (
	"cmp"
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/spoolhq/spool/dispatcher/internal/clock"
	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/platform/positive"
)

// State is a breaker's state.
type State int

// Closed, Open and HalfOpen are the three states the package comment
// describes.
const (
	Closed State = iota
	Open
	HalfOpen
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half-open"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// verdict is what one delivery's outcome says about the destination.
type verdict int

const (
	// up: an answer that shows the destination up, an acceptance or a
	// refusal alike (a permanent 4xx proves it is there).
	up verdict = iota
	// failed: the destination is down or failing: an overload (5xx, 408,
	// a refused connection, a timeout) or a lost answer.
	failed
	// silent: nothing about the destination: nothing was sent (gated,
	// suppressed, a probe receive that came back empty), or a 429, which
	// shows a destination that is up but asks for less: that is the
	// concurrency limit's to act on, and stopping every receive for a
	// cool-down would undershoot its rate. A probe that ends this way lets
	// another probe go.
	silent
)

// judge reads an outcome for the breaker: see deliver.Outcome.
func judge(o deliver.Outcome) verdict {
	switch o {
	case deliver.Accepted, deliver.Refused:
		return up
	case deliver.Overloaded, deliver.Lost:
		return failed
	}
	return silent
}

// Defaults for Options.
const (
	DefaultFailures     = 10
	DefaultWindow       = 10 * time.Second
	DefaultMinRequests  = 20
	DefaultCooldown     = 5 * time.Second
	DefaultMaxCooldown  = 2 * time.Minute
	DefaultProbeTimeout = 30 * time.Second
)

// buckets is how many parts the failure-rate window is counted in: the
// window rolls forward a tenth at a time.
const buckets = 10

// Options configure a Breaker. Zero values get the defaults.
type Options struct {
	// Failures is how many transient failures in a row open the breaker.
	Failures int
	// FailureRate, when above 0, also opens the breaker when at least this
	// fraction of the outcomes of the last Window failed, once there were
	// at least MinRequests of them. It catches a destination failing most
	// but not all requests, which consecutive counting misses.
	FailureRate float64
	Window      time.Duration
	MinRequests int
	// Cooldown is how long the breaker first stays open; each failed probe
	// doubles it, up to MaxCooldown. Closing resets it.
	Cooldown, MaxCooldown time.Duration
	// ProbeTimeout is how long a probe may go without an outcome before
	// another probe is let through. Make it longer than a delivery can
	// take.
	ProbeTimeout time.Duration
	// Clock is the time source; the real clock when nil.
	Clock clock.Clock
	// Log gets a line per state change; slog.Default() when nil.
	Log *slog.Logger
}

func (o Options) withDefaults() Options {
	o.Failures = positive.Or(o.Failures, DefaultFailures)
	o.Window = positive.Or(o.Window, DefaultWindow)
	o.MinRequests = positive.Or(o.MinRequests, DefaultMinRequests)
	o.Cooldown = positive.Or(o.Cooldown, DefaultCooldown)
	o.MaxCooldown = positive.Or(o.MaxCooldown, max(DefaultMaxCooldown, o.Cooldown))
	o.MaxCooldown = max(o.MaxCooldown, o.Cooldown)
	o.ProbeTimeout = positive.Or(o.ProbeTimeout, DefaultProbeTimeout)
	o.Clock = cmp.Or[clock.Clock](o.Clock, clock.Real{})
	o.Log = cmp.Or(o.Log, slog.Default())
	return o
}

// Breaker is a circuit breaker in front of the receive loop. It is safe for
// concurrent use.
type Breaker struct {
	o Options

	mu          sync.Mutex
	state       State
	consecutive int
	window      [buckets]bucket
	cooldown    time.Duration // of the current or next opening
	openUntil   time.Time     // when Open ends
	probeOut    bool          // a probe is under way (HalfOpen)
	probeUntil  time.Time     // when another probe may go
	downSince   time.Time     // when the breaker last left Closed
	downTotal   time.Duration // time spent not Closed, before downSince
	opens       int64
	changed     chan struct{} // closed and replaced on every state change
}

// bucket counts the outcomes of one tenth of the window, the slot-th
// since the Unix epoch.
type bucket struct {
	slot              int64
	success, failures int
}

// New returns a closed breaker.
func New(o Options) *Breaker {
	o = o.withDefaults()
	return &Breaker{o: o, cooldown: o.Cooldown, changed: make(chan struct{})}
}

// Allow reports whether the receive loop may receive now. ok is true while
// the breaker is closed. When it is half-open, exactly one caller gets ok
// with probe set: it receives at most one message and must see an outcome
// recorded for it, deliver.NotSent if the receive was empty or nothing
// was sent.
func (b *Breaker) Allow() (ok, probe bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ok, probe, _ = b.allowLocked()
	return ok, probe
}

// Wait blocks until Allow would let the caller receive, and reports whether
// the caller holds the probe. It returns ctx's error if ctx ends first.
func (b *Breaker) Wait(ctx context.Context) (probe bool, err error) {
	for {
		b.mu.Lock()
		ok, probe, retry := b.allowLocked()
		changed := b.changed
		b.mu.Unlock()
		if ok {
			return probe, nil
		}
		if err := ctx.Err(); err != nil {
			return false, err
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-changed:
		case <-b.o.Clock.After(retry):
		}
	}
}

// allowLocked answers Allow, and when it says no, how long until asking
// again could be answered otherwise (a state change may come sooner).
func (b *Breaker) allowLocked() (ok, probe bool, retry time.Duration) {
	now := b.o.Clock.Now()
	b.advanceLocked(now)
	switch b.state {
	case Closed:
		return true, false, 0
	case Open:
		return false, false, b.openUntil.Sub(now)
	}
	if b.probeOut && now.Before(b.probeUntil) {
		return false, false, b.probeUntil.Sub(now)
	}
	b.probeOut = true
	b.probeUntil = now.Add(b.o.ProbeTimeout)
	return true, true, 0
}

// advanceLocked moves an Open breaker whose cool-down is over to HalfOpen.
func (b *Breaker) advanceLocked(now time.Time) {
	if b.state == Open && !now.Before(b.openUntil) {
		b.probeOut = false
		b.setLocked(HalfOpen)
		b.o.Log.Info("breaker half-open", "cooldown", b.cooldown)
	}
}

// Record feeds the outcome of one delivery to the breaker. A probe that
// was not sent after all, or whose receive came back empty, is recorded
// deliver.NotSent.
func (b *Breaker) Record(o deliver.Outcome) {
	v := judge(o)
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.o.Clock.Now()
	b.advanceLocked(now)
	switch b.state {
	case Closed:
		b.recordClosedLocked(now, v)
	case HalfOpen:
		switch v {
		case up:
			b.closeLocked(now)
		case failed:
			b.cooldown = min(2*b.cooldown, b.o.MaxCooldown)
			b.openLocked(now, "probe failed")
		case silent:
			b.probeOut = false
			b.notifyLocked()
		}
	}
}

func (b *Breaker) recordClosedLocked(now time.Time, v verdict) {
	if v == silent {
		return
	}
	cur := b.bucketLocked(now)
	if v == up {
		b.consecutive = 0
		cur.success++
		return
	}
	b.consecutive++
	cur.failures++
	if b.consecutive >= b.o.Failures {
		b.openLocked(now, "consecutive failures")
		return
	}
	if b.o.FailureRate <= 0 {
		return
	}
	var total, failed int
	slot := b.slot(now)
	for _, k := range b.window {
		if slot-k.slot < buckets {
			total += k.success + k.failures
			failed += k.failures
		}
	}
	if total >= b.o.MinRequests && float64(failed) >= b.o.FailureRate*float64(total) {
		b.openLocked(now, "failure rate")
	}
}

// bucketLocked returns the bucket counting now, starting it afresh when
// its last use was a window or more ago.
func (b *Breaker) bucketLocked(now time.Time) *bucket {
	slot := b.slot(now)
	k := &b.window[slot%buckets]
	if k.slot != slot {
		*k = bucket{slot: slot}
	}
	return k
}

// slot numbers the tenth of the window now falls in.
func (b *Breaker) slot(now time.Time) int64 {
	return now.UnixNano() / int64(max(b.o.Window/buckets, 1))
}

func (b *Breaker) openLocked(now time.Time, why string) {
	if b.state == Closed {
		b.downSince = now
		b.opens++
	}
	b.openUntil = now.Add(b.cooldown)
	b.probeOut = false
	b.setLocked(Open)
	b.o.Log.Warn("breaker open", "reason", why, "consecutive_failures", b.consecutive, "cooldown", b.cooldown)
}

func (b *Breaker) closeLocked(now time.Time) {
	down := now.Sub(b.downSince)
	b.downTotal += down
	b.consecutive = 0
	b.window = [buckets]bucket{}
	b.cooldown = b.o.Cooldown
	b.probeOut = false
	b.setLocked(Closed)
	b.o.Log.Info("breaker closed", "down_for", down)
}

func (b *Breaker) setLocked(s State) {
	b.state = s
	b.notifyLocked()
}

// notifyLocked wakes every Wait to look again.
func (b *Breaker) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// State returns the current state.
func (b *Breaker) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.advanceLocked(b.o.Clock.Now())
	return b.state
}

// Stats is a breaker's state for a status RPC.
type Stats struct {
	State State
	// Opens counts how often the breaker opened from closed (a failed probe
	// reopening it does not count again).
	Opens int64
	// OpenTime is the time spent not closed (open or half-open), in total,
	// the current spell included.
	OpenTime time.Duration
	// Cooldown is the cool-down of the current or next opening.
	Cooldown time.Duration
	// ConsecutiveFailures counts transient failures since the last success.
	ConsecutiveFailures int
}

// Stats returns the breaker's state.
func (b *Breaker) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.o.Clock.Now()
	b.advanceLocked(now)
	down := b.downTotal
	if b.state != Closed {
		down += now.Sub(b.downSince)
	}
	return Stats{
		State: b.state, Opens: b.opens, OpenTime: down, Cooldown: b.cooldown,
		ConsecutiveFailures: b.consecutive,
	}
}
