package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"

	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/jobstore"
)

const (
	claimed   = spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED
	sending   = spoolv1.TransactionState_TRANSACTION_STATE_SENDING
	delivered = spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED
	rejected  = spoolv1.TransactionState_TRANSACTION_STATE_REJECTED
	unknown   = spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN
)

// retention is the ledgers' retention in tests.
const retention = 30 * 24 * time.Hour

// clock is a manual clock shared by the ledgers of one test.
type clock struct{ ms atomic.Int64 }

func (c *clock) now() time.Time          { return time.UnixMilli(c.ms.Load()) }
func (c *clock) advance(d time.Duration) { c.ms.Add(d.Milliseconds()) }

// world is one backend and the ledgers of several dispatchers on it.
type world struct {
	backend ledger.Backend
	clock   *clock
}

func (w *world) dispatcher(owner string, p ledger.Policy) *ledger.Ledger {
	return ledger.New(w.backend, ledger.Options{Owner: owner, Lease: 10 * time.Second, Policy: p, Now: w.clock.now, Retention: retention})
}

// backends returns every Backend implementation, so each test is a
// contract that the fake and DynamoDB (on dynalite) both meet.
var backends = map[string]func(t *testing.T) ledger.Backend{
	"memory": func(*testing.T) ledger.Backend { return ledger.NewMemory() },
	"dynamodb": func(t *testing.T) ledger.Backend {
		db := emutest.Table(t, "spool")
		return ledger.NewDynamo(db, "spool")
	},
}

func eachBackend(t *testing.T, fn func(t *testing.T, w *world)) {
	t.Helper()
	for name, mk := range backends {
		t.Run(name, func(t *testing.T) {
			c := &clock{}
			c.ms.Store(time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC).UnixMilli())
			fn(t, &world{backend: mk(t), clock: c})
		})
	}
}

func tx(row int64) ledger.Tx {
	return ledger.Tx{
		Key: fmt.Sprintf("job-1:%d", row), JobID: "job-1", Row: row, BusinessKey: fmt.Sprintf("E%d|2026-11", row),
		Amount: fmt.Sprintf("%d.50", row),
		Envelope: &spoolv1.Envelope{
			Version: spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1, JobId: "job-1", Row: row,
			TransactionKey: fmt.Sprintf("job-1:%d", row),
		},
	}
}

// diesSending claims tx on l and marks it sending, then moves the clock
// past the lease: l's dispatcher died during the request. It returns the
// record as the send left it.
func diesSending(t *testing.T, w *world, l *ledger.Ledger, tx ledger.Tx) ledger.Record {
	t.Helper()
	ctx := context.Background()
	c, err := l.Claim(ctx, tx)
	require.NoError(t, err)
	sent, err := l.Sending(ctx, c.Record)
	require.NoError(t, err)
	w.clock.advance(11 * time.Second)
	return sent
}

// send claims, marks sending and finishes with outcome, as the dispatcher does.
func send(t *testing.T, l *ledger.Ledger, tx ledger.Tx, outcome spoolv1.TransactionState) (ledger.Record, jobstore.Counts) {
	t.Helper()
	ctx := context.Background()
	c, err := l.Claim(ctx, tx)
	require.NoError(t, err)
	require.Equal(t, ledger.Send, c.Verdict)
	r, err := l.Sending(ctx, c.Record)
	require.NoError(t, err)
	r, counts, err := l.Finish(ctx, r, ledger.Outcome{State: outcome, Status: 200, Envelope: tx.Envelope})
	require.NoError(t, err)
	return r, sum(c.Counts, counts)
}

func sum(a, b jobstore.Counts) jobstore.Counts { return a.Plus(b) }

func TestDeliveredOnceThenSuppressed(t *testing.T) {
	eachBackend(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		a, b := w.dispatcher("a", ledger.Hold), w.dispatcher("b", ledger.Hold)
		r, counts := send(t, a, tx(1), delivered)
		require.Equal(t, jobstore.Counts{Delivered: 1}, counts)
		require.Equal(t, delivered, r.State)
		require.EqualValues(t, 1, r.Attempts)
		require.Empty(t, r.Envelope, "no payroll data kept once settled")

		for _, l := range []*ledger.Ledger{a, b} {
			c, err := l.Claim(ctx, tx(1))
			require.NoError(t, err)
			require.Equal(t, ledger.Settled, c.Verdict)
			require.Equal(t, jobstore.Counts{Suppressed: 1}, c.Counts)
		}
	})
}

func TestTwoClaimersOneWins(t *testing.T) {
	eachBackend(t, func(t *testing.T, w *world) {
		const claimers = 8
		var sends atomic.Int64
		var wg sync.WaitGroup
		for i := range claimers {
			l := w.dispatcher(fmt.Sprintf("d%d", i), ledger.Hold)
			wg.Go(func() {
				c, err := l.Claim(context.Background(), tx(7))
				if err != nil {
					t.Error(err)
					return
				}
				if c.Verdict == ledger.Send {
					sends.Add(1)
				} else if c.Verdict != ledger.Busy {
					t.Errorf("verdict %v", c.Verdict)
				}
			})
		}
		wg.Wait()
		require.EqualValues(t, 1, sends.Load())
	})
}

func TestClaimIsOneWriteMarkedSending(t *testing.T) {
	eachBackend(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		a := w.dispatcher("a", ledger.Hold)
		c, err := a.Claim(ctx, tx(2))
		require.NoError(t, err)
		require.Equal(t, ledger.Send, c.Verdict)
		require.Equal(t, sending, c.Record.State, "the claim is the mark before the request")
		require.EqualValues(t, 1, c.Record.Attempts, "counted before the request")
		require.EqualValues(t, 1, c.Record.Version)

		r, err := a.Sending(ctx, c.Record)
		require.NoError(t, err)
		require.Equal(t, c.Record, r, "no second write")
		stored, ok, err := w.backend.Get(ctx, tx(2).Key)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, c.Record.Version, stored.Version)
	})
}

func TestReleasedClaimIsTakenOverAndFenced(t *testing.T) {
	eachBackend(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		a, b := w.dispatcher("a", ledger.Hold), w.dispatcher("b", ledger.Hold)
		ca, err := a.Claim(ctx, tx(3))
		require.NoError(t, err)
		require.Equal(t, ledger.Send, ca.Verdict)

		cb, err := b.Claim(ctx, tx(3))
		require.NoError(t, err)
		require.Equal(t, ledger.Busy, cb.Verdict, "a live claim is left alone")

		// The destination said 503: a releases the row for another attempt.
		released, counts, err := a.Finish(ctx, ca.Record, ledger.Outcome{State: claimed, Status: 503})
		require.NoError(t, err)
		require.Equal(t, jobstore.Counts{Retries: 1}, counts)

		cb, err = b.Claim(ctx, tx(3))
		require.NoError(t, err)
		require.Equal(t, ledger.Send, cb.Verdict)
		require.Equal(t, ca.Record.Fence+1, cb.Record.Fence)
		require.Equal(t, "b", cb.Record.Owner)
		require.Equal(t, sending, cb.Record.State)
		require.EqualValues(t, 2, cb.Record.Attempts)

		// a's late writes, from either of its records, are fenced off.
		_, _, err = a.Finish(ctx, ca.Record, ledger.Outcome{State: delivered, Status: 200})
		require.ErrorIs(t, err, ledger.ErrLost)
		_, err = a.Sending(ctx, released)
		require.ErrorIs(t, err, ledger.ErrLost)
	})
}

func TestBusinessKeyDuplicateOfAnotherRow(t *testing.T) {
	eachBackend(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		a, b := w.dispatcher("a", ledger.Hold), w.dispatcher("b", ledger.Hold)
		first := tx(1)
		first.Key = "bk:e1-2026-11"
		second := first
		second.JobID, second.Row = "job-2", 5

		c, err := a.Claim(ctx, first)
		require.NoError(t, err)
		require.Equal(t, ledger.Send, c.Verdict)
		got, err := b.Claim(ctx, second)
		require.NoError(t, err)
		require.Equal(t, ledger.Busy, got.Verdict, "its outcome is the other row's: wait for it")
		require.True(t, got.Counts.IsZero())

		_, _, err = a.Finish(ctx, c.Record, ledger.Outcome{State: delivered, Status: 200})
		require.NoError(t, err)
		got, err = b.Claim(ctx, second)
		require.NoError(t, err)
		require.Equal(t, ledger.Settled, got.Verdict)
		require.Equal(t, jobstore.Counts{Duplicates: 1}, got.Counts, "the row is settled in its own job")
		require.Equal(t, spoolv1.TransactionState_TRANSACTION_STATE_DUPLICATE, got.Record.State)
		require.Equal(t, "job-1", got.Record.DupJobID)
		require.EqualValues(t, 1, got.Record.DupRow)
		require.Contains(t, got.Record.Reason, "already delivered by job job-1 row 1")

		got, err = a.Claim(ctx, second)
		require.NoError(t, err)
		require.Equal(t, ledger.Settled, got.Verdict)
		require.Equal(t, jobstore.Counts{Suppressed: 1}, got.Counts, "a redelivery is counted once, as suppressed")

		count, err := b.Count(ctx, "job-2")
		require.NoError(t, err)
		require.EqualValues(t, 1, count.Duplicates)
		require.EqualValues(t, 1, count.Settled().Sum())
		var rows []int64
		require.NoError(t, b.Report(ctx, "job-2", func(r ledger.Record) error {
			rows = append(rows, r.Row)
			require.Equal(t, "E1|2026-11", r.BusinessKey)
			require.Equal(t, "1.50", r.Amount)
			return nil
		}))
		require.Equal(t, []int64{5}, rows)

		// An unknown outcome under hold: the duplicate follows it.
		third := first
		third.Key, third.JobID, third.Row = "bk:e9", "job-1", 9
		c, err = a.Claim(ctx, third)
		require.NoError(t, err)
		_, _, err = a.Finish(ctx, c.Record, ledger.Outcome{State: unknown, Envelope: third.Envelope})
		require.NoError(t, err)
		fourth := third
		fourth.JobID, fourth.Row = "job-2", 6
		got, err = b.Claim(ctx, fourth)
		require.NoError(t, err)
		require.Equal(t, ledger.Settled, got.Verdict)
		require.Contains(t, got.Record.Reason, "already unknown by job job-1 row 9")
	})
}

func TestExpiredSendBecomesUnknownCountedOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		a := w.dispatcher("a", ledger.Hold)
		sent := diesSending(t, w, a, tx(4))

		var unknowns atomic.Int64
		var wg sync.WaitGroup
		for i := range 4 {
			l := w.dispatcher(fmt.Sprintf("d%d", i), ledger.Hold)
			wg.Go(func() {
				c, err := l.Claim(ctx, tx(4))
				if err != nil {
					t.Error(err)
					return
				}
				if c.Verdict != ledger.Held {
					t.Errorf("verdict %v under hold", c.Verdict)
				}
				unknowns.Add(c.Counts.Unknown)
			})
		}
		wg.Wait()
		require.EqualValues(t, 1, unknowns.Load(), "only the winning writer counts")

		r, ok, err := w.backend.Get(ctx, tx(4).Key)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, unknown, r.State)
		got, err := r.EnvelopeProto()
		require.NoError(t, err)
		require.Empty(t, cmp.Diff(tx(4).Envelope, got, protocmp.Transform()), "kept for a resend")

		// The owner's outcome arrives after all (its table write was slow):
		// nobody has sent the row since, so the answer it got replaces the
		// guess, and moves the count.
		r, counts, err := a.Finish(ctx, sent, ledger.Outcome{State: delivered, Status: 200})
		require.NoError(t, err)
		require.Equal(t, delivered, r.State)
		require.Equal(t, jobstore.Counts{Unknown: -1, Delivered: 1}, counts)
		require.Empty(t, r.Envelope)
	})
}

// Once the row was sent again (the fence moved on), a late outcome of the
// first send is refused: the newer send's owner decides.
func TestLateOutcomeAfterResendIsLost(t *testing.T) {
	eachBackend(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		a := w.dispatcher("a", ledger.RetryWithKey)
		c, err := a.Claim(ctx, tx(4))
		require.NoError(t, err)
		w.clock.advance(11 * time.Second)
		resent, err := w.dispatcher("b", ledger.RetryWithKey).Claim(ctx, tx(4))
		require.NoError(t, err)
		require.Equal(t, ledger.Send, resent.Verdict)
		_, _, err = a.Finish(ctx, c.Record, ledger.Outcome{State: delivered, Status: 200})
		require.ErrorIs(t, err, ledger.ErrLost)
	})
}

func TestOutcomes(t *testing.T) {
	tests := []struct {
		name       string
		policy     ledger.Policy
		outcome    spoolv1.TransactionState
		wantCounts jobstore.Counts
		// wantNext is the next claim's verdict.
		wantNext ledger.Verdict
	}{
		{name: "delivered", outcome: delivered, wantCounts: jobstore.Counts{Delivered: 1}, wantNext: ledger.Settled},
		{name: "rejected", outcome: rejected, wantCounts: jobstore.Counts{Failed: 1}, wantNext: ledger.Settled},
		{name: "released", outcome: claimed, wantCounts: jobstore.Counts{Retries: 1}, wantNext: ledger.Send},
		{name: "unknown held", outcome: unknown, wantCounts: jobstore.Counts{Unknown: 1}, wantNext: ledger.Held},
		{name: "unknown resent", policy: ledger.RetryWithKey, outcome: unknown, wantCounts: jobstore.Counts{Unknown: 1}, wantNext: ledger.Send},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eachBackend(t, func(t *testing.T, w *world) {
				a, b := w.dispatcher("a", tt.policy), w.dispatcher("b", tt.policy)
				_, counts := send(t, a, tx(5), tt.outcome)
				require.Equal(t, tt.wantCounts, counts)
				// A released or unknown row has no live lease: another
				// dispatcher may act on it at once.
				c, err := b.Claim(context.Background(), tx(5))
				require.NoError(t, err)
				require.Equal(t, tt.wantNext, c.Verdict)
			})
		})
	}
}

func TestResendAfterUnknownMovesTheCount(t *testing.T) {
	eachBackend(t, func(t *testing.T, w *world) {
		a := w.dispatcher("a", ledger.RetryWithKey)
		_, counts := send(t, a, tx(6), unknown)
		require.Equal(t, jobstore.Counts{Unknown: 1}, counts)
		// Unknown again on the resend: still counted once.
		_, counts = send(t, a, tx(6), unknown)
		require.Equal(t, jobstore.Counts{}, counts)
		r, counts := send(t, a, tx(6), delivered)
		require.Equal(t, jobstore.Counts{Unknown: -1, Delivered: 1}, counts)
		require.EqualValues(t, 3, r.Attempts)
		require.EqualValues(t, 3, r.Fence)
	})
}

func TestResolve(t *testing.T) {
	eachBackend(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		a := w.dispatcher("a", ledger.Hold)
		send(t, a, tx(1), delivered)
		send(t, a, tx(2), unknown)
		send(t, a, tx(3), unknown)

		_, _, err := a.Resolve(ctx, "job-1", 1, spoolv1.Resolution_RESOLUTION_DELIVERED, ledger.Resolver{})
		require.ErrorIs(t, err, ledger.ErrState)
		require.ErrorContains(t, err, "is DELIVERED")
		_, _, err = a.Resolve(ctx, "job-1", 99, spoolv1.Resolution_RESOLUTION_DELIVERED, ledger.Resolver{})
		require.ErrorIs(t, err, ledger.ErrNotFound)

		by := ledger.Resolver{By: "ops-ann", ApprovedBy: "ops-bob", Request: "rq-1"}
		r, counts, err := a.Resolve(ctx, "job-1", 2, spoolv1.Resolution_RESOLUTION_DELIVERED, by)
		require.NoError(t, err)
		require.Equal(t, delivered, r.State)
		require.Equal(t, jobstore.Counts{Unknown: -1, Delivered: 1}, counts)
		require.Equal(t, by, r.Resolved)
		require.Equal(t, "ops-ann", r.Entry().GetResolvedBy())
		require.Equal(t, "ops-bob", r.Entry().GetApprovedBy())
		// The same request applied again (its answer was lost) finds its
		// own resolution and counts nothing twice; another request is
		// refused.
		again, counts, err := a.Resolve(ctx, "job-1", 2, spoolv1.Resolution_RESOLUTION_DELIVERED, by)
		require.NoError(t, err)
		require.Zero(t, counts)
		require.Equal(t, r.Version, again.Version)
		_, _, err = a.Resolve(ctx, "job-1", 2, spoolv1.Resolution_RESOLUTION_DELIVERED, ledger.Resolver{By: "ops-ann", Request: "rq-2"})
		require.ErrorIs(t, err, ledger.ErrState)

		r, counts, err = a.Resolve(ctx, "job-1", 3, spoolv1.Resolution_RESOLUTION_RESEND, ledger.Resolver{})
		require.NoError(t, err)
		require.Zero(t, counts)
		env, err := r.EnvelopeProto()
		require.NoError(t, err)
		require.EqualValues(t, 3, env.GetRow())
		// Under hold, the resent message is sent once, and counted out of
		// Unknown when delivered.
		_, counts = send(t, a, tx(3), delivered)
		require.Equal(t, jobstore.Counts{Unknown: -1, Delivered: 1}, counts)
	})
}

func TestReportOrder(t *testing.T) {
	eachBackend(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		a := w.dispatcher("a", ledger.Hold)
		send(t, a, tx(4), delivered)
		send(t, a, tx(2), delivered)
		send(t, a, tx(5), unknown)
		send(t, a, tx(1), rejected)
		send(t, a, tx(3), unknown)
		// Another job's row stays out.
		other := tx(1)
		other.Key, other.JobID = "job-2:1", "job-2"
		send(t, a, other, delivered)

		var got []string
		require.NoError(t, a.Report(ctx, "job-1", func(r ledger.Record) error {
			got = append(got, fmt.Sprintf("%s %d %s", ledger.StateName(r.State), r.Row, r.BusinessKey))
			return nil
		}))
		require.Equal(t, []string{
			"UNKNOWN 3 E3|2026-11", "UNKNOWN 5 E5|2026-11",
			"DELIVERED 2 E2|2026-11", "DELIVERED 4 E4|2026-11",
			"REJECTED 1 E1|2026-11",
		}, got)
	})
}

// failingReplace fails every Replace from the nth (counting from 1) with a
// transport error, as a table that times out or throttles would.
type failingReplace struct {
	ledger.Backend
	n, calls atomic.Int64
}

func (f *failingReplace) Replace(ctx context.Context, prev int64, next ledger.Record) error {
	if f.calls.Add(1) >= f.n.Load() {
		return errors.New("request timed out")
	}
	return f.Backend.Replace(ctx, prev, next)
}

// A claim that records an expired send UNKNOWN and then fails to take the
// row over for its resend still reports the Unknown it earned: the record
// is counted now, and the resend that settles it moves the count back.
func TestFailedTakeOverAfterExpiryKeepsItsCount(t *testing.T) {
	eachBackend(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		a := w.dispatcher("a", ledger.RetryWithKey)
		diesSending(t, w, a, tx(8))

		// b's second write (the take-over after the UNKNOWN write) fails.
		fb := &failingReplace{Backend: w.backend}
		fb.n.Store(2)
		b := ledger.New(fb, ledger.Options{Owner: "b", Lease: 10 * time.Second, Policy: ledger.RetryWithKey, Now: w.clock.now, RetryBackoff: time.Millisecond})
		// It is tried again until the caller's deadline.
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		c, err := b.Claim(short, tx(8))
		require.Error(t, err)
		require.Equal(t, jobstore.Counts{Unknown: 1}, c.Counts, "the UNKNOWN write won, so its count stands")

		// The resend settles it: over the whole story Unknown is back at 0.
		_, counts := send(t, w.dispatcher("c", ledger.RetryWithKey), tx(8), delivered)
		require.Equal(t, jobstore.Counts{Unknown: -1, Delivered: 1}, counts)
		require.Zero(t, c.Counts.Unknown+counts.Unknown)
	})
}

// A send whose sender died during the request is an attempt: the row's
// resend is its second, so a row the destination applied twice always
// shows two attempts or more.
func TestSendOfDeadSenderCountsAsAttempt(t *testing.T) {
	eachBackend(t, func(t *testing.T, w *world) {
		a := w.dispatcher("a", ledger.RetryWithKey)
		sent := diesSending(t, w, a, tx(9))
		require.EqualValues(t, 1, sent.Attempts)
		// b finds the send expired and resends.
		r, counts := send(t, w.dispatcher("b", ledger.RetryWithKey), tx(9), delivered)
		require.Equal(t, jobstore.Counts{Delivered: 1}, counts, "unknown on the claim, delivered on the resend")
		require.EqualValues(t, 2, r.Attempts)
		require.EqualValues(t, 2, r.Entry().GetAttempts())
	})
}

func TestSettledRecordsExpireUnsettledStay(t *testing.T) {
	eachBackend(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		a := w.dispatcher("a", ledger.Hold)
		wantExpiry := w.clock.now().Add(retention).Unix()
		stored := func(key string) ledger.Record {
			t.Helper()
			r, ok, err := w.backend.Get(ctx, key)
			require.NoError(t, err)
			require.True(t, ok)
			return r
		}

		c, err := a.Claim(ctx, tx(1))
		require.NoError(t, err)
		require.Zero(t, stored(tx(1).Key).ExpiresAt, "a row being sent stays")
		_, _, err = a.Finish(ctx, c.Record, ledger.Outcome{State: delivered, Status: 200})
		require.NoError(t, err)
		require.Equal(t, wantExpiry, stored(tx(1).Key).ExpiresAt)

		c, err = a.Claim(ctx, tx(2))
		require.NoError(t, err)
		_, _, err = a.Finish(ctx, c.Record, ledger.Outcome{State: unknown, Envelope: tx(2).Envelope})
		require.NoError(t, err)
		require.Zero(t, stored(tx(2).Key).ExpiresAt, "an UNKNOWN row stays until a person settles it")
		_, _, err = a.Resolve(ctx, "job-1", 2, spoolv1.Resolution_RESOLUTION_DELIVERED, ledger.Resolver{})
		require.NoError(t, err)
		require.Equal(t, wantExpiry, stored(tx(2).Key).ExpiresAt)
	})
}

func TestDeadLetteredRowSettlesUntilRedriven(t *testing.T) {
	eachBackend(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		a := w.dispatcher("a", ledger.Hold)
		giveUp := ledger.Outcome{State: claimed, Status: 503, Reason: "dead-lettered: gave up", DeadLettered: true}

		c, err := a.Claim(ctx, tx(8))
		require.NoError(t, err)
		r, counts, err := a.Finish(ctx, c.Record, giveUp)
		require.NoError(t, err)
		require.Equal(t, jobstore.Counts{DeadLettered: 1}, counts, "no retry is counted: none will come")
		require.True(t, r.Dead)
		count, err := a.Count(ctx, "job-1")
		require.NoError(t, err)
		require.EqualValues(t, 1, count.DeadLettered)
		require.Zero(t, count.Pending)

		// Redriven: claimed again, it fails again and goes back to the
		// dead letters, counted once.
		c, err = a.Claim(ctx, tx(8))
		require.NoError(t, err)
		require.Equal(t, ledger.Send, c.Verdict)
		_, counts, err = a.Finish(ctx, c.Record, giveUp)
		require.NoError(t, err)
		require.True(t, counts.IsZero(), "counted once: %+v", counts)

		// Redriven once more, it is delivered: the count moves.
		c, err = a.Claim(ctx, tx(8))
		require.NoError(t, err)
		r, counts, err = a.Finish(ctx, c.Record, ledger.Outcome{State: delivered, Status: 200})
		require.NoError(t, err)
		require.Equal(t, jobstore.Counts{Delivered: 1, DeadLettered: -1}, counts)
		require.False(t, r.Dead)
		count, err = a.Count(ctx, "job-1")
		require.NoError(t, err)
		require.Zero(t, count.DeadLettered)
		require.EqualValues(t, 1, count.Delivered)
	})
}
