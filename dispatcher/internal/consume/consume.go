// Package consume is the dispatcher's receive loop: it long-polls the
// queue, hands each transaction to a Handler, and deletes the messages the
// handler settled.
//
// It is capacity-aware. A message's visibility timeout starts when it is
// received, so a message must never wait in a local buffer: a poller first
// takes free delivery slots and asks the queue for at most that many
// messages. Many dispatcher processes can run this loop on one queue; they
// coordinate only through SQS (and, in the handler, DynamoDB).
//
// While a handler runs, a heartbeat keeps extending the message's
// visibility, so a slow delivery never becomes visible to another
// dispatcher. A message that cannot be decoded, or that the handler gives
// up on, is sent to the dead-letter queue with its reason attached and
// deleted from the main queue: it never loops through the dispatchers.
package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/spoolhq/spool/dispatcher/internal/deadletter"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// maxReceive is the most messages SQS returns from one ReceiveMessage.
const maxReceive = 10

// API is the part of the SQS client the loop uses.
type API interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, opts ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, opts ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error)
	ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, opts ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error)
	// SendMessage puts a dead letter on the dead-letter queue.
	SendMessage(ctx context.Context, in *sqs.SendMessageInput, opts ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
}

// Disposition is what happens to a message once its handler returns.
type Disposition struct {
	del     bool
	release bool
	delay   time.Duration
	dead    *deadletter.Reason
}

var (
	// Leave keeps the message: it becomes visible again when its visibility
	// timeout ends, and is then received again (here or elsewhere).
	Leave = Disposition{}
	// Delete removes the message: it was delivered, or settled for good.
	Delete = Disposition{del: true}
	// Release makes the message visible again at once, for another
	// dispatcher: it was received but its delivery never started (the
	// dispatcher is shutting down).
	Release = Disposition{release: true}
)

// DeadLetter moves the message to the dead-letter queue with r attached
// (the dispatcher and time are filled in), then deletes it from the main
// queue. Should the dead-letter queue refuse it, the message is left and
// comes back after its visibility timeout.
func DeadLetter(r deadletter.Reason) Disposition { return Disposition{dead: &r} }

// After keeps the message and makes it visible again after d (at most 12
// hours, SQS's bound), instead of after the visibility timeout.
func After(d time.Duration) Disposition { return Disposition{delay: max(d, time.Second)} }

func (d Disposition) String() string {
	switch {
	case d.del:
		return "delete"
	case d.release:
		return "release"
	case d.dead != nil:
		return "dead-letter"
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
	// SentAt is when the message was sent to the queue (SQS's
	// SentTimestamp; a redriven message was sent anew), zero when absent.
	SentAt time.Time
	// AttemptBase is the row's delivery attempts before a redrive: the
	// message's retry budget counts from there.
	AttemptBase int
	Envelope    *spoolv1.Envelope
	// Stopping is closed when the dispatcher begins to shut down. A
	// handler still waiting to start its delivery then returns Release.
	Stopping <-chan struct{}
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
	// VisibilityTimeout is asked for on every receive, in whole seconds;
	// the heartbeat extends a message by it while its handler runs.
	// Default 30 s.
	VisibilityTimeout time.Duration
	// Heartbeat is how often a message being handled is extended; default
	// a third of VisibilityTimeout, so that two heartbeats may fail before
	// the message becomes visible again.
	Heartbeat time.Duration
	// DeadLetterURL is the dead-letter queue. Without one, a message that
	// should be dead-lettered is left, and the queue's redrive policy moves
	// it after maxReceiveCount receives.
	DeadLetterURL string
	// DispatcherID goes on every dead letter, naming who gave up.
	DispatcherID string
	// Admit, when set, is asked before every receive and blocks while the
	// dispatcher must not take messages (the destination is down): a
	// message not received burns neither a receive count nor a retry. It
	// returns an error only when ctx is done. probe says this receive is
	// the one that tries the destination again: it takes one message, and
	// ProbeEmpty is called when it finds none, so that another probe may go.
	Admit      func(ctx context.Context) (probe bool, err error)
	ProbeEmpty func()
	// Now is the clock of dead-letter times; time.Now when nil.
	Now func() time.Time
	Log *slog.Logger
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
	// stopping is closed when shutdown begins.
	stopping chan struct{}
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
	if o.VisibilityTimeout < time.Second {
		o.VisibilityTimeout = 30 * time.Second
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = o.VisibilityTimeout / 3
	}
	if o.Now == nil {
		o.Now = time.Now
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

		stopping: make(chan struct{}),
	}
}

// Run consumes until ctx is done, then shuts down: it stops polling (a poll
// under way is let finish, and the messages it brings are released, see
// poll), tells handlers through Message.Stopping (those still waiting to
// start release their message), gives in-flight deliveries up to
// Options.Drain, flushes pending deletes and returns nil. It returns an
// error only when the queue cannot be consumed at all. A Consumer runs
// once.
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
		drainOnce.Do(func() {
			close(c.stopping)
			drainTimer = time.AfterFunc(c.o.Drain, cancelHandlers)
		})
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
// so the last poll is let finish (within WaitTime) and the messages it
// brings are released at once, for the dispatchers that stay.
func (c *Consumer) poll(pollCtx, base, handleCtx context.Context, del *deleter, inflight *sync.WaitGroup) error {
	backoff := time.Duration(0)
	for {
		probe := false
		if c.o.Admit != nil {
			// The breaker's wait comes before the slots are taken, so a
			// closed destination holds no slot and no message.
			p, err := c.o.Admit(pollCtx)
			if err != nil {
				return nil
			}
			probe = p
		}
		n := c.acquire(pollCtx)
		if n == 0 {
			c.probeEmpty(probe)
			return nil
		}
		if probe && n > 1 {
			c.release(n - 1)
			n = 1
		}
		msgs, err := c.receive(base, n)
		c.release(n - len(msgs))
		if len(msgs) == 0 {
			c.probeEmpty(probe)
		}
		if err != nil {
			if qe := (*types.QueueDoesNotExist)(nil); errors.As(err, &qe) {
				return err
			}
			backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
			c.log.WarnContext(pollCtx, "receive messages", "error", err, "retry_in", backoff)
			select {
			case <-pollCtx.Done():
				return nil
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		if pollCtx.Err() != nil && len(msgs) > 0 {
			// Shutdown began during this poll: nothing of these messages
			// was started, so others may have them now.
			var wg sync.WaitGroup
			for _, m := range msgs {
				wg.Go(func() {
					c.changeVisibility(aws.ToString(m.MessageId), aws.ToString(m.ReceiptHandle), 0)
				})
			}
			wg.Wait()
			c.release(len(msgs))
			return nil
		}
		for _, m := range msgs {
			inflight.Go(func() {
				defer c.release(1)
				c.handle(handleCtx, m, del)
			})
		}
	}
}

// probeEmpty tells the breaker that its probe receive brought nothing.
func (c *Consumer) probeEmpty(probe bool) {
	if probe && c.o.ProbeEmpty != nil {
		c.o.ProbeEmpty()
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
		VisibilityTimeout:     int32(c.o.VisibilityTimeout / time.Second),
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{
			types.MessageSystemAttributeNameApproximateReceiveCount,
			types.MessageSystemAttributeNameSentTimestamp,
		},
		// The deprecated field too: some SQS implementations (the local
		// emulator among them) only honour this one.
		AttributeNames: []types.QueueAttributeName{ //nolint:staticcheck // deprecated, but the only field some SQS implementations honour
			types.QueueAttributeName(types.MessageSystemAttributeNameApproximateReceiveCount),
			types.QueueAttributeName(types.MessageSystemAttributeNameSentTimestamp),
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
