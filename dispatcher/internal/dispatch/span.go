package dispatch

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/spoolhq/spool/dispatcher/internal/consume"
	"github.com/spoolhq/spool/platform/tracing"
)

// tracerName is the instrumentation scope of the delivery spans.
const tracerName = "github.com/spoolhq/spool/dispatcher/internal/dispatch"

// startSpan starts the span of one delivery: a child of the StreamFile
// call that published the row, whose trace context the envelope carries.
// One message carries one row, so the messaging conventions allow the
// parent-child relation here rather than a link. The outbound request is
// its child in turn (deliver's transport).
func (h *Handler) startSpan(ctx context.Context, m consume.Message) (context.Context, trace.Span) {
	e := m.Envelope
	ctx, span := h.tracer.Start(tracing.WithRemoteParent(ctx, e.GetTraceparent(), e.GetTracestate()), "deliver",
		trace.WithSpanKind(trace.SpanKindConsumer))
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("messaging.system", "aws_sqs"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.message.id", m.ID),
			attribute.String("spool.job_id", e.GetJobId()),
			attribute.Int64("spool.row", e.GetRow()),
			attribute.Int("spool.receive_count", m.ReceiveCount),
		)
	}
	return ctx, span
}
