// Package tracing sets up OpenTelemetry tracing the way every Spool
// process shares: exporters chosen by the standard OTEL_* variables, W3C
// trace context propagation, and a shutdown that flushes.
//
// Tracing is off unless OTEL_TRACES_EXPORTER names an exporter: the global
// tracer provider stays OpenTelemetry's no-op one, so instrumented code
// costs next to nothing. Propagation is on either way, so a caller's
// traceparent still travels through SQS to the destination and the third
// party's logs join the caller's trace even when Spool exports nothing.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
)

// Setup installs the global propagator (W3C trace context and baggage)
// and, when the environment asks for one, a tracer provider exporting to
// it. service is the default service.name (OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES override it). The returned shutdown flushes the
// spans still buffered; it is never nil.
//
// Variables read (see the OpenTelemetry SDK environment specification):
// OTEL_SDK_DISABLED; OTEL_TRACES_EXPORTER ("otlp", "console", or
// "none"/unset for off); OTEL_EXPORTER_OTLP_PROTOCOL or
// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ("http/protobuf", the default, or
// "grpc"); and, read by the exporters themselves, OTEL_EXPORTER_OTLP_*
// (endpoint, headers, timeout, …) and OTEL_TRACES_SAMPLER(_ARG), whose
// default, parentbased_always_on, makes sampling follow the caller.
func Setup(ctx context.Context, service string) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	noop := func(context.Context) error { return nil }
	exp, err := exporter(ctx, os.Getenv)
	if err != nil || exp == nil {
		return noop, err
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(service)))
	if err != nil {
		return noop, fmt.Errorf("tracing resource: %w", err)
	}
	// The environment (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) wins
	// over the default name.
	if env, err := resource.New(ctx, resource.WithFromEnv()); err == nil {
		if merged, err := resource.Merge(res, env); err == nil {
			res = merged
		}
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// exporter returns the span exporter the environment names, nil when
// tracing is off.
func exporter(ctx context.Context, getenv func(string) string) (sdktrace.SpanExporter, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return nil, nil
	}
	switch name := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))); name {
	case "", "none":
		return nil, nil
	case "console":
		exp, err := stdouttrace.New()
		if err != nil {
			return nil, fmt.Errorf("console trace exporter: %w", err)
		}
		return exp, nil
	case "otlp":
		proto := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
		if proto == "" {
			proto = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
		}
		var exp sdktrace.SpanExporter
		var err error
		switch proto {
		case "", "http/protobuf":
			exp, err = otlptracehttp.New(ctx)
		case "grpc":
			exp, err = otlptracegrpc.New(ctx)
		default:
			return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q: want http/protobuf or grpc", proto)
		}
		if err != nil {
			return nil, fmt.Errorf("otlp trace exporter: %w", err)
		}
		return exp, nil
	default:
		return nil, errors.New("OTEL_TRACES_EXPORTER " + name + ": want otlp, console or none")
	}
}

// Flush runs shutdown (Setup's) within a bound of its own, since ctx is
// usually done by the time a process stops, and logs its failure: spans
// lost at exit are no reason to fail the exit.
func Flush(ctx context.Context, shutdown func(context.Context) error, log *slog.Logger) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
	defer cancel()
	if err := shutdown(fctx); err != nil {
		log.WarnContext(ctx, "flush traces", "error", err)
	}
}

// flushTimeout bounds the export of the spans buffered at exit.
const flushTimeout = 5 * time.Second
