// Package dispatch decides what happens to one received transaction: it
// checks the job's state, claims the transaction in the delivery ledger,
// sends it to the destination, records the outcome, counts it for the job,
// and tells the receive loop whether the message is settled.
//
// Order matters, and each step is there so a row is never sent twice:
//   - Gating: nothing of a job that is not SEALED (or COMPLETED) is sent. A
//     RECEIVING job's messages come back later; those of an ABORTED,
//     REJECTED or CANCELLED job are dropped.
//   - Claim: a conditional write makes this dispatcher the owner under a
//     lease; a row already settled is deleted without sending.
//   - SENDING is written immediately before the request, so that a crash
//     during it leaves a record whose outcome is known to be unknown.
//   - The outcome is written conditional on still owning the claim.
//
// Retry classes with backoff, dead letters, heartbeats and the circuit
// breaker (#4) belong here too, around the outcome classes below.
package dispatch

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spoolhq/spool/dispatcher/internal/consume"
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

// Defaults for Options.
const (
	DefaultJobCacheTTL    = time.Second
	DefaultReceivingDelay = 2 * time.Minute
)

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
	return &Handler{
		send: send, count: count, ledger: l, jobs: jobs,
		cache: newJobCache(jobs, o.JobCacheTTL, o.Now, o.Seen), o: o, log: o.Log,
	}
}

// Handle settles m: see the package comment. Log lines carry identifiers
// and outcomes only, never the row's fields.
func (h *Handler) Handle(ctx context.Context, m consume.Message) consume.Disposition {
	e := m.Envelope
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
	sendErr := h.send.Send(ctx, e)
	o := classify(sendErr, e)

	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), outcomeTimeout)
	defer cancel()
	_, counts, err := h.ledger.Finish(wctx, rec, o)
	if err != nil {
		// The row's SENDING lease will expire and make it UNKNOWN: that is
		// the truth as far as the ledger can know it.
		h.log.ErrorContext(ctx, "record delivery outcome", "job_id", e.GetJobId(), "row", e.GetRow(), "message_id", m.ID,
			"outcome", ledger.StateName(o.State), "status", o.Status, "lost", errors.Is(err, ledger.ErrLost), "error", err)
		return consume.Leave
	}
	h.count.Add(e.GetJobId(), counts)
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
		return consume.Leave
	default:
		h.log.WarnContext(ctx, "delivery failed; left for retry", "job_id", e.GetJobId(), "row", e.GetRow(), "message_id", m.ID,
			"receive_count", m.ReceiveCount, "status", o.Status, "error", sendErr)
		return consume.Leave
	}
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

// classify maps a send's result to the ledger outcome.
func classify(err error, e *spoolv1.Envelope) ledger.Outcome {
	if err == nil {
		return ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, Status: http.StatusOK}
	}
	f, ok := deliver.IsFailure(err)
	if !ok {
		// The request could not even be built: nothing was sent.
		return ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED, Reason: err.Error()}
	}
	switch {
	case f.Status == 0 && f.Written:
		// The destination may have applied it: only the policy may resend.
		return ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN, Reason: err.Error(), Envelope: e}
	case f.Status == 0:
		return ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED, Reason: err.Error()}
	case f.Status >= 400 && f.Status < 500 && f.Status != http.StatusRequestTimeout && f.Status != http.StatusTooManyRequests:
		reason := http.StatusText(f.Status)
		if f.Excerpt != "" {
			reason += ": " + f.Excerpt
		}
		return ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_REJECTED, Status: f.Status, Reason: reason}
	default:
		// 408, 429, 5xx and unfollowed redirects: the destination did not
		// take it, and says (or implies) to try again.
		return ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED, Status: f.Status, Reason: http.StatusText(f.Status)}
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

// receivingDelay is the wait before a message of a RECEIVING job, received
// receiveCount times, comes back: 1 s, 2 s, 4 s, … up to ReceivingDelay.
// The receive count only paces the wait; it is not a retry budget.
func (h *Handler) receivingDelay(receiveCount int) time.Duration {
	d := firstReceivingDelay
	for i := 1; i < receiveCount && d < h.o.ReceivingDelay; i++ {
		d *= 2
	}
	return min(d, h.o.ReceivingDelay)
}
