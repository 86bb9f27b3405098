// Package dispatch decides what happens to one received transaction: it
// checks the job's state, claims the transaction in the delivery ledger,
// sends it to the destination, records the outcome, counts it for the job,
// and tells the receive loop whether the message is settled.
//
// Order matters, and each step is there so a row is never sent twice:
//   - Gating: nothing of a job that is not SEALED (or COMPLETED) is sent. A
//     RECEIVING or paused job's messages come back later, as do those of a
//     job before its payment date (deliver_after) and rows beyond a canary
//     not yet released; those of an ABORTED, REJECTED or CANCELLED job are
//     dropped. The gate's read of the job is where its failure threshold
//     and canary are checked (guard.go).
//   - Pacing: the delivery waits for the flow control (Pacer) before
//     anything is written, so no row sits claimed while it waits; at
//     shutdown a message still waiting here is released.
//   - Claim: a conditional write makes this dispatcher the owner under a
//     lease, recorded SENDING immediately before the request, so that a
//     crash during it leaves a record whose outcome is known to be unknown;
//     a row already settled is deleted without sending.
//   - Lease check: right before the request goes out, what is left of the
//     lease must cover the destination's timeout and the outcome write
//     (MinLease); otherwise another dispatcher could take the row over
//     while the request is still out. A row short of lease is released
//     unsent: nothing was sent, so that is safe.
//   - The outcome is written conditional on still owning the claim.
//
// Every table call on the way has a deadline (Options.CallTimeout): one
// hung call holds one delivery for a bounded time, never a dispatcher.
//
// Outcome classes: 2xx and the statuses configured as already applied are
// delivered; any other 4xx but 408, 409 and 429 is rejected at once, never
// retried; 408, 409, 429, 5xx and failures that never reached the
// destination are retried after an exponential backoff with full jitter
// (at least what Retry-After asks, within a cap), through the message's
// visibility, until the attempt or age budget runs out and the message is
// dead-lettered with its reason. Outcomes that are unknown follow the
// ledger's policy. The same classification says what the send taught
// about the destination (deliver.Outcome), which the Pacer is told.
package dispatch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/spoolhq/spool/dispatcher/internal/consume"
	"github.com/spoolhq/spool/dispatcher/internal/deadletter"
	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/envelope"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/positive"
)

// Sender sends one transaction; a nil error means the destination accepted
// it, and the receipt carries its reference.
type Sender interface {
	Send(ctx context.Context, e *spoolv1.Envelope) (deliver.Receipt, error)
}

// Counter accumulates job counter deltas.
type Counter interface {
	Add(jobID string, c jobstore.Counts)
}

// Ledger is the delivery ledger's state machine.
type Ledger interface {
	Claim(ctx context.Context, tx ledger.Tx) (ledger.Claim, error)
	Sending(ctx context.Context, r ledger.Record) (ledger.Record, error)
	Finish(ctx context.Context, r ledger.Record, o ledger.Outcome) (ledger.Record, jobstore.Counts, error)
	Policy() ledger.Policy
}

// Pacer is the flow control toward the destination (flow.Control): a
// concurrency limit, a fleet-wide rate and a circuit breaker all fit
// behind it. Acquire blocks until one more request may go, or ctx ends
// (an error then). done is called exactly once: with the send's outcome
// and the request's latency after it, or with deliver.NotSent and 0 when
// no request was sent after all.
type Pacer interface {
	Acquire(ctx context.Context) (done func(o deliver.Outcome, latency time.Duration), err error)
}

// Defaults for Options.
const (
	DefaultJobCacheTTL    = time.Second
	DefaultReceivingDelay = 2 * time.Minute
	DefaultMaxAttempts    = 20
	DefaultMaxAge         = 12 * time.Hour
	DefaultBackoffBase    = time.Second
	DefaultBackoffMax     = 5 * time.Minute
	DefaultRetryAfterMax  = 10 * time.Minute
	DefaultPausedDelay    = 5 * time.Minute
	DefaultCallTimeout    = 10 * time.Second
)

// Room a claim's lease needs besides the destination's timeout.
const (
	// outcomeMargin is what must be left of the lease once the request
	// has timed out: time to write the outcome before another dispatcher
	// may find the lease expired and record the row UNKNOWN.
	outcomeMargin = 2 * time.Second
	// claimMargin is the lease the claim and the lease check may use up
	// before the request goes out.
	claimMargin = time.Second
)

// MinLease is the shortest claim lease that covers a delivery whose
// request times out after sendTimeout: the claim, the request, and the
// outcome write. A shorter lease could expire, and the row be taken over,
// while its request is still out.
func MinLease(sendTimeout time.Duration) time.Duration {
	return sendTimeout + outcomeMargin + claimMargin
}

// firstPausedDelay is how soon a message of a paused job is first tried
// again; each receive doubles it up to PausedDelay, so a job paused for
// hours does not walk its messages to the queue's maxReceiveCount.
const firstPausedDelay = 10 * time.Second

// firstReceivingDelay is how soon a message of a job still RECEIVING is
// first tried again: most files are sealed within seconds of their first
// rows, and a small file should not wait long for its seal.
const firstReceivingDelay = time.Second

// Options configure a Handler. Zero values get the defaults.
type Options struct {
	// JobCacheTTL is how long a job record read is trusted.
	JobCacheTTL time.Duration
	// ReceivingDelay is the longest a message of a job still RECEIVING
	// waits before it is received again. The first wait is a second and
	// each receive doubles it, so a file that streams for hours does not
	// walk its first messages to the queue's maxReceiveCount (every receive
	// counts there, on AWS too), while a small file is delivered promptly.
	ReceivingDelay time.Duration
	// Now is the clock; time.Now when nil. It must be the ledger's clock
	// too: the lease check compares it with the claim's lease.
	Now func() time.Time
	Log *slog.Logger
	// Seen, when set, is told the id of every job the gate reads from the
	// store (at most once per JobCacheTTL per job), so that the counter
	// repair knows which jobs this dispatcher works on.
	Seen func(jobID string)
	// CallTimeout bounds each table call of a delivery before the send,
	// SDK retries included: the job read (shared by every delivery of the
	// job) and the claim. The outcome write is bounded by the ledger
	// (ledger.Options.OutcomeRetry): it is tried again while the table
	// throttles, and runs even when the delivery's context was cancelled at
	// shutdown, since the destination has answered (or not), and that must
	// be recorded.
	CallTimeout time.Duration
	// SendTimeout is the destination's timeout for one request
	// (deliver.Options.Timeout). A request goes out only while the claim's
	// lease has more than SendTimeout and the outcome write's margin left.
	SendTimeout time.Duration

	// AlreadyApplied are statuses meaning the destination has the
	// transaction already: they count as delivered. None by default: a 409
	// often means a request with the same key is still in progress, and is
	// retried unless configured here.
	AlreadyApplied []int
	// Namespace and LegacyKeys: see ledgerTx.
	Namespace  envelope.Namespace
	LegacyKeys bool
	// MaxAttempts is the retry budget: a row whose attempts since its
	// last redrive reach it is dead-lettered after a retryable failure.
	MaxAttempts int
	// MaxAge dead-letters, after a retryable failure, a message sent to
	// the queue longer ago than this (the time a job spent receiving or
	// paused counts too).
	MaxAge time.Duration
	// BackoffBase and BackoffMax shape the backoff before attempt n+1:
	// a uniformly random wait in [0, min(BackoffMax, BackoffBase·2^(n-1))]
	// (full jitter), at least a second (SQS's unit).
	BackoffBase, BackoffMax time.Duration
	// RetryAfterMax caps the wait a Retry-After header may ask for.
	RetryAfterMax time.Duration
	// PausedDelay is the longest a message of a paused job waits before
	// it is received again (the first wait is 10 s, doubling per receive).
	PausedDelay time.Duration
	// Rand returns a number in [0, 1) for the jitter; math/rand when nil.
	Rand func() float64
	// Pacer, when set, paces the requests; see Pacer.
	Pacer Pacer
	// TracerProvider makes the delivery spans; the global one when nil.
	TracerProvider trace.TracerProvider
	// Guard, when set, pauses jobs that cross their failure threshold or
	// whose canary settled; without it no job is paused automatically.
	Guard Guard
	// Announce, when set, announces a job's UNKNOWN and dead-lettered
	// rows as their counts rise (see announceRows).
	Announce Announcer
}

// Handler implements consume.Handler.
type Handler struct {
	send   Sender
	count  Counter
	ledger Ledger
	jobs   Jobs
	cache  *jobCache
	o      Options
	log    *slog.Logger
	tracer trace.Tracer
	// announced remembers the rows events this process saw announced.
	announced announced
}

// New returns a handler.
func New(send Sender, count Counter, l Ledger, jobs Jobs, o Options) *Handler {
	o.JobCacheTTL = positive.Or(o.JobCacheTTL, DefaultJobCacheTTL)
	o.ReceivingDelay = positive.Or(o.ReceivingDelay, DefaultReceivingDelay)
	o.CallTimeout = positive.Or(o.CallTimeout, DefaultCallTimeout)
	o.MaxAttempts = positive.Or(o.MaxAttempts, DefaultMaxAttempts)
	o.MaxAge = positive.Or(o.MaxAge, DefaultMaxAge)
	o.BackoffBase = positive.Or(o.BackoffBase, DefaultBackoffBase)
	o.BackoffMax = positive.Or(o.BackoffMax, DefaultBackoffMax)
	o.RetryAfterMax = positive.Or(o.RetryAfterMax, DefaultRetryAfterMax)
	o.PausedDelay = positive.Or(o.PausedDelay, DefaultPausedDelay)
	o.Log = cmp.Or(o.Log, slog.Default())
	o.Pacer = cmp.Or[Pacer](o.Pacer, unpaced{})
	o.TracerProvider = cmp.Or(o.TracerProvider, otel.GetTracerProvider())
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	h := &Handler{
		send: send, count: count, ledger: l, jobs: jobs, o: o, log: o.Log,
		tracer: o.TracerProvider.Tracer(tracerName),
	}
	h.cache = newJobCache(jobs, o.JobCacheTTL, o.CallTimeout, o.Now, o.Seen, h.guard)
	return h
}

// Handle settles m: see the package comment. Log lines carry identifiers
// and outcomes only, never the row's fields.
func (h *Handler) Handle(ctx context.Context, m consume.Message) consume.Disposition {
	e := m.Envelope
	ctx, span := h.startSpan(ctx, m)
	defer span.End()
	if _, d, ok := h.gate(ctx, m); !ok {
		return d
	}

	done, d, ok := h.acquire(ctx, m)
	if !ok {
		return d
	}
	sent := false
	defer func() {
		if !sent {
			done(deliver.NotSent, 0)
		}
	}()
	// The wait may have been long: a job paused or cancelled meanwhile is
	// honoured before anything is written. The read is cached.
	job, d, ok := h.gate(ctx, m)
	if !ok {
		return d
	}
	if d := job.GetDeliverAfter(); d != nil && d.AsTime().After(m.SentAt) {
		// The message's age budget (MaxAge) counts from the payment date:
		// the wait before it was the caller's choice, not the
		// destination's failure.
		m.SentAt = d.AsTime()
	}

	rec, d, ok := h.claim(ctx, m, h.ledgerTx(e, job))
	if !ok {
		return d
	}

	var r result
	var sendErr error
	if left, need := time.UnixMilli(rec.LeaseUntil).Sub(h.o.Now()), h.o.SendTimeout+outcomeMargin; left < need {
		// The claim (or this process) was slow: the request could outlive
		// the lease. Nothing is sent, so the row is released as after any
		// failure that never left the machine.
		sendErr = fmt.Errorf("claim lease too short to send: %s left, destination timeout %s needs %s", left, h.o.SendTimeout, need)
		r = result{outcome: ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED, Reason: sendErr.Error()}, flow: deliver.NotSent}
	} else {
		start := h.o.Now()
		var receipt deliver.Receipt
		receipt, sendErr = h.send.Send(ctx, e)
		r = h.classify(sendErr, e)
		r.outcome.Reference, r.outcome.ReferenceTruncated = receipt.Reference, receipt.Truncated
		sent = true
		done(r.flow, h.o.Now().Sub(start))
	}
	return h.finish(ctx, m, rec, r, sendErr)
}

// claim claims tx in the ledger for this send, within CallTimeout. ok
// false means the message is settled by d, and nothing was sent.
func (h *Handler) claim(ctx context.Context, m consume.Message, tx ledger.Tx) (ledger.Record, consume.Disposition, bool) {
	e := m.Envelope
	cctx, cancel := context.WithTimeout(ctx, h.o.CallTimeout)
	defer cancel()
	c, err := h.ledger.Claim(cctx, tx)
	// A failed claim may still have recorded an expired send UNKNOWN.
	h.count.Add(e.GetJobId(), c.Counts)
	if err != nil {
		h.log.WarnContext(ctx, "claim transaction; left for redelivery", "job_id", e.GetJobId(), "row", e.GetRow(), "message_id", m.ID, "error", err)
		return ledger.Record{}, consume.Leave, false
	}
	switch c.Verdict {
	case ledger.Busy:
		return ledger.Record{}, consume.Leave, false
	case ledger.Settled, ledger.Held:
		h.log.DebugContext(ctx, "message settled without sending", "job_id", e.GetJobId(), "row", e.GetRow(),
			"message_id", m.ID, "verdict", c.Verdict.String(), "state", ledger.StateName(c.Record.State))
		return ledger.Record{}, consume.Delete, false
	}
	rec, err := h.ledger.Sending(cctx, c.Record)
	if err != nil {
		// Nothing was sent. A lost claim belongs to another dispatcher now;
		// otherwise the claim lapses with its lease and the row is retried.
		h.log.WarnContext(ctx, "mark transaction sending; not sent", "job_id", e.GetJobId(), "row", e.GetRow(), "message_id", m.ID, "error", err)
		return ledger.Record{}, consume.Leave, false
	}
	return rec, consume.Disposition{}, true
}

// finish records the send's outcome r in the ledger, counts it, and
// decides what becomes of the message.
func (h *Handler) finish(ctx context.Context, m consume.Message, rec ledger.Record, r result, sendErr error) consume.Disposition {
	e := m.Envelope
	// A retryable failure either waits for another attempt or, with its
	// budget spent, is dead-lettered; the ledger records which.
	var dead *deadletter.Reason
	if r.retry() {
		dead = h.exhausted(m, rec, r)
		if dead != nil {
			r.outcome.Reason = "dead-lettered: " + dead.Reason
			r.outcome.DeadLettered = true
		}
	}

	// The outcome is written even when the delivery's context was cancelled
	// at shutdown: the destination has answered (or not), and that must be
	// recorded. The ledger bounds how long it tries.
	_, counts, err := h.ledger.Finish(context.WithoutCancel(ctx), rec, r.outcome)
	if err != nil {
		// The ledger tried for its whole outcome budget, or the claim was
		// taken over. The row stays SENDING until its lease is found expired
		// and it becomes UNKNOWN; this line is then the only record of what
		// the destination answered, for the person who resolves it.
		h.log.ErrorContext(ctx, "record delivery outcome", "job_id", e.GetJobId(), "row", e.GetRow(), "message_id", m.ID,
			"outcome", ledger.StateName(r.outcome.State), "status", r.outcome.Status, "lost", errors.Is(err, ledger.ErrLost), "error", err)
		return consume.Leave
	}
	h.count.Add(e.GetJobId(), counts)
	o := r.outcome
	switch o.State {
	case spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED:
		return consume.Delete
	case spoolv1.TransactionState_TRANSACTION_STATE_REJECTED:
		h.log.WarnContext(ctx, "transaction rejected by the destination", "job_id", e.GetJobId(), "row", e.GetRow(), "message_id", m.ID, "status", o.Status)
		return consume.Delete
	case spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN:
		hold := h.ledger.Policy() == ledger.Hold
		h.log.WarnContext(ctx, "delivery outcome unknown", "job_id", e.GetJobId(), "row", e.GetRow(), "message_id", m.ID,
			"policy", h.ledger.Policy().String(), "error", sendErr)
		if hold {
			// Held for reconciliation; the ledger keeps the envelope.
			return consume.Delete
		}
		// Resent with its key, after the same backoff and budget as any
		// retry.
		if d := h.exhausted(m, rec, r); d != nil {
			return consume.DeadLetter(*d)
		}
		return consume.After(h.backoff(int(rec.Attempts)-m.AttemptBase, r.retryAfter))
	default:
		if dead != nil {
			return consume.DeadLetter(*dead)
		}
		wait := h.backoff(int(rec.Attempts)-m.AttemptBase, r.retryAfter)
		h.log.WarnContext(ctx, "delivery failed; retry later", "job_id", e.GetJobId(), "row", e.GetRow(), "message_id", m.ID,
			"attempts", rec.Attempts, "status", o.Status, "retry_in", wait, "error", sendErr)
		return consume.After(wait)
	}
}

// acquire waits for the pacer. ok false means the message is settled by
// d: released when the dispatcher began to shut down before the delivery
// started, left when the delivery's context ended.
func (h *Handler) acquire(ctx context.Context, m consume.Message) (func(deliver.Outcome, time.Duration), consume.Disposition, bool) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if m.Stopping != nil {
		go func() {
			select {
			case <-m.Stopping:
				cancel()
			case <-wctx.Done():
			}
		}()
	}
	done, err := h.o.Pacer.Acquire(wctx)
	stopped := closed(m.Stopping)
	switch {
	case err != nil && stopped:
		return nil, consume.Release, false
	case err != nil:
		return nil, consume.Leave, false
	case stopped:
		// Shutdown began while this one waited: another dispatcher
		// delivers it.
		done(deliver.NotSent, 0)
		return nil, consume.Release, false
	}
	return done, consume.Disposition{}, true
}

func closed(c <-chan struct{}) bool {
	if c == nil {
		return false
	}
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// BusinessKey is the values of the business-key columns, joined with "|";
// empty when the job names none.
func BusinessKey(e *spoolv1.Envelope, columns []string) string {
	if len(columns) == 0 {
		return ""
	}
	vals := make([]string, len(columns))
	for i, c := range columns {
		vals[i] = field(e, c)
	}
	return strings.Join(vals, "|")
}

func field(e *spoolv1.Envelope, name string) string {
	if name == "" {
		return ""
	}
	for _, f := range e.GetFields() {
		if f.GetName() == name {
			return f.GetValue()
		}
	}
	return ""
}

// unpaced is the Pacer without flow control.
type unpaced struct{}

func (unpaced) Acquire(context.Context) (func(deliver.Outcome, time.Duration), error) {
	return func(deliver.Outcome, time.Duration) {}, nil
}
