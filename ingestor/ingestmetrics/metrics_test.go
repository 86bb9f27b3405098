package ingestmetrics

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/metrics/metricstest"
)

type batchFunc func() (*sqs.SendMessageBatchOutput, error)

func (f batchFunc) SendMessageBatch(context.Context, *sqs.SendMessageBatchInput, ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	return f()
}

func TestBatches(t *testing.T) {
	for _, tc := range []struct {
		name             string
		out              *sqs.SendMessageBatchOutput
		err              error
		published        float64
		okCalls, errored uint64
	}{
		{"all acknowledged", &sqs.SendMessageBatchOutput{Successful: make([]sqstypes.SendMessageBatchResultEntry, 10)}, nil, 10, 1, 0},
		{"some failed", &sqs.SendMessageBatchOutput{
			Successful: make([]sqstypes.SendMessageBatchResultEntry, 7), Failed: make([]sqstypes.BatchResultErrorEntry, 3),
		}, nil, 7, 0, 1},
		{"call failed", nil, errors.New("timeout"), 0, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m := New(reg)
			_, err := m.Batches(batchFunc(func() (*sqs.SendMessageBatchOutput, error) { return tc.out, tc.err })).
				SendMessageBatch(context.Background(), &sqs.SendMessageBatchInput{})
			require.Equal(t, tc.err, err)
			require.Equal(t, tc.published, testutil.ToFloat64(m.rows.WithLabelValues("published")))
			require.Equal(t, tc.okCalls, metricstest.SampleCount(t, reg, "spool_publish_batch_duration_seconds", "ok"))
			require.Equal(t, tc.errored, metricstest.SampleCount(t, reg, "spool_publish_batch_duration_seconds", "error"))
		})
	}
}

type blockingServer struct {
	spoolv1.UnimplementedIngestServiceServer
	in, out chan struct{}
}

func (s blockingServer) StreamFile(grpc.ClientStreamingServer[spoolv1.StreamFileRequest, spoolv1.StreamFileResponse]) error {
	s.in <- struct{}{}
	<-s.out
	return nil
}

func TestStreamsAndRows(t *testing.T) {
	m := New(prometheus.NewRegistry())
	srv := blockingServer{in: make(chan struct{}), out: make(chan struct{})}
	wrapped := m.Streams(srv)
	done := make(chan error)
	go func() { done <- wrapped.StreamFile(nil) }()
	<-srv.in
	require.Equal(t, 1.0, testutil.ToFloat64(m.streams))
	close(srv.out)
	require.NoError(t, <-done)
	require.Equal(t, 0.0, testutil.ToFloat64(m.streams))

	m.RowRejected()
	m.RowRejected()
	require.Equal(t, 2.0, testutil.ToFloat64(m.rows.WithLabelValues("rejected")))
	m.Waited(1500 * time.Millisecond)
	require.InDelta(t, 1.5, testutil.ToFloat64(m.backpressure), 1e-9)
}
