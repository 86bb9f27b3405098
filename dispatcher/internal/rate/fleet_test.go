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
	counts := make([]int, len(limiters))
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for i, l := range limiters {
		for range callers {
			wg.Go(func() {
				for {
					err := l.Wait(ctx)
					if errors.Is(err, context.Canceled) {
						return
					}
					require.NoError(tb, err)
					if now := time.Now(); !now.Before(from) && now.Before(to) {
						mu.Lock()
						counts[i]++
						mu.Unlock()
					}
				}
			})
		}
	}
	time.AfterFunc(time.Until(to), cancel)
	wg.Wait()
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
	open := dynalite(t)
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
// higher rate, in less time.
func TestFleetRateInMemory(t *testing.T) {
	mem := rate.NewMemory()
	const perSecond = 400
	var limiters []*rate.Limiter
	for range 3 {
		limiters = append(limiters, rate.NewWith(mem, "d", perSecond, rate.Options{}))
	}
	window := 2 * time.Second
	counts := fleet(t, limiters, 8, 200*time.Millisecond, window)
	got := float64(sum(counts)) / window.Seconds()
	t.Logf("granted %.1f/s (per limiter %v)", got, counts)
	require.InEpsilon(t, perSecond, got, 0.10)
}

func statsGranted(ls []*rate.Limiter) []int {
	out := make([]int, len(ls))
	for i, l := range ls {
		out[i] = int(l.Stats().Granted)
	}
	return out
}
