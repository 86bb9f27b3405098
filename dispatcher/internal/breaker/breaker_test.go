package breaker_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/breaker"
	"github.com/spoolhq/spool/dispatcher/internal/clock/clocktest"
	"github.com/spoolhq/spool/dispatcher/internal/deliver"
)

// newBreaker returns a breaker on a fake clock, with quiet logs.
func newBreaker(tb testing.TB, o breaker.Options) (*breaker.Breaker, *clocktest.Clock) {
	tb.Helper()
	clk := clocktest.New(false)
	o.Clock = clk
	o.Log = slog.New(slog.DiscardHandler)
	return breaker.New(o), clk
}

const (
	S = deliver.Accepted
	F = deliver.Overloaded
	I = deliver.NotSent
)

func TestOpens(t *testing.T) {
	tests := []struct {
		name     string
		o        breaker.Options
		outcomes []deliver.Outcome
		step     time.Duration // clock advance between outcomes
		want     breaker.State
	}{
		{name: "consecutive failures", o: breaker.Options{Failures: 3}, outcomes: []deliver.Outcome{F, F, F}, want: breaker.Open},
		{name: "one short", o: breaker.Options{Failures: 3}, outcomes: []deliver.Outcome{F, F}, want: breaker.Closed},
		{name: "a success resets the count", o: breaker.Options{Failures: 3}, outcomes: []deliver.Outcome{F, F, S, F, F}, want: breaker.Closed},
		{name: "ignored outcomes neither count nor reset", o: breaker.Options{Failures: 3}, outcomes: []deliver.Outcome{F, I, F, I, I, F}, want: breaker.Open},
		{name: "failure rate", o: breaker.Options{Failures: 100, FailureRate: 0.5, MinRequests: 10},
			outcomes: []deliver.Outcome{S, F, S, F, S, F, S, F, S, F}, want: breaker.Open},
		{name: "failure rate below threshold", o: breaker.Options{Failures: 100, FailureRate: 0.5, MinRequests: 10},
			outcomes: []deliver.Outcome{S, F, S, S, F, S, S, F, S, S, F, S}, want: breaker.Closed},
		{name: "failure rate needs enough requests", o: breaker.Options{Failures: 100, FailureRate: 0.5, MinRequests: 10},
			outcomes: []deliver.Outcome{F, S, F, S, F, F}, want: breaker.Closed},
		{name: "failure rate forgets the old window", o: breaker.Options{Failures: 100, FailureRate: 0.5, MinRequests: 10, Window: 10 * time.Second},
			outcomes: []deliver.Outcome{F, S, F, S, F, S, F, S, F, S, F, S}, step: 2 * time.Second, want: breaker.Closed},
		{name: "failure rate off by default", o: breaker.Options{Failures: 100},
			outcomes: []deliver.Outcome{S, F, S, F, S, F, S, F, S, F, S, F, S, F, S, F, S, F, S, F, S, F}, want: breaker.Closed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, clk := newBreaker(t, tt.o)
			for _, o := range tt.outcomes {
				b.Record(o)
				clk.Advance(tt.step)
			}
			require.Equal(t, tt.want, b.State())
			ok, _ := b.Allow()
			require.Equal(t, tt.want == breaker.Closed, ok)
		})
	}
}

func TestProbeCloses(t *testing.T) {
	b, clk := newBreaker(t, breaker.Options{Failures: 2, Cooldown: 5 * time.Second})
	ok, probe := b.Allow()
	require.True(t, ok)
	require.False(t, probe)
	b.Record(F)
	b.Record(F)
	require.Equal(t, breaker.Open, b.State())

	clk.Advance(5*time.Second - time.Nanosecond)
	ok, _ = b.Allow()
	require.False(t, ok, "still cooling down")

	clk.Advance(time.Nanosecond)
	require.Equal(t, breaker.HalfOpen, b.State())
	ok, probe = b.Allow()
	require.True(t, ok)
	require.True(t, probe)
	ok, _ = b.Allow()
	require.False(t, ok, "one probe at a time")

	b.Record(S)
	require.Equal(t, breaker.Closed, b.State())
	ok, probe = b.Allow()
	require.True(t, ok)
	require.False(t, probe)
}

// TestEachOutcome reads every delivery outcome the breaker may be told:
// whether it counts against the destination while closed, and what it
// does to a half-open probe. A refusal proves the destination up as well
// as an acceptance does.
func TestEachOutcome(t *testing.T) {
	tests := []struct {
		o deliver.Outcome
		// opens says one of it opens a breaker that opens on one failure;
		// probe is the state a half-open breaker's probe answered so leaves.
		opens bool
		probe breaker.State
	}{
		{o: deliver.NotSent, opens: false, probe: breaker.HalfOpen},
		{o: deliver.Accepted, opens: false, probe: breaker.Closed},
		{o: deliver.Refused, opens: false, probe: breaker.Closed},
		{o: deliver.Throttled, opens: false, probe: breaker.HalfOpen},
		{o: deliver.Overloaded, opens: true, probe: breaker.Open},
		{o: deliver.Lost, opens: true, probe: breaker.Open},
	}
	for _, tt := range tests {
		t.Run(tt.o.String(), func(t *testing.T) {
			b, _ := newBreaker(t, breaker.Options{Failures: 1, Cooldown: time.Second})
			b.Record(tt.o)
			require.Equal(t, tt.opens, b.State() == breaker.Open)

			b, clk := newBreaker(t, breaker.Options{Failures: 1, Cooldown: time.Second})
			b.Record(deliver.Overloaded)
			clk.Advance(time.Second)
			ok, probe := b.Allow()
			require.True(t, ok && probe)
			b.Record(tt.o)
			require.Equal(t, tt.probe, b.State())
			if tt.probe == breaker.HalfOpen {
				ok, probe := b.Allow()
				require.True(t, ok && probe, "another probe may go")
			}
		})
	}
}

func TestFailedProbesBackOff(t *testing.T) {
	b, clk := newBreaker(t, breaker.Options{Failures: 1, Cooldown: time.Second, MaxCooldown: 5 * time.Second})
	b.Record(F)
	require.Equal(t, time.Second, b.Stats().Cooldown)

	// Each failed probe doubles the cool-down, up to the cap.
	for _, want := range []time.Duration{2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second} {
		clk.Advance(b.Stats().Cooldown)
		ok, probe := b.Allow()
		require.True(t, ok)
		require.True(t, probe)
		b.Record(F)
		s := b.Stats()
		require.Equal(t, breaker.Open, s.State)
		require.Equal(t, want, s.Cooldown)
		clk.Advance(want - time.Nanosecond)
		ok, _ = b.Allow()
		require.False(t, ok)
		clk.Advance(time.Nanosecond)
	}
	ok, probe := b.Allow()
	require.True(t, ok)
	require.True(t, probe)
	b.Record(S)
	require.Equal(t, time.Second, b.Stats().Cooldown, "closing resets the cool-down")
}

func TestProbeWithoutEvidence(t *testing.T) {
	b, clk := newBreaker(t, breaker.Options{Failures: 1, Cooldown: time.Second, ProbeTimeout: 30 * time.Second})
	b.Record(F)
	clk.Advance(time.Second)

	// An empty probe receive lets another probe go.
	ok, probe := b.Allow()
	require.True(t, ok && probe)
	b.Record(I)
	require.Equal(t, breaker.HalfOpen, b.State())
	ok, probe = b.Allow()
	require.True(t, ok && probe)

	// A probe that never reports is given up after the probe timeout.
	clk.Advance(30*time.Second - time.Nanosecond)
	ok, _ = b.Allow()
	require.False(t, ok)
	clk.Advance(time.Nanosecond)
	ok, probe = b.Allow()
	require.True(t, ok && probe)
}

func TestOutcomesWhileOpenAreIgnored(t *testing.T) {
	b, clk := newBreaker(t, breaker.Options{Failures: 1, Cooldown: time.Second})
	b.Record(F)
	// Requests in flight when it opened answer late, either way.
	b.Record(S)
	b.Record(F)
	s := b.Stats()
	require.Equal(t, breaker.Open, s.State)
	require.Equal(t, time.Second, s.Cooldown)
	clk.Advance(time.Second)
	require.Equal(t, breaker.HalfOpen, b.State())
}

func TestStats(t *testing.T) {
	b, clk := newBreaker(t, breaker.Options{Failures: 2, Cooldown: 2 * time.Second})
	require.Equal(t, breaker.Stats{State: breaker.Closed, Cooldown: 2 * time.Second}, b.Stats())

	b.Record(F)
	require.Equal(t, 1, b.Stats().ConsecutiveFailures)
	b.Record(F)
	clk.Advance(3 * time.Second)
	_, _ = b.Allow()
	b.Record(F) // the probe fails: reopened, not a new opening
	clk.Advance(4 * time.Second)
	_, _ = b.Allow()
	b.Record(S)
	require.Equal(t, breaker.Stats{State: breaker.Closed, Opens: 1, OpenTime: 7 * time.Second, Cooldown: 2 * time.Second}, b.Stats())

	clk.Advance(time.Hour)
	b.Record(F)
	b.Record(F)
	clk.Advance(time.Second)
	s := b.Stats()
	require.Equal(t, breaker.Open, s.State)
	require.EqualValues(t, 2, s.Opens)
	require.Equal(t, 8*time.Second, s.OpenTime, "the current spell counts")
}

func TestWait(t *testing.T) {
	ctx := context.Background()
	b, clk := newBreaker(t, breaker.Options{Failures: 1, Cooldown: time.Second})

	probe, err := b.Wait(ctx)
	require.NoError(t, err)
	require.False(t, probe, "closed: no wait")

	b.Record(F)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = b.Wait(cctx)
	require.ErrorIs(t, err, context.Canceled)

	type result struct {
		probe bool
		err   error
	}
	wait := func() <-chan result {
		ch := make(chan result, 1)
		go func() {
			p, err := b.Wait(ctx)
			ch <- result{p, err}
		}()
		return ch
	}
	calls := clk.Calls()
	first := wait()
	require.Eventually(t, func() bool { return clk.Calls() > calls }, 5*time.Second, time.Millisecond)
	calls = clk.Calls()
	second := wait()
	require.Eventually(t, func() bool { return clk.Calls() > calls }, 5*time.Second, time.Millisecond)

	// The cool-down ends: exactly one waiter gets the probe.
	calls = clk.Calls()
	clk.Advance(time.Second)
	var got result
	select {
	case got = <-first:
	case got = <-second:
		second = first
	}
	require.NoError(t, got.err)
	require.True(t, got.probe)

	// The other waits on until the probe succeeds, then receives freely.
	require.Eventually(t, func() bool { return clk.Calls() > calls }, 5*time.Second, time.Millisecond,
		"the other waiter looked again and went back to waiting")
	select {
	case r := <-second:
		t.Fatalf("second waiter passed while the probe was out: %+v", r)
	default:
	}
	b.Record(S)
	got = <-second
	require.NoError(t, got.err)
	require.False(t, got.probe)
}

func TestWaitCancelledWhileOpen(t *testing.T) {
	b, clk := newBreaker(t, breaker.Options{Failures: 1, Cooldown: time.Minute})
	b.Record(F)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	calls := clk.Calls()
	go func() {
		_, err := b.Wait(ctx)
		errc <- err
	}()
	require.Eventually(t, func() bool { return clk.Calls() > calls }, 5*time.Second, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
}
