package limit_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/dispatcher/internal/limit"
)

// destination answers a round of n concurrent requests.
type destination func(n int) (deliver.Outcome, time.Duration)

// queueing models a destination that serves capacity requests at once in
// base; beyond that, requests queue and latency grows in proportion
// (Little's law).
func queueing(capacity int, base time.Duration) destination {
	return func(n int) (deliver.Outcome, time.Duration) {
		if n <= capacity {
			return deliver.Accepted, base
		}
		return deliver.Accepted, base * time.Duration(n) / time.Duration(capacity)
	}
}

// throttling models a destination that answers 429 to everything once more
// than capacity requests are in flight, and is fast otherwise.
func throttling(capacity int, base time.Duration) destination {
	return func(n int) (deliver.Outcome, time.Duration) {
		if n > capacity {
			return deliver.Overloaded, base
		}
		return deliver.Accepted, base
	}
}

// run drives l for rounds synchronous rounds: each takes every free slot,
// asks dest how the round went, and finishes every token with that answer.
// It checks the limiter's bounds every round and returns the limit after
// each.
func run(tb testing.TB, l *limit.Limiter, o limit.Options, rounds int, dest destination) []int {
	tb.Helper()
	limits := make([]int, 0, rounds)
	for range rounds {
		var toks []*limit.Token
		for {
			tok, ok := l.TryAcquire()
			if !ok {
				break
			}
			toks = append(toks, tok)
		}
		require.Len(tb, toks, l.Limit(), "a round takes every slot, no more")
		require.LessOrEqual(tb, l.InFlight(), o.Max)
		out, latency := dest(len(toks))
		for _, tok := range toks {
			tok.Done(out, latency)
		}
		require.Zero(tb, l.InFlight())
		lim := l.Limit()
		require.GreaterOrEqual(tb, lim, max(o.Min, 1))
		require.LessOrEqual(tb, lim, o.Max)
		limits = append(limits, lim)
	}
	return limits
}

func TestConvergesToCapacity(t *testing.T) {
	tests := []struct {
		name     string
		capacity int
		base     time.Duration
		initial  int
	}{
		{name: "small destination from above", capacity: 5, base: 20 * time.Millisecond, initial: 50},
		{name: "medium destination from below", capacity: 20, base: 10 * time.Millisecond, initial: 1},
		{name: "large destination", capacity: 60, base: 200 * time.Millisecond, initial: 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := limit.Options{Min: 1, Max: 500, Initial: tt.initial}
			l := limit.New(o)
			limits := run(t, l, o, 1500, queueing(tt.capacity, tt.base))
			// The limit settles where the destination is fully used and
			// latency stays within about twice its own: the tolerance (1.5)
			// plus a queue of √limit. Probe windows dip to a quarter.
			for i, lim := range limits[1000:] {
				require.GreaterOrEqual(t, lim, tt.capacity/4, "round %d", 1000+i)
				require.LessOrEqual(t, lim, 2*tt.capacity+3, "round %d", 1000+i)
			}
			last := limits[len(limits)-1]
			require.GreaterOrEqual(t, last, tt.capacity)
			s := l.Stats()
			require.Equal(t, tt.base, s.Baseline)
			require.LessOrEqual(t, s.Recent, 5*tt.base/2)
			require.Positive(t, s.Probes, "the baseline is measured again now and then")
		})
	}
}

func TestNeverExceedsMax(t *testing.T) {
	o := limit.Options{Min: 2, Max: 30, Initial: 2}
	l := limit.New(o)
	// A destination that never queues invites growth without end.
	limits := run(t, l, o, 300, queueing(1_000_000, 5*time.Millisecond))
	require.Equal(t, 30, limits[len(limits)-1])

	// Concurrent holders never see more than the limit in flight.
	var (
		mu      sync.Mutex
		highest int
		wg      sync.WaitGroup
	)
	for range 100 {
		wg.Go(func() {
			for range 20 {
				tok, err := l.Acquire(context.Background())
				require.NoError(t, err)
				mu.Lock()
				highest = max(highest, l.InFlight())
				mu.Unlock()
				tok.Done(deliver.Accepted, 5*time.Millisecond)
			}
		})
	}
	wg.Wait()
	require.LessOrEqual(t, highest, 30)
	require.Zero(t, l.InFlight())
}

func TestOverloadCutsOncePerWindow(t *testing.T) {
	l := limit.New(limit.Options{Max: 100, Initial: 40, Backoff: 0.5})
	var toks []*limit.Token
	for range 40 {
		tok, ok := l.TryAcquire()
		require.True(t, ok)
		toks = append(toks, tok)
	}
	// Fifty 429s of one round are one signal.
	for _, tok := range toks {
		tok.Done(deliver.Overloaded, time.Millisecond)
	}
	require.Equal(t, 20, l.Limit())
	require.EqualValues(t, 40, l.Stats().Overloads)

	// A request sent after the cut that is throttled too cuts again.
	tok, ok := l.TryAcquire()
	require.True(t, ok)
	tok.Done(deliver.Overloaded, time.Millisecond)
	require.Equal(t, 10, l.Limit())
}

func TestBacksOffAndRecovers(t *testing.T) {
	o := limit.Options{Min: 1, Max: 100, Initial: 10}
	l := limit.New(o)
	healthy := queueing(1_000_000, 10*time.Millisecond)

	limits := run(t, l, o, 200, healthy)
	require.Equal(t, 100, limits[len(limits)-1])

	// The destination throttles above 30 in flight: the limit saws below
	// and around it, as TCP's window does, and never runs away.
	limits = run(t, l, o, 400, throttling(30, 10*time.Millisecond))
	sum := 0
	for _, lim := range limits[100:] {
		require.LessOrEqual(t, lim, 45)
		sum += lim
	}
	mean := float64(sum) / float64(len(limits[100:]))
	require.InDelta(t, 25, mean, 10, "mean limit under throttling")

	// Down: everything fails, the limit falls to the minimum...
	limits = run(t, l, o, 50, func(int) (deliver.Outcome, time.Duration) { return deliver.Overloaded, time.Second })
	require.Equal(t, 1, limits[len(limits)-1])

	// ...and recovers once the destination is back.
	limits = run(t, l, o, 300, healthy)
	require.Equal(t, 100, limits[len(limits)-1])
}

func TestShrinksWhenLatencyGrows(t *testing.T) {
	o := limit.Options{Max: 64, Initial: 64}
	l := limit.New(o)
	run(t, l, o, 100, queueing(1_000, 10*time.Millisecond))
	require.Equal(t, 64, l.Limit())

	// The destination slows down threefold under the same load: a sign of
	// trouble, so the limit gives way, by about a tenth per round trip
	// (smoothed, so one slow window does not halve it).
	limits := run(t, l, o, 10, queueing(1_000, 30*time.Millisecond))
	for i := 1; i < len(limits); i++ {
		require.Less(t, limits[i], limits[i-1])
	}
	require.LessOrEqual(t, limits[len(limits)-1], 40)
}

// TestEachOutcome reads every delivery outcome the limit may be told: an
// acceptance is a latency sample, throttling cuts the limit at once, an
// overload alone is within chance (a destination may fail a request now and
// then), and the rest teach nothing (a lost answer's latency is the
// timeout, not a measurement).
func TestEachOutcome(t *testing.T) {
	tests := []struct {
		o                  deliver.Outcome
		samples, overloads int64
		cuts               bool
	}{
		{o: deliver.NotSent},
		{o: deliver.Accepted, samples: 1},
		{o: deliver.Refused},
		{o: deliver.Throttled, overloads: 1, cuts: true},
		{o: deliver.Overloaded, overloads: 1},
		{o: deliver.Lost},
	}
	for _, tt := range tests {
		t.Run(tt.o.String(), func(t *testing.T) {
			l := limit.New(limit.Options{Initial: 8, Max: 8})
			tok, err := l.Acquire(context.Background())
			require.NoError(t, err)
			tok.Done(tt.o, time.Second)
			s := l.Stats()
			require.Zero(t, s.InFlight)
			require.Equal(t, tt.samples, s.Samples)
			require.Equal(t, tt.overloads, s.Overloads)
			require.Equal(t, !tt.cuts, s.Limit == 8)
		})
	}
}

func TestIgnoreTeachesNothing(t *testing.T) {
	l := limit.New(limit.Options{Initial: 4, Max: 10})
	for range 100 {
		tok, err := l.Acquire(context.Background())
		require.NoError(t, err)
		tok.Done(deliver.NotSent, time.Hour)
	}
	s := l.Stats()
	require.Equal(t, 4, s.Limit)
	require.Zero(t, s.InFlight)
	require.Zero(t, s.Samples)
	require.Zero(t, s.Overloads)
}

func TestDoneTwiceIsHarmless(t *testing.T) {
	l := limit.New(limit.Options{Initial: 2, Max: 2, Backoff: 0.5})
	a, err := l.Acquire(context.Background())
	require.NoError(t, err)
	b, err := l.Acquire(context.Background())
	require.NoError(t, err)
	a.Done(deliver.NotSent, 0)
	a.Done(deliver.Overloaded, 0)
	require.Equal(t, 1, l.InFlight(), "the second Done neither frees b's slot nor counts")
	require.Equal(t, 2, l.Limit())
	b.Done(deliver.NotSent, 0)
	require.Zero(t, l.InFlight())
}

func TestAcquireHonoursContext(t *testing.T) {
	l := limit.New(limit.Options{Initial: 1, Max: 1})
	held, err := l.Acquire(context.Background())
	require.NoError(t, err)

	// Already cancelled: no wait at all.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = l.Acquire(ctx)
	require.ErrorIs(t, err, context.Canceled)

	// Cancelled while waiting.
	ctx, cancel = context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := l.Acquire(ctx)
		errc <- err
	}()
	require.Eventually(t, func() bool { return l.Stats().Waiting == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
	require.Zero(t, l.Stats().Waiting)
	require.Equal(t, 1, l.InFlight(), "the cancelled waiter holds nothing")

	// The slot goes to the next live waiter.
	got := make(chan *limit.Token, 1)
	go func() {
		tok, err := l.Acquire(context.Background())
		require.NoError(t, err)
		got <- tok
	}()
	require.Eventually(t, func() bool { return l.Stats().Waiting == 1 }, 5*time.Second, time.Millisecond)
	_, ok := l.TryAcquire()
	require.False(t, ok, "a free slot goes to the waiter first")
	held.Done(deliver.Accepted, time.Millisecond)
	tok := <-got
	require.Equal(t, 1, l.InFlight())
	tok.Done(deliver.Accepted, time.Millisecond)
	require.Zero(t, l.InFlight())
}

func TestWaitersAreServedInOrder(t *testing.T) {
	l := limit.New(limit.Options{Initial: 1, Max: 1})
	held, err := l.Acquire(context.Background())
	require.NoError(t, err)
	order := make(chan int, 3)
	for i := range 3 {
		go func() {
			tok, err := l.Acquire(context.Background())
			require.NoError(t, err)
			order <- i
			tok.Done(deliver.NotSent, 0)
		}()
		require.Eventually(t, func() bool { return l.Stats().Waiting == i+1 }, 5*time.Second, time.Millisecond)
	}
	held.Done(deliver.NotSent, 0)
	require.Equal(t, []int{0, 1, 2}, []int{<-order, <-order, <-order})
}

// TestNoLeaks races acquisitions, cancellations and releases: every slot
// comes back and no goroutine is left behind.
func TestNoLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	l := limit.New(limit.Options{Initial: 3, Max: 3})
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%5)*100*time.Microsecond)
			defer cancel()
			tok, err := l.Acquire(ctx)
			if err != nil {
				require.ErrorIs(t, err, context.DeadlineExceeded)
				return
			}
			runtime.Gosched()
			tok.Done(deliver.Accepted, time.Millisecond)
		})
	}
	wg.Wait()
	s := l.Stats()
	require.Zero(t, s.InFlight)
	require.Zero(t, s.Waiting)
	for range s.Limit {
		_, ok := l.TryAcquire()
		require.True(t, ok, "every slot is free again")
	}
	// Eventually checks the condition on a goroutine of its own.
	require.Eventually(t, func() bool { return runtime.NumGoroutine() <= before+1 }, 5*time.Second, time.Millisecond)
}

func TestOptions(t *testing.T) {
	tests := []struct {
		name      string
		o         limit.Options
		wantLimit int
	}{
		{name: "zero gets defaults", o: limit.Options{}, wantLimit: limit.DefaultInitial},
		{name: "initial above max", o: limit.Options{Max: 4, Initial: 10}, wantLimit: 4},
		{name: "initial below min", o: limit.Options{Min: 5, Max: 10, Initial: 2}, wantLimit: 5},
		{name: "max below min", o: limit.Options{Min: 5, Max: 3}, wantLimit: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.wantLimit, limit.New(tt.o).Limit())
		})
	}
}
