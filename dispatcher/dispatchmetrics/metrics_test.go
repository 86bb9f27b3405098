package dispatchmetrics

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/metrics/metricstest"
)

type nopCounter struct{ got jobstore.Counts }

func (c *nopCounter) Add(_ string, d jobstore.Counts) { c.got = c.got.Plus(d) }

func TestCounterByOutcome(t *testing.T) {
	m := New(prometheus.NewRegistry(), nil)
	next := &nopCounter{}
	var logged bytes.Buffer
	c := m.Counter(next, slog.New(slog.NewJSONHandler(&logged, nil)))
	c.Add("job", jobstore.Counts{Delivered: 3, Failed: 1, Retries: 2, Unknown: 1, Suppressed: 1, Dropped: 1, Duplicates: 1, DeadLettered: 1})
	// A redriven dead letter that is now delivered: passed on, not
	// counted as a negative dead-lettering.
	c.Add("job", jobstore.Counts{Delivered: 1, DeadLettered: -1})
	require.Equal(t, jobstore.Counts{Delivered: 4, Failed: 1, Retries: 2, Unknown: 1, Suppressed: 1, Dropped: 1, Duplicates: 1}, next.got)
	for outcome, want := range map[string]float64{
		"delivered": 4, "rejected": 1, "retried": 2, "unknown": 1, "suppressed": 1, "dropped": 1, "duplicate": 1, "dead_lettered": 1,
	} {
		require.Equal(t, want, testutil.ToFloat64(m.deliveries.WithLabelValues(outcome)), outcome)
	}
	// One line for the delta with unknown rows, none for the other.
	lines := strings.Split(strings.TrimSpace(logged.String()), "\n")
	require.Len(t, lines, 1)
	var line struct {
		Msg   string `json:"msg"`
		JobID string `json:"job_id"`
		Rows  int64  `json:"rows"`
	}
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &line))
	require.Equal(t, UnknownLogMessage, line.Msg)
	require.Equal(t, "job", line.JobID)
	require.EqualValues(t, 1, line.Rows)
}

type sendFunc func() error

func (f sendFunc) Send(context.Context, *spoolv1.Envelope) (deliver.Receipt, error) {
	return deliver.Receipt{}, f()
}

func TestSenderByStatusClass(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		class string // "" when nothing is observed
	}{
		{"accepted", nil, "2xx"},
		{"refused", &deliver.Failure{Status: 422}, "4xx"},
		{"down", &deliver.Failure{Status: 503}, "5xx"},
		{"no answer", &deliver.Failure{Err: errors.New("reset")}, "error"},
		{"never built", errors.New("bad url"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m := New(reg, nil)
			_, err := m.Sender(sendFunc(func() error { return tc.err })).Send(context.Background(), &spoolv1.Envelope{})
			require.Equal(t, tc.err, err)
			total := 0
			for _, c := range StatusClasses {
				h := metricstest.SampleCount(t, reg, "spool_destination_request_duration_seconds", c)
				if c == tc.class {
					require.EqualValues(t, 1, h, c)
				}
				total += int(h)
			}
			if tc.class == "" {
				require.Zero(t, total)
			} else {
				require.Equal(t, 1, total)
			}
		})
	}
}

type fakeQueue struct {
	err    error
	failed []sqstypes.BatchResultErrorEntry
}

func (q fakeQueue) ReceiveMessage(context.Context, *sqs.ReceiveMessageInput, ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	return &sqs.ReceiveMessageOutput{}, q.err
}

func (q fakeQueue) DeleteMessageBatch(context.Context, *sqs.DeleteMessageBatchInput, ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error) {
	if q.err != nil {
		return nil, q.err
	}
	return &sqs.DeleteMessageBatchOutput{Failed: q.failed}, nil
}

func (q fakeQueue) ChangeMessageVisibility(context.Context, *sqs.ChangeMessageVisibilityInput, ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error) {
	return &sqs.ChangeMessageVisibilityOutput{}, q.err
}

func (q fakeQueue) SendMessage(context.Context, *sqs.SendMessageInput, ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	return &sqs.SendMessageOutput{}, q.err
}

func TestQueueCalls(t *testing.T) {
	ctx := context.Background()
	m := New(prometheus.NewRegistry(), nil)
	ok := m.Queue(fakeQueue{})
	_, _ = ok.ReceiveMessage(ctx, nil)
	_, _ = ok.DeleteMessageBatch(ctx, nil)
	_, _ = ok.ChangeMessageVisibility(ctx, nil)
	partial := m.Queue(fakeQueue{failed: []sqstypes.BatchResultErrorEntry{{}}})
	_, _ = partial.DeleteMessageBatch(ctx, nil)
	bad := m.Queue(fakeQueue{err: errors.New("throttled")})
	_, _ = bad.ReceiveMessage(ctx, nil)
	_, _ = bad.DeleteMessageBatch(ctx, nil)
	_, _ = bad.SendMessage(ctx, nil)
	for _, tc := range []struct {
		op            string
		calls, errors float64
	}{
		{"receive", 2, 1}, {"delete", 3, 2}, {"visibility", 1, 0}, {"dead_letter", 1, 1},
	} {
		require.Equal(t, tc.calls, testutil.ToFloat64(m.queueCalls.WithLabelValues(tc.op)), tc.op)
		require.Equal(t, tc.errors, testutil.ToFloat64(m.queueErrors.WithLabelValues(tc.op)), tc.op)
	}
}

type flowStatus struct{ s *spoolv1.FlowControl }

func (f *flowStatus) Status() *spoolv1.FlowControl { return f.s }

// TestFlowGauges reads the flow control's figures at scrape time, as the
// status RPC does.
func TestFlowGauges(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := &flowStatus{s: &spoolv1.FlowControl{
		ConcurrencyLimit: 12, InFlight: 5, BreakerState: spoolv1.BreakerState_BREAKER_STATE_OPEN,
		BreakerOpens: 2, BreakerOpenTime: durationpb.New(7 * time.Second),
	}}
	New(reg, f)
	want := `
# HELP spool_breaker_state The circuit breaker's state: 1 for the state it is in, 0 for the others.
# TYPE spool_breaker_state gauge
spool_breaker_state{state="closed"} 0
spool_breaker_state{state="half_open"} 0
spool_breaker_state{state="open"} 1
# HELP spool_breaker_opens_total Times the circuit breaker opened from closed.
# TYPE spool_breaker_opens_total counter
spool_breaker_opens_total 2
# HELP spool_concurrency_limit The adaptive concurrency limit: most requests this dispatcher lets be in flight now.
# TYPE spool_concurrency_limit gauge
spool_concurrency_limit 12
# HELP spool_in_flight Requests to the destination in flight (slots of the concurrency limit taken).
# TYPE spool_in_flight gauge
spool_in_flight 5
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want),
		"spool_breaker_state", "spool_breaker_opens_total", "spool_concurrency_limit", "spool_in_flight"))
	f.s = &spoolv1.FlowControl{ConcurrencyLimit: 16, BreakerOpens: 2, BreakerState: spoolv1.BreakerState_BREAKER_STATE_CLOSED}
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(strings.NewReplacer(
		`state="closed"} 0`, `state="closed"} 1`, `state="open"} 1`, `state="open"} 0`,
		"spool_concurrency_limit 12", "spool_concurrency_limit 16", "spool_in_flight 5", "spool_in_flight 0").Replace(want)),
		"spool_breaker_state", "spool_breaker_opens_total", "spool_concurrency_limit", "spool_in_flight"))
}

// TestEverySeriesExistsAtZero checks that a fresh dispatcher exports every
// label value it can ever use, so a dashboard shows 0 rather than nothing.
func TestEverySeriesExistsAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(reg, &flowStatus{s: &spoolv1.FlowControl{}})
	require.Equal(t, len(Outcomes), testutil.CollectAndCount(reg, "spool_deliveries_total"))
	require.Equal(t, len(StatusClasses), testutil.CollectAndCount(reg, "spool_destination_request_duration_seconds"))
	require.Equal(t, len(QueueOps), testutil.CollectAndCount(reg, "spool_queue_calls_total"))
	require.Equal(t, len(LedgerOps), testutil.CollectAndCount(reg, "spool_ledger_write_duration_seconds"))
	require.Equal(t, 3, testutil.CollectAndCount(reg, "spool_breaker_state"))
}

type fakeStore struct {
	FlushStore
	err error
}

func (s fakeStore) WriteCounts(context.Context, string, jobstore.CounterWrite) error { return s.err }

func TestFlushes(t *testing.T) {
	m := New(prometheus.NewRegistry(), nil)
	ctx := context.Background()
	require.NoError(t, m.Flushes(fakeStore{}).WriteCounts(ctx, "job", jobstore.CounterWrite{}))
	err := errors.New("throttled")
	require.ErrorIs(t, m.Flushes(fakeStore{err: err}).WriteCounts(ctx, "job", jobstore.CounterWrite{}), err)
	require.Equal(t, 2.0, testutil.ToFloat64(m.flushes))
	require.Equal(t, 1.0, testutil.ToFloat64(m.flushErrors))
}
