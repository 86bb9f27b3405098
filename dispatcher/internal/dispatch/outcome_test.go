package dispatch_test

import (
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/breaker"
	"github.com/spoolhq/spool/dispatcher/internal/clock/clocktest"
	"github.com/spoolhq/spool/dispatcher/internal/consume"
	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/dispatcher/internal/dispatch"
	"github.com/spoolhq/spool/dispatcher/internal/flow"
	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	"github.com/spoolhq/spool/dispatcher/internal/limit"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

// TestHalfOpenProbeAnsweredWithARefusalClosesTheBreaker: a 4xx proves the
// destination is up, so the probe that gets one closes the breaker rather
// than letting another probe go.
func TestHalfOpenProbeAnsweredWithARefusalClosesTheBreaker(t *testing.T) {
	for _, status := range []int{400, 422, 409} {
		t.Run(statusName(status), func(t *testing.T) {
			clk := clocktest.New(false)
			b := breaker.New(breaker.Options{Failures: 1, Cooldown: time.Second, Clock: clk, Log: slog.New(slog.DiscardHandler)})
			c := &flow.Control{Breaker: b}
			b.Record(deliver.Overloaded)
			require.Equal(t, breaker.Open, b.State())
			clk.Advance(time.Second)
			probe, err := c.Receive(t.Context())
			require.NoError(t, err)
			require.True(t, probe, "the receive carries the probe")

			f := newFixtureWith(t, sealed, ledger.Hold, dispatch.Options{Pacer: c}, &deliver.Failure{Status: status, Written: true})
			f.h.Handle(t.Context(), message(1))
			require.Equal(t, 1, f.send.calls)
			require.Equal(t, breaker.Closed, b.State())
		})
	}
}

// TestLostAnswerDoesNotShrinkTheLimit: an answer that never came is a
// failure for the breaker but no measure of load; throttling and overload
// are read as load (the limit decides whether one is enough to cut: a 429
// is, a single 503 is within a destination's random failures).
func TestLostAnswerDoesNotShrinkTheLimit(t *testing.T) {
	tests := []struct {
		name         string
		err          error
		load, shrink bool
	}{
		{name: "lost after writing", err: timedOut},
		{name: "refused", err: &deliver.Failure{Status: 422, Written: true}},
		{name: "throttled", err: &deliver.Failure{Status: 429, Written: true}, load: true, shrink: true},
		{name: "overloaded", err: &deliver.Failure{Status: 503, Written: true}, load: true},
		{name: "unreachable", err: &deliver.Failure{Err: context.DeadlineExceeded}, load: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := limit.New(limit.Options{Min: 1, Max: 16, Initial: 16})
			f := newFixtureWith(t, sealed, ledger.Hold, dispatch.Options{Pacer: &flow.Control{Limit: l}}, tt.err)
			f.h.Handle(t.Context(), message(1))
			require.Equal(t, 1, f.send.calls)
			require.Zero(t, l.InFlight(), "the slot is given back")
			require.Equal(t, tt.load, l.Stats().Overloads == 1, "read as load")
			if tt.shrink {
				require.Less(t, l.Limit(), 16)
			} else {
				require.Equal(t, 16, l.Limit())
			}
		})
	}
}

// TestConflictIsTransientUnlessConfigured: a 409 may mean a request with
// the same key is still in progress; only when configured does it count
// as delivered.
func TestConflictIsTransientUnlessConfigured(t *testing.T) {
	conflict := &deliver.Failure{Status: 409, Written: true}
	t.Run("by default", func(t *testing.T) {
		f := newFixture(t, sealed, ledger.Hold, conflict)
		require.Equal(t, consume.After(time.Second), f.h.Handle(t.Context(), message(1)))
		r, _, err := f.ledger.Get(t.Context(), "job:1")
		require.NoError(t, err)
		require.Equal(t, spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED, r.State, "released for another attempt, not rejected")
		require.Equal(t, consume.Delete, f.h.Handle(t.Context(), message(1)))
		require.Equal(t, jobstore.Counts{Retries: 1, Delivered: 1}, f.counts.of("job"))
	})
	t.Run("configured as already applied", func(t *testing.T) {
		f := newFixtureWith(t, sealed, ledger.Hold, dispatch.Options{AlreadyApplied: []int{409}}, conflict)
		require.Equal(t, consume.Delete, f.h.Handle(t.Context(), message(1)))
		require.Equal(t, jobstore.Counts{Delivered: 1}, f.counts.of("job"))
	})
}

// TestShortLeaseReleasesTheRowUnsent: the fixture's ledger leases a claim
// for 25 s on a clock that stands still, so 25 s are left when the request
// would go out; it must cover the destination's timeout and the outcome
// write (2 s).
func TestShortLeaseReleasesTheRowUnsent(t *testing.T) {
	tests := []struct {
		sendTimeout time.Duration
		sent        bool
	}{
		{sendTimeout: 10 * time.Second, sent: true},
		{sendTimeout: 23 * time.Second, sent: true},
		{sendTimeout: 24 * time.Second, sent: false},
		{sendTimeout: time.Minute, sent: false},
	}
	for _, tt := range tests {
		t.Run(tt.sendTimeout.String(), func(t *testing.T) {
			p := &pacer{}
			f := newFixtureWith(t, sealed, ledger.Hold, dispatch.Options{SendTimeout: tt.sendTimeout, Pacer: p})
			d := f.h.Handle(t.Context(), message(1))
			r, _, err := f.ledger.Get(t.Context(), "job:1")
			require.NoError(t, err)
			if tt.sent {
				require.Equal(t, consume.Delete, d)
				require.Equal(t, 1, f.send.calls)
				return
			}
			require.Equal(t, consume.After(time.Second), d)
			require.Zero(t, f.send.calls, "nothing is sent")
			require.Equal(t, spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED, r.State, "released for another attempt")
			require.Zero(t, r.LeaseUntil)
			require.Contains(t, r.Reason, "claim lease too short to send")
			require.Equal(t, []deliver.Outcome{deliver.NotSent}, p.outcomes())
		})
	}
}

// TestHungJobReadIsBounded: every delivery of a job waits on one shared
// job read; a read that hangs fails after CallTimeout and the messages are
// left for redelivery, and a delivery whose own context ends stops waiting
// at once.
func TestHungJobReadIsBounded(t *testing.T) {
	f := newFixtureWith(t, sealed, ledger.Hold, dispatch.Options{CallTimeout: 50 * time.Millisecond})
	f.jobs.hold = make(chan struct{}) // never released: the read hangs

	got := make(chan consume.Disposition, 2)
	go func() { got <- f.h.Handle(context.Background(), message(1)) }()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { got <- f.h.Handle(ctx, messageKey(2)) }()
	cancel()
	for range 2 {
		select {
		case d := <-got:
			require.Equal(t, consume.Leave, d)
		case <-time.After(5 * time.Second):
			t.Fatal("a delivery is stuck on a hung job read")
		}
	}
	require.Zero(t, f.send.calls)
}

func statusName(status int) string { return strconv.Itoa(status) }
