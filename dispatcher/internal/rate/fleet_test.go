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

// stepClock is a clock.Clock for a fleet of callers in virtual time: it
// stands still while any caller runs, and moves to the earliest wait's end
// once all of them wait on it.
type stepClock struct {
	mu     sync.Mutex
	cond   *sync.Cond
	now    time.Time
	timers []stepTimer
	halt   string // why the fleet stops early
}

type stepTimer struct {
	at time.Time
	ch chan time.Time
}

func newStepClock() *stepClock {
	c := &stepClock{now: time.Unix(1_700_000_000, 0)}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.timers = append(c.timers, stepTimer{at: c.now.Add(d), ch: ch})
	c.cond.Broadcast()
	return ch
}

// stop ends the fleet early, for why.
func (c *stepClock) stop(why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.halt == "" {
		c.halt = why
	}
	c.cond.Broadcast()
}

// fleet is the fleet function above in the clock's time: callers
// goroutines per limiter, the grants of each limiter counted within
// window after warmup.
func (c *stepClock) fleet(tb testing.TB, limiters []*rate.Limiter, callers int, warmup, window time.Duration) []int {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	from := c.Now().Add(warmup)
	to := from.Add(window)
	var wg sync.WaitGroup
	counts := pull(ctx, tb, &wg, limiters, callers, c.Now, from, to, func() { c.stop("a wait failed") })
	// A caller that never comes to wait on the clock would stall the
	// fleet; the watchdog turns that into a failure, not a hang.
	watchdog := time.AfterFunc(time.Minute, func() { c.stop("callers stopped waiting on the clock") })
	defer watchdog.Stop()
	n := len(limiters) * callers
	c.mu.Lock()
	for {
		for len(c.timers) < n && c.halt == "" {
			c.cond.Wait()
		}
		if c.halt != "" {
			halt, waiting := c.halt, len(c.timers)
			c.mu.Unlock()
			cancel()
			wg.Wait()
			tb.Fatalf("%s: %d of %d callers wait", halt, waiting, n)
		}
		next := c.timers[0].at
		for _, tm := range c.timers[1:] {
			if tm.at.Before(next) {
				next = tm.at
			}
		}
		if !next.Before(to) {
			break
		}
		c.now = next
		kept := c.timers[:0]
		for _, tm := range c.timers {
			if tm.at.After(c.now) {
				kept = append(kept, tm)
				continue
			}
			tm.ch <- c.now
		}
		c.timers = kept
	}
	c.mu.Unlock()
	cancel()
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
