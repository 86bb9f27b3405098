package consume

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/spoolhq/spool/dispatcher/internal/deadletter"
	"github.com/spoolhq/spool/platform/envelope"
)

// handle decodes one received message, hands it to the handler while a
// heartbeat keeps it invisible, and settles it as the handler decided.
func (c *Consumer) handle(ctx context.Context, m types.Message, del *deleter) {
	id, receipt := aws.ToString(m.MessageId), aws.ToString(m.ReceiptHandle)
	count, _ := strconv.Atoi(m.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)])
	env, err := envelope.Decode(aws.ToString(m.Body), m.MessageAttributes)
	if err != nil {
		// A poison message goes to the dead-letter queue at once, with the
		// reason: no dispatcher could ever deliver it. The body is never
		// logged: it is payroll data.
		unknown := errors.Is(err, envelope.ErrUnknownVersion)
		reason := "undecodable message: " + err.Error()
		if unknown {
			reason = "unknown envelope version: " + err.Error()
		}
		c.log.ErrorContext(ctx, "poison message", "message_id", id, "receive_count", count, "error", err, "unknown_version", unknown)
		c.deadLetter(m, deadletter.Reason{Reason: reason}, del)
		return
	}
	msg := Message{
		ID: id, ReceiveCount: count, Envelope: env, Stopping: c.stopping,
		AttemptBase: deadletter.AttemptBase(m.MessageAttributes),
	}
	if ms, err := strconv.ParseInt(m.Attributes[string(types.MessageSystemAttributeNameSentTimestamp)], 10, 64); err == nil && ms > 0 {
		msg.SentAt = time.UnixMilli(ms)
	}
	stopBeat := c.heartbeat(id, receipt)
	d := c.handler.Handle(ctx, msg)
	// The heartbeat is stopped before the message is settled, so that no
	// late extension overrides a release or a postponement.
	stopBeat()
	switch {
	case d.del:
		del.add(id, receipt)
	case d.release:
		c.changeVisibility(id, receipt, 0)
	case d.dead != nil:
		c.deadLetter(m, *d.dead, del)
	case d.delay > 0:
		c.changeVisibility(id, receipt, min(d.delay, 12*time.Hour))
	}
}

// heartbeat extends the message's visibility every Options.Heartbeat by
// Options.VisibilityTimeout until the returned function is called; that
// function returns once no extension is under way.
func (c *Consumer) heartbeat(id, receipt string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(c.o.Heartbeat)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				c.changeVisibility(id, receipt, c.o.VisibilityTimeout)
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// changeVisibility makes a message visible again after d: 0 releases it,
// the visibility timeout extends it, anything else postpones it. None of
// these is a delivery attempt: Spool counts attempts in the ledger. Should
// the call fail, the message simply comes back after its current
// visibility timeout.
func (c *Consumer) changeVisibility(id, receipt string, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), deleteCallTimeout)
	defer cancel()
	_, err := c.api.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
		QueueUrl:          aws.String(c.o.QueueURL),
		ReceiptHandle:     aws.String(receipt),
		VisibilityTimeout: int32(d / time.Second),
	})
	if err != nil {
		c.log.Warn("change message visibility", "message_id", id, "visible_in", d, "error", err)
	}
}

// deadLetter sends m to the dead-letter queue with r attached, then
// deletes it from the main queue. It is sent before it is deleted, so a
// crash in between leaves a copy in both queues rather than in neither; a
// redriven duplicate is suppressed by the delivery ledger.
func (c *Consumer) deadLetter(m types.Message, r deadletter.Reason, del *deleter) {
	id := aws.ToString(m.MessageId)
	if c.o.DeadLetterURL == "" {
		c.log.Error("no dead-letter queue; message left for the redrive policy", "message_id", id, "reason", r.Reason)
		return
	}
	r.Dispatcher = c.o.DispatcherID
	r.At = c.o.Now()
	ctx, cancel := context.WithTimeout(context.Background(), deleteCallTimeout)
	defer cancel()
	_, err := c.api.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl:          aws.String(c.o.DeadLetterURL),
		MessageBody:       m.Body,
		MessageAttributes: deadletter.Mark(m.MessageAttributes, r),
	})
	if err != nil {
		c.log.Error("dead-letter message; left for redelivery", "message_id", id, "error", err)
		return
	}
	job, row := envelope.Ref(aws.ToString(m.Body), m.MessageAttributes)
	c.log.Warn("message dead-lettered", "message_id", id, "job_id", job, "row", row,
		"reason", r.Reason, "status", r.Status, "attempts", r.Attempts)
	del.add(id, aws.ToString(m.ReceiptHandle))
}
