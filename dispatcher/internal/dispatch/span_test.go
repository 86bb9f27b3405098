package dispatch_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestDeliveryJoinsTheRowsTrace delivers rows whose envelopes carry a
// trace context: the delivery span is its child, the request's client span
// the delivery's, and the destination receives the request span's context.
func TestDeliveryJoinsTheRowsTrace(t *testing.T) {
	otel.SetTextMapPropagator(propagation.TraceContext{})
	var mu sync.Mutex
	var got []string
	dest := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("traceparent"))
		mu.Unlock()
	}))
	t.Cleanup(dest.Close)

	tests := []struct {
		name, traceparent string
		recorded          bool
	}{
		{name: "sampled caller", traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", recorded: true},
		{name: "unsampled caller", traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			p := newDeliveryPath(t, dest.URL, sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)), false)
			mu.Lock()
			got = nil
			mu.Unlock()
			p.handle(t, context.Background(), tt.traceparent, i)

			mu.Lock()
			require.Len(t, got, 1)
			sent := got[0]
			mu.Unlock()
			if !tt.recorded {
				// Nothing recorded; the trace and the caller's decision go on.
				require.Empty(t, rec.Ended())
				require.Regexp(t, `^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-00$`, sent)
				return
			}
			spans := rec.Ended()
			require.Len(t, spans, 2)
			req, deliver := spans[0], spans[1]
			require.Equal(t, "deliver", deliver.Name())
			require.Equal(t, "00f067aa0ba902b7", deliver.Parent().SpanID().String())
			require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", deliver.SpanContext().TraceID().String())
			require.Equal(t, deliver.SpanContext().SpanID(), req.Parent().SpanID(), "the request is not the delivery's child")
			require.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-"+req.SpanContext().SpanID().String()+"-01", sent)
		})
	}
}
