package dispatchrpc

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spoolhq/spool/dispatcher/internal/audit"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/auth"
)

// AuditTrail records operator actions (audit.Store): an event before the
// action, its outcome after.
type AuditTrail interface {
	Begin(ctx context.Context, e audit.Event) (audit.Event, error)
	Finish(ctx context.Context, e audit.Event, actionErr error) error
	List(ctx context.Context, jobID string, limit int32, token string) ([]audit.Event, string, error)
}

// Anonymous is the actor the audit trail names when the server runs
// without authentication.
const Anonymous = "anonymous"

// MaxReason bounds the reason an operator gives for an action: a sentence
// or a ticket reference, not a document.
const MaxReason = 1024

// Page sizes of ListAuditEvents.
const (
	DefaultAuditPage = 100
	MaxAuditPage     = 1000
)

// actor is who is calling: the authenticated principal's subject.
func actor(ctx context.Context) string {
	if p, ok := auth.FromContext(ctx); ok && p.Subject != "" {
		return p.Subject
	}
	return Anonymous
}

// audited takes an action under its audit event: the event is written
// first, and if it cannot be, the action is not taken; the outcome is
// recorded after, even when the caller has gone. A dispatcher that dies in
// between leaves the event without an outcome: attempted, result unknown.
func (s *Server) audited(ctx context.Context, e audit.Event, act func() error) error {
	if len(e.Reason) > MaxReason {
		return status.Errorf(codes.InvalidArgument, "reason: %d bytes, want at most %d", len(e.Reason), MaxReason)
	}
	if s.o.Audit == nil {
		return act()
	}
	if e.Actor == "" {
		e.Actor = actor(ctx)
	}
	ev, err := s.o.Audit.Begin(ctx, e)
	if err != nil {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		return status.Errorf(codes.Unavailable, "record audit event, so nothing was done: %v", err)
	}
	actErr := act()
	s.finish(ctx, ev, actErr)
	return actErr
}

// finish records the outcome of ev's action; a failure to is logged, not
// returned: the action is done, and its event says it was attempted.
func (s *Server) finish(ctx context.Context, ev audit.Event, actErr error) {
	if err := s.o.Audit.Finish(context.WithoutCancel(ctx), ev, outcomeOf(actErr)); err != nil {
		s.o.Log.WarnContext(ctx, "record audit outcome", "job_id", ev.JobID, "event_id", ev.ID, "error", err)
	}
}

// outcomeOf is a handler's error as the audit trail words it: the status
// code and message, not the "rpc error:" wrapping.
func outcomeOf(err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok {
		return errors.New(st.Code().String() + ": " + st.Message())
	}
	return err
}

// ListAuditEvents pages through a job's audit trail, oldest first.
func (s *Server) ListAuditEvents(ctx context.Context, req *spoolv1.ListAuditEventsRequest) (*spoolv1.ListAuditEventsResponse, error) {
	if s.o.Audit == nil {
		return nil, status.Error(codes.Unimplemented, "no audit trail configured")
	}
	if req.GetJobId() == "" {
		return nil, status.Error(codes.InvalidArgument, "job_id is required")
	}
	size, err := pageSize("page_size", req.GetPageSize(), DefaultAuditPage, MaxAuditPage)
	if err != nil {
		return nil, err
	}
	events, next, err := s.o.Audit.List(ctx, req.GetJobId(), int32(size), req.GetPageToken())
	switch {
	case errors.Is(err, audit.ErrBadToken):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case err != nil:
		return nil, scanStatus(ctx, err)
	}
	out := &spoolv1.ListAuditEventsResponse{NextPageToken: next}
	for _, e := range events {
		out.Events = append(out.Events, eventProto(e))
	}
	return out, nil
}

func eventProto(e audit.Event) *spoolv1.AuditEvent {
	p := &spoolv1.AuditEvent{
		EventId: e.ID, JobId: e.JobID, Action: e.Action, Actor: e.Actor, At: timestamppb.New(e.At),
		Reason: e.Reason, ApprovedBy: e.ApprovedBy, RequestId: e.RequestID, Row: e.Row,
		Resolution: e.Resolution, RequestedAction: e.RequestedAction, Detail: e.Detail, Outcome: e.Outcome,
	}
	if !e.OutcomeAt.IsZero() {
		p.OutcomeAt = timestamppb.New(e.OutcomeAt)
	}
	return p
}
