package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/spoolhq/spool/local/stack"
)

// rawSenders is how many goroutines the raw loop sends with: what a user
// who knows SQS would write, and what the ingestor's publisher uses.
const rawSenders = 8

// IngestResult is what an ingest run measured, in rows/s.
type IngestResult struct {
	// RawBefore and RawAfter are the raw SendMessageBatch loop, run before
	// and after the others so the queue's depth favours none of them.
	RawBefore, RawAfter float64
	// Spool is StreamFile with the CLI's raw CSV chunks (spool send),
	// SpoolRows the same with rows already split (RowBatch messages).
	Spool, SpoolRows float64
	// Gocloud is gocloud.dev's pubsub/awssnssqs SQS topic.
	Gocloud float64
}

// RawMean is the raw loop's mean.
func (r IngestResult) RawMean() float64 { return (r.RawBefore + r.RawAfter) / 2 }

// Ingest measures putting a file of rows rows on the queue: through the
// ingestor's StreamFile (the CLI's send, as a user runs it, and a client
// sending row batches), through a raw aws-sdk-go-v2 SendMessageBatch loop
// and through gocloud.dev's SQS topic, on the same emulator and queue. The
// raw loop runs first and last (after a warm-up loop that is not
// counted), the others between, so the depth of the queue sits in the
// middle of the raw loop's for each of them. The dispatchers are stopped first, so only the senders
// load the emulator.
func (e Env) Ingest(ctx context.Context, rows int) (IngestResult, error) {
	var res IngestResult
	s, err := e.up(ctx, "ingest", 1, nil, nil, nil)
	if err != nil {
		return res, err
	}
	defer func() {
		if err := s.Down(); err != nil {
			fmt.Fprintf(e.Log, "ingest: stack down: %v\n", err)
		}
	}()
	for _, d := range s.Dispatchers {
		if err := d.Stop(30 * time.Second); err != nil {
			return res, fmt.Errorf("stop %s: %w", d.Name, err)
		}
	}
	file, err := e.sampleFile(rows)
	if err != nil {
		return res, err
	}
	client, queueURL, err := sqsOf(s)
	if err != nil {
		return res, err
	}
	// One loop first, not counted: a cold emulator (its JavaScript not yet
	// compiled) and cold connections made the first measured loop half as
	// fast as the last (15 052 against 28 602 rows/s in one run), which
	// would judge whatever ran first.
	if _, err := rawLoop(ctx, client, queueURL, file); err != nil {
		return res, fmt.Errorf("warm-up: %w", err)
	}
	if res.RawBefore, err = rawLoop(ctx, client, queueURL, file); err != nil {
		return res, err
	}
	start := time.Now()
	if _, err := e.send(ctx, s, file); err != nil {
		return res, err
	}
	res.Spool = float64(rows) / time.Since(start).Seconds()
	if res.Gocloud, err = gocloudLoop(ctx, client, queueURL, file); err != nil {
		return res, err
	}
	start = time.Now()
	n, err := sendRowBatches(ctx, s, file)
	if err != nil {
		return res, err
	}
	res.SpoolRows = float64(n) / time.Since(start).Seconds()
	if res.RawAfter, err = rawLoop(ctx, client, queueURL, file); err != nil {
		return res, err
	}
	fmt.Fprintf(e.Log, "ingest %d rows: raw %.0f, StreamFile chunks %.0f, gocloud.dev %.0f, StreamFile rows %.0f, raw %.0f rows/s\n",
		rows, res.RawBefore, res.Spool, res.Gocloud, res.SpoolRows, res.RawAfter)
	return res, nil
}

// sqsOf returns a client of the stack's SQS emulator and its queue's URL.
func sqsOf(s *stack.Stack) (*sqs.Client, string, error) {
	queueURL := envOf(s, "SPOOL_QUEUE_URL")
	if queueURL == "" {
		return nil, "", errors.New("the stack has no SPOOL_QUEUE_URL")
	}
	cfg := aws.Config{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("local", "local", ""),
		BaseEndpoint: aws.String(s.SQS.Addr),
	}
	return sqs.NewFromConfig(cfg), queueURL, nil
}

// rawLoop sends every row of file to the queue as one message, ten to a
// SendMessageBatch, from rawSenders goroutines, and returns rows/s. The
// body is the row as JSON with its job and number, about the size of
// Spool's envelope; failed entries are sent again, as any correct loop
// must.
func rawLoop(ctx context.Context, client *sqs.Client, queueURL, file string) (float64, error) {
	rows, err := openRowFile(file)
	if err != nil {
		return 0, err
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
	start := time.Now()
	n := 0
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
			n = row
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
	return loopRate(ctx, readErr, n, start)
}

// loopRate is the rows per second a send loop that began at start reached
// over rows, or why it stopped: the reader's error first, then the one a
// sender cancelled the loop's ctx with.
func loopRate(ctx context.Context, readErr error, rows int, start time.Time) (float64, error) {
	if readErr != nil {
		return 0, readErr
	}
	if err := context.Cause(ctx); err != nil {
		return 0, err
	}
	return float64(rows) / time.Since(start).Seconds(), nil
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
