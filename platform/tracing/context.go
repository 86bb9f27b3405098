package tracing

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
)

// w3c is the propagator of the trace context rows carry through SQS. It is
// W3C trace context whatever the global propagator is, because the
// envelope's fields are named for it.
var w3c = propagation.TraceContext{}

// Traceparent returns the W3C traceparent and tracestate of ctx's span, or
// empty strings when ctx has no valid span context.
func Traceparent(ctx context.Context) (traceparent, tracestate string) {
	c := propagation.MapCarrier{}
	w3c.Inject(ctx, c)
	return c["traceparent"], c["tracestate"]
}

// WithRemoteParent returns ctx carrying the remote span context a
// traceparent (and tracestate) names, so that spans started from it are
// its children; ctx unchanged when traceparent is empty or invalid.
func WithRemoteParent(ctx context.Context, traceparent, tracestate string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return w3c.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent, "tracestate": tracestate})
}
