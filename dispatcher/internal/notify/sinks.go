package notify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/platform/jobevent"
)

// Signer makes a Standard Webhooks signature (deliver.Signer, the one
// transaction requests carry): the webhook-signature value of an event's
// id, the signing time and the body. Without one, events go unsigned,
// with the id and timestamp headers only.
type Signer interface {
	Sign(id string, at time.Time, body []byte) string
}

// Webhook posts each event as JSON to a URL; any 2xx is taken.
type Webhook struct {
	URL    string
	Client *http.Client
	Signer Signer
	Now    func() time.Time
}

// Name implements Sink.
func (w *Webhook) Name() string { return "webhook" }

// Send implements Sink.
func (w *Webhook) Send(ctx context.Context, e jobevent.Event, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook request for event %s: %w", e.ID, deliver.RedactURLError(err))
	}
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	at := now()
	req.Header.Set("Content-Type", "application/json")
	// The Standard Webhooks names, so a receiver deduplicates on
	// webhook-id whether or not the request is signed. Each send is signed
	// anew: the timestamp is the send's, which a receiver bounds replays by.
	req.Header.Set("webhook-id", e.ID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(at.Unix(), 10))
	if w.Signer != nil {
		req.Header.Set("webhook-signature", w.Signer.Sign(e.ID, at, body))
	}
	c := w.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		// The error names the URL, whose query may hold a credential.
		return fmt.Errorf("post event %s: %w", e.ID, deliver.RedactURLError(err))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("post event %s: %w", e.ID, statusError(resp.StatusCode))
	}
	return nil
}

// SQSAPI is the part of the SQS client the queue sink uses.
type SQSAPI interface {
	SendMessage(ctx context.Context, in *sqs.SendMessageInput, opts ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
}

// Queue sends each event as a message to an SQS queue: the body is the
// event's JSON, with its id and kind as attributes. On a FIFO queue the
// job is the message group and the event id the deduplication id, so SQS
// itself drops a resend within its 5-minute window.
type Queue struct {
	Client SQSAPI
	URL    string
}

// Name implements Sink.
func (q *Queue) Name() string { return "sqs" }

// Send implements Sink.
func (q *Queue) Send(ctx context.Context, e jobevent.Event, body []byte) error {
	in := &sqs.SendMessageInput{
		QueueUrl:    aws.String(q.URL),
		MessageBody: aws.String(string(body)),
		MessageAttributes: map[string]types.MessageAttributeValue{
			"spool-event-id":   {DataType: aws.String("String"), StringValue: aws.String(e.ID)},
			"spool-event-kind": {DataType: aws.String("String"), StringValue: aws.String(string(e.Kind))},
		},
	}
	if strings.HasSuffix(q.URL, ".fifo") {
		in.MessageGroupId = aws.String(e.JobID)
		in.MessageDeduplicationId = aws.String(dedupID(e.ID))
	}
	if _, err := q.Client.SendMessage(ctx, in); err != nil {
		return fmt.Errorf("queue event %s: %w", e.ID, err)
	}
	return nil
}

// dedupID fits an event id in SQS's deduplication id: at most 128
// characters; a longer one is hashed, which keeps it unique.
func dedupID(id string) string {
	if len(id) > 128 {
		sum := sha256.Sum256([]byte(id))
		return hex.EncodeToString(sum[:])
	}
	return id
}
