// Package ingestmetrics defines the ingestor's domain metrics: rows in by
// result, the latency of each SendMessageBatch, the time streams waited on
// the publisher (backpressure), and the streams open. They are taken from
// a decorator around the publisher's SQS client, a decorator around the
// gRPC service, and the hooks the ingest and publish packages offer, so the
// stream path does not know Prometheus. No label carries a job id or a row.
//
// It lives outside internal/ so that deploy/ can list the names the
// ingestor exports and check its dashboard and alarms against them.
package ingestmetrics

import (
	"context"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// Metrics are the ingestor's domain metrics.
type Metrics struct {
	rows         *prometheus.CounterVec
	batch        *prometheus.HistogramVec
	backpressure prometheus.Counter
	streams      prometheus.Gauge
}

// New registers the ingestor's metrics on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spool_ingest_rows_total",
			Help: "Rows of files streamed in: published (acknowledged by SQS) or rejected (invalid, never published).",
		}, []string{"result"}),
		batch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "spool_publish_batch_duration_seconds",
			Help:    "Latency of each SendMessageBatch call, by result (ok; error: the call failed, or some entries did and are retried).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20},
		}, []string{"result"}),
		backpressure: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spool_ingest_backpressure_seconds_total",
			Help: "Time streams waited for room in the publisher's buffer: the stream is slowed to the pace SQS accepts.",
		}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "spool_ingest_active_streams",
			Help: "StreamFile calls under way.",
		}),
	}
	for _, r := range []string{"published", "rejected"} {
		m.rows.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "error"} {
		m.batch.WithLabelValues(r)
	}
	reg.MustRegister(m.rows, m.batch, m.backpressure, m.streams)
	return m
}

// RowRejected counts one rejected row (ingest.Config.RowRejected).
func (m *Metrics) RowRejected() { m.rows.WithLabelValues("rejected").Inc() }

// Waited adds a wait on backpressure (publish.Options.Waited).
func (m *Metrics) Waited(d time.Duration) { m.backpressure.Add(d.Seconds()) }

// BatchAPI is the part of the SQS client the publisher uses
// (publish.API).
type BatchAPI interface {
	SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, opts ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error)
}

// Batches times each SendMessageBatch and counts the rows SQS
// acknowledged as published. A row whose acknowledgement was lost is sent
// again and counted again: SQS then holds it twice, and the dispatchers
// deliver it once.
func (m *Metrics) Batches(next BatchAPI) BatchAPI {
	return batches{m: m, next: next, now: time.Now}
}

type batches struct {
	m    *Metrics
	next BatchAPI
	now  func() time.Time
}

func (b batches) SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, opts ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	start := b.now()
	out, err := b.next.SendMessageBatch(ctx, in, opts...)
	result := "ok"
	if err != nil || len(out.Failed) > 0 {
		result = "error"
	}
	b.m.batch.WithLabelValues(result).Observe(b.now().Sub(start).Seconds())
	if err == nil {
		b.m.rows.WithLabelValues("published").Add(float64(len(out.Successful)))
	}
	return out, err
}

// Streams counts the StreamFile calls of srv under way.
func (m *Metrics) Streams(srv spoolv1.IngestServiceServer) spoolv1.IngestServiceServer {
	return streams{IngestServiceServer: srv, m: m}
}

type streams struct {
	spoolv1.IngestServiceServer
	m *Metrics
}

func (s streams) StreamFile(stream grpc.ClientStreamingServer[spoolv1.StreamFileRequest, spoolv1.StreamFileResponse]) error {
	s.m.streams.Inc()
	defer s.m.streams.Dec()
	return s.IngestServiceServer.StreamFile(stream)
}
