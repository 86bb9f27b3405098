package tracing

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestTraceparentRoundTripsThroughARemoteParent(t *testing.T) {
	tests := []struct {
		name, traceparent, tracestate string
		want, wantState               string
	}{
		{name: "sampled with state", traceparent: parent, tracestate: "vendor=x", want: parent, wantState: "vendor=x"},
		{name: "unsampled", traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
			want: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"},
		{name: "none", traceparent: ""},
		{name: "malformed", traceparent: "00-zz-00f067aa0ba902b7-01"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tp, ts := Traceparent(WithRemoteParent(context.Background(), tt.traceparent, tt.tracestate))
			if tp != tt.want || ts != tt.wantState {
				t.Errorf("got %q %q, want %q %q", tp, ts, tt.want, tt.wantState)
			}
		})
	}
}

func TestSpansFromARemoteParentJoinItsTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ctx, span := tp.Tracer("test").Start(WithRemoteParent(context.Background(), parent, ""), "child")
	span.End()
	got := rec.Ended()[0]
	if got.SpanContext().TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || got.Parent().SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("span %v parent %v: want a child of %s", got.SpanContext(), got.Parent(), parent)
	}
	if tp, _ := Traceparent(ctx); tp != "00-4bf92f3577b34da6a3ce929d0e0e4736-"+got.SpanContext().SpanID().String()+"-01" {
		t.Errorf("traceparent %q does not name the child", tp)
	}
	// Unsampled parents are followed: parent-based sampling is the default.
	_, span = tp.Tracer("test").Start(WithRemoteParent(context.Background(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", ""), "unsampled")
	if span.IsRecording() {
		t.Error("a child of an unsampled parent is recorded")
	}
}

func TestLogHandlerAddsTheSpanOfTheContext(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(LogHandler(slog.NewJSONHandler(&buf, nil))).With("service", "test")
	withSpan := WithRemoteParent(context.Background(), parent, "")
	tests := []struct {
		name        string
		log         func()
		trace, span string
	}{
		{name: "context with a span", log: func() { log.InfoContext(withSpan, "m") },
			trace: "4bf92f3577b34da6a3ce929d0e0e4736", span: "00f067aa0ba902b7"},
		{name: "context without", log: func() { log.InfoContext(context.Background(), "m") }},
		{name: "no context", log: func() { log.Info("m") }},
		{name: "after WithGroup", log: func() { log.WithGroup("g").InfoContext(withSpan, "m") },
			trace: "4bf92f3577b34da6a3ce929d0e0e4736", span: "00f067aa0ba902b7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf.Reset()
			tt.log()
			var line map[string]any
			if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
				t.Fatal(err)
			}
			if g, ok := line["g"].(map[string]any); ok {
				line = g
			}
			if line["trace_id"] != nilIfEmpty(tt.trace) || line["span_id"] != nilIfEmpty(tt.span) {
				t.Errorf("line %s: want trace_id %q span_id %q", buf.String(), tt.trace, tt.span)
			}
		})
	}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func TestExporterFollowsTheEnvironment(t *testing.T) {
	tests := []struct {
		env     map[string]string
		want    bool
		wantErr bool
	}{
		{env: nil},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "none"}},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, want: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, want: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "console"}, want: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, wantErr: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "jaeger"}, wantErr: true},
	}
	for _, tt := range tests {
		exp, err := exporter(context.Background(), func(k string) string { return tt.env[k] })
		if (err != nil) != tt.wantErr || (exp != nil) != tt.want {
			t.Errorf("%v: exporter %v, error %v", tt.env, exp, err)
		}
		if exp != nil {
			_ = exp.Shutdown(context.Background())
		}
	}
}
