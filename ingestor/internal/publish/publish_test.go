package publish

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/envelope"
)

// fakeSQS stores what it is sent. hook, when set, decides the fate of a
// call before anything is stored: it may block, fail the call, or name ids
// to report as failed.
type fakeSQS struct {
	mu       sync.Mutex
	calls    [][]string // ids of each call, in call order
	sizes    []int      // total bytes of each call
	stored   map[string]int
	inflight int
	peak     int
	hook     func(ctx context.Context, call int, ids []string) (failIDs map[string]types.BatchResultErrorEntry, err error)
}

func (f *fakeSQS) SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, _ ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	ids := make([]string, len(in.Entries))
	total := 0
	for i, e := range in.Entries {
		ids[i] = aws.ToString(e.Id)
		total += envelope.Size(aws.ToString(e.MessageBody), e.MessageAttributes)
	}
	f.mu.Lock()
	call := len(f.calls)
	f.calls = append(f.calls, ids)
	f.sizes = append(f.sizes, total)
	f.inflight++
	f.peak = max(f.peak, f.inflight)
	hook := f.hook
	f.mu.Unlock()
	defer func() { f.mu.Lock(); f.inflight--; f.mu.Unlock() }()

	var failed map[string]types.BatchResultErrorEntry
	if hook != nil {
		var err error
		if failed, err = hook(ctx, call, ids); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := &sqs.SendMessageBatchOutput{}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stored == nil {
		f.stored = map[string]int{}
	}
	for _, id := range ids {
		if fe, ok := failed[id]; ok {
			fe.Id = aws.String(id)
			out.Failed = append(out.Failed, fe)
			continue
		}
		f.stored[id]++
		out.Successful = append(out.Successful, types.SendMessageBatchResultEntry{Id: aws.String(id), MessageId: aws.String("m-" + id)})
	}
	return out, nil
}

func (f *fakeSQS) batchSizes() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n []int
	for _, c := range f.calls {
		n = append(n, len(c))
	}
	return n
}

// requireStoredOnce checks that rows 1..n, and only they, were stored
// exactly once each.
func (f *fakeSQS) requireStoredOnce(tb testing.TB, n int) {
	tb.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Len(tb, f.stored, n)
	for row := 1; row <= n; row++ {
		require.Equal(tb, 1, f.stored[strconv.Itoa(row)], "row %d", row)
	}
}

func env(row int64) *spoolv1.Envelope {
	return &spoolv1.Envelope{
		Version:        spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1,
		JobId:          "job-1",
		Row:            row,
		Fields:         []*spoolv1.Field{{Name: "amount", Value: "12.34"}},
		TransactionKey: "job-1:" + strconv.FormatInt(row, 10),
	}
}

func size(tb testing.TB, e *spoolv1.Envelope) int {
	tb.Helper()
	body, attrs, err := envelope.Encode(e)
	require.NoError(tb, err)
	return envelope.Size(body, attrs)
}

// newTest returns a publisher over f whose senders start only when the
// returned function is called, and closes it at cleanup.
func newTest(tb testing.TB, f *fakeSQS, o Options) (*Publisher, func()) {
	tb.Helper()
	o.QueueURL = "https://sqs.local/q"
	if o.MaxMessageBytes == 0 {
		o.MaxMessageBytes = 1 << 20
	}
	o.MinBackoff, o.MaxBackoff = time.Microsecond, time.Millisecond
	p, err := newPublisher(f, o)
	require.NoError(tb, err)
	tb.Cleanup(p.Close)
	return p, p.start
}

func publishRows(tb testing.TB, p *Publisher, from, to int64) {
	tb.Helper()
	for row := from; row <= to; row++ {
		require.NoError(tb, p.Publish(context.Background(), env(row)))
	}
}

func TestBatchesOfTen(t *testing.T) {
	f := &fakeSQS{}
	p, start := newTest(t, f, Options{Concurrency: 1, Buffer: 25})
	publishRows(t, p, 1, 25)
	start()
	require.NoError(t, p.Flush(context.Background()))
	require.Equal(t, []int{10, 10, 5}, f.batchSizes())
	f.requireStoredOnce(t, 25)
	require.Equal(t, Stats{Published: 25, Watermark: 25}, p.Stats())
}

func TestBatchesKeptUnderMaxBytes(t *testing.T) {
	one := size(t, env(1))
	limit := 3*one + one/2 // room for three entries, not four
	f := &fakeSQS{}
	p, start := newTest(t, f, Options{Concurrency: 1, Buffer: 9, MaxMessageBytes: limit})
	publishRows(t, p, 1, 9)
	start()
	require.NoError(t, p.Flush(context.Background()))
	require.Equal(t, []int{3, 3, 3}, f.batchSizes())
	for _, s := range f.sizes {
		require.LessOrEqual(t, s, limit)
	}
	f.requireStoredOnce(t, 9)
}

func TestOversizeRowRejectedNeverSent(t *testing.T) {
	f := &fakeSQS{}
	limit := size(t, env(1)) + 10
	p, start := newTest(t, f, Options{MaxMessageBytes: limit})
	start()
	publishRows(t, p, 1, 1)
	big := env(2)
	big.Fields[0].Value = string(make([]byte, 100))
	err := p.Publish(context.Background(), big)
	require.ErrorIs(t, err, ErrTooLarge)
	require.ErrorContains(t, err, "max-message-bytes="+strconv.Itoa(limit))
	publishRows(t, p, 3, 3)
	require.NoError(t, p.Flush(context.Background()))
	f.mu.Lock()
	require.Equal(t, map[string]int{"1": 1, "3": 1}, f.stored)
	f.mu.Unlock()
	// The rejected row does not hold the watermark back.
	require.Equal(t, Stats{Published: 2, Watermark: 3}, p.Stats())
}

func TestFailedEntriesRetriedUntilStoredOnce(t *testing.T) {
	f := &fakeSQS{}
	// Every call reports its first and last entries as failed for a
	// transient reason, until each row has failed twice.
	var mu sync.Mutex
	failures := map[string]int{}
	f.hook = func(_ context.Context, _ int, ids []string) (map[string]types.BatchResultErrorEntry, error) {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]types.BatchResultErrorEntry{}
		for _, id := range []string{ids[0], ids[len(ids)-1]} {
			if failures[id] < 2 {
				failures[id]++
				out[id] = types.BatchResultErrorEntry{Code: aws.String("InternalError"), SenderFault: false}
			}
		}
		return out, nil
	}
	p, start := newTest(t, f, Options{Concurrency: 2, MaxAttempts: 5})
	start()
	publishRows(t, p, 1, 25)
	require.NoError(t, p.Flush(context.Background()))
	f.requireStoredOnce(t, 25)
	require.Greater(t, len(f.batchSizes()), 3, "failed entries were sent again")
	require.Equal(t, Stats{Published: 25, Watermark: 25}, p.Stats())
}

func TestWholeCallErrors(t *testing.T) {
	transient := &smithy.GenericAPIError{Code: "InternalError", Fault: smithy.FaultServer}
	throttled := &smithy.GenericAPIError{Code: "RequestThrottled", Fault: smithy.FaultClient}
	badRequest := &smithy.GenericAPIError{Code: "InvalidParameterValue", Fault: smithy.FaultClient}
	tests := []struct {
		name      string
		err       error
		failCalls int // calls that fail before one succeeds
		wantErr   error
		wantCalls int
	}{
		{name: "transient error retried", err: transient, failCalls: 2, wantCalls: 3},
		{name: "throttling retried", err: throttled, failCalls: 2, wantCalls: 3},
		{name: "network error retried", err: errors.New("connection reset"), failCalls: 1, wantCalls: 2},
		{name: "sender fault not retried", err: badRequest, failCalls: 100, wantErr: ErrRejected, wantCalls: 1},
		{name: "attempts bounded", err: transient, failCalls: 100, wantErr: transient, wantCalls: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeSQS{hook: func(_ context.Context, call int, _ []string) (map[string]types.BatchResultErrorEntry, error) {
				if call < tt.failCalls {
					return nil, tt.err
				}
				return nil, nil
			}}
			p, start := newTest(t, f, Options{Concurrency: 1, MaxAttempts: 3})
			publishRows(t, p, 1, 5)
			start()
			err := p.Flush(context.Background())
			require.Len(t, f.batchSizes(), tt.wantCalls)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				// A failed publisher refuses further rows.
				require.ErrorIs(t, p.Publish(context.Background(), env(6)), tt.wantErr)
				return
			}
			require.NoError(t, err)
			f.requireStoredOnce(t, 5)
		})
	}
}

func TestSenderFaultEntryFailsPublisher(t *testing.T) {
	f := &fakeSQS{hook: func(_ context.Context, _ int, ids []string) (map[string]types.BatchResultErrorEntry, error) {
		return map[string]types.BatchResultErrorEntry{ids[0]: {Code: aws.String("InvalidMessageContents"), SenderFault: true}}, nil
	}}
	p, start := newTest(t, f, Options{Concurrency: 1})
	publishRows(t, p, 1, 3)
	start()
	err := p.Flush(context.Background())
	require.ErrorIs(t, err, ErrRejected)
	require.ErrorContains(t, err, "InvalidMessageContents")
	require.Len(t, f.batchSizes(), 1, "not retried")
}

// gate holds each SendMessageBatch call until the test releases it.
type gate struct {
	called  chan []string
	release map[string]chan struct{} // by first id of the call
	mu      sync.Mutex
}

// newGated is newTest on a queue whose every call waits at a new gate.
func newGated(tb testing.TB, o Options) (*gate, *fakeSQS, *Publisher, func()) {
	tb.Helper()
	g := newGate()
	f := &fakeSQS{hook: g.hook}
	p, start := newTest(tb, f, o)
	return g, f, p, start
}

func newGate() *gate {
	return &gate{called: make(chan []string, 100), release: map[string]chan struct{}{}}
}

func (g *gate) ch(id string) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.release[id] == nil {
		g.release[id] = make(chan struct{})
	}
	return g.release[id]
}

func (g *gate) hook(ctx context.Context, _ int, ids []string) (map[string]types.BatchResultErrorEntry, error) {
	g.called <- ids
	select {
	case <-g.ch(ids[0]):
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// releaseAll lets every later call through.
func (g *gate) releaseAll(tb testing.TB) {
	tb.Helper()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case ids := <-g.called:
				close(g.ch(ids[0]))
			case <-stop:
				return
			}
		}
	}()
	tb.Cleanup(func() { close(stop); <-done })
}

func TestWatermarkWithOutOfOrderCompletion(t *testing.T) {
	g, _, p, start := newGated(t, Options{Concurrency: 2})
	start()

	publishRows(t, p, 1, 1)
	require.Equal(t, []string{"1"}, <-g.called)
	// Row 2 was rejected before publishing: the caller skips it.
	publishRows(t, p, 3, 3)
	require.Equal(t, []string{"3"}, <-g.called)
	publishRows(t, p, 4, 4)
	require.Equal(t, Stats{Pending: 3}, p.Stats())

	// The batch of row 3 completes first: published moves, the watermark
	// cannot pass row 1.
	close(g.ch("3"))
	require.Eventually(t, func() bool { return p.Stats().Published == 1 }, 5*time.Second, time.Millisecond)
	require.EqualValues(t, 0, p.Stats().Watermark)

	// Row 4 went to whichever sender freed up; release it too.
	require.Equal(t, []string{"4"}, <-g.called)
	close(g.ch("4"))
	require.Eventually(t, func() bool { return p.Stats().Published == 2 }, 5*time.Second, time.Millisecond)
	require.EqualValues(t, 0, p.Stats().Watermark)

	close(g.ch("1"))
	require.NoError(t, p.Flush(context.Background()))
	require.Equal(t, Stats{Published: 3, Watermark: 4}, p.Stats())
}

func TestPublishBlocksWhenBufferFull(t *testing.T) {
	t.Run("unblocks when a send completes", func(t *testing.T) {
		var waits atomic.Int64
		g, f, p, start := newGated(t, Options{Concurrency: 1, Buffer: 1, Waited: func(time.Duration) { waits.Add(1) }})
		start()
		publishRows(t, p, 1, 1)
		require.Equal(t, []string{"1"}, <-g.called) // the sender holds row 1
		publishRows(t, p, 2, 2)                     // row 2 fills the buffer
		require.Zero(t, waits.Load(), "a Publish with room does not count as a wait")

		done := make(chan error, 1)
		go func() { done <- p.Publish(context.Background(), env(3)) }()
		require.Eventually(t, func() bool { return p.Stats().Pending == 3 }, 5*time.Second, time.Millisecond)
		select {
		case err := <-done:
			t.Fatalf("Publish returned %v with the buffer full", err)
		default:
		}
		g.releaseAll(t)
		close(g.ch("1"))
		require.NoError(t, <-done)
		require.EqualValues(t, 1, waits.Load(), "the Publish that found the buffer full reports its wait")
		require.NoError(t, p.Flush(context.Background()))
		f.requireStoredOnce(t, 3)
	})
	t.Run("waits only when full", func(t *testing.T) {
		// A cancelled context makes Publish fail only if it has to wait,
		// so this proves without timing that the full buffer blocks.
		g, _, p, start := newGated(t, Options{Concurrency: 1, Buffer: 1})
		start()
		cancelled, cancel := context.WithCancel(context.Background())
		cancel()
		require.NoError(t, p.Publish(cancelled, env(1)))
		<-g.called
		require.NoError(t, p.Publish(cancelled, env(2)))
		require.ErrorIs(t, p.Publish(cancelled, env(3)), context.Canceled)
		close(g.ch("1"))
	})
}

func TestConcurrencyBounded(t *testing.T) {
	g, f, p, start := newGated(t, Options{Concurrency: 3, Buffer: 100})
	publishRows(t, p, 1, 60)
	start()
	var first [][]string
	for range 3 {
		first = append(first, <-g.called)
	}
	// Three calls are in flight and blocked; none more may start.
	select {
	case ids := <-g.called:
		t.Fatalf("a fourth call started: %v", ids)
	default:
	}
	g.releaseAll(t)
	for _, ids := range first {
		close(g.ch(ids[0]))
	}
	require.NoError(t, p.Flush(context.Background()))
	f.requireStoredOnce(t, 60)
	require.Equal(t, 3, f.peak)
}

func TestRowsMustIncrease(t *testing.T) {
	p, start := newTest(t, &fakeSQS{}, Options{})
	start()
	publishRows(t, p, 5, 5)
	require.ErrorContains(t, p.Publish(context.Background(), env(5)), "rows must increase")
}

func TestCloseStopsSenders(t *testing.T) {
	g, _, p, start := newGated(t, Options{Concurrency: 2})
	start()
	publishRows(t, p, 1, 1)
	<-g.called
	// Close cancels the call in flight and waits for the senders.
	p.Close()
	require.ErrorIs(t, p.Flush(context.Background()), ErrClosed)
	require.ErrorIs(t, p.Publish(context.Background(), env(2)), ErrClosed)
}

// TestHungCallTimesOutAndIsRetried lets the first SendMessageBatch hang
// until its context ends: the call's deadline ends it, and the batch is
// sent again, so the stream is not held by a call that never answers.
func TestHungCallTimesOutAndIsRetried(t *testing.T) {
	f := &fakeSQS{hook: func(ctx context.Context, call int, _ []string) (map[string]types.BatchResultErrorEntry, error) {
		if call == 0 {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return nil, nil
	}}
	p, start := newTest(t, f, Options{Concurrency: 1, CallTimeout: 20 * time.Millisecond})
	publishRows(t, p, 1, 3)
	start()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, p.Flush(ctx))
	require.Len(t, f.batchSizes(), 2)
	f.requireStoredOnce(t, 3)
}

// Counts and durations left zero or set negative take the defaults: a
// negative concurrency would send nothing, a negative buffer block at once.
func TestOptionsDefaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Options
		want Options
	}{
		{"zero", Options{}, Options{Concurrency: DefaultConcurrency, Buffer: DefaultBuffer, MaxAttempts: DefaultMaxAttempts,
			MinBackoff: DefaultMinBackoff, MaxBackoff: DefaultMaxBackoff, CallTimeout: DefaultCallTimeout}},
		{"negative", Options{Concurrency: -1, Buffer: -1, MaxAttempts: -1, MinBackoff: -1, MaxBackoff: -1, CallTimeout: -1},
			Options{Concurrency: DefaultConcurrency, Buffer: DefaultBuffer, MaxAttempts: DefaultMaxAttempts,
				MinBackoff: DefaultMinBackoff, MaxBackoff: DefaultMaxBackoff, CallTimeout: DefaultCallTimeout}},
		{"set", Options{Concurrency: 3, Buffer: 4, MaxAttempts: 5, MinBackoff: time.Second, MaxBackoff: time.Minute, CallTimeout: time.Hour},
			Options{Concurrency: 3, Buffer: 4, MaxAttempts: 5, MinBackoff: time.Second, MaxBackoff: time.Minute, CallTimeout: time.Hour}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.in
			o.QueueURL, o.MaxMessageBytes = "q", 1
			require.NoError(t, o.defaults())
			require.NotNil(t, o.Log)
			got := o
			got.QueueURL, got.MaxMessageBytes, got.Log = "", 0, nil
			require.Equal(t, tc.want, got)
		})
	}
}
