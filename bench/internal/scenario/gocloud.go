package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/awssnssqs"
	"gocloud.dev/pubsub/batcher"
)

// gocloudSenders is how many goroutines call Send on the gocloud.dev
// topic. Send blocks until its message is sent, and the topic batches
// only what is waiting, so ten callers per handler let every
// SendMessageBatch carry ten messages, as the raw loop's do.
const gocloudSenders = 10 * rawSenders

// gocloudLoop sends every row of file to the queue as one message through
// gocloud.dev's pubsub/awssnssqs SQS topic (aws-sdk-go-v2), with as many
// concurrent batches as the raw loop has senders, and returns rows/s. The
// bodies are the raw loop's. Left at its default of 100 handlers the
// topic sends batches of one message (measured: about half the speed),
// which would compare a setting, not the library.
func gocloudLoop(ctx context.Context, client *sqs.Client, queueURL, file string) error {
	rows, err := openRowFile(file)
	if err != nil {
		return err
	}
	defer rows.Close()
	topic := awssnssqs.OpenSQSTopicV2(ctx, client, queueURL, &awssnssqs.TopicOptions{
		BatcherOptions: batcher.Options{MaxHandlers: rawSenders, MaxBatchSize: 10},
	})
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = topic.Shutdown(sctx) // every Send has returned: nothing is left to flush
	}()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	bodies := make(chan []byte, gocloudSenders)
	var wg sync.WaitGroup
	for range gocloudSenders {
		wg.Go(func() {
			for b := range bodies {
				if err := topic.Send(ctx, &pubsub.Message{Body: b}); err != nil {
					cancel(fmt.Errorf("gocloud send: %w", err))
				}
			}
		})
	}
	readErr := func() error {
		defer close(bodies)
		for {
			_, b, err := rows.next("job_id", "gocloud", "row")
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			select {
			case bodies <- b:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
	}()
	wg.Wait()
	return loopErr(ctx, readErr)
}
