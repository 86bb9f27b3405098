package consume_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/consume"
	"github.com/spoolhq/spool/dispatcher/internal/deadletter"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/envelope"
)

var t0 = time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)

// waitReceived waits until f has handed out n messages in all.
func waitReceived(t *testing.T, f *fakeSQS, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.received == n
	}, 5*time.Second, 5*time.Millisecond)
}

// fakeSQS is an in-memory queue. It checks, at every receive, that the
// consumer never asks for more messages than it has free slots, counting as
// busy every message received and not yet finished by the handler.
type fakeSQS struct {
	concurrency int
	finished    *atomic.Int64

	mu          sync.Mutex
	queue       []types.Message
	received    int
	requests    []int32
	violations  []string
	deleted     map[string]int
	deleteCalls []int
	attempts    map[string]int
	// failEntryOnce fails a receipt's first delete attempt as a batch entry.
	failEntryOnce map[string]bool
	// failCalls fails that many whole DeleteMessageBatch calls first.
	failCalls int
	// gate, when set, holds every receive until it is closed; atGate is
	// closed when the first receive reaches it.
	gate   chan struct{}
	atGate chan struct{}
	// receiveCtxDone counts receives whose context was done on return.
	receiveCtxDone int
	missingQueue   bool
	arrived        chan struct{}
	// postponed records ChangeMessageVisibility calls: receipt → seconds
	// of the last call; visibility has every call in order.
	postponed  map[string]int32
	visibility map[string][]int32
	// sent records SendMessage calls (dead letters); failSend fails them.
	sent     []*sqs.SendMessageInput
	failSend bool
}

func newFake(concurrency int, finished *atomic.Int64) *fakeSQS {
	return &fakeSQS{
		concurrency: concurrency, finished: finished,
		deleted: map[string]int{}, attempts: map[string]int{}, failEntryOnce: map[string]bool{},
		arrived: make(chan struct{}, 1), postponed: map[string]int32{}, visibility: map[string][]int32{},
	}
}

func (f *fakeSQS) ChangeMessageVisibility(_ context.Context, in *sqs.ChangeMessageVisibilityInput, _ ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.postponed[aws.ToString(in.ReceiptHandle)] = in.VisibilityTimeout
	f.visibility[aws.ToString(in.ReceiptHandle)] = append(f.visibility[aws.ToString(in.ReceiptHandle)], in.VisibilityTimeout)
	return &sqs.ChangeMessageVisibilityOutput{}, nil
}

func (f *fakeSQS) SendMessage(_ context.Context, in *sqs.SendMessageInput, _ ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failSend {
		return nil, errors.New("connection reset")
	}
	f.sent = append(f.sent, in)
	return &sqs.SendMessageOutput{MessageId: aws.String(fmt.Sprintf("dl-%d", len(f.sent)))}, nil
}

func (f *fakeSQS) deadLetters() []*sqs.SendMessageInput {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*sqs.SendMessageInput(nil), f.sent...)
}

func (f *fakeSQS) visibilityOf(receipt string) []int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int32(nil), f.visibility[receipt]...)
}

func (f *fakeSQS) push(msgs ...types.Message) {
	f.mu.Lock()
	f.queue = append(f.queue, msgs...)
	f.mu.Unlock()
	select {
	case f.arrived <- struct{}{}:
	default:
	}
}

func (f *fakeSQS) ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, _ ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	if f.missingQueue {
		return nil, &types.QueueDoesNotExist{Message: aws.String("no queue")}
	}
	f.mu.Lock()
	gate, atGate := f.gate, f.atGate
	if atGate != nil {
		close(atGate)
		f.atGate = nil
	}
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if len(in.MessageAttributeNames) != 1 || in.MessageAttributeNames[0] != "All" ||
		len(in.MessageSystemAttributeNames) != 2 || len(in.AttributeNames) != 2 { //nolint:staticcheck // the deprecated field is asked for on purpose; see receive
		return nil, fmt.Errorf("unexpected attribute selection")
	}
	for range 2 {
		f.mu.Lock()
		n := int(in.MaxNumberOfMessages)
		busy := f.received - int(f.finished.Load())
		if n < 1 || n > 10 || busy+n > f.concurrency {
			f.violations = append(f.violations, fmt.Sprintf("asked for %d with %d busy", n, busy))
		}
		f.requests = append(f.requests, in.MaxNumberOfMessages)
		k := min(n, len(f.queue))
		out := append([]types.Message(nil), f.queue[:k]...)
		f.queue = f.queue[k:]
		f.received += k
		f.mu.Unlock()
		if k > 0 {
			if ctx.Err() != nil {
				f.mu.Lock()
				f.receiveCtxDone++
				f.mu.Unlock()
			}
			return &sqs.ReceiveMessageOutput{Messages: out}, nil
		}
		// A short long poll: return early when messages arrive.
		select {
		case <-f.arrived:
		case <-time.After(20 * time.Millisecond):
			return &sqs.ReceiveMessageOutput{}, nil
		}
	}
	return &sqs.ReceiveMessageOutput{}, nil
}

func (f *fakeSQS) DeleteMessageBatch(_ context.Context, in *sqs.DeleteMessageBatchInput, _ ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleteCalls = append(f.deleteCalls, len(in.Entries))
	if len(in.Entries) > 10 {
		f.violations = append(f.violations, fmt.Sprintf("delete batch of %d", len(in.Entries)))
	}
	for _, e := range in.Entries {
		f.attempts[aws.ToString(e.ReceiptHandle)]++
	}
	if f.failCalls > 0 {
		f.failCalls--
		return nil, errors.New("connection reset")
	}
	out := &sqs.DeleteMessageBatchOutput{}
	for _, e := range in.Entries {
		r := aws.ToString(e.ReceiptHandle)
		if f.failEntryOnce[r] {
			delete(f.failEntryOnce, r)
			out.Failed = append(out.Failed, types.BatchResultErrorEntry{Id: e.Id, Code: aws.String("InternalError")})
			continue
		}
		f.deleted[r]++
		out.Successful = append(out.Successful, types.DeleteMessageBatchResultEntry{Id: e.Id})
	}
	return out, nil
}

func (f *fakeSQS) snapshot() (violations []string, deleted map[string]int, calls []int, attempts map[string]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	deleted = map[string]int{}
	for k, v := range f.deleted {
		deleted[k] = v
	}
	attempts = map[string]int{}
	for k, v := range f.attempts {
		attempts[k] = v
	}
	return append([]string(nil), f.violations...), deleted, append([]int(nil), f.deleteCalls...), attempts
}

// message returns a queued transaction for row.
func message(t testing.TB, row int64) types.Message {
	t.Helper()
	body, attrs, err := envelope.Encode(&spoolv1.Envelope{
		Version: spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1, JobId: "job", Row: row, TransactionKey: fmt.Sprintf("job:%d", row),
	})
	require.NoError(t, err)
	return types.Message{
		MessageId: aws.String(fmt.Sprintf("m-%d", row)), ReceiptHandle: aws.String(receipt(row)),
		Body: aws.String(body), MessageAttributes: attrs,
		Attributes: map[string]string{"ApproximateReceiveCount": "1"},
	}
}

func receipt(row int64) string { return fmt.Sprintf("r-%d", row) }

// handler records the rows it handled and counts finished calls.
type handler struct {
	finished *atomic.Int64
	gate     chan struct{}
	decide   func(ctx context.Context, m consume.Message) consume.Disposition

	mu      sync.Mutex
	rows    map[int64]int
	ctxDone int
}

func (h *handler) Handle(ctx context.Context, m consume.Message) consume.Disposition {
	defer h.finished.Add(1)
	if h.gate != nil {
		<-h.gate
	}
	d := consume.Delete
	if h.decide != nil {
		d = h.decide(ctx, m)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rows[m.Envelope.GetRow()]++
	if ctx.Err() != nil {
		h.ctxDone++
	}
	return d
}

func (h *handler) handled() map[int64]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.rows)
}

// setup returns a fake queue and handler sharing one finished counter.
func setup(concurrency int) (*fakeSQS, *handler) {
	finished := &atomic.Int64{}
	return newFake(concurrency, finished), &handler{finished: finished, rows: map[int64]int{}}
}

// start runs a consumer until the test ends, and returns a function that
// stops it and returns Run's error.
func start(t testing.TB, f *fakeSQS, h consume.Handler, o consume.Options) func() error {
	t.Helper()
	o.QueueURL = "queue"
	o.Log = slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- consume.New(f, h, o).Run(ctx) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func TestNeverAsksForMoreThanFreeSlots(t *testing.T) {
	const concurrency = 7
	f, h := setup(concurrency)
	h.gate = make(chan struct{})
	for row := range int64(30) {
		f.push(message(t, row+1))
	}
	stop := start(t, f, h, consume.Options{Concurrency: concurrency, Pollers: 3, Drain: time.Minute})

	// Every slot is taken by a blocked handler: exactly concurrency
	// messages are out, and no poller can ask for more.
	waitReceived(t, f, concurrency)
	close(h.gate)
	require.Eventually(t, func() bool { _, deleted, _, _ := f.snapshot(); return len(deleted) == 30 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, stop())

	violations, deleted, _, _ := f.snapshot()
	require.Empty(t, violations)
	for row := range int64(30) {
		require.Equal(t, 1, deleted[receipt(row+1)], "row %d", row+1)
		require.Equal(t, 1, h.handled()[row+1], "row %d", row+1)
	}
}

func TestDeletesAreBatched(t *testing.T) {
	tests := []struct {
		name     string
		messages int
		interval time.Duration
	}{
		{name: "full batches go out at once", messages: 40, interval: time.Hour},
		{name: "partial batch goes out after the interval", messages: 3, interval: 20 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, h := setup(16)
			for row := range int64(tt.messages) {
				f.push(message(t, row+1))
			}
			stop := start(t, f, h, consume.Options{Concurrency: 16, DeleteInterval: tt.interval, Drain: time.Minute})
			// With an interval of an hour only full batches can go out
			// before shutdown; 40 is four of them.
			require.Eventually(t, func() bool { _, deleted, _, _ := f.snapshot(); return len(deleted) == tt.messages }, 5*time.Second, 5*time.Millisecond)
			require.NoError(t, stop())
			violations, deleted, calls, _ := f.snapshot()
			require.Empty(t, violations)
			require.Len(t, deleted, tt.messages)
			total := 0
			for _, n := range calls {
				require.LessOrEqual(t, n, 10)
				total += n
			}
			require.Equal(t, tt.messages, total)
			require.GreaterOrEqual(t, len(calls), (tt.messages+9)/10)
		})
	}
}

func TestFailedDeletesAreRetried(t *testing.T) {
	tests := []struct {
		name      string
		failCalls int
		failOnce  []int64
	}{
		{name: "failed entries", failOnce: []int64{2, 5, 9}},
		{name: "failed call", failCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, h := setup(10)
			f.failCalls = tt.failCalls
			for _, row := range tt.failOnce {
				f.failEntryOnce[receipt(row)] = true
			}
			for row := range int64(10) {
				f.push(message(t, row+1))
			}
			stop := start(t, f, h, consume.Options{Concurrency: 10, DeleteInterval: 10 * time.Millisecond, Drain: time.Minute})
			require.Eventually(t, func() bool { _, deleted, _, _ := f.snapshot(); return len(deleted) == 10 }, 5*time.Second, 5*time.Millisecond)
			require.NoError(t, stop())
			_, deleted, _, attempts := f.snapshot()
			retried := 0
			for row := range int64(10) {
				require.Equal(t, 1, deleted[receipt(row+1)])
				if attempts[receipt(row+1)] > 1 {
					retried++
				}
			}
			if tt.failCalls > 0 {
				require.Positive(t, retried)
			} else {
				require.Equal(t, len(tt.failOnce), retried)
				for _, row := range tt.failOnce {
					require.Equal(t, 2, attempts[receipt(row)])
				}
			}
		})
	}
}

func TestPoisonIsDeadLettered(t *testing.T) {
	f, h := setup(4)
	good := message(t, 1)
	garbage := message(t, 2)
	garbage.Body = aws.String("not an envelope")
	newer := message(t, 3)
	newer.MessageAttributes = map[string]types.MessageAttributeValue{
		envelope.AttrVersion: {DataType: aws.String("String"), StringValue: aws.String("v9")},
	}
	last := message(t, 4)
	f.push(good, garbage, newer, last)

	stop := start(t, f, h, consume.Options{
		Concurrency: 4, DeleteInterval: 10 * time.Millisecond, Drain: time.Minute,
		DeadLetterURL: "dlq", DispatcherID: "d-1", Now: func() time.Time { return t0 },
	})
	require.Eventually(t, func() bool { _, deleted, _, _ := f.snapshot(); return len(deleted) == 4 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, stop())
	_, deleted, _, _ := f.snapshot()
	require.Equal(t, map[string]int{receipt(1): 1, receipt(2): 1, receipt(3): 1, receipt(4): 1}, deleted)
	require.Equal(t, map[int64]int{1: 1, 4: 1}, h.handled(), "poison never reaches the handler")

	dls := f.deadLetters()
	require.Len(t, dls, 2)
	reasons := map[string]deadletter.Reason{}
	for _, dl := range dls {
		require.Equal(t, "dlq", aws.ToString(dl.QueueUrl))
		reasons[aws.ToString(dl.MessageBody)] = deadletter.Parse(dl.MessageAttributes)
	}
	require.Contains(t, reasons["not an envelope"].Reason, "undecodable message")
	require.Equal(t, "d-1", reasons["not an envelope"].Dispatcher)
	require.True(t, t0.Equal(reasons["not an envelope"].At))
	require.Contains(t, reasons[aws.ToString(newer.Body)].Reason, "unknown envelope version")
}

func TestPoisonIsLeftWhenTheDeadLetterQueueFails(t *testing.T) {
	f, h := setup(2)
	f.failSend = true
	garbage := message(t, 1)
	garbage.Body = aws.String("not an envelope")
	f.push(garbage, message(t, 2))
	stop := start(t, f, h, consume.Options{Concurrency: 2, DeleteInterval: 10 * time.Millisecond, Drain: time.Minute, DeadLetterURL: "dlq"})
	require.Eventually(t, func() bool { _, deleted, _, _ := f.snapshot(); return len(deleted) == 1 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, stop())
	_, deleted, _, _ := f.snapshot()
	require.Equal(t, map[string]int{receipt(2): 1}, deleted, "a message not dead-lettered is not deleted")
}

func TestDeadLetterDisposition(t *testing.T) {
	f, h := setup(2)
	h.decide = func(_ context.Context, m consume.Message) consume.Disposition {
		return consume.DeadLetter(deadletter.Reason{Reason: "gave up after 20 attempts: 503 Service Unavailable", Status: 503, Attempts: 20})
	}
	f.push(message(t, 7))
	stop := start(t, f, h, consume.Options{Concurrency: 2, DeleteInterval: 10 * time.Millisecond, Drain: time.Minute, DeadLetterURL: "dlq", DispatcherID: "d-2"})
	require.Eventually(t, func() bool { _, deleted, _, _ := f.snapshot(); return len(deleted) == 1 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, stop())
	dls := f.deadLetters()
	require.Len(t, dls, 1)
	r := deadletter.Parse(dls[0].MessageAttributes)
	require.Equal(t, deadletter.Reason{Reason: "gave up after 20 attempts: 503 Service Unavailable", Status: 503, Attempts: 20, Dispatcher: "d-2", At: r.At}, r)
	job, row := envelope.Ref(aws.ToString(dls[0].MessageBody), dls[0].MessageAttributes)
	require.Equal(t, "job", job, "the envelope travels with it")
	require.EqualValues(t, 7, row)
	require.Contains(t, dls[0].MessageAttributes, envelope.AttrVersion, "the envelope's attributes travel with it")
}

func TestHeartbeatExtendsWhileHandling(t *testing.T) {
	f, h := setup(2)
	h.gate = make(chan struct{})
	f.push(message(t, 1))
	stop := start(t, f, h, consume.Options{
		Concurrency: 2, DeleteInterval: 10 * time.Millisecond, Drain: time.Minute,
		VisibilityTimeout: 6 * time.Second, Heartbeat: 10 * time.Millisecond,
	})
	// The handler is blocked: the message is extended again and again.
	require.Eventually(t, func() bool { return len(f.visibilityOf(receipt(1))) >= 3 }, 5*time.Second, 5*time.Millisecond)
	close(h.gate)
	require.Eventually(t, func() bool { _, deleted, _, _ := f.snapshot(); return len(deleted) == 1 }, 5*time.Second, 5*time.Millisecond)
	beats := len(f.visibilityOf(receipt(1)))
	require.NoError(t, stop())
	for _, v := range f.visibilityOf(receipt(1)) {
		require.EqualValues(t, 6, v, "every beat extends by the visibility timeout")
	}
	require.Len(t, f.visibilityOf(receipt(1)), beats, "no beat after the handler returned")
}

func TestHeartbeatStopsBeforeRelease(t *testing.T) {
	f, h := setup(2)
	h.gate = make(chan struct{})
	h.decide = func(context.Context, consume.Message) consume.Disposition { return consume.Release }
	f.push(message(t, 1))
	stop := start(t, f, h, consume.Options{Concurrency: 2, Drain: time.Minute, VisibilityTimeout: 6 * time.Second, Heartbeat: 5 * time.Millisecond})
	require.Eventually(t, func() bool { return len(f.visibilityOf(receipt(1))) >= 2 }, 5*time.Second, 5*time.Millisecond)
	close(h.gate)
	require.Eventually(t, func() bool {
		v := f.visibilityOf(receipt(1))
		return len(v) > 1 && v[len(v)-1] == 0
	}, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, stop())
	v := f.visibilityOf(receipt(1))
	require.EqualValues(t, 0, v[len(v)-1], "the release is the last visibility change")
	_, deleted, _, _ := f.snapshot()
	require.Empty(t, deleted)
}

func TestAdmitHoldsReceiving(t *testing.T) {
	f, h := setup(2)
	open := make(chan struct{})
	var asked atomic.Int64
	f.push(message(t, 1))
	stop := start(t, f, h, consume.Options{
		Concurrency: 2, DeleteInterval: 10 * time.Millisecond, Drain: time.Minute,
		Admit: func(ctx context.Context) (bool, error) {
			asked.Add(1)
			select {
			case <-open:
				return false, nil
			case <-ctx.Done():
				return false, ctx.Err()
			}
		},
	})
	require.Eventually(t, func() bool { return asked.Load() >= 1 }, 5*time.Second, 5*time.Millisecond)
	f.mu.Lock()
	received := f.received
	f.mu.Unlock()
	require.Zero(t, received, "nothing is received while admission is held")
	close(open)
	require.Eventually(t, func() bool { _, deleted, _, _ := f.snapshot(); return len(deleted) == 1 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, stop())
}

func TestProbeTakesOneMessage(t *testing.T) {
	f, h := setup(4)
	var probes, empty atomic.Int64
	stop := start(t, f, h, consume.Options{
		Concurrency: 4, Pollers: 1, WaitTime: time.Second, DeleteInterval: 10 * time.Millisecond, Drain: time.Minute,
		// Every receive is a probe, as while a breaker is half-open.
		Admit:      func(context.Context) (bool, error) { probes.Add(1); return true, nil },
		ProbeEmpty: func() { empty.Add(1) },
	})
	require.Eventually(t, func() bool { return empty.Load() >= 1 }, 5*time.Second, 5*time.Millisecond,
		"a probe that finds nothing lets the next one go")
	f.push(message(t, 1))
	f.push(message(t, 2))
	require.Eventually(t, func() bool { _, deleted, _, _ := f.snapshot(); return len(deleted) == 2 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, stop())
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.requests {
		require.EqualValues(t, 1, n, "a probe receives one message")
	}
	require.Empty(t, f.violations)
}

func TestStoppingTellsWaitingHandlers(t *testing.T) {
	f, h := setup(2)
	h.decide = func(ctx context.Context, m consume.Message) consume.Disposition {
		select {
		case <-m.Stopping:
			return consume.Release
		case <-ctx.Done():
			return consume.Leave
		}
	}
	f.push(message(t, 1))
	stop := start(t, f, h, consume.Options{Concurrency: 2, Drain: time.Minute})
	waitReceived(t, f, 1)
	require.NoError(t, stop())
	require.Equal(t, []int32{0}, f.visibilityOf(receipt(1)), "released, not left for the visibility timeout")
	h.mu.Lock()
	defer h.mu.Unlock()
	require.Zero(t, h.ctxDone, "released at once, long before the drain deadline")
}

func TestLeaveIsNotDeleted(t *testing.T) {
	f, h := setup(4)
	h.decide = func(_ context.Context, m consume.Message) consume.Disposition {
		if m.Envelope.GetRow()%2 == 0 {
			return consume.Leave
		}
		return consume.Delete
	}
	for row := range int64(6) {
		f.push(message(t, row+1))
	}
	stop := start(t, f, h, consume.Options{Concurrency: 4, DeleteInterval: time.Hour, Drain: time.Minute})
	require.Eventually(t, func() bool { return len(h.handled()) == 6 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, stop())
	_, deleted, _, _ := f.snapshot()
	require.Equal(t, map[string]int{receipt(1): 1, receipt(3): 1, receipt(5): 1}, deleted)
}

func TestAfterPostponesWithoutDeleting(t *testing.T) {
	f, h := setup(4)
	h.decide = func(_ context.Context, m consume.Message) consume.Disposition {
		if m.Envelope.GetRow() == 2 {
			return consume.After(10 * time.Second)
		}
		return consume.Delete
	}
	f.push(message(t, 1), message(t, 2))
	stop := start(t, f, h, consume.Options{Concurrency: 4, DeleteInterval: time.Hour, Drain: time.Minute})
	require.Eventually(t, func() bool { return len(h.handled()) == 2 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, stop())
	_, deleted, _, _ := f.snapshot()
	require.Equal(t, map[string]int{receipt(1): 1}, deleted)
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Equal(t, map[string]int32{receipt(2): 10}, f.postponed)
}

func TestShutdownFinishesInflightAndFlushes(t *testing.T) {
	f, h := setup(8)
	h.gate = make(chan struct{})
	for row := range int64(5) {
		f.push(message(t, row+1))
	}
	// Deletes go out only in full batches or at shutdown.
	stop := start(t, f, h, consume.Options{Concurrency: 8, DeleteInterval: time.Hour, Drain: time.Minute})
	waitReceived(t, f, 5)

	// The handlers are still blocked when shutdown begins. Their deletes
	// can only go out after they return, so finding them all done when Run
	// returns proves it waited for them and flushed.
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	close(h.gate)
	require.NoError(t, <-stopped)

	_, deleted, _, _ := f.snapshot()
	require.Len(t, deleted, 5, "every settled message deleted by the shutdown flush")
	h.mu.Lock()
	defer h.mu.Unlock()
	require.Zero(t, h.ctxDone, "in-flight deliveries were not cancelled within the drain")
}

func TestShutdownReleasesTheLastPoll(t *testing.T) {
	f, h := setup(4)
	f.gate, f.atGate = make(chan struct{}), make(chan struct{})
	atGate := f.atGate
	f.push(message(t, 1), message(t, 2))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := consume.New(f, h, consume.Options{
		QueueURL: "queue", Concurrency: 4, Pollers: 1, DeleteInterval: time.Hour, Drain: time.Minute,
		Log: slog.New(slog.DiscardHandler),
	})
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	// The poll under way answers only after shutdown began; its messages
	// were never started, so they are released for the dispatchers that
	// stay rather than left invisible for the visibility timeout.
	<-atGate
	cancel()
	close(f.gate)
	require.NoError(t, <-done)
	_, deleted, _, _ := f.snapshot()
	require.Empty(t, deleted)
	require.Empty(t, h.handled())
	require.Equal(t, []int32{0}, f.visibilityOf(receipt(1)))
	require.Equal(t, []int32{0}, f.visibilityOf(receipt(2)))
	require.Zero(t, f.receiveCtxDone, "the receive context is not cancelled by shutdown")
}

func TestDrainDeadlineCancelsDeliveries(t *testing.T) {
	f, h := setup(2)
	h.decide = func(ctx context.Context, _ consume.Message) consume.Disposition {
		<-ctx.Done()
		return consume.Leave
	}
	f.push(message(t, 1))
	stop := start(t, f, h, consume.Options{Concurrency: 2, Drain: 50 * time.Millisecond})
	waitReceived(t, f, 1)
	require.NoError(t, stop())
	require.Equal(t, map[int64]int{1: 1}, h.handled())
	_, deleted, _, _ := f.snapshot()
	require.Empty(t, deleted)
}

func TestMissingQueueStops(t *testing.T) {
	f, h := setup(2)
	f.missingQueue = true
	err := consume.New(f, h, consume.Options{QueueURL: "queue", Concurrency: 2, Log: slog.New(slog.DiscardHandler)}).Run(t.Context())
	var qe *types.QueueDoesNotExist
	require.ErrorAs(t, err, &qe)
}

func TestPollers(t *testing.T) {
	for _, tt := range []struct{ concurrency, want int }{{1, 2}, {10, 2}, {11, 3}, {16, 3}, {64, 8}} {
		require.Equal(t, tt.want, consume.Pollers(tt.concurrency), "concurrency %d", tt.concurrency)
	}
}
