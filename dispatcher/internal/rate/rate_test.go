package rate_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/clock/clocktest"
	"github.com/spoolhq/spool/dispatcher/internal/rate"
)

// countingBackend counts reservations and can fail them.
type countingBackend struct {
	rate.Backend
	mu       sync.Mutex
	reserves int
	spans    []time.Duration
	err      error
}

func (c *countingBackend) Reserve(ctx context.Context, dest string, floor time.Time, span time.Duration) (time.Time, error) {
	c.mu.Lock()
	c.reserves++
	c.spans = append(c.spans, span)
	err := c.err
	c.mu.Unlock()
	if err != nil {
		return time.Time{}, err
	}
	return c.Backend.Reserve(ctx, dest, floor, span)
}

// waitTimes calls Wait n times in a row and returns the clock after each.
func waitTimes(tb testing.TB, l *rate.Limiter, clk *clocktest.Clock, n int) []time.Duration {
	tb.Helper()
	start := clk.Now()
	out := make([]time.Duration, n)
	for i := range out {
		require.NoError(tb, l.Wait(context.Background()))
		out[i] = clk.Now().Sub(start)
	}
	return out
}

func TestNoLimit(t *testing.T) {
	for _, perSecond := range []float64{0, -1} {
		l := rate.NewWith(rate.NewMemory(), "d", perSecond, rate.Options{})
		require.Nil(t, l)
		require.NoError(t, l.Wait(context.Background()))
		require.Zero(t, l.Rate())
		require.Equal(t, rate.Stats{}, l.Stats())
	}
}

func TestSpacing(t *testing.T) {
	tests := []struct {
		name      string
		perSecond float64
		burst     int
		want      []time.Duration
	}{
		{name: "evenly spaced", perSecond: 50, want: []time.Duration{0, 20, 40, 60, 80, 100}},
		{name: "burst after idle", perSecond: 10, burst: 3, want: []time.Duration{0, 0, 0, 100, 200, 300}},
		{name: "fractional rate", perSecond: 2.5, want: []time.Duration{0, 400, 800, 1200}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clocktest.New(true)
			l := rate.NewWith(rate.NewMemory(), "d", tt.perSecond, rate.Options{Burst: tt.burst, Clock: clk})
			got := waitTimes(t, l, clk, len(tt.want))
			for i := range tt.want {
				tt.want[i] *= time.Millisecond
			}
			require.Equal(t, tt.want, got)
			require.Equal(t, tt.perSecond, l.Rate())
		})
	}
}

func TestLeasesGrowAndSaveWrites(t *testing.T) {
	clk := clocktest.New(true)
	b := &countingBackend{Backend: rate.NewMemory()}
	l := rate.NewWith(b, "d", 100, rate.Options{MaxLease: 10, Clock: clk})
	got := waitTimes(t, l, clk, 1000)
	for i, d := range got {
		require.Equal(t, time.Duration(i)*10*time.Millisecond, d, "request %d", i)
	}
	// 1+2+4+8 slots, then leases of ten.
	require.Equal(t, []time.Duration{10, 20, 40, 80, 100}, ms(b.spans[:5]))
	require.Equal(t, 4+(1000-15+9)/10, b.reserves)
	s := l.Stats()
	require.EqualValues(t, 1000, s.Granted)
	require.EqualValues(t, b.reserves, s.Leases)
	require.Equal(t, 10, s.Lease)
}

func ms(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d / time.Millisecond
	}
	return out
}

func TestUnusedSlotsExpire(t *testing.T) {
	clk := clocktest.New(true)
	b := &countingBackend{Backend: rate.NewMemory()}
	l := rate.NewWith(b, "d", 100, rate.Options{MaxLease: 8, Expire: 50 * time.Millisecond, Clock: clk})
	waitTimes(t, l, clk, 1+2+4+1) // the last lease holds 8 slots, one used
	require.Equal(t, 8, l.Stats().Lease)

	// The caller goes quiet; its leased slots pass.
	clk.Advance(time.Second)
	start := clk.Now()
	require.NoError(t, l.Wait(context.Background()))
	require.Equal(t, start, clk.Now(), "an idle schedule restarts at now, not with a burst")
	s := l.Stats()
	require.EqualValues(t, 7, s.Expired)
	require.Equal(t, 4, s.Lease, "wasted slots halve the next lease")
}

func TestCancelledWaitGivesItsSlotBack(t *testing.T) {
	clk := clocktest.New(false)
	l := rate.NewWith(rate.NewMemory(), "d", 10, rate.Options{Clock: clk})
	require.NoError(t, l.Wait(context.Background())) // slot 0, now

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	calls := clk.Calls()
	go func() { errc <- l.Wait(ctx) }()
	require.Eventually(t, func() bool { return clk.Calls() > calls }, 5*time.Second, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)

	// The next caller gets the slot at 100 ms that the first gave back.
	done := make(chan error, 1)
	calls = clk.Calls()
	go func() { done <- l.Wait(context.Background()) }()
	require.Eventually(t, func() bool { return clk.Calls() > calls }, 5*time.Second, time.Millisecond)
	clk.Advance(100*time.Millisecond - time.Nanosecond)
	select {
	case err := <-done:
		t.Fatalf("granted before its slot: %v", err)
	default:
	}
	clk.Advance(time.Nanosecond)
	require.NoError(t, <-done)
	s := l.Stats()
	require.EqualValues(t, 2, s.Granted)
	require.EqualValues(t, 2, s.Leases, "the given-back slot was not leased again")
	require.Zero(t, s.Waiting)
}

func TestCancelledBeforeASlot(t *testing.T) {
	l := rate.NewWith(rate.NewMemory(), "d", 10, rate.Options{Clock: clocktest.New(true)})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, l.Wait(ctx), context.Canceled)
	require.Zero(t, l.Stats().Waiting)
}

func TestBackendErrors(t *testing.T) {
	boom := errors.New("throttled")
	b := &countingBackend{Backend: rate.NewMemory(), err: boom}
	l := rate.NewWith(b, "pay.example", 10, rate.Options{Clock: clocktest.New(true)})
	err := l.Wait(context.Background())
	require.ErrorIs(t, err, boom)
	require.ErrorContains(t, err, "reserve 1 requests to pay.example")
	require.Zero(t, l.Stats().Granted)
	require.Zero(t, l.Stats().Waiting)

	b.err = nil
	require.NoError(t, l.Wait(context.Background()), "a later Wait tries again")
}

// TestConcurrentWaitersShareLeases runs many callers at once on virtual
// time: every grant is a distinct slot, and the lease covers the queue.
func TestConcurrentWaitersShareLeases(t *testing.T) {
	clk := clocktest.New(true)
	b := &countingBackend{Backend: rate.NewMemory()}
	l := rate.NewWith(b, "d", 1000, rate.Options{MaxLease: 10, Clock: clk})
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			for range 50 {
				require.NoError(t, l.Wait(context.Background()))
			}
		})
	}
	wg.Wait()
	s := l.Stats()
	require.EqualValues(t, 1000, s.Granted)
	require.Zero(t, s.Waiting)
	require.Less(t, b.reserves, 1000/5, "leases batch the writes")
	var reserved time.Duration
	for _, sp := range b.spans {
		reserved += sp
	}
	// Every grant had a slot of its own; what is left over is at most the
	// unused end of the last lease.
	unused := reserved/time.Millisecond - time.Duration(s.Granted)
	require.GreaterOrEqual(t, unused, time.Duration(s.Expired))
	require.Less(t, unused, time.Duration(10))
}

func TestFarAheadLeasesOneAtATime(t *testing.T) {
	clk := clocktest.New(true)
	mem := rate.NewMemory()
	// Other dispatchers booked five seconds of the schedule.
	_, err := mem.Reserve(context.Background(), "d", clk.Now(), 5*time.Second)
	require.NoError(t, err)
	b := &countingBackend{Backend: mem}
	l := rate.NewWith(b, "d", 10, rate.Options{Ahead: time.Second, Clock: clk})
	got := waitTimes(t, l, clk, 6)
	require.Equal(t, []time.Duration{5000, 5100, 5200, 5300, 5400, 5500}, ms(got))
	// The first lease starts five seconds out, so the next is a single
	// slot; once caught up, leases grow again.
	require.Equal(t, []time.Duration{100, 100, 200, 400}, ms(b.spans))
}

// gatedBackend holds every reservation until released.
type gatedBackend struct {
	rate.Backend
	entered chan struct{}
	release chan struct{}
}

func (g *gatedBackend) Reserve(ctx context.Context, dest string, floor time.Time, span time.Duration) (time.Time, error) {
	g.entered <- struct{}{}
	select {
	case <-g.release:
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	}
	return g.Backend.Reserve(ctx, dest, floor, span)
}

func TestLeaseOutlivesItsCaller(t *testing.T) {
	g := &gatedBackend{Backend: rate.NewMemory(), entered: make(chan struct{}, 1), release: make(chan struct{})}
	clk := clocktest.New(true)
	l := rate.NewWith(g, "d", 10, rate.Options{Clock: clk})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Wait(ctx) }()
	<-g.entered
	cancel()
	close(g.release)
	// The caller gave up, but its slot is granted to no one else and stays
	// for the next caller; it was not lost with a cancelled write.
	require.ErrorIs(t, <-errc, context.Canceled)
	require.EqualValues(t, 1, l.Stats().Leases)
	require.NoError(t, l.Wait(context.Background()))
	select {
	case <-g.entered:
		t.Fatal("the next caller leased again instead of using the slot")
	default:
	}
	require.EqualValues(t, 1, l.Stats().Granted)
}

// TestDeadDispatcherCostsOneLease: a dispatcher that stops with leased
// slots in hand holds up the schedule by that lease at most, once.
func TestDeadDispatcherCostsOneLease(t *testing.T) {
	clk := clocktest.New(true)
	mem := rate.NewMemory()
	dead := rate.NewWith(mem, "d", 10, rate.Options{Clock: clk})
	// Leases of 1, 2, 4 and 8 slots; it dies after its slot at 700 ms,
	// holding seven slots, 800 to 1400 ms.
	waitTimes(t, dead, clk, 8)
	require.Equal(t, 8, dead.Stats().Lease)

	// The live one, starting at 700 ms, waits out the dead one's lease
	// and then runs at the full rate.
	live := rate.NewWith(mem, "d", 10, rate.Options{Clock: clk})
	got := waitTimes(t, live, clk, 5)
	require.Equal(t, []time.Duration{800, 900, 1000, 1100, 1200}, ms(got))
}
