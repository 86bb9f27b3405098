package consume_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/consume"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/envelope"
	"github.com/spoolhq/spool/platform/provision"
)

// TestHeartbeatOnTheEmulator holds a delivery for well over the visibility
// timeout and checks that another consumer of the queue never receives
// the message meanwhile.
func TestHeartbeatOnTheEmulator(t *testing.T) {
	q := sqs.NewFromConfig(emutest.Config(emutest.Start(t, emulator.SQS)))
	queues, err := provision.EnsureQueue(t.Context(), q, "heartbeat", provision.DefaultQueueOptions)
	require.NoError(t, err)
	body, attrs, err := envelope.Encode(&spoolv1.Envelope{Version: spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1, JobId: "job", Row: 1})
	require.NoError(t, err)
	_, err = q.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: aws.String(queues.URL), MessageBody: aws.String(body), MessageAttributes: attrs})
	require.NoError(t, err)

	started, release := make(chan struct{}), make(chan struct{})
	h := handlerFunc(func(ctx context.Context, m consume.Message) consume.Disposition {
		close(started)
		<-release
		return consume.Delete
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- consume.New(q, h, consume.Options{
			QueueURL: queues.URL, Concurrency: 1, WaitTime: time.Second, DeleteInterval: 10 * time.Millisecond,
			VisibilityTimeout: 3 * time.Second, Heartbeat: time.Second, Drain: 10 * time.Second,
			Log: slog.New(slog.DiscardHandler),
		}).Run(ctx)
	}()
	<-started

	// Two visibility timeouts and more: without the heartbeat the message
	// would be visible again after three seconds.
	require.Never(t, func() bool {
		out, err := q.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(queues.URL), WaitTimeSeconds: 1, VisibilityTimeout: 1})
		require.NoError(t, err)
		return len(out.Messages) > 0
	}, 7*time.Second, 100*time.Millisecond, "another consumer received a message under delivery")

	close(release)
	require.Eventually(t, func() bool {
		out, err := q.GetQueueAttributes(t.Context(), &sqs.GetQueueAttributesInput{
			QueueUrl: aws.String(queues.URL), AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages},
		})
		require.NoError(t, err)
		return out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessages)] == "0"
	}, 10*time.Second, 20*time.Millisecond, "the delivered message is deleted")
	cancel()
	require.NoError(t, <-done)
}

type handlerFunc func(ctx context.Context, m consume.Message) consume.Disposition

func (f handlerFunc) Handle(ctx context.Context, m consume.Message) consume.Disposition {
	return f(ctx, m)
}
