package dispatch_test

import (
	"context"
	"errors"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/consume"
	"github.com/spoolhq/spool/dispatcher/internal/deadletter"
	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/dispatcher/internal/dispatch"
	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

func unavailable(n int) []error {
	out := make([]error, n)
	for i := range out {
		out[i] = &deliver.Failure{Status: 503, Written: true, Excerpt: "SECRET-IBAN echoed"}
	}
	return out
}

func TestBackoffGrowsWithFullJitter(t *testing.T) {
	tests := []struct {
		name   string
		jitter float64
		want   []time.Duration
	}{
		// The jitter's top: each wait is the cap, doubling to BackoffMax.
		{name: "top of the range", jitter: 1, want: []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}},
		{name: "middle of the range", jitter: 0.5, want: []time.Duration{time.Second, time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}},
		// SQS counts visibility in whole seconds; a zero wait would make
		// the message visible at once.
		{name: "bottom of the range is a second", jitter: 0, want: []time.Duration{time.Second, time.Second, time.Second, time.Second, time.Second, time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixtureWith(t, sealed, ledger.Hold, dispatch.Options{
				BackoffMax: 10 * time.Second, MaxAttempts: 100, Rand: func() float64 { return tt.jitter },
			}, unavailable(len(tt.want))...)
			for i, want := range tt.want {
				require.Equal(t, consume.After(want), f.h.Handle(t.Context(), message(1)), "attempt %d", i+1)
			}
			require.Equal(t, jobstore.Counts{Retries: int64(len(tt.want))}, f.counts.of("job"))
		})
	}
}

func TestRetryBudgetDeadLetters(t *testing.T) {
	f := newFixtureWith(t, sealed, ledger.Hold, dispatch.Options{MaxAttempts: 3}, unavailable(4)...)
	require.Equal(t, consume.After(time.Second), f.h.Handle(t.Context(), message(1)))
	require.Equal(t, consume.After(time.Second), f.h.Handle(t.Context(), message(1)))
	want := deadletter.Reason{Reason: "gave up after 3 attempts; last: 503 Service Unavailable", Status: 503, Attempts: 3}
	require.Equal(t, consume.DeadLetter(want), f.h.Handle(t.Context(), message(1)))
	require.Equal(t, 3, f.send.calls)

	// The ledger says why, and the claim is released: a redriven message
	// may claim the row again.
	r, ok, err := f.ledger.Get(t.Context(), "job:1")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED, r.State)
	require.Zero(t, r.LeaseUntil)
	require.Equal(t, "dead-lettered: "+want.Reason, r.Reason)
	require.NotContains(t, r.Reason, "SECRET-IBAN", "a dead letter's reason never carries the answer's body")
	require.Equal(t, jobstore.Counts{Retries: 2, DeadLettered: 1}, f.counts.of("job"), "the dead-lettered row settles its job")

	// Redriven with the attempts it had as its base, it gets a fresh
	// budget: one more failure is retried, not dead-lettered again.
	m := message(1)
	m.AttemptBase = 3
	require.Equal(t, consume.After(time.Second), f.h.Handle(t.Context(), m))
	require.Equal(t, consume.Delete, f.h.Handle(t.Context(), m))
	require.Equal(t, jobstore.Counts{Retries: 3, Delivered: 1}, f.counts.of("job"), "delivered after the redrive, it left the dead letters")
}

func TestRetryAgeDeadLetters(t *testing.T) {
	f := newFixtureWith(t, sealed, ledger.Hold, dispatch.Options{MaxAge: time.Hour}, &deliver.Failure{Err: errors.New("dial tcp: connection refused")})
	m := message(1)
	m.SentAt = t0.Add(-61 * time.Minute)
	d := f.h.Handle(t.Context(), m)
	require.Equal(t, consume.DeadLetter(deadletter.Reason{
		Reason: "gave up after 1h1m0s in the queue (1 attempts); last: destination unreachable: dial tcp: connection refused", Attempts: 1,
	}), d)
}

func TestRejectedIsNeverDeadLettered(t *testing.T) {
	f := newFixtureWith(t, sealed, ledger.Hold, dispatch.Options{MaxAttempts: 1}, &deliver.Failure{Status: 422, Written: true})
	require.Equal(t, consume.Delete, f.h.Handle(t.Context(), message(1)))
}

func TestPausedJobComesBackLater(t *testing.T) {
	tests := []struct {
		receiveCount int
		want         time.Duration
	}{
		{1, 10 * time.Second}, {2, 20 * time.Second}, {4, 80 * time.Second}, {6, 5 * time.Minute}, {50, 5 * time.Minute},
	}
	f := newFixture(t, sealed, ledger.Hold)
	f.jobs.job.Paused = true
	for _, tt := range tests {
		m := message(1)
		m.ReceiveCount = tt.receiveCount
		require.Equal(t, consume.After(tt.want), f.h.Handle(t.Context(), m), "receive %d", tt.receiveCount)
	}
	require.Zero(t, f.send.calls)
	_, claimed, err := f.ledger.Get(t.Context(), "job:1")
	require.NoError(t, err)
	require.False(t, claimed, "no ledger record, so no retry budget used")
	require.Equal(t, jobstore.Counts{}, f.counts.of("job"))
}

// pacer hands out slots, blocking while held, and records the outcome
// each slot was given back with.
type pacer struct {
	hold chan struct{}

	mu   sync.Mutex
	done []deliver.Outcome
}

func (p *pacer) Acquire(ctx context.Context) (func(deliver.Outcome, time.Duration), error) {
	if p.hold != nil {
		select {
		case <-p.hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return func(o deliver.Outcome, _ time.Duration) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.done = append(p.done, o)
	}, nil
}

func (p *pacer) outcomes() []deliver.Outcome {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]deliver.Outcome(nil), p.done...)
}

// TestPacerIsToldEveryOutcome: every send is classified once, and the
// pacer hears it, refusals and lost answers included.
func TestPacerIsToldEveryOutcome(t *testing.T) {
	p := &pacer{}
	f := newFixtureWith(t, sealed, ledger.Hold, dispatch.Options{Pacer: p, AlreadyApplied: []int{409}},
		&deliver.Failure{Status: 503, Written: true}, &deliver.Failure{Status: 422, Written: true},
		&deliver.Failure{Status: 409, Written: true}, timedOut, &deliver.Failure{Status: 429, Written: true, RetryAfter: 2 * time.Second},
		&deliver.Failure{Err: errors.New("dial tcp: connection refused")}, &deliver.Failure{Status: 302, Written: true})
	require.Equal(t, consume.After(time.Second), f.h.Handle(t.Context(), message(1)))
	require.Equal(t, consume.Delete, f.h.Handle(t.Context(), messageKey(2)))
	require.Equal(t, consume.Delete, f.h.Handle(t.Context(), messageKey(3)))
	require.Equal(t, consume.Delete, f.h.Handle(t.Context(), messageKey(4)))
	require.Equal(t, consume.After(2*time.Second), f.h.Handle(t.Context(), messageKey(5)), "a 429's Retry-After is honoured")
	require.Equal(t, consume.After(time.Second), f.h.Handle(t.Context(), messageKey(6)))
	require.Equal(t, consume.After(time.Second), f.h.Handle(t.Context(), messageKey(7)))
	require.Equal(t, consume.Delete, f.h.Handle(t.Context(), messageKey(8)))
	// Row 2 again: suppressed by the ledger, no request, yet the slot is
	// given back.
	require.Equal(t, consume.Delete, f.h.Handle(t.Context(), messageKey(2)))
	require.Equal(t, []deliver.Outcome{
		deliver.Overloaded, deliver.Refused, deliver.Accepted, deliver.Lost, deliver.Throttled,
		deliver.Overloaded, deliver.Refused, deliver.Accepted, deliver.NotSent,
	}, p.outcomes())
}

func TestShutdownReleasesWhatWaitsForThePacer(t *testing.T) {
	p := &pacer{hold: make(chan struct{})}
	f := newFixtureWith(t, sealed, ledger.Hold, dispatch.Options{Pacer: p})
	stopping := make(chan struct{})
	m := message(1)
	m.Stopping = stopping
	got := make(chan consume.Disposition, 1)
	go func() { got <- f.h.Handle(t.Context(), m) }()
	close(stopping)
	require.Equal(t, consume.Release, <-got)
	require.Zero(t, f.send.calls)
	_, claimed, err := f.ledger.Get(t.Context(), "job:1")
	require.NoError(t, err)
	require.False(t, claimed, "nothing is claimed while waiting")

	// A delivery whose own context ends while it waits is left.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.Equal(t, consume.Leave, f.h.Handle(ctx, message(1)))
}

// messageKey is message(row) with its own transaction key and no
// business key clash.
func messageKey(row int64) consume.Message {
	m := message(row)
	m.Envelope.TransactionKey = "job:" + string(rune('0'+row))
	m.Envelope.Fields = nil
	return m
}

func TestUnreachableReasonLeavesTheURLOut(t *testing.T) {
	err := &deliver.Failure{Err: &url.Error{Op: "Post", URL: "https://user:s3cret@dest.example/pay", Err: errors.New("dial tcp: connection refused")}}
	f := newFixtureWith(t, sealed, ledger.Hold, dispatch.Options{MaxAttempts: 1}, err)
	d := f.h.Handle(t.Context(), message(1))
	require.Equal(t, consume.DeadLetter(deadletter.Reason{Reason: "gave up after 1 attempts; last: destination unreachable: dial tcp: connection refused", Attempts: 1}), d)
	r, _, lerr := f.ledger.Get(t.Context(), "job:1")
	require.NoError(t, lerr)
	require.NotContains(t, r.Reason, "s3cret")
}
