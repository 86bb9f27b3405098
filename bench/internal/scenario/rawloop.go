package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// rawLoop sends every row of file to the queue as one message, ten to a
// SendMessageBatch, from rawSenders goroutines, and returns rows/s. The
// body is the row as JSON with its job and number, about the size of
// Spool's envelope; failed entries are sent again, as any correct loop
// must.
func rawLoop(ctx context.Context, client *sqs.Client, queueURL, file string) error {
	rows, err := openRowFile(file)
	if err != nil {
		return err
	}
	defer rows.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	batches := make(chan []types.SendMessageBatchRequestEntry, rawSenders)
	var wg sync.WaitGroup
	for range rawSenders {
		wg.Go(func() {
			for b := range batches {
				if err := sendBatch(ctx, client, queueURL, b); err != nil {
					cancel(err)
				}
			}
		})
	}
	var batch []types.SendMessageBatchRequestEntry
	readErr := func() error {
		defer close(batches)
		for {
			_, b, err := rows.next("job_id", "raw-loop", "row")
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			batch = append(batch, types.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(len(batch))), MessageBody: aws.String(string(b))})
			if len(batch) == 10 {
				select {
				case batches <- batch:
				case <-ctx.Done():
					return context.Cause(ctx)
				}
				batch = nil
			}
		}
		if len(batch) > 0 {
			batches <- batch
		}
		return nil
	}()
	wg.Wait()
	return loopErr(ctx, readErr)
}

// loopErr is why a send loop stopped early: the reader's error first,
// then the one a sender cancelled the loop's ctx with; nil when it sent
// every row.
func loopErr(ctx context.Context, readErr error) error {
	if readErr != nil {
		return readErr
	}
	return context.Cause(ctx)
}

// sendBatch sends entries, again for those SQS reports failed.
func sendBatch(ctx context.Context, client *sqs.Client, queueURL string, entries []types.SendMessageBatchRequestEntry) error {
	for attempt := 1; len(entries) > 0; attempt++ {
		out, err := client.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(queueURL), Entries: entries})
		if err != nil {
			return fmt.Errorf("send batch: %w", err)
		}
		if len(out.Failed) == 0 {
			return nil
		}
		if attempt == 5 {
			return fmt.Errorf("send batch: %d entries still failed after %d attempts", len(out.Failed), attempt)
		}
		failed := map[string]bool{}
		for _, f := range out.Failed {
			failed[aws.ToString(f.Id)] = true
		}
		var again []types.SendMessageBatchRequestEntry
		for _, e := range entries {
			if failed[aws.ToString(e.Id)] {
				again = append(again, e)
			}
		}
		entries = again
	}
	return nil
}
