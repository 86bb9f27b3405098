package consume

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

const (
	// maxDeleteBatch is the most entries one DeleteMessageBatch takes.
	maxDeleteBatch = 10
	// maxDeleteAttempts bounds retries of an entry SQS keeps refusing (an
	// expired receipt handle never becomes valid). A message whose delete
	// is given up becomes visible again and is received again.
	maxDeleteAttempts = 5
	// deleteCallTimeout bounds one DeleteMessageBatch call, SDK retries
	// included.
	deleteCallTimeout = 10 * time.Second
)

// pendingDelete is a settled message waiting to be deleted.
type pendingDelete struct {
	id, receipt string
	attempts    int
}

// deleter batches deletes: a batch goes out when ten entries are ready or
// when the oldest has waited one interval. Several workers send batches in
// parallel, because one call takes about as long as a receive and deletes
// must keep up with every poller. When all workers are busy, add blocks,
// which holds the caller's delivery slot: back-pressure on receiving.
type deleter struct {
	api      API
	queueURL string
	interval time.Duration
	workers  int
	log      *slog.Logger

	mu      sync.Mutex
	pending []pendingDelete

	batches chan []pendingDelete
	stop    chan struct{}
	ticker  sync.WaitGroup
	wg      sync.WaitGroup
}

func newDeleter(api API, queueURL string, interval time.Duration, workers int, log *slog.Logger) *deleter {
	return &deleter{
		api: api, queueURL: queueURL, interval: interval, workers: max(workers, 1), log: log,
		batches: make(chan []pendingDelete),
		stop:    make(chan struct{}),
	}
}

// start runs the workers and the interval flush until close.
func (d *deleter) start(ctx context.Context) {
	for range d.workers {
		d.wg.Go(func() {
			for b := range d.batches {
				callCtx, cancel := context.WithTimeout(ctx, deleteCallTimeout)
				d.send(callCtx, b)
				cancel()
			}
		})
	}
	d.ticker.Go(func() {
		t := time.NewTicker(d.interval)
		defer t.Stop()
		for {
			select {
			case <-d.stop:
				return
			case <-t.C:
				for _, b := range d.take(1) {
					d.batches <- b
				}
			}
		}
	})
}

// add queues a delete, and hands a full batch to a worker.
func (d *deleter) add(id, receipt string) {
	d.mu.Lock()
	d.pending = append(d.pending, pendingDelete{id: id, receipt: receipt})
	var full [][]pendingDelete
	if len(d.pending) >= maxDeleteBatch {
		full = d.takeLocked(maxDeleteBatch)
	}
	d.mu.Unlock()
	for _, b := range full {
		d.batches <- b
	}
}

// take removes pending entries in batches of at most ten, as long as at
// least atLeast are pending.
func (d *deleter) take(atLeast int) [][]pendingDelete {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.takeLocked(atLeast)
}

func (d *deleter) takeLocked(atLeast int) [][]pendingDelete {
	var out [][]pendingDelete
	for len(d.pending) >= atLeast && len(d.pending) > 0 {
		n := min(len(d.pending), maxDeleteBatch)
		out = append(out, append([]pendingDelete(nil), d.pending[:n]...))
		d.pending = d.pending[n:]
	}
	return out
}

// send deletes one batch. Entries that fail are put back for the next flush
// rather than retried here, so a worker never blocks on its own backlog.
func (d *deleter) send(ctx context.Context, b []pendingDelete) {
	entries := make([]types.DeleteMessageBatchRequestEntry, len(b))
	for i, p := range b {
		entries[i] = types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(p.receipt)}
	}
	out, err := d.api.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(d.queueURL), Entries: entries})
	if err != nil {
		d.log.WarnContext(ctx, "delete messages", "messages", len(b), "error", err)
		d.retry(ctx, b)
		return
	}
	var failed []pendingDelete
	for _, f := range out.Failed {
		i, err := strconv.Atoi(aws.ToString(f.Id))
		if err != nil || i < 0 || i >= len(b) {
			continue
		}
		d.log.WarnContext(ctx, "delete message", "message_id", b[i].id, "code", aws.ToString(f.Code), "sender_fault", f.SenderFault)
		failed = append(failed, b[i])
	}
	d.retry(ctx, failed)
}

func (d *deleter) retry(ctx context.Context, b []pendingDelete) {
	var again []pendingDelete
	for _, p := range b {
		p.attempts++
		if p.attempts >= maxDeleteAttempts {
			d.log.ErrorContext(ctx, "delete message given up; it will be received again", "message_id", p.id, "attempts", p.attempts)
			continue
		}
		again = append(again, p)
	}
	d.mu.Lock()
	d.pending = append(d.pending, again...)
	d.mu.Unlock()
}

// close stops the workers and flushes what is left, retrying failed
// entries until they are deleted, given up, or ctx ends. No add may run
// concurrently or afterwards.
func (d *deleter) close(ctx context.Context) {
	// The ticker may be handing a batch to a worker: let it finish before
	// the workers' channel is closed.
	close(d.stop)
	d.ticker.Wait()
	close(d.batches)
	d.wg.Wait()
	for {
		batches := d.take(1)
		if len(batches) == 0 {
			return
		}
		var wg sync.WaitGroup
		for _, b := range batches {
			wg.Go(func() { d.send(ctx, b) })
		}
		wg.Wait()
		if ctx.Err() != nil {
			d.mu.Lock()
			left := len(d.pending)
			d.mu.Unlock()
			if left > 0 {
				d.log.ErrorContext(ctx, "deletes left at shutdown; those messages will be received again", "messages", left)
			}
			return
		}
	}
}
