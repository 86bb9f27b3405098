// Package dispatch decides what happens to one received transaction: it
// checks the job's state, claims the transaction in the delivery ledger,
// sends it to the destination, records the outcome, counts it for the job,
// and tells the receive loop whether the message is settled.
//
// Order matters, and each step is there so a row is never sent twice:
//   - Gating: nothing of a job that is not SEALED (or COMPLETED) is sent. A
//     RECEIVING or paused job's messages come back later; those of an
//     ABORTED, REJECTED or CANCELLED job are dropped.
//   - Pacing: the delivery waits for the flow control (Pacer) before
//     anything is written, so no row sits claimed while it waits; at
//     shutdown a message still waiting here is released.
//   - Claim: a conditional write makes this dispatcher the owner under a
//     lease, recorded SENDING immediately before the request, so that a
//     crash during it leaves a record whose outcome is known to be unknown;
//     a row already settled is deleted without sending.
//   - The outcome is written conditional on still owning the claim.
//
// Outcome classes: 2xx and the statuses configured as already applied are
// delivered; any other 4xx but 408 and 429 is rejected at once, never
// retried; 408, 429, 5xx and failures that never reached the destination
// are retried after an exponential backoff with full jitter (at least what
// Retry-After asks, within a cap), through the message's visibility, until
// the attempt or age budget runs out and the message is dead-lettered with
// its reason. Outcomes that are unknown follow the ledger's policy.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spoolhq/spool/dispatcher/internal/consume"
	"github.com/spoolhq/spool/dispatcher/internal/deadletter"
	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

// Sender sends one transaction; nil means the destination accepted it.
type Sender interface {
	Send(ctx context.Context, e *spoolv1.Envelope) error
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

// Class is how a finished delivery reads for flow control.
type Class int

const (
	// Success is an answer that counts as delivered (2xx, or a status
	// configured as already applied): its latency is a fair sample.
	Success Class = iota
	// Overload says the destination has too much or is down: 408, 5xx, a
	// timeout, a refused or reset connection.
	Overload
	// Ignore teaches nothing about the destination's load: a permanent
	// refusal, an unknown outcome, or no request sent at all.
	Ignore
	// Throttle is a 429: the destination asks for fewer requests. It is
	// up and answering, so it is load to shed, not an outage to wait out.
	Throttle
)

func (c Class) String() string {
	return [...]string{"success", "overload", "ignore", "throttle"}[c]
}

// Pacer is the flow control toward the destination: a concurrency limit,
// a fleet-wide rate and a circuit breaker all fit behind it. Acquire
// blocks until one more request may go, or ctx ends (an error then).
type Pacer interface {
	Acquire(ctx context.Context) (Pass, error)
}

// Pass is the permission for one request. Done is called exactly once:
// with the request's latency and class after it, or with Ignore and 0
// when no request was sent after all.
type Pass interface {
	Done(c Class, latency time.Duration)
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
)

// firstPausedDelay is how soon a message of a paused job is first tried
// again; each receive doubles it up to PausedDelay, so a job paused for
// hours does not walk its messages to the queue's maxReceiveCount.
const firstPausedDelay = 10 * time.Second

// firstReceivingDelay is how soon a message of a job still RECEIVING is
// first tried again: most files are sealed within seconds of their first
// rows, and a small file should not wait long for its seal.
const firstReceivingDelay = time.Second

// outcomeTimeout bounds the ledger write after a send. It runs even when
// the delivery's context was cancelled at shutdown: the destination has
// answered (or not), and that must be recorded.
const outcomeTimeout = 10 * time.Second

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
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	Log *slog.Logger
	// Seen, when set, is told the id of every job the gate reads from the
	// store (at most once per JobCacheTTL per job), so that the counter
	// repair knows which jobs this dispatcher works on.
	Seen func(jobID string)

	// AlreadyApplied are statuses meaning the destination has the
	// transaction already (409 Conflict, typically, for a repeated
	// idempotency key): they count as delivered.
	AlreadyApplied []int
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
}

// New returns a handler.
func New(send Sender, count Counter, l Ledger, jobs Jobs, o Options) *Handler {
	if o.JobCacheTTL <= 0 {
		o.JobCacheTTL = DefaultJobCacheTTL
	}
	if o.ReceivingDelay <= 0 {
		o.ReceivingDelay = DefaultReceivingDelay
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = DefaultBackoffBase
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = DefaultBackoffMax
	}
	if o.RetryAfterMax <= 0 {
		o.RetryAfterMax = DefaultRetryAfterMax
	}
	if o.PausedDelay <= 0 {
		o.PausedDelay = DefaultPausedDelay
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	if o.Pacer == nil {
		o.Pacer = unpaced{}
	}
	return &Handler{
		send: send, count: count, ledger: l, jobs: jobs,
		cache: newJobCache(jobs, o.JobCacheTTL, o.Now, o.Seen), o: o, log: o.Log,
	}
}

// Handle settles m: see the package comment. Log lines carry identifiers
// and outcomes only, never the row's fields.
func (h *Handler) Handle(ctx context.Context, m consume.Message) consume.Disposition {
	e := m.Envelope
	if _, d, ok := h.gate(ctx, m); !ok {
		return d
	}

	pass, d, ok := h.acquire(ctx, m)
	if !ok {
		return d
	}
	sent := false
	defer func() {
		if !sent {
			pass.Done(Ignore, 0)
		}
	}()
	// The wait may have been long: a job paused or cancelled meanwhile is
	// honoured before anything is written. The read is cached.
	job, d, ok := h.gate(ctx, m)
	if !ok {
		return d
	}

	tx := ledger.Tx{
		Key: e.GetTransactionKey(), JobID: e.GetJobId(), Row: e.GetRow(), Envelope: e,
		BusinessKey: BusinessKey(e, job.GetBusinessKeyColumns()), Amount: field(e, job.GetAmountColumn()),
	}
	if tx.Key == "" {
		// Every envelope written by the ingestor has a key; an older one
		// falls back to the row's identity, as the ingestor would derive it.
		tx.Key = e.GetJobId() + ":" + strconv.FormatInt(e.GetRow(), 10)
	}
	c, err := h.ledger.Claim(ctx, tx)
	// A failed claim may still have recorded an expired send UNKNOWN.
	h.count.Add(e.GetJobId(), c.Counts)
	if err != nil {
		h.log.WarnContext(ctx, "claim transaction; left for redelivery", "job_id", e.GetJobId(), "row", e.GetRow(), "message_id", m.ID, "error", err)
		return consume.Leave
	}
	switch c.Verdict {
	case ledger.Busy:
		return consume.Leave
	case ledger.Settled, ledger.Held:
		h.log.DebugContext(ctx, "message settled without sending", "job_id", e.GetJobId(), "row", e.GetRow(),
			"message_id", m.ID, "verdict", c.Verdict.String(), "state", ledger.StateName(c.Record.State))
		return consume.Delete
	}

	rec, err := h.ledger.Sending(ctx, c.Record)
	if err != nil {
		// Nothing was sent. A lost claim belongs to another dispatcher now;
		// otherwise the claim lapses with its lease and the row is retried.
		h.log.WarnContext(ctx, "mark transaction sending; not sent", "job_id", e.GetJobId(), "row", e.GetRow(), "message_id", m.ID, "error", err)
		return consume.Leave
	}
	start := h.o.Now()
	sendErr := h.send.Send(ctx, e)
	r := h.classify(sendErr, e)
	sent = true
	pass.Done(r.class, h.o.Now().Sub(start))

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

	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), outcomeTimeout)
	defer cancel()
	_, counts, err := h.ledger.Finish(wctx, rec, r.outcome)
	if err != nil {
		// The row's SENDING lease will expire and make it UNKNOWN: that is
		// the truth as far as the ledger can know it.
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
func (h *Handler) acquire(ctx context.Context, m consume.Message) (Pass, consume.Disposition, bool) {
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
	pass, err := h.o.Pacer.Acquire(wctx)
	stopped := closed(m.Stopping)
	switch {
	case err != nil && stopped:
		return nil, consume.Release, false
	case err != nil:
		return nil, consume.Leave, false
	case stopped:
		// Shutdown began while this one waited: another dispatcher
		// delivers it.
		pass.Done(Ignore, 0)
		return nil, consume.Release, false
	}
	return pass, consume.Disposition{}, true
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

// exhausted returns the dead-letter reason when the retry budget of the
// row is spent, nil otherwise. rec.Attempts counts this attempt.
func (h *Handler) exhausted(m consume.Message, rec ledger.Record, r result) *deadletter.Reason {
	attempts := int(rec.Attempts) - m.AttemptBase
	last := r.describe()
	switch {
	case attempts >= h.o.MaxAttempts:
		return &deadletter.Reason{
			Reason: fmt.Sprintf("gave up after %d attempts; last: %s", attempts, last), Status: r.outcome.Status, Attempts: int(rec.Attempts),
		}
	case !m.SentAt.IsZero() && h.o.Now().Sub(m.SentAt) >= h.o.MaxAge:
		return &deadletter.Reason{
			Reason:   fmt.Sprintf("gave up after %s in the queue (%d attempts); last: %s", h.o.Now().Sub(m.SentAt).Round(time.Second), attempts, last),
			Status:   r.outcome.Status,
			Attempts: int(rec.Attempts),
		}
	}
	return nil
}

// backoff is the wait before the attempt after the attempts-th: full
// jitter over an exponentially growing cap, and at least what the
// destination asked for in Retry-After, within RetryAfterMax.
func (h *Handler) backoff(attempts int, retryAfter time.Duration) time.Duration {
	ceil := doubled(h.o.BackoffBase, h.o.BackoffMax, attempts)
	d := time.Duration(h.o.Rand() * float64(ceil))
	return max(d, min(retryAfter, h.o.RetryAfterMax), time.Second)
}

// gate reads the job (cached) and decides whether its messages may be
// delivered now. ok false means the message is settled by d.
func (h *Handler) gate(ctx context.Context, m consume.Message) (*spoolv1.Job, consume.Disposition, bool) {
	e := m.Envelope
	job, err := h.cache.get(ctx, e.GetJobId())
	if errors.Is(err, jobstore.ErrNotFound) {
		// Left alone: after maxReceiveCount receives the queue moves it to
		// the dead-letter queue, where a person can look.
		h.log.WarnContext(ctx, "message of an unknown job left", "job_id", e.GetJobId(), "row", e.GetRow(), "message_id", m.ID)
		return nil, consume.Leave, false
	}
	if err != nil {
		h.log.WarnContext(ctx, "read job; message left", "job_id", e.GetJobId(), "message_id", m.ID, "error", err)
		return nil, consume.Leave, false
	}
	if job.GetState() == spoolv1.JobState_JOB_STATE_RECEIVING {
		if exp := job.GetLeaseExpiresAt(); exp == nil || !exp.AsTime().Before(h.o.Now()) {
			return nil, consume.After(h.receivingDelay(m.ReceiveCount)), false
		}
		j, err := h.jobs.ExpireIfAbandoned(ctx, job)
		if err != nil {
			h.log.WarnContext(ctx, "expire abandoned job; message left", "job_id", e.GetJobId(), "message_id", m.ID, "error", err)
			return nil, consume.Leave, false
		}
		if j.GetState() != job.GetState() {
			h.log.InfoContext(ctx, "abandoned job ended", "job_id", e.GetJobId(), "state", j.GetState().String())
		}
		h.cache.put(e.GetJobId(), j, nil)
		job = j
	}
	switch job.GetState() {
	case spoolv1.JobState_JOB_STATE_SEALED, spoolv1.JobState_JOB_STATE_COMPLETED:
		if job.GetPaused() {
			// Not a delivery attempt: nothing is claimed, so no retry
			// budget is used.
			return nil, consume.After(h.pausedDelay(m.ReceiveCount)), false
		}
		return job, consume.Disposition{}, true
	case spoolv1.JobState_JOB_STATE_RECEIVING:
		return nil, consume.After(h.receivingDelay(m.ReceiveCount)), false
	case spoolv1.JobState_JOB_STATE_ABORTED, spoolv1.JobState_JOB_STATE_REJECTED, spoolv1.JobState_JOB_STATE_CANCELLED:
		h.count.Add(e.GetJobId(), jobstore.Counts{Dropped: 1})
		return nil, consume.Delete, false
	default:
		h.log.WarnContext(ctx, "message of a job in an unexpected state left", "job_id", e.GetJobId(), "message_id", m.ID, "state", job.GetState().String())
		return nil, consume.Leave, false
	}
}

// result is a send's outcome for the ledger, the flow control and the
// retry decision.
type result struct {
	outcome    ledger.Outcome
	class      Class
	retryAfter time.Duration
}

// retry says the row is released for another attempt.
func (r result) retry() bool {
	return r.outcome.State == spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED
}

// describe names the last failure for a dead-letter reason: the status,
// or the kind of transport failure, never a response body (it may echo
// payroll data).
func (r result) describe() string {
	if r.outcome.Status != 0 {
		return fmt.Sprintf("%d %s", r.outcome.Status, http.StatusText(r.outcome.Status))
	}
	return r.outcome.Reason
}

// classify maps a send's result to the ledger outcome and its class.
func (h *Handler) classify(err error, e *spoolv1.Envelope) result {
	if err == nil {
		return result{outcome: ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, Status: http.StatusOK}, class: Success}
	}
	f, ok := deliver.IsFailure(err)
	if !ok {
		// The request could not even be built: nothing was sent.
		return result{outcome: ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED, Reason: err.Error()}, class: Ignore}
	}
	switch {
	case f.Status == 0 && f.Written:
		// The destination may have applied it: only the policy may resend.
		// A timeout is still a sign of overload.
		return result{outcome: ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN, Reason: unreachable(f), Envelope: e}, class: Overload}
	case f.Status == 0:
		return result{outcome: ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED, Reason: unreachable(f)}, class: Overload}
	case slices.Contains(h.o.AlreadyApplied, f.Status):
		return result{outcome: ledger.Outcome{
			State: spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, Status: f.Status,
			Reason: fmt.Sprintf("%d %s: already applied", f.Status, http.StatusText(f.Status)),
		}, class: Success}
	case f.Status >= 400 && f.Status < 500 && f.Status != http.StatusRequestTimeout && f.Status != http.StatusTooManyRequests:
		reason := fmt.Sprintf("%d %s", f.Status, http.StatusText(f.Status))
		if f.Excerpt != "" {
			reason += ": " + f.Excerpt
		}
		return result{outcome: ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_REJECTED, Status: f.Status, Reason: reason}, class: Ignore}
	case f.Status == http.StatusTooManyRequests:
		return result{
			outcome:    ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED, Status: f.Status, Reason: http.StatusText(f.Status)},
			class:      Throttle,
			retryAfter: f.RetryAfter,
		}
	case f.Status == http.StatusRequestTimeout || f.Status >= 500:
		return result{
			outcome:    ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED, Status: f.Status, Reason: http.StatusText(f.Status)},
			class:      Overload,
			retryAfter: f.RetryAfter,
		}
	default:
		// Unfollowed redirects and other oddities: the destination did not
		// take it; try again, but they say nothing about its load.
		return result{
			outcome:    ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED, Status: f.Status, Reason: http.StatusText(f.Status)},
			class:      Ignore,
			retryAfter: f.RetryAfter,
		}
	}
}

// unreachable describes a failure without an answer. The URL is left out
// (it may carry a credential, and the reason goes to the ledger and onto
// dead letters): net/http wraps transport errors in a *url.Error naming it.
func unreachable(f *deliver.Failure) string {
	err := f.Err
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		err = ue.Err
	}
	if err == nil {
		return "destination unreachable"
	}
	return "destination unreachable: " + err.Error()
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

// receivingDelay is the wait before a message of a RECEIVING job, received
// receiveCount times, comes back: 1 s, 2 s, 4 s, … up to ReceivingDelay.
// The receive count only paces the wait; it is not a retry budget.
func (h *Handler) receivingDelay(receiveCount int) time.Duration {
	return doubled(firstReceivingDelay, h.o.ReceivingDelay, receiveCount)
}

// pausedDelay is the wait before a message of a paused job, received
// receiveCount times, comes back: 10 s, 20 s, … up to PausedDelay.
func (h *Handler) pausedDelay(receiveCount int) time.Duration {
	return doubled(firstPausedDelay, h.o.PausedDelay, receiveCount)
}

// doubled is first doubled for every n after the first, capped at ceil:
// first, 2·first, 4·first, … ceil.
func doubled(first, ceil time.Duration, n int) time.Duration {
	d := first
	for i := 1; i < n && d < ceil; i++ {
		d *= 2
	}
	return min(d, ceil)
}

// unpaced is the Pacer without flow control.
type unpaced struct{}

func (unpaced) Acquire(context.Context) (Pass, error) { return unpaced{}, nil }

func (unpaced) Done(Class, time.Duration) {}
