package ingest

import (
	"context"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/grpcserve"
	"github.com/spoolhq/spool/platform/grpcserve/grpcservetest"
	"github.com/spoolhq/spool/platform/tracing"
)

// TestRowsCarryTheCallsTraceContext streams rows with the services' own
// tracing (the server's and the client's stats handlers, an SDK provider
// recording spans) and checks that every envelope names the StreamFile
// span, itself the child of the client's call, itself the child of the
// caller's span when there is one.
func TestRowsCarryTheCallsTraceContext(t *testing.T) {
	if _, err := tracing.Setup(context.Background(), "test"); err != nil {
		t.Fatal(err)
	}
	prev := otel.GetTracerProvider()
	t.Cleanup(func() { otel.SetTracerProvider(prev) })

	tests := []struct {
		name, traceparent, tracestate string
		callerSpan                    string
	}{
		{name: "caller with a span", traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", tracestate: "vendor=x",
			callerSpan: "00f067aa0ba902b7"},
		{name: "caller without: a trace of its own"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
			pub := &fakePub{}
			c := startTracedServer(t, Config{NewPublisher: pubFactory(pub)})

			callCtx := tracing.WithRemoteParent(context.Background(), tt.traceparent, tt.tracestate)
			_, err := send(callCtx, c, hdr(&spoolv1.FileHeader{FileName: "pay.csv", Columns: []string{"id", "amount"}}),
				rowsMsg([]string{"e1", "1.00"}, []string{"e2", "2.00"}))
			require.NoError(t, err)

			spans := map[string]sdktrace.ReadOnlySpan{}
			var server sdktrace.ReadOnlySpan
			for _, s := range rec.Ended() {
				spans[s.SpanContext().SpanID().String()] = s
				if s.Name() == "spool.v1.IngestService/StreamFile" && s.SpanKind().String() == "server" {
					server = s
				}
			}
			require.NotNil(t, server, "no StreamFile server span")
			want := "00-" + server.SpanContext().TraceID().String() + "-" + server.SpanContext().SpanID().String() + "-01"
			envs := pub.envelopes()
			require.Len(t, envs, 2)
			for _, e := range envs {
				require.Equal(t, want, e.GetTraceparent(), "row %d", e.GetRow())
				require.Equal(t, tt.tracestate, e.GetTracestate(), "row %d", e.GetRow())
			}
			client, ok := spans[server.Parent().SpanID().String()]
			require.True(t, ok, "the server span's parent is not the client's call")
			require.Equal(t, "client", client.SpanKind().String())
			if tt.callerSpan == "" {
				require.False(t, client.Parent().IsValid(), "the client's call has a parent")
			} else {
				require.Equal(t, tt.callerSpan, client.Parent().SpanID().String())
				require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", server.SpanContext().TraceID().String())
			}
		})
	}
}

// startTracedServer is startServer with the tracing stats handlers on the
// server and the client.
func startTracedServer(t *testing.T, cfg Config) spoolv1.IngestServiceClient {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	cfg.Log = log
	srv := grpcserve.New(log, grpcserve.Security{}, tracing.ServerOption())
	spoolv1.RegisterIngestServiceServer(srv, New(newFakeJobs(), cfg))
	conn := grpcservetest.Dial(t, context.Background(), srv, tracing.DialOption())
	return spoolv1.NewIngestServiceClient(conn)
}
