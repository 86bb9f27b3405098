// Package consume is the dispatcher's receive loop: it long-polls the
// queue, hands each transaction to a Handler, and deletes the messages the
// handler settled.
//
// It is capacity-aware. A message's visibility timeout starts when it is
// received, so a message must never wait in a local buffer: a poller first
// takes free delivery slots and asks the queue for at most that many
// messages. Many dispatcher processes can run this loop on one queue; they
// coordinate only through SQS (and, in the handler, DynamoDB).
package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/envelope"
)

// maxReceive is the most messages SQS returns from one ReceiveMessage.
const maxReceive = 10

// API is the part of the SQS client the loop uses.
type API interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, opts ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, opts ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error)
	ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, opts ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error)
}

// Disposition is what happens to a message once its handler returns.
type Disposition struct {
	del   bool
	delay time.Duration
}

var (
	// Leave keeps the message: it becomes visible again when its visibility
	// timeout ends, and is then received again (here or elsewhere).
	Leave = Disposition{}
	// Delete removes the message: it was delivered, or settled for good.
	Delete = Disposition{del: true}
)

// After keeps the message and makes it visible again after d (at most 12
// hours, SQS's bound), instead of after the visibility timeout.
func After(d time.Duration) Disposition { return Disposition{delay: max(d, time.Second)} }

func (d Disposition) String() string {
	switch {
	case d.del:
		return "delete"
	case d.delay > 0:
		return "after " + d.delay.String()
	}
	return "leave"
}

// Message is one received transaction.
type Message struct {
	// ID is the SQS message id, safe to log.
	ID string
	// ReceiveCount is SQS's ApproximateReceiveCount (0 when absent). It is
	// approximate, and an emulator bumps it on visibility changes: use it
	// for logs, never for a retry budget.
	ReceiveCount int
	Envelope     *spoolv1.Envelope
}

// Handler settles one message. It is called concurrently, once per
// received message, and must return when ctx is done.
type Handler interface {
	Handle(ctx context.Context, m Message) Disposition
}

// Options configure a Consumer.
type Options struct {
	QueueURL string
	// Concurrency is the number of delivery slots: messages being handled
	// at once, and the most that are ever received but not yet settled.
	Concurrency int
	// Pollers run receive calls in parallel; 0 means Pollers(Concurrency).
	Pollers int
	// WaitTime is the long-poll wait of one receive, in whole seconds (at
	// most 20). Keep it modest: shutdown lets the last polls run out.
	WaitTime time.Duration
	// DeleteInterval is the longest a settled message waits for its batch
	// to fill before it is deleted anyway. Default 50 ms.
	DeleteInterval time.Duration
	// Drain is how long in-flight deliveries get to finish once shutdown
	// begins; after it their context is cancelled. Default 20 s.
	Drain time.Duration
	// FlushTimeout bounds the final delete flush at shutdown. Default 5 s.
	FlushTimeout time.Duration
	Log          *slog.Logger
}

// Pollers returns the default number of pollers for concurrency: enough
// receive calls in parallel to fill every slot (a receive returns at most
// ten messages, and takes a while even when messages wait), plus one so a
// poller is always waiting on the queue while others hand out messages.
func Pollers(concurrency int) int {
	return (concurrency+maxReceive-1)/maxReceive + 1
}

// Consumer runs the receive loop.
type Consumer struct {
	api     API
	handler Handler
	o       Options
	log     *slog.Logger
	slots   chan struct{}
}

// New returns a consumer; zero options get defaults.
func New(api API, h Handler, o Options) *Consumer {
	if o.Concurrency < 1 {
		o.Concurrency = 1
	}
	if o.Pollers < 1 {
		o.Pollers = Pollers(o.Concurrency)
	}
	if o.DeleteInterval <= 0 {
		o.DeleteInterval = 50 * time.Millisecond
	}
	if o.Drain <= 0 {
		o.Drain = 20 * time.Second
	}
	if o.FlushTimeout <= 0 {
		o.FlushTimeout = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Consumer{
		api:     api,
		handler: h,
		o:       o,
		log:     o.Log,
		slots:   make(chan struct{}, o.Concurrency),
	}
}

// Run consumes until ctx is done, then shuts down: it stops polling (a poll
// under way is let finish, see poll), gives in-flight deliveries up to
// Options.Drain, flushes pending deletes and returns nil. It returns an
// error only when the queue cannot be consumed at all.
func (c *Consumer) Run(ctx context.Context) error {
	// Receives, deliveries and deletes outlive ctx: shutdown is ordered
	// below rather than cut short by cancellation.
	base := context.WithoutCancel(ctx)
	handleCtx, cancelHandlers := context.WithCancel(base)
	defer cancelHandlers()

	del := newDeleter(c.api, c.o.QueueURL, c.o.DeleteInterval, c.o.Pollers, c.log)
	del.start(base)

	// The drain deadline runs from the moment shutdown begins, concurrently
	// with the last polls.
	var drainOnce sync.Once
	var drainTimer *time.Timer
	startDrain := func() {
		drainOnce.Do(func() { drainTimer = time.AfterFunc(c.o.Drain, cancelHandlers) })
	}
	stopAfter := context.AfterFunc(ctx, startDrain)
	defer stopAfter()

	pollCtx, stopPolling := context.WithCancel(ctx)
	defer stopPolling()
	var (
		pollers  sync.WaitGroup
		inflight sync.WaitGroup
		errOnce  sync.Once
		fatal    error
	)
	for i := range c.o.Pollers {
		pollers.Go(func() {
			if err := c.poll(pollCtx, base, handleCtx, del, &inflight); err != nil {
				errOnce.Do(func() { fatal = fmt.Errorf("poller %d: %w", i, err) })
				stopPolling()
			}
		})
	}
	pollers.Wait()
	startDrain()
	inflight.Wait()
	drainTimer.Stop()

	flushCtx, cancel := context.WithTimeout(base, c.o.FlushTimeout)
	defer cancel()
	del.close(flushCtx)
	return fatal
}

// acquire takes at least one free slot, blocking until one is free or ctx
// is done, then as many more as are free, up to maxReceive.
func (c *Consumer) acquire(ctx context.Context) int {
	// select picks at random among ready cases: check shutdown first so no
	// new poll starts after it.
	if ctx.Err() != nil {
		return 0
	}
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return 0
	}
	n := 1
	for n < maxReceive {
		select {
		case c.slots <- struct{}{}:
			n++
		default:
			return n
		}
	}
	return n
}

func (c *Consumer) release(n int) {
	for range n {
		<-c.slots
	}
}

// poll is one poller's loop. pollCtx stops it; receives use base, which
// shutdown does not cancel: a long poll abandoned by its client may still
// take messages that then stay invisible for the whole visibility timeout,
// so the last poll is let finish (within WaitTime) and its messages are
// delivered during the drain.
func (c *Consumer) poll(pollCtx, base, handleCtx context.Context, del *deleter, inflight *sync.WaitGroup) error {
	backoff := time.Duration(0)
	for {
		n := c.acquire(pollCtx)
		if n == 0 {
			return nil
		}
		msgs, err := c.receive(base, n)
		c.release(n - len(msgs))
		if err != nil {
			if qe := (*types.QueueDoesNotExist)(nil); errors.As(err, &qe) {
				return err
			}
			backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
			c.log.Warn("receive messages", "error", err, "retry_in", backoff)
			select {
			case <-pollCtx.Done():
				return nil
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		for _, m := range msgs {
			inflight.Go(func() {
				defer c.release(1)
				c.handle(handleCtx, m, del)
			})
		}
	}
}

func (c *Consumer) receive(base context.Context, n int) ([]types.Message, error) {
	// Bounded by the wait time plus room for the round trip, never by
	// shutdown.
	ctx, cancel := context.WithTimeout(base, c.o.WaitTime+10*time.Second)
	defer cancel()
	out, err := c.api.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl:              aws.String(c.o.QueueURL),
		MaxNumberOfMessages:   int32(n),
		WaitTimeSeconds:       int32(c.o.WaitTime / time.Second),
		MessageAttributeNames: []string{"All"},
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{
			types.MessageSystemAttributeNameApproximateReceiveCount,
		},
		// The deprecated field too: some SQS implementations (the local
		// emulator among them) only honour this one.
		AttributeNames: []types.QueueAttributeName{
			types.QueueAttributeName(types.MessageSystemAttributeNameApproximateReceiveCount),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("receive up to %d messages: %w", n, err)
	}
	if len(out.Messages) > n {
		// SQS never does this; a slot per message is the invariant the
		// whole loop rests on, so refuse rather than overcommit.
		return nil, fmt.Errorf("receive up to %d messages: got %d", n, len(out.Messages))
	}
	return out.Messages, nil
}

func (c *Consumer) handle(ctx context.Context, m types.Message, del *deleter) {
	id := aws.ToString(m.MessageId)
	count, _ := strconv.Atoi(m.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)])
	env, err := envelope.Decode(aws.ToString(m.Body), m.MessageAttributes)
	if err != nil {
		// A poison message is left, so the queue's redrive policy moves it
		// to the dead-letter queue after maxReceiveCount receives. Issue #4
		// will dead-letter it at once, with the reason attached. The body
		// is never logged: it is payroll data.
		c.log.Error("undecodable message left for the dead-letter queue",
			"message_id", id, "receive_count", count, "error", err,
			"unknown_version", errors.Is(err, envelope.ErrUnknownVersion))
		return
	}
	d := c.handler.Handle(ctx, Message{ID: id, ReceiveCount: count, Envelope: env})
	switch {
	case d.del:
		del.add(id, aws.ToString(m.ReceiptHandle))
	case d.delay > 0:
		c.postpone(id, aws.ToString(m.ReceiptHandle), d.delay)
	}
}

// postpone makes a message visible again after delay. It is not a delivery
// attempt: Spool counts attempts in the ledger. Should the call fail, the
// message simply comes back after its visibility timeout.
func (c *Consumer) postpone(id, receipt string, delay time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), deleteCallTimeout)
	defer cancel()
	_, err := c.api.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
		QueueUrl:          aws.String(c.o.QueueURL),
		ReceiptHandle:     aws.String(receipt),
		VisibilityTimeout: int32(min(delay, 12*time.Hour) / time.Second),
	})
	if err != nil {
		c.log.Warn("postpone message", "message_id", id, "delay", delay, "error", err)
	}
}
