// Package dispatch decides what happens to one received transaction: it
// sends it to the destination, counts the outcome for the job, and tells
// the receive loop whether the message is settled.
//
// It is the seam where the later safety layers go, in this order: the
// per-transaction delivery ledger (a conditional write before the send and
// after it, so a redelivered message is never sent twice), job-state gating
// (deliver nothing from a job that is not SEALED), retry classes with
// backoff through ChangeMessageVisibility, and the circuit breaker.
package dispatch

import (
	"context"
	"log/slog"

	"github.com/spoolhq/spool/dispatcher/internal/consume"
	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

// Sender sends one transaction; nil means the destination accepted it.
type Sender interface {
	Send(ctx context.Context, e *spoolv1.Envelope) error
}

// Counter accumulates job counter deltas.
type Counter interface {
	Add(jobID string, c jobstore.Counts)
}

// Handler implements consume.Handler.
type Handler struct {
	send  Sender
	count Counter
	log   *slog.Logger
}

// New returns a handler.
func New(send Sender, count Counter, log *slog.Logger) *Handler {
	return &Handler{send: send, count: count, log: log}
}

// Handle sends m once. A delivered message is deleted; any failure leaves
// it, so it is received again after its visibility timeout. Until the
// retry classes exist (#4), every failure counts as a retry.
func (h *Handler) Handle(ctx context.Context, m consume.Message) consume.Disposition {
	e := m.Envelope
	err := h.send.Send(ctx, e)
	if err == nil {
		h.count.Add(e.GetJobId(), jobstore.Counts{Delivered: 1})
		return consume.Delete
	}
	h.count.Add(e.GetJobId(), jobstore.Counts{Retries: 1})
	status := 0
	if f, ok := deliver.IsFailure(err); ok {
		status = f.Status
	}
	// Identifiers and the outcome only: never the row's fields.
	h.log.WarnContext(ctx, "delivery failed; left for retry",
		"job_id", e.GetJobId(), "row", e.GetRow(), "message_id", m.ID,
		"receive_count", m.ReceiveCount, "status", status, "error", err)
	return consume.Leave
}
