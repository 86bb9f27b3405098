// Package limit adapts how many deliveries one dispatcher keeps in flight
// toward the destination.
//
// A fixed concurrency is wrong twice: too low and a fast destination idles,
// too high and a slow or struggling one queues our requests until they time
// out, which looks like an outage and feeds retry storms. The right number
// is Little's law, throughput × latency, and both change over a day, so the
// limit is measured instead of configured, the way TCP finds its congestion
// window.
//
// The algorithm combines the two families Netflix's concurrency-limits
// library offers:
//
//   - Latency gradient (their Gradient2): the average latency of a window
//     of samples, about one round trip of every slot, is compared with a
//     baseline. While it stays within Tolerance of the baseline the
//     destination is not queueing and the limit grows by about √limit per
//     window; when it rises above, the limit shrinks in proportion, by at
//     most half per window. Both moves are smoothed. The limit does not grow
//     while fewer than half of its slots are used: an idle window says
//     nothing about capacity.
//   - Loss (TCP's AIMD): an overload answer cuts the limit multiplicatively
//     by Backoff at once, without waiting for latency to show it, when it
//     is news: a 429 always is (the destination asks for less), and a 5xx
//     or a timeout is when latency is rising or when the losses of the last
//     two windows are more than a destination's usual random failures can
//     explain (see loss.go). As in TCP, the limit is cut once per window:
//     overloads of requests that were already in flight when it was cut do
//     not cut it again, so a burst of fifty 429s is one signal, not fifty.
//     Plain AIMD reads every loss as congestion, and a destination that
//     fails 2 % of requests at random then holds the limit near its floor
//     (measured: a third of the speed); Gradient2 and envoy's adaptive
//     concurrency ignore errors altogether and would not see a load
//     shedder that fails fast. Judging loss against its usual rate keeps
//     both: random loss costs what it loses, a step in the error rate
//     still cuts within a few round trips (sim_test.go).
//
// Until the first sign of load (a cut, or a window's latency above the
// tolerance) the limit doubles every window, as TCP's slow start does, so a
// short job against a fast destination does not spend its life ramping up;
// from then on it grows by about √limit per window. After a series of cuts
// it doubles again up to half the limit the series began at, so a limit
// that fell to its floor in an outage is not a minute climbing back.
//
// The baseline is where this departs from Gradient2, whose baseline is a
// long moving average: under a queue we keep standing, that average creeps
// up toward the recent latency and the limit grows without end (a
// simulation of a queueing destination shows it). The baseline here is the
// lowest window latency instead, and, as BBR refreshes its minimum round
// trip, it is measured again every BaselineWindows windows by one window
// run at a quarter of the limit, so a destination that really became slower
// gets a new baseline.
//
// The limit stays within [Min, Max]. It reads the outcomes of deliveries
// (deliver.Outcome): an accepted answer is a latency sample, a throttled
// or overloaded one cuts the limit, and the rest release their slot
// without teaching anything: a refusal or a request never sent says
// nothing about capacity, and a lost answer's latency is the timeout, not
// a measurement (the breaker counts it against the destination's health).
// The limiter starts no goroutines.
package limit

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/platform/positive"
)

// Defaults for Options.
const (
	DefaultMin             = 1
	DefaultMax             = 64
	DefaultInitial         = 8
	DefaultBackoff         = 0.75
	DefaultTolerance       = 1.5
	DefaultSmoothing       = 0.2
	DefaultWindowSamples   = 10
	DefaultBaselineWindows = 100
)

// Options configure a Limiter. Zero values get the defaults.
type Options struct {
	// Min and Max bound the limit. Min is at least 1.
	Min, Max int
	// Initial is the limit before any sample, within [Min, Max].
	Initial int
	// Backoff multiplies the limit on an overload; in (0, 1).
	Backoff float64
	// Tolerance is how much above the baseline latency the recent latency
	// may rise before the limit shrinks; at least 1.
	Tolerance float64
	// Smoothing weighs a new latency-based estimate against the current
	// limit; in (0, 1], 1 taking the estimate as is.
	Smoothing float64
	// WindowSamples is the fewest samples averaged into one update; a
	// window holds at least as many samples as the limit, about one round
	// trip of every slot.
	WindowSamples int
	// BaselineWindows is how many windows the baseline latency is trusted
	// before a probe measures it again.
	BaselineWindows int
	// EveryLossCuts reads every 5xx as overload, as plain AIMD does, not
	// judging losses against the usual rate: for comparison only (the
	// benchmark's), since random loss then holds the limit near its floor.
	EveryLossCuts bool
}

func (o Options) withDefaults() Options {
	o.Min = positive.Or(o.Min, DefaultMin)
	o.Max = positive.Or(o.Max, max(DefaultMax, o.Min))
	o.Max = max(o.Max, o.Min)
	o.Initial = positive.Or(o.Initial, DefaultInitial)
	o.Initial = min(max(o.Initial, o.Min), o.Max)
	if o.Backoff <= 0 || o.Backoff >= 1 {
		o.Backoff = DefaultBackoff
	}
	if o.Tolerance < 1 {
		o.Tolerance = DefaultTolerance
	}
	if o.Smoothing <= 0 || o.Smoothing > 1 {
		o.Smoothing = DefaultSmoothing
	}
	o.WindowSamples = positive.Or(o.WindowSamples, DefaultWindowSamples)
	o.BaselineWindows = positive.Or(o.BaselineWindows, DefaultBaselineWindows)
	return o
}

// Limiter hands out delivery slots up to an adaptive limit. It is safe for
// concurrent use.
type Limiter struct {
	o Options

	mu         sync.Mutex
	estimate   float64 // the limit before rounding
	inflight   int
	seq        uint64 // numbers tokens in acquisition order
	cutBefore  uint64 // overloads of tokens numbered below it are not cut again
	window     window
	windowFrom uint64  // samples of tokens numbered up to it are stale
	recent     float64 // the last window's average latency, ns
	baseline   float64 // the lowest window latency, ns
	// baselineAge counts windows since the baseline was last measured.
	baselineAge int
	probing     bool
	saved       float64 // the limit to return to after a probe
	probes      int64
	waiters     []*waiter // FIFO
	overloads   int64
	samples     int64
	cuts        int64
	// rampTo is slow start's threshold (TCP's ssthresh): below it, and
	// while latency is flat, the limit doubles every window.
	rampTo float64
	// cutting is set from a cut until a window closes without one: the
	// cuts of one overload are one series.
	cutting bool
	loss    lossMeter
}

// waiter is an Acquire blocked on a full limiter. ready is closed once a
// slot was granted to it; tok is then set.
type waiter struct {
	ready chan struct{}
	tok   *Token
}

// New returns a limiter at o.Initial.
func New(o Options) *Limiter {
	o = o.withDefaults()
	return &Limiter{
		o:        o,
		estimate: float64(o.Initial),
		rampTo:   float64(o.Max),
	}
}

// Token is one slot. Its holder calls Done exactly once when the delivery
// is over; later calls are no-ops.
type Token struct {
	l        *Limiter
	seq      uint64
	inflight int // in flight when acquired, this one included
	done     bool
}

// Acquire blocks until fewer deliveries are in flight than the limit, then
// takes a slot. It returns ctx's error if ctx ends first, and then holds no
// slot.
func (l *Limiter) Acquire(ctx context.Context) (*Token, error) {
	l.mu.Lock()
	if len(l.waiters) == 0 && l.inflight < l.limitLocked() {
		t := l.grantLocked()
		l.mu.Unlock()
		return t, nil
	}
	if err := ctx.Err(); err != nil {
		l.mu.Unlock()
		return nil, err
	}
	w := &waiter{ready: make(chan struct{})}
	l.waiters = append(l.waiters, w)
	l.mu.Unlock()

	select {
	case <-w.ready:
		return w.tok, nil
	case <-ctx.Done():
	}
	l.mu.Lock()
	select {
	case <-w.ready:
		// Granted while ctx ended: hand the slot on rather than lose it.
		l.releaseLocked()
	default:
		l.removeLocked(w)
	}
	l.mu.Unlock()
	return nil, ctx.Err()
}

// TryAcquire takes a slot if one is free now. A receive loop holding one
// slot uses it to top up its batch without blocking.
func (l *Limiter) TryAcquire() (*Token, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.waiters) > 0 || l.inflight >= l.limitLocked() {
		return nil, false
	}
	return l.grantLocked(), true
}

// Done releases the slot and feeds the outcome to the limit. latency is the
// time the destination took, request to answer; it is used for an accepted
// answer only.
func (t *Token) Done(o deliver.Outcome, latency time.Duration) {
	l := t.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if t.done {
		return
	}
	t.done = true
	switch lesson(o) {
	case sample:
		l.loss.answered(false, t.seq > l.cutBefore)
		if latency > 0 {
			l.sampleLocked(t, float64(latency))
		}
	case cut:
		l.loss.answered(true, t.seq > l.cutBefore)
		l.overloadLocked(t, o == deliver.Throttled)
	}
	l.releaseLocked()
}

// Limit returns the current limit.
func (l *Limiter) Limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.limitLocked()
}

// InFlight returns the slots held now.
func (l *Limiter) InFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inflight
}

// Stats is a limiter's state for a status RPC.
type Stats struct {
	Limit, InFlight, Waiting int
	// Baseline is the lowest window latency, Recent the last one.
	Baseline, Recent time.Duration
	// Samples counts latency samples, Overloads overload outcomes, Cuts
	// the overloads that cut the limit, Probes the windows run at a
	// quarter of the limit to measure the baseline again.
	Samples, Overloads, Cuts, Probes int64
	// UsualLoss is the share of answers a destination usually fails
	// without being overloaded, as the limit learned it.
	UsualLoss float64
}

// Stats returns the limiter's state.
func (l *Limiter) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{
		Limit: l.limitLocked(), InFlight: l.inflight, Waiting: len(l.waiters),
		Baseline: time.Duration(l.baseline), Recent: time.Duration(l.recent),
		Samples: l.samples, Overloads: l.overloads, Cuts: l.cuts, Probes: l.probes,
		UsualLoss: l.loss.usual,
	}
}

func (l *Limiter) limitLocked() int {
	return min(max(int(l.estimate), l.o.Min), l.o.Max)
}

func (l *Limiter) grantLocked() *Token {
	l.inflight++
	l.seq++
	return &Token{l: l, seq: l.seq, inflight: l.inflight}
}

// releaseLocked frees one slot and wakes as many waiters as now fit.
func (l *Limiter) releaseLocked() {
	l.inflight--
	l.wakeLocked()
}

func (l *Limiter) wakeLocked() {
	for len(l.waiters) > 0 && l.inflight < l.limitLocked() {
		w := l.waiters[0]
		l.waiters[0] = nil
		l.waiters = l.waiters[1:]
		w.tok = l.grantLocked()
		close(w.ready)
	}
}

func (l *Limiter) removeLocked(w *waiter) {
	for i, x := range l.waiters {
		if x == w {
			l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
			return
		}
	}
}

// overloadLocked cuts the limit when the overload is news (see the package
// comment), once per window: the tokens in flight when it was last cut saw
// the same congestion.
func (l *Limiter) overloadLocked(t *Token, throttled bool) {
	l.overloads++
	if t.seq <= l.cutBefore {
		return
	}
	if !throttled && !l.o.EveryLossCuts && !l.latencyRisingLocked() && !l.loss.unusual() {
		return
	}
	l.cuts++
	if !l.cutting {
		// After the overload, ramp quickly back to half of where it
		// began, and feel the way from there, as TCP does after a loss.
		l.rampTo = l.estimate / 2
		l.cutting = true
	}
	l.loss.rotate()
	l.estimate = max(float64(l.o.Min), l.estimate*l.o.Backoff)
	if l.probing {
		l.saved = max(float64(l.o.Min), l.saved*l.o.Backoff)
	}
	l.cutBefore = l.seq
	// Latencies of requests sent at the old limit would judge the new one.
	l.window = window{}
	l.windowFrom = l.seq
}

// sampleLocked adds a latency sample to the window, and updates the limit
// when the window is full: once per round trip, as TCP does, rather than
// once per sample, which would let a burst of answers to one round move the
// limit many times on the same evidence.
func (l *Limiter) sampleLocked(t *Token, rtt float64) {
	l.samples++
	if t.seq <= l.windowFrom {
		// Sent before the limit last changed by a cut or a probe: it
		// measures the old limit.
		return
	}
	w := &l.window
	w.sum += rtt
	w.count++
	w.maxInflight = max(w.maxInflight, t.inflight)
	if w.count < max(l.o.WindowSamples, l.limitLocked()) {
		return
	}
	recent := w.sum / float64(w.count)
	appLimited := float64(w.maxInflight) < l.estimate/2
	*w = window{}
	l.recent = recent
	l.loss.closeWindow()
	l.cutting = false

	if l.probing {
		// The probe window ran at a quarter of the limit, with any queue
		// we had built drained: its latency is the destination's own.
		l.probing = false
		l.baseline, l.baselineAge = recent, 0
		l.estimate = l.saved
		l.windowFrom = l.seq
		l.wakeLocked()
		return
	}
	if l.baseline == 0 || recent <= l.baseline {
		l.baseline, l.baselineAge = recent, 0
	} else {
		l.baselineAge++
	}
	if l.baselineAge >= l.o.BaselineWindows {
		l.startProbeLocked()
		return
	}

	gradient := max(0.5, min(1, l.o.Tolerance*l.baseline/recent))
	// An application-limited window (few slots in use) shows no queueing
	// because there was no load, not because there is room: it may shrink
	// the limit but never grows it.
	if gradient == 1 && appLimited {
		return
	}
	if gradient < 1 {
		// Latency is up: this is where the destination starts queueing,
		// and the limit grows slowly from here.
		l.rampTo = 0
	}
	if l.estimate < l.rampTo {
		l.estimate = min(2*l.estimate, l.rampTo, float64(l.o.Max))
		l.wakeLocked()
		return
	}
	next := l.estimate*gradient + math.Sqrt(l.estimate)
	next = l.estimate*(1-l.o.Smoothing) + next*l.o.Smoothing
	grew := next > l.estimate
	l.estimate = min(max(next, float64(l.o.Min)), float64(l.o.Max))
	if grew {
		l.wakeLocked()
	}
}

// latencyRisingLocked tells whether the destination is queueing now: the
// window under way, or the last one while this one has few samples, is
// slower than the baseline by more than the tolerance.
func (l *Limiter) latencyRisingLocked() bool {
	if l.baseline == 0 {
		return false
	}
	recent := l.recent
	// A few samples of the window under way are enough to see a queue
	// growing; one could be a slow request.
	if l.window.count >= max(1, l.o.WindowSamples/2) {
		recent = l.window.sum / float64(l.window.count)
	}
	return recent > l.o.Tolerance*l.baseline
}

// startProbeLocked quarters the limit for one window to measure the
// destination's latency without our own queue in it. The baseline is the
// lowest window latency seen, so it cannot drift up with a queue we keep
// standing, as an average would; but the destination may really have become
// slower, and only a drained measurement tells which. BBR refreshes its
// minimum round trip the same way (ProbeRTT).
func (l *Limiter) startProbeLocked() {
	l.probing = true
	l.saved = l.estimate
	// A quarter, not a half: a probe that still queues would measure a
	// baseline with our queue in it, and the limit could settle on it.
	l.estimate = max(float64(l.o.Min), l.estimate/4)
	l.windowFrom = l.seq
	l.probes++
}

// window gathers the samples of about one round trip.
type window struct {
	sum         float64
	count       int
	maxInflight int
}

// What an outcome teaches the limit.
const (
	nothing = iota
	sample
	cut
)

// lesson is what the limit learns from a delivery's outcome: see
// deliver.Outcome.
func lesson(o deliver.Outcome) int {
	switch o {
	case deliver.Accepted:
		return sample
	case deliver.Throttled, deliver.Overloaded:
		return cut
	}
	return nothing
}
