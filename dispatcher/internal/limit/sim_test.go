package limit_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/clock/clocktest"
	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/dispatcher/internal/limit"
)

// simDestination is a destination in virtual time: how long a request sent
// at a moment with inflight requests in flight (itself included) takes,
// and the share of requests it fails with a 503 then, at random. A failed
// request takes as long as a good one, as the sink's injected failures do.
type simDestination struct {
	latency  func(at time.Duration, inflight int) time.Duration
	failRate func(at time.Duration) float64
}

// flat is a destination with one latency and a steady share of random 503s.
func flat(latency time.Duration, failRate float64) simDestination {
	return simDestination{
		latency:  func(time.Duration, int) time.Duration { return latency },
		failRate: func(time.Duration) float64 { return failRate },
	}
}

// simRun is what a simulation saw: every answer's time and outcome, and
// the limit after each.
type simRun struct {
	at     []time.Duration
	ok     []bool
	limits []int
}

// simulate drives l against d for dur of virtual time with an endless
// backlog of rows, as a dispatcher with a full queue does: every free slot
// sends a request at once. Time moves on the fake clock from one answer to
// the next; the same seed gives the same run.
func simulate(tb testing.TB, l *limit.Limiter, d simDestination, dur time.Duration, seed uint64) simRun {
	tb.Helper()
	type pending struct {
		tok     *limit.Token
		due     time.Time
		latency time.Duration
		fail    bool
	}
	clk := clocktest.New(false)
	start := clk.Now()
	rng := rand.New(rand.NewPCG(seed, seed))
	var (
		inflight []pending
		run      simRun
	)
	for clk.Now().Sub(start) < dur {
		now := clk.Now().Sub(start)
		for {
			tok, ok := l.TryAcquire()
			if !ok {
				break
			}
			lat := d.latency(now, len(inflight)+1)
			inflight = append(inflight, pending{
				tok: tok, due: clk.Now().Add(lat), latency: lat,
				fail: rng.Float64() < d.failRate(now),
			})
		}
		require.NotEmpty(tb, inflight, "the limit is at least one")
		next := 0
		for i, p := range inflight {
			if p.due.Before(inflight[next].due) {
				next = i
			}
		}
		p := inflight[next]
		inflight = append(inflight[:next], inflight[next+1:]...)
		clk.Advance(p.due.Sub(clk.Now()))
		if p.fail {
			p.tok.Done(deliver.Overloaded, p.latency)
		} else {
			p.tok.Done(deliver.Accepted, p.latency)
		}
		run.at = append(run.at, clk.Now().Sub(start))
		run.ok = append(run.ok, !p.fail)
		run.limits = append(run.limits, l.Limit())
	}
	return run
}

// rate is the accepted answers per second in [from, to).
func (r simRun) rate(from, to time.Duration) float64 {
	n := 0
	for i, at := range r.at {
		if at >= from && at < to && r.ok[i] {
			n++
		}
	}
	return float64(n) / (to - from).Seconds()
}

// limitAt is the limit after the last answer before at.
func (r simRun) limitAt(at time.Duration) int {
	lim := 0
	for i, a := range r.at {
		if a >= at {
			break
		}
		lim = r.limits[i]
	}
	return lim
}

// reached is when the limit first was at least lim, or -1.
func (r simRun) reached(lim int) time.Duration {
	for i, l := range r.limits {
		if l >= lim {
			return r.at[i]
		}
	}
	return -1
}

// fellTo is when, after from, the limit first was at most lim, or -1.
func (r simRun) fellTo(from time.Duration, lim int) time.Duration {
	for i, l := range r.limits {
		if r.at[i] >= from && l <= lim {
			return r.at[i]
		}
	}
	return -1
}

func TestRampsToCeilingWhenLatencyIsFlat(t *testing.T) {
	tests := []struct {
		name         string
		initial, max int
		within       time.Duration
	}{
		// One dispatcher's defaults: a short job is not spent ramping up.
		{name: "8 to 16", initial: 8, max: 16, within: time.Second},
		{name: "8 to 64", initial: 8, max: 64, within: 2 * time.Second},
		{name: "1 to 64", initial: 1, max: 64, within: 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := limit.New(limit.Options{Min: 1, Max: tt.max, Initial: tt.initial})
			run := simulate(t, l, flat(200*time.Millisecond, 0), 20*time.Second, 1)
			at := run.reached(tt.max)
			require.GreaterOrEqual(t, at, time.Duration(0), "never reached its ceiling")
			require.LessOrEqual(t, at, tt.within)
			require.Equal(t, tt.max, run.limits[len(run.limits)-1])
			// Little's law: max in flight over 200 ms, less the probe
			// windows that measure the baseline again.
			ideal := float64(tt.max) / 0.2
			require.GreaterOrEqual(t, run.rate(at, 20*time.Second), 0.9*ideal)
		})
	}
}

// TestRandomLossKeepsSpeed: a destination that fails a steady share of
// requests at random is not overloaded, and the limit must not treat it as
// if it were. Each loss rate runs with several seeds; the speed of the
// accepted answers is compared with the same destination failing nothing.
func TestRandomLossKeepsSpeed(t *testing.T) {
	const dur = 60 * time.Second
	o := limit.Options{Min: 1, Max: 16, Initial: 8}
	clean := simulate(t, limit.New(o), flat(200*time.Millisecond, 0), dur, 1).rate(0, dur)
	tests := []struct {
		failRate float64
		// floor is the least share of the clean speed the accepted answers
		// keep: what the loss itself takes, and at most 15 % more for 2 %.
		floor float64
	}{
		{failRate: 0.02, floor: 0.85},
		{failRate: 0.05, floor: 0.8},
		{failRate: 0.10, floor: 0.7},
	}
	for _, tt := range tests {
		for seed := range uint64(5) {
			l := limit.New(o)
			run := simulate(t, l, flat(200*time.Millisecond, tt.failRate), dur, seed)
			ratio := run.rate(0, dur) / clean
			t.Logf("%.0f %% random 503s, seed %d: %.1f rows/s, %.2f of clean (%.1f); %d cuts, usual loss %.3f",
				100*tt.failRate, seed, run.rate(0, dur), ratio, clean, l.Stats().Cuts, l.Stats().UsualLoss)
			require.GreaterOrEqual(t, ratio, tt.floor, "%.0f %% loss, seed %d", 100*tt.failRate, seed)
		}
	}
}

// TestErrorRateStepCuts: a destination that starts failing far more than it
// usually does, at the same latency (a load shedder failing fast), is
// overloaded: the limit gives way within a few round trips, as the plain
// loss rule did, and comes back once the errors stop.
func TestErrorRateStepCuts(t *testing.T) {
	const step, end = 20 * time.Second, 30 * time.Second
	for _, usual := range []float64{0, 0.02} {
		l := limit.New(limit.Options{Min: 1, Max: 16, Initial: 16})
		d := flat(200*time.Millisecond, 0)
		d.failRate = func(at time.Duration) float64 {
			if at >= step && at < end {
				return 0.5
			}
			return usual
		}
		run := simulate(t, l, d, 40*time.Second, 7)
		require.Equal(t, 16, run.limitAt(step), "usual loss %.2f: at the ceiling before the step", usual)
		// One cut per round trip from 16: 12, 9, 6, 5 (Backoff 0.75).
		halved := run.fellTo(step, 8)
		require.GreaterOrEqual(t, halved, step)
		require.LessOrEqual(t, halved-step, time.Second, "usual loss %.2f: halved %v after the step", usual, halved-step)
		require.LessOrEqual(t, run.limitAt(end), 4, "usual loss %.2f: still cut while it lasts", usual)
		require.Equal(t, 16, run.limitAt(40*time.Second), "usual loss %.2f: back at the ceiling", usual)
	}
}

// TestLatencyStepCuts: a destination whose latency rises under the same
// load is queueing: the limit shrinks with the gradient, and an overload
// answer while latency is up cuts at once, whatever the usual loss.
func TestLatencyStepCuts(t *testing.T) {
	const step = 20 * time.Second
	// Serves 8 requests at once in 200 ms until the step; from then on only
	// 4, the rest queueing (Little's law).
	capacity := func(at time.Duration) int {
		if at < step {
			return 8
		}
		return 4
	}
	d := simDestination{
		latency: func(at time.Duration, inflight int) time.Duration {
			return 200 * time.Millisecond * time.Duration(max(inflight, capacity(at))) / time.Duration(capacity(at))
		},
		failRate: func(time.Duration) float64 { return 0.02 },
	}
	l := limit.New(limit.Options{Min: 1, Max: 64, Initial: 8})
	run := simulate(t, l, d, 40*time.Second, 3)
	before := run.limitAt(step)
	require.GreaterOrEqual(t, before, 8, "uses what the destination serves")
	require.LessOrEqual(t, before, 2*8+3, "without a queue far beyond it")
	// Tolerance 1.5 and a queue of √limit: about 1.5 × 4 + 2 in flight.
	near := 2*4 + 3
	settled := run.fellTo(step, near)
	require.GreaterOrEqual(t, settled, step)
	require.LessOrEqual(t, settled-step, 2*time.Second, "near the new capacity %v after the step", settled-step)
	for _, lim := range run.limits[len(run.limits)-100:] {
		require.LessOrEqual(t, lim, near, "stays near the new capacity")
	}
	// Little's law: 4 at a time in 200 ms is 20 a second, less the 2 %.
	require.GreaterOrEqual(t, run.rate(step+5*time.Second, 40*time.Second), 0.9*20, "and keeps it busy")
}

// TestEveryLossCutsCollapsesUnderRandomLoss: with EveryLossCuts the limit
// reads random 503s as overload, as the plain loss rule did, and loses far
// more than the loss itself; the benchmark's comparison rests on that.
func TestEveryLossCutsCollapsesUnderRandomLoss(t *testing.T) {
	const dur = 60 * time.Second
	o := limit.Options{Min: 1, Max: 16, Initial: 8, EveryLossCuts: true}
	clean := simulate(t, limit.New(o), flat(200*time.Millisecond, 0), dur, 1).rate(0, dur)
	for seed := range uint64(5) {
		l := limit.New(o)
		run := simulate(t, l, flat(200*time.Millisecond, 0.02), dur, seed)
		ratio := run.rate(0, dur) / clean
		t.Logf("2 %% random 503s, every loss cuts, seed %d: %.1f rows/s, %.2f of clean (%.1f); %d cuts",
			seed, run.rate(0, dur), ratio, clean, l.Stats().Cuts)
		require.Less(t, ratio, 0.85, "seed %d: every loss cutting should cost more than the floor allows", seed)
	}
}
