package dispatchmetrics

import (
	"context"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/spoolhq/spool/dispatcher/internal/consume"
	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/dispatcher/internal/dispatch"
	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/metrics"
)

// Counter counts the job counter deltas the delivery path adds, by outcome,
// and passes them on. The deliveries are counted where the job record
// counts them, so that the fleet's delivered sums to the job's. A negative
// delta (a dead-lettered row redriven and settled) is passed on but not
// counted: a Prometheus counter only grows, and the row's dead-lettering
// did happen.
//
// Rows recorded UNKNOWN are also logged (UnknownLogMessage, with the job
// id and the number of rows), whichever way they became unknown (a lost
// answer, or a send whose dispatcher died): where logs are the only
// signal, as in CloudWatch, a metric filter on that line is the alarm.
func (m *Metrics) Counter(next dispatch.Counter, log *slog.Logger) dispatch.Counter {
	return counter{m: m, next: next, log: log}
}

// UnknownLogMessage is the message of the log line that reports rows
// recorded UNKNOWN; deploy/'s CloudWatch metric filter matches it.
const UnknownLogMessage = "rows recorded unknown"

type counter struct {
	m    *Metrics
	next dispatch.Counter
	log  *slog.Logger
}

func (c counter) Add(jobID string, d jobstore.Counts) {
	c.next.Add(jobID, d)
	if d.Unknown > 0 && c.log != nil {
		c.log.Warn(UnknownLogMessage, "job_id", jobID, "rows", d.Unknown)
	}
	for _, f := range []struct {
		outcome string
		n       int64
	}{
		{"delivered", d.Delivered}, {"rejected", d.Failed}, {"retried", d.Retries}, {"unknown", d.Unknown},
		{"dead_lettered", d.DeadLettered}, {"suppressed", d.Suppressed}, {"duplicate", d.Duplicates}, {"dropped", d.Dropped},
	} {
		if f.n > 0 {
			c.m.deliveries.WithLabelValues(f.outcome).Add(float64(f.n))
		}
	}
}

// Sender times each request to the destination by the class of its
// answer.
func (m *Metrics) Sender(next dispatch.Sender) dispatch.Sender {
	return sender{m: m, next: next, now: time.Now}
}

type sender struct {
	m    *Metrics
	next dispatch.Sender
	now  func() time.Time
}

func (s sender) Send(ctx context.Context, e *spoolv1.Envelope) (deliver.Receipt, error) {
	start := s.now()
	receipt, err := s.next.Send(ctx, e)
	class := "2xx"
	if err != nil {
		f, ok := deliver.IsFailure(err)
		if !ok {
			// The request was never built: nothing to time.
			return receipt, err
		}
		class = metrics.StatusClass(f.Status)
	}
	s.m.requestDuration.WithLabelValues(class).Observe(s.now().Sub(start).Seconds())
	return receipt, err
}

// Ledger times the ledger writes of each delivery.
func (m *Metrics) Ledger(next dispatch.Ledger) dispatch.Ledger {
	return ledgerTimer{m: m, next: next, now: time.Now}
}

type ledgerTimer struct {
	m    *Metrics
	next dispatch.Ledger
	now  func() time.Time
}

func (l ledgerTimer) observe(op string, start time.Time, err error) {
	l.m.ledgerDuration.WithLabelValues(op).Observe(l.now().Sub(start).Seconds())
	if err != nil {
		l.m.ledgerErrors.WithLabelValues(op).Inc()
	}
}

func (l ledgerTimer) Claim(ctx context.Context, tx ledger.Tx) (ledger.Claim, error) {
	start := l.now()
	c, err := l.next.Claim(ctx, tx)
	l.observe("claim", start, err)
	return c, err
}

func (l ledgerTimer) Sending(ctx context.Context, r ledger.Record) (ledger.Record, error) {
	start := l.now()
	out, err := l.next.Sending(ctx, r)
	l.observe("sending", start, err)
	return out, err
}

func (l ledgerTimer) Finish(ctx context.Context, r ledger.Record, o ledger.Outcome) (ledger.Record, jobstore.Counts, error) {
	start := l.now()
	out, c, err := l.next.Finish(ctx, r, o)
	l.observe("finish", start, err)
	return out, c, err
}

func (l ledgerTimer) Policy() ledger.Policy { return l.next.Policy() }

// Queue counts the receive loop's SQS calls and their errors.
func (m *Metrics) Queue(next consume.API) consume.API {
	return queue{m: m, next: next}
}

type queue struct {
	m    *Metrics
	next consume.API
}

func (q queue) count(op string, failed bool) {
	q.m.queueCalls.WithLabelValues(op).Inc()
	if failed {
		q.m.queueErrors.WithLabelValues(op).Inc()
	}
}

func (q queue) ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, opts ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	out, err := q.next.ReceiveMessage(ctx, in, opts...)
	q.count("receive", err != nil)
	return out, err
}

func (q queue) DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, opts ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error) {
	out, err := q.next.DeleteMessageBatch(ctx, in, opts...)
	// A batch with entries not deleted did not do its job either.
	q.count("delete", err != nil || len(out.Failed) > 0)
	return out, err
}

func (q queue) ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, opts ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error) {
	out, err := q.next.ChangeMessageVisibility(ctx, in, opts...)
	q.count("visibility", err != nil)
	return out, err
}

func (q queue) SendMessage(ctx context.Context, in *sqs.SendMessageInput, opts ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	out, err := q.next.SendMessage(ctx, in, opts...)
	q.count("dead_letter", err != nil)
	return out, err
}

// FlushStore is the part of the job store counter flushes write to
// (tally.Store).
type FlushStore interface {
	WriteCounts(ctx context.Context, id string, w jobstore.CounterWrite) error
	Get(ctx context.Context, id string) (*spoolv1.Job, error)
	Complete(ctx context.Context, id string, confirmed jobstore.Settled) (*spoolv1.Job, error)
}

// Flushes counts the writes of job counters and their failures; reads and
// completions pass through.
func (m *Metrics) Flushes(next FlushStore) FlushStore {
	return flushStore{FlushStore: next, m: m}
}

type flushStore struct {
	FlushStore
	m *Metrics
}

func (f flushStore) WriteCounts(ctx context.Context, id string, w jobstore.CounterWrite) error {
	err := f.FlushStore.WriteCounts(ctx, id, w)
	f.m.flushes.Inc()
	if err != nil {
		f.m.flushErrors.Inc()
	}
	return err
}
