// Package publish sends envelopes to SQS in batches, with bounded memory
// and bounded concurrency, and keeps track of what SQS has acknowledged.
//
// Publish hands an envelope to a bounded queue and returns; a fixed number
// of senders take up to ten entries each (within the queue's size limit) and
// call SendMessageBatch. When the queue is full, Publish blocks: that is the
// backpressure that slows the gRPC stream down to the pace SQS accepts.
//
// Entries SQS reports as failed are retried with exponential backoff and
// jitter, as are whole calls that fail for reasons other than the request
// itself. A request SQS rejects as the sender's fault is never retried: it
// would fail again, so the publisher fails and the stream with it.
//
// Delivery to SQS is at least once: a call that times out after SQS stored
// the messages is retried, so a row can be queued twice. The dispatchers
// deliver each transaction key once, which is what makes that harmless.
package publish

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/envelope"
	"github.com/spoolhq/spool/platform/positive"
)

// maxBatchEntries is SQS's limit of entries per SendMessageBatch.
const maxBatchEntries = 10

// Defaults for zero Options fields.
const (
	DefaultConcurrency = 8
	DefaultBuffer      = 2000
	DefaultMaxAttempts = 8
	DefaultMinBackoff  = 100 * time.Millisecond
	DefaultMaxBackoff  = 10 * time.Second
	DefaultCallTimeout = 20 * time.Second
)

var (
	// ErrTooLarge marks an envelope larger than the queue's maximum message
	// size. It concerns one row: the row is not sent and the stream goes on.
	ErrTooLarge = errors.New("message too large")
	// ErrRejected marks a request SQS refused as the sender's fault.
	// Retrying would not help.
	ErrRejected = errors.New("rejected by SQS")
	// ErrClosed is returned by a publisher that was closed.
	ErrClosed = errors.New("publisher closed")
)

// API is the part of the SQS client the publisher uses.
type API interface {
	SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, opts ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error)
}

// Options configure a Publisher.
type Options struct {
	// QueueURL is the queue to publish to. Required.
	QueueURL string
	// MaxMessageBytes is the queue's maximum message size; it caps each
	// message and the total of each batch. Required.
	MaxMessageBytes int
	// Concurrency is the number of SendMessageBatch calls in flight.
	Concurrency int
	// Buffer is the number of entries that may wait to be sent before
	// Publish blocks.
	Buffer int
	// MaxAttempts bounds the sends of one entry, first attempt included.
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the exponential backoff between
	// attempts; the actual wait is jittered.
	MinBackoff, MaxBackoff time.Duration
	// CallTimeout bounds one SendMessageBatch call, the SDK's own retries
	// included. A call that runs out of it is an attempt that failed: its
	// entries are sent again, which may queue a row twice, as any lost
	// answer may.
	CallTimeout time.Duration
	// Log receives retries; it never carries row contents.
	Log *slog.Logger
	// Waited, when set, is told how long each Publish that found the
	// queue full waited: the backpressure the stream felt (for metrics).
	Waited func(time.Duration)
}

func (o *Options) defaults() error {
	if o.QueueURL == "" {
		return errors.New("publish: queue URL is required")
	}
	if o.MaxMessageBytes <= 0 {
		return errors.New("publish: max message bytes must be positive")
	}
	o.Concurrency = positive.Or(o.Concurrency, DefaultConcurrency)
	o.Buffer = positive.Or(o.Buffer, DefaultBuffer)
	o.MaxAttempts = positive.Or(o.MaxAttempts, DefaultMaxAttempts)
	o.MinBackoff = positive.Or(o.MinBackoff, DefaultMinBackoff)
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(DefaultMaxBackoff, o.MinBackoff)
	}
	o.CallTimeout = positive.Or(o.CallTimeout, DefaultCallTimeout)
	o.Log = cmp.Or(o.Log, slog.New(slog.DiscardHandler))
	return nil
}

// Stats are a publisher's figures at one moment.
type Stats struct {
	// Published counts rows SQS acknowledged.
	Published int64
	// Watermark is the highest row N such that every row up to N that was
	// handed to Publish has been acknowledged. Rows never handed over
	// (rejected before publishing) do not hold it back.
	Watermark int64
	// Pending counts rows handed over and not yet acknowledged.
	Pending int
}

// entry is one message waiting to be sent.
type entry struct {
	seq  int64 // order of Publish calls, for the watermark
	row  int64
	id   string
	body string
	attr map[string]types.MessageAttributeValue
	size int
}

// ack tracks one published row until it and every row before it are
// acknowledged.
type ack struct {
	row  int64
	done bool
}

// Publisher publishes the rows of one stream. Publish and Flush are meant
// to be called from one goroutine; Stats from any.
type Publisher struct {
	api     API
	opts    Options
	entries chan *entry
	enc     envelope.Encoder // Publish's alone: it is called from one goroutine

	ctx    context.Context // ends when the publisher fails or is closed
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	err       error // the first fatal error
	nextSeq   int64
	acks      []ack // from the oldest unacknowledged row on
	head      int   // index in acks of the oldest tracked row
	headSeq   int64 // seq of acks[head]
	lastRow   int64
	published int64
	drained   chan struct{} // closed when nothing is pending
}

// New starts a publisher. Close it to stop its senders.
func New(api API, o Options) (*Publisher, error) {
	p, err := newPublisher(api, o)
	if err != nil {
		return nil, err
	}
	p.start()
	return p, nil
}

// newPublisher returns a publisher whose senders are not started, so that
// tests can queue entries first and get deterministic batches.
func newPublisher(api API, o Options) (*Publisher, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Publisher{
		api:     api,
		opts:    o,
		entries: make(chan *entry, o.Buffer),
		ctx:     ctx,
		cancel:  cancel,
		drained: make(chan struct{}),
	}
	close(p.drained)
	return p, nil
}

// Check encodes e with enc as Publish would and fails the same way when
// it cannot be sent (ErrTooLarge): a dry run checks every row with it,
// reusing one encoder as a stream's publisher does.
func Check(enc *envelope.Encoder, e *spoolv1.Envelope, maxMessageBytes int) error {
	_, _, _, err := encode(enc, e, maxMessageBytes)
	return err
}

func encode(enc *envelope.Encoder, e *spoolv1.Envelope, maxMessageBytes int) (body string, attrs map[string]types.MessageAttributeValue, size int, err error) {
	body, attrs, err = enc.Encode(e)
	if err != nil {
		return "", nil, 0, fmt.Errorf("encode row %d: %w", e.GetRow(), err)
	}
	size = envelope.Size(body, attrs)
	if size > maxMessageBytes {
		return "", nil, 0, fmt.Errorf("row %d: message of %d bytes exceeds max-message-bytes=%d: %w", e.GetRow(), size, maxMessageBytes, ErrTooLarge)
	}
	return body, attrs, size, nil
}

func (p *Publisher) start() {
	for range p.opts.Concurrency {
		p.wg.Go(p.send)
	}
}

// Publish queues e for sending, blocking while the queue is full. Rows must
// come in increasing order. It returns an error wrapping ErrTooLarge when e
// can never be sent (the publisher goes on), and any other error when the
// publisher failed or ctx ended while waiting (the publisher is then
// failed: the stream cannot go on).
func (p *Publisher) Publish(ctx context.Context, e *spoolv1.Envelope) error {
	body, attrs, size, err := encode(&p.enc, e, p.opts.MaxMessageBytes)
	if err != nil {
		return err
	}
	en := &entry{row: e.GetRow(), id: strconv.FormatInt(e.GetRow(), 10), body: body, attr: attrs, size: size}
	if err := p.track(en); err != nil {
		return err
	}
	// Try without waiting first, so that a full queue is the only reason
	// to look at ctx: a cancelled ctx with room to spare still enqueues.
	select {
	case p.entries <- en:
		return nil
	default:
	}
	if p.opts.Waited != nil {
		start := time.Now()
		defer func() { p.opts.Waited(time.Since(start)) }()
	}
	select {
	case p.entries <- en:
		return nil
	case <-ctx.Done():
		err := fmt.Errorf("publish row %d: %w", en.row, ctx.Err())
		p.fail(err)
		return err
	case <-p.ctx.Done():
		return p.failure()
	}
}

// track registers en as pending, so the watermark waits for it.
func (p *Publisher) track(en *entry) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	if en.row <= p.lastRow {
		return fmt.Errorf("publish row %d after row %d: rows must increase", en.row, p.lastRow)
	}
	if len(p.acks) == p.head {
		p.drained = make(chan struct{})
	}
	en.seq = p.nextSeq
	p.nextSeq++
	p.acks = append(p.acks, ack{row: en.row})
	p.lastRow = en.row
	return nil
}

// acked records that SQS stored entries.
func (p *Publisher) acked(entries []*entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, en := range entries {
		p.acks[p.head+int(en.seq-p.headSeq)].done = true
	}
	p.published += int64(len(entries))
	for p.head < len(p.acks) && p.acks[p.head].done {
		p.head++
		p.headSeq++
	}
	if p.head == len(p.acks) {
		p.acks, p.head = p.acks[:0], 0
		close(p.drained)
	} else if p.head > 1024 && p.head > len(p.acks)/2 {
		// Drop the acknowledged prefix so the slice stays as small as
		// the number of pending rows.
		n := copy(p.acks, p.acks[p.head:])
		p.acks, p.head = p.acks[:n], 0
	}
}

// Flush waits until every row handed to Publish is acknowledged, or the
// publisher fails, or ctx ends.
func (p *Publisher) Flush(ctx context.Context) error {
	p.mu.Lock()
	drained, err := p.drained, p.err
	p.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flush: %w", ctx.Err())
	case <-p.ctx.Done():
		return p.failure()
	}
}

// Stats returns the current figures.
func (p *Publisher) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Stats{Published: p.published, Pending: len(p.acks) - p.head, Watermark: p.lastRow}
	if s.Pending > 0 {
		s.Watermark = p.acks[p.head].row - 1
	}
	return s
}

// Close stops the senders, abandoning whatever is not yet sent, and waits
// for them. Calls in flight are cancelled. It may be called more than once.
func (p *Publisher) Close() {
	p.fail(ErrClosed)
	p.wg.Wait()
}

func (p *Publisher) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
	p.cancel()
}

func (p *Publisher) failure() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// send is one sender: it takes the entries that are waiting, up to a full
// batch, and sends them; it never waits for a batch to fill, so a slow
// stream is not delayed and a fast one fills its batches.
func (p *Publisher) send() {
	var carry *entry // taken from the queue but did not fit the last batch
	batch := make([]*entry, 0, maxBatchEntries)
	for {
		batch = batch[:0]
		size := 0
		if carry != nil {
			batch, size, carry = append(batch, carry), carry.size, nil
		} else {
			select {
			case en := <-p.entries:
				batch, size = append(batch, en), en.size
			case <-p.ctx.Done():
				return
			}
		}
	fill:
		for len(batch) < maxBatchEntries {
			select {
			case en := <-p.entries:
				if size+en.size > p.opts.MaxMessageBytes {
					carry = en
					break fill
				}
				batch, size = append(batch, en), size+en.size
			default:
				break fill
			}
		}
		if err := p.sendBatch(batch); err != nil {
			p.fail(err)
			return
		}
	}
}

// sendBatch sends entries until SQS has acknowledged all of them, retrying
// what failed for reasons other than the request itself.
func (p *Publisher) sendBatch(entries []*entry) error {
	remaining := entries
	for attempt := 1; ; attempt++ {
		byID := make(map[string]*entry, len(remaining))
		in := &sqs.SendMessageBatchInput{QueueUrl: aws.String(p.opts.QueueURL), Entries: make([]types.SendMessageBatchRequestEntry, len(remaining))}
		for i, en := range remaining {
			byID[en.id] = en
			in.Entries[i] = types.SendMessageBatchRequestEntry{Id: aws.String(en.id), MessageBody: aws.String(en.body), MessageAttributes: en.attr}
		}
		ctx, cancel := context.WithTimeout(p.ctx, p.opts.CallTimeout)
		out, err := p.api.SendMessageBatch(ctx, in)
		cancel()
		if err != nil {
			if p.ctx.Err() != nil {
				return p.failure()
			}
			desc := fmt.Sprintf("send batch of %d rows from row %d, attempt %d", len(remaining), remaining[0].row, attempt)
			if senderFault(err) {
				return fmt.Errorf("%s: %w: %w", desc, ErrRejected, err)
			}
			if attempt >= p.opts.MaxAttempts {
				return fmt.Errorf("%s: %w", desc, err)
			}
			p.opts.Log.Warn("send batch failed; retrying", "rows", len(remaining), "attempt", attempt, "error", err)
			if err := p.backoff(attempt); err != nil {
				return err
			}
			continue
		}
		done := make([]*entry, 0, len(out.Successful))
		for _, s := range out.Successful {
			if en, ok := byID[aws.ToString(s.Id)]; ok {
				done = append(done, en)
				delete(byID, en.id)
			}
		}
		p.acked(done)
		if len(byID) == 0 {
			return nil
		}
		for _, f := range out.Failed {
			if f.SenderFault {
				return fmt.Errorf("send row %s: %w: %s: %s", aws.ToString(f.Id), ErrRejected, aws.ToString(f.Code), aws.ToString(f.Message))
			}
		}
		// Whatever SQS did not report as stored is sent again, in the
		// original order so the watermark moves as soon as possible.
		remaining = remaining[:0:0]
		for _, en := range entries {
			if _, ok := byID[en.id]; ok {
				remaining = append(remaining, en)
			}
		}
		if attempt >= p.opts.MaxAttempts {
			return fmt.Errorf("send %d rows from row %d: still failing after %d attempts", len(remaining), remaining[0].row, attempt)
		}
		p.opts.Log.Warn("rows not stored by SQS; retrying", "rows", len(remaining), "attempt", attempt)
		if err := p.backoff(attempt); err != nil {
			return err
		}
	}
}

// backoff waits before attempt+1: exponential from MinBackoff, capped at
// MaxBackoff, with half of it jittered so that senders retrying together
// spread out.
func (p *Publisher) backoff(attempt int) error {
	d := p.opts.MinBackoff << min(attempt-1, 30)
	if d <= 0 || d > p.opts.MaxBackoff {
		d = p.opts.MaxBackoff
	}
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-p.ctx.Done():
		return p.failure()
	}
}

// senderFault reports whether SQS refused the request itself: a bad
// request fails the same way every time. Throttling is the client's fault
// on paper but passes with time, so it is retried.
func senderFault(err error) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorFault() != smithy.FaultClient {
		return false
	}
	return retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err) != aws.TrueTernary
}
