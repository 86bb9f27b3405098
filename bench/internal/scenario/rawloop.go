package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"google.golang.org/protobuf/types/known/timestamppb"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/envelope"
)

// rawLoop sends every row of file to the queue as one message, ten to a
// SendMessageBatch, from rawSenders goroutines. The body is the row as
// JSON with its job and number; failed entries are sent again, as any
// correct loop must. With sized, each body is padded with spaces (still
// JSON) to the length of the row's Spool message and carries its
// attributes: the same bytes per message as StreamFile sends, which is
// what the SQS emulator's time per message follows.
func rawLoop(ctx context.Context, client *sqs.Client, queueURL, file string, sized bool) error {
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
			row, b, err := rows.next("job_id", "raw-loop", "row")
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			entry := types.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(len(batch))), MessageBody: aws.String(string(b))}
			if sized {
				entry.MessageBody, entry.MessageAttributes = envelopeSized(b, row, rows.last)
			}
			batch = append(batch, entry)
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

// sizedJob stands for a job id in the envelopes envelopeSized measures:
// a UUID, as the ingestor's are.
const sizedJob = "6f1c2b3a-9d4e-4f5a-8b6c-7d8e9f0a1b2c"

// envelopeSized returns body padded with spaces to the length of the
// message Spool sends for the row, and that message's attributes: the
// envelope the ingestor writes by default (V2: the values, job and row,
// publication time; the default transaction key left out), encoded by
// the ingestor's own encoder.
func envelopeSized(body []byte, row int, values []string) (*string, map[string]types.MessageAttributeValue) {
	e := &spoolv1.Envelope{
		Version: spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V2, JobId: sizedJob, Row: int64(row),
		Values: values, PublishedAt: timestamppb.Now(),
	}
	text, attrs, err := envelope.Encode(e)
	if err != nil {
		panic(fmt.Sprintf("encode a well-formed envelope: %v", err)) // a programming error
	}
	padded := string(body) + strings.Repeat(" ", max(0, len(text)-len(body)))
	return &padded, attrs
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
