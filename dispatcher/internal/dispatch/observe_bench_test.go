package dispatch_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spoolhq/spool/dispatcher/dispatchmetrics"
	"github.com/spoolhq/spool/dispatcher/internal/consume"
	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/dispatcher/internal/dispatch"
	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

// discard is a span exporter that drops what it is given: the benchmark
// measures the process's own cost, not a collector's.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// BenchmarkDeliveryObservability measures the delivery path (gate, claim,
// request to a local destination, outcome) with metrics and tracing off,
// as a dispatcher runs without SPOOL_METRICS_LISTEN and OTEL_TRACES_EXPORTER,
// against the same path with metrics (Prometheus around the sender, ledger
// and counter), tracing (an SDK tracer provider exporting in batches), or
// both. The two handlers run alternately in one loop, so that both see the
// same machine; each reports its median and the difference as overhead_%.
// The caller's trace context is unsampled (tracing on, this caller not
// sampled: the cost every row pays) except in both-sampled, where every
// row's spans are recorded and exported.
func BenchmarkDeliveryObservability(b *testing.B) {
	otel.SetTextMapPropagator(propagation.TraceContext{})
	dest := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	}))
	b.Cleanup(dest.Close)

	for _, bc := range []struct {
		name             string
		flags            string
		metrics, tracing bool
	}{
		{"metrics", "00", true, false},
		{"tracing-unsampled", "00", false, true},
		{"both-unsampled", "00", true, true},
		{"both-sampled", "01", true, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var tp trace.TracerProvider = noop.NewTracerProvider()
			if bc.tracing {
				sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discard{}))
				b.Cleanup(func() { _ = sdk.Shutdown(context.Background()) })
				tp = sdk
			}
			off := newDeliveryPath(b, dest.URL, noop.NewTracerProvider(), false)
			on := newDeliveryPath(b, dest.URL, tp, bc.metrics)
			traceparent := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-" + bc.flags
			ctx := context.Background()
			// Connections are opened and the job cached before timing.
			for i := range 16 {
				off.handle(b, ctx, traceparent, i)
				on.handle(b, ctx, traceparent, i)
			}
			offTimes, onTimes := make([]time.Duration, b.N), make([]time.Duration, b.N)
			b.ResetTimer()
			for i := range b.N {
				row := 16 + i
				if i%2 == 0 {
					offTimes[i] = off.handle(b, ctx, traceparent, row)
					onTimes[i] = on.handle(b, ctx, traceparent, row)
				} else {
					onTimes[i] = on.handle(b, ctx, traceparent, row)
					offTimes[i] = off.handle(b, ctx, traceparent, row)
				}
			}
			b.StopTimer()
			// Medians: on a shared machine a few stalled requests would
			// otherwise decide the mean.
			offNs, onNs := median(offTimes), median(onTimes)
			b.ReportMetric(offNs, "off-p50-ns")
			b.ReportMetric(onNs, "on-p50-ns")
			b.ReportMetric(100*(onNs-offNs)/offNs, "overhead_%")
		})
	}
}

func median(d []time.Duration) float64 {
	slices.Sort(d)
	return float64(d[len(d)/2].Nanoseconds())
}

// deliveryPath is one handler over an in-memory ledger and a real HTTP
// client, as the dispatcher wires them.
type deliveryPath struct {
	h *dispatch.Handler
}

func newDeliveryPath(b testing.TB, url string, tp trace.TracerProvider, metrics bool) *deliveryPath {
	b.Helper()
	now := time.Now
	job := &jobs{job: &spoolv1.Job{
		JobId: "job", State: spoolv1.JobState_JOB_STATE_SEALED, AmountColumn: "amount",
		LeaseExpiresAt: timestamppb.New(now().Add(time.Hour)),
	}}
	var send dispatch.Sender = deliver.New(deliver.Options{URL: url, Timeout: 10 * time.Second, MaxConns: 4, TracerProvider: tp})
	var count dispatch.Counter = &counts{c: map[string]jobstore.Counts{}}
	var book dispatch.Ledger = ledger.New(ledger.NewMemory(), ledger.Options{Owner: "me", Lease: 25 * time.Second, Policy: ledger.Hold, Now: now})
	log := slog.New(slog.DiscardHandler)
	if metrics {
		m := dispatchmetrics.New(prometheus.NewRegistry(), nil)
		send, count, book = m.Sender(send), m.Counter(count, log), m.Ledger(book)
	}
	h := dispatch.New(send, count, book, job, dispatch.Options{
		Now: now, Log: log, SendTimeout: 10 * time.Second, TracerProvider: tp,
	})
	return &deliveryPath{h: h}
}

// handle delivers row once and returns how long it took.
func (p *deliveryPath) handle(b testing.TB, ctx context.Context, traceparent string, row int) time.Duration {
	e := &spoolv1.Envelope{
		Version: spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1, JobId: "job", Row: int64(row + 1),
		TransactionKey: fmt.Sprintf("job:%d", row+1), Traceparent: traceparent,
		Fields: []*spoolv1.Field{{Name: "employee", Value: "E1"}, {Name: "amount", Value: "10.50"}},
	}
	start := time.Now()
	d := p.h.Handle(ctx, consume.Message{ID: "m", Envelope: e, SentAt: start})
	took := time.Since(start)
	if d != consume.Delete {
		b.Fatalf("row %d: disposition %+v, want delete", row+1, d)
	}
	return took
}
