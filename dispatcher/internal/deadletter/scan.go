package deadletter

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/spoolhq/spool/platform/envelope"
	"github.com/spoolhq/spool/platform/positive"
)

// API is the part of the SQS client a Scanner uses.
type API interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, opts ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	ChangeMessageVisibilityBatch(ctx context.Context, in *sqs.ChangeMessageVisibilityBatchInput, opts ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityBatchOutput, error)
	DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, opts ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error)
	SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, opts ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error)
	GetQueueAttributes(ctx context.Context, in *sqs.GetQueueAttributesInput, opts ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
}

// Defaults for Options.
const (
	DefaultMaxScan = 10000
	DefaultHold    = time.Minute
)

// Options configure a Scanner.
type Options struct {
	// DeadLetterURL is the queue scanned; QueueURL receives redriven
	// messages.
	DeadLetterURL, QueueURL string
	// MaxScan bounds the messages one scan reads, when the request names
	// no bound. Default DefaultMaxScan.
	MaxScan int
	// Hold is the visibility timeout of the messages a scan receives.
	// The scan stops reading at half of it, so that no message it holds
	// comes back to it as a new one. Default DefaultHold.
	Hold time.Duration
	Log  *slog.Logger
}

// Entry is one dead letter of a job.
type Entry struct {
	MessageID string
	JobID     string
	Row       int64
	Reason    Reason
}

// Summary is what a scan saw. Complete is false when the scan stopped at
// its bound (count or time), or when messages were held by another reader
// when it began (HeldElsewhere): those it could not see.
type Summary struct {
	Matched, Scanned, HeldElsewhere int64
	Complete                        bool
}

// Scanner lists and redrives one job's dead letters.
//
// Every scan receives the dead-letter queue's messages with a visibility of
// Hold, matches them by the job id attribute, and releases every message it
// did not remove (visibility 0) as soon as it ends, so that a scan hides
// other jobs' dead letters from another scan for its own duration only. A
// scan is bounded by a count and by time: a queue holding more dead
// letters than one scan reads takes several runs, and the summary says so.
type Scanner struct {
	api API
	o   Options
	now func() time.Time
}

// NewScanner returns a scanner; zero options get defaults.
func NewScanner(api API, o Options) *Scanner {
	o.MaxScan = positive.Or(o.MaxScan, DefaultMaxScan)
	if o.Hold < 2*time.Second {
		o.Hold = DefaultHold
	}
	o.Log = cmp.Or(o.Log, slog.Default())
	return &Scanner{api: api, o: o, now: time.Now}
}

// List calls fn for each of the job's dead letters, and leaves them in the
// queue.
func (s *Scanner) List(ctx context.Context, jobID string, maxScan int, fn func(Entry) error) (Summary, error) {
	return s.scan(ctx, jobID, maxScan, func(_ context.Context, msgs []types.Message) (int, []types.Message, error) {
		for i, m := range msgs {
			if err := fn(entry(m)); err != nil {
				return i, nil, err
			}
		}
		return len(msgs), nil, nil
	})
}

// Redrive moves the job's dead letters back to the main queue, each with
// its attempts so far as its attempt base. A message is deleted from the
// dead-letter queue only once it is on the main queue, so a failure in
// between leaves a copy in both rather than in neither; the ledger
// suppresses the copy that arrives second.
func (s *Scanner) Redrive(ctx context.Context, jobID string, maxScan int) (Summary, error) {
	if s.o.QueueURL == "" {
		return Summary{}, errors.New("redrive: no main queue configured")
	}
	return s.scan(ctx, jobID, maxScan, s.move)
}

func entry(m types.Message) Entry {
	job, row := envelope.Ref(aws.ToString(m.Body), m.MessageAttributes)
	return Entry{MessageID: aws.ToString(m.MessageId), JobID: job, Row: row, Reason: Parse(m.MessageAttributes)}
}

// scan reads the dead-letter queue and hands the job's messages to take,
// which returns how many it dealt with and those it removed from the
// queue. Every other message read is released when the scan ends.
func (s *Scanner) scan(ctx context.Context, jobID string, maxScan int, take func(context.Context, []types.Message) (int, []types.Message, error)) (Summary, error) {
	if s.o.DeadLetterURL == "" {
		return Summary{}, errors.New("no dead-letter queue configured")
	}
	maxScan = positive.Or(maxScan, s.o.MaxScan)
	var sum Summary
	held, err := s.heldElsewhere(ctx)
	if err != nil {
		return sum, err
	}
	sum.HeldElsewhere = held

	// Every message received stays held until released below, whatever
	// happens to the scan (a cancelled caller included).
	holding := map[string]string{} // message id → receipt handle
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		s.release(rctx, holding)
	}()

	deadline := s.now().Add(s.o.Hold / 2)
	for sum.Scanned < int64(maxScan) {
		if s.now().After(deadline) {
			return sum, nil
		}
		out, err := s.api.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl:              aws.String(s.o.DeadLetterURL),
			MaxNumberOfMessages:   int32(min(10, int64(maxScan)-sum.Scanned)),
			VisibilityTimeout:     int32(s.o.Hold / time.Second),
			WaitTimeSeconds:       1,
			MessageAttributeNames: []string{"All"},
		})
		if err != nil {
			return sum, fmt.Errorf("scan dead letters: %w", err)
		}
		if len(out.Messages) == 0 {
			// A long poll queries every server: nothing visible is left.
			sum.Complete = held == 0
			return sum, nil
		}
		var mine []types.Message
		for _, m := range out.Messages {
			id := aws.ToString(m.MessageId)
			if _, seen := holding[id]; seen {
				continue
			}
			holding[id] = aws.ToString(m.ReceiptHandle)
			sum.Scanned++
			if job, _ := envelope.Ref(aws.ToString(m.Body), m.MessageAttributes); job == jobID {
				mine = append(mine, m)
			}
		}
		if len(mine) == 0 {
			continue
		}
		n, removed, err := take(ctx, mine)
		for _, m := range removed {
			delete(holding, aws.ToString(m.MessageId))
		}
		sum.Matched += int64(n)
		if err != nil {
			return sum, err
		}
	}
	return sum, nil
}

func (s *Scanner) heldElsewhere(ctx context.Context) (int64, error) {
	out, err := s.api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       aws.String(s.o.DeadLetterURL),
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessagesNotVisible},
	})
	if err != nil {
		return 0, fmt.Errorf("read dead-letter queue attributes: %w", err)
	}
	n, _ := strconv.ParseInt(out.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessagesNotVisible)], 10, 64)
	return n, nil
}

// move sends msgs to the main queue and deletes from the dead-letter
// queue those that arrived there; it returns the deleted ones.
func (s *Scanner) move(ctx context.Context, msgs []types.Message) (int, []types.Message, error) {
	entries := make([]types.SendMessageBatchRequestEntry, len(msgs))
	for i, m := range msgs {
		attrs := Strip(m.MessageAttributes)
		attrs[AttrAttemptBase] = number(int64(Parse(m.MessageAttributes).Attempts))
		entries[i] = types.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), MessageBody: m.Body, MessageAttributes: attrs}
	}
	out, err := s.api.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(s.o.QueueURL), Entries: entries})
	if err != nil {
		return 0, nil, fmt.Errorf("redrive %d dead letters: %w", len(msgs), err)
	}
	var sent []types.Message
	for _, ok := range out.Successful {
		if i, err := strconv.Atoi(aws.ToString(ok.Id)); err == nil && i >= 0 && i < len(msgs) {
			sent = append(sent, msgs[i])
		}
	}
	for _, f := range out.Failed {
		s.o.Log.WarnContext(ctx, "redrive dead letter", "code", aws.ToString(f.Code), "sender_fault", f.SenderFault)
	}
	if len(sent) == 0 {
		return 0, nil, nil
	}
	del := make([]types.DeleteMessageBatchRequestEntry, len(sent))
	for i, m := range sent {
		del[i] = types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle}
	}
	dout, err := s.api.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(s.o.DeadLetterURL), Entries: del})
	if err != nil {
		// On the main queue and still in the dead-letter queue: the
		// ledger suppresses whichever copy is delivered second.
		return len(sent), nil, fmt.Errorf("delete %d redriven dead letters: %w", len(sent), err)
	}
	var deleted []types.Message
	for _, ok := range dout.Successful {
		if i, err := strconv.Atoi(aws.ToString(ok.Id)); err == nil && i >= 0 && i < len(sent) {
			deleted = append(deleted, sent[i])
		}
	}
	return len(deleted), deleted, nil
}

// release makes every held message visible again, ten per call.
func (s *Scanner) release(ctx context.Context, holding map[string]string) {
	batch := make([]types.ChangeMessageVisibilityBatchRequestEntry, 0, 10)
	flush := func() {
		if len(batch) == 0 {
			return
		}
		_, err := s.api.ChangeMessageVisibilityBatch(ctx, &sqs.ChangeMessageVisibilityBatchInput{
			QueueUrl: aws.String(s.o.DeadLetterURL), Entries: batch,
		})
		if err != nil {
			// They come back when their hold ends anyway.
			s.o.Log.WarnContext(ctx, "release dead letters", "messages", len(batch), "error", err)
		}
		batch = batch[:0]
	}
	for _, receipt := range holding {
		batch = append(batch, types.ChangeMessageVisibilityBatchRequestEntry{
			Id: aws.String(strconv.Itoa(len(batch))), ReceiptHandle: aws.String(receipt), VisibilityTimeout: 0,
		})
		if len(batch) == 10 {
			flush()
		}
	}
	flush()
}
