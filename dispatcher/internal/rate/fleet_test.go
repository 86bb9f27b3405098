package rate_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/clock/clocktest"
	"github.com/spoolhq/spool/dispatcher/internal/rate"
)

// fleetSeconds is how long the fleet tests measure: SPOOL_RATE_TEST_SECONDS,
// or def.
func fleetSeconds(tb testing.TB, def int) time.Duration {
	tb.Helper()
	if v, ok := os.LookupEnv("SPOOL_RATE_TEST_SECONDS"); ok {
		n, err := strconv.Atoi(v)
		require.NoError(tb, err, "SPOOL_RATE_TEST_SECONDS")
		return time.Duration(n) * time.Second
	}
	return time.Duration(def) * time.Second
}

// fleet runs limiters, each pulled as fast as it grants by callers
// goroutines, for warm-up plus window, and returns the grants of each
// limiter within the window.
func fleet(tb testing.TB, limiters []*rate.Limiter, callers int, warmup, window time.Duration) []int {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	from := time.Now().Add(warmup)
	to := from.Add(window)
	var wg sync.WaitGroup
	counts := pull(ctx, tb, &wg, limiters, callers, time.Now, from, to, cancel)
	time.AfterFunc(time.Until(to), cancel)
	wg.Wait()
	return counts
}

// pull starts callers goroutines per limiter on wg, each waiting on its
// limiter until ctx ends, and counts in the returned slice (read it after
// wg.Wait) the grants of each limiter that fall, by now, within [from, to).
// A failed wait is reported and stops the fleet through halt.
func pull(ctx context.Context, tb testing.TB, wg *sync.WaitGroup, limiters []*rate.Limiter, callers int, now func() time.Time, from, to time.Time, halt func()) []int {
	counts := make([]int, len(limiters))
	var mu sync.Mutex
	for i, l := range limiters {
		for range callers {
			wg.Go(func() {
				for {
					err := l.Wait(ctx)
					if errors.Is(err, context.Canceled) {
						return
					}
					if err != nil {
						tb.Errorf("wait: %v", err)
						halt()
						return
					}
					if t := now(); !t.Before(from) && t.Before(to) {
						mu.Lock()
						counts[i]++
						mu.Unlock()
					}
				}
			})
		}
	}
	return counts
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// TestFleetRate is the accuracy target: three dispatchers pulling as fast as
// they can on one real DynamoDB table are granted the configured rate,
// within 10 %, and the table sees a fraction of the requests as writes.
func TestFleetRate(t *testing.T) {
	open := emulated(t)
	const perSecond = 50
	window := fleetSeconds(t, 10)
	var (
		apis     []*countingAPI
		limiters []*rate.Limiter
	)
	for range 3 {
		api := open()
		apis = append(apis, api)
		limiters = append(limiters, rate.New(api, table, "pay.example.com", perSecond, rate.Options{}))
	}
	counts := fleet(t, limiters, 8, time.Second, window)
	granted := sum(counts)
	got := float64(granted) / window.Seconds()
	t.Logf("granted %d in %s: %.1f/s (per dispatcher %v)", granted, window, got, counts)
	require.InEpsilon(t, perSecond, got, 0.10)
	for i, n := range counts {
		require.Greater(t, n, granted/10, "dispatcher %d gets a share", i)
	}
	var writes int64
	for _, a := range apis {
		writes += a.writes.Load()
	}
	t.Logf("writes %d for %d grants over the whole run", writes, sum(statsGranted(limiters)))
	require.Less(t, writes, int64(sum(statsGranted(limiters))/3), "leases save writes")
}

// TestFleetRateInMemory is the same measurement without the emulator, at a
// higher rate, in virtual time: the three limiters share one schedule and
// together are granted the configured rate, not three times it. Time moves
// only when every caller waits for its slot, straight to the earliest slot,
// so the figure does not depend on the machine's load.
func TestFleetRateInMemory(t *testing.T) {
	mem := rate.NewMemory()
	clk := newStepClock()
	const perSecond = 400
	var limiters []*rate.Limiter
	for range 3 {
		limiters = append(limiters, rate.NewWith(mem, "d", perSecond, rate.Options{Clock: clk}))
	}
	window := 5 * time.Second
	counts := clk.fleet(t, limiters, 8, 200*time.Millisecond, window)
	got := float64(sum(counts)) / window.Seconds()
	t.Logf("granted %.1f/s (per limiter %v)", got, counts)
	// Slots are handed out one interval apart across the fleet: only the
	// window's two edges can cost or add one.
	require.InDelta(t, perSecond*window.Seconds(), float64(sum(counts)), 2)
}

// stepClock runs a fleet of callers in virtual time: the clock stands still
// while any caller runs, and moves to the earliest wait's end once all of
// them wait on it.
type stepClock struct {
	*clocktest.Clock
}

func newStepClock() stepClock {
	return stepClock{clocktest.New(false)}
}

// fleet is the fleet function above in the clock's time: callers
// goroutines per limiter, the grants of each limiter counted within
// window after warmup.
func (c stepClock) fleet(tb testing.TB, limiters []*rate.Limiter, callers int, warmup, window time.Duration) []int {
	tb.Helper()
	ctx, halt := context.WithCancelCause(context.Background())
	from := c.Now().Add(warmup)
	to := from.Add(window)
	var wg sync.WaitGroup
	counts := pull(ctx, tb, &wg, limiters, callers, c.Now, from, to, func() { halt(errors.New("a wait failed")) })
	// A caller that never comes to wait on the clock would stall the
	// fleet; the watchdog turns that into a failure, not a hang.
	watchdog := time.AfterFunc(time.Minute, func() { halt(errors.New("callers stopped waiting on the clock")) })
	defer watchdog.Stop()
	n := len(limiters) * callers
	for {
		next, waiting, err := c.AwaitTimers(ctx, n)
		if err != nil {
			wg.Wait()
			tb.Fatalf("%v: %d of %d callers wait", context.Cause(ctx), waiting, n)
		}
		if !next.Before(to) {
			break
		}
		c.Advance(next.Sub(c.Now()))
	}
	halt(context.Canceled)
	wg.Wait()
	return counts
}

func statsGranted(ls []*rate.Limiter) []int {
	out := make([]int, len(ls))
	for i, l := range ls {
		out[i] = int(l.Stats().Granted)
	}
	return out
}
