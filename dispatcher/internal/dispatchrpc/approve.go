package dispatchrpc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spoolhq/spool/dispatcher/internal/audit"
	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/auth"
	"github.com/spoolhq/spool/platform/positive"
)

// Approvals keeps four-eyes requests (audit.Store).
type Approvals interface {
	Create(ctx context.Context, r audit.Request, ttl time.Duration) (audit.Request, error)
	Get(ctx context.Context, id string) (audit.Request, error)
	Approve(ctx context.Context, id, approver, reason string) (audit.Request, error)
	Settle(ctx context.Context, id string, actionErr error) (audit.Request, error)
	Pending(ctx context.Context, jobID string) ([]audit.Request, error)
}

// FourEyes says which actions need a second principal's approval.
type FourEyes struct {
	Resolve, Redrive bool
	// TTL is how long a request waits for its approval; DefaultRequestTTL
	// when 0.
	TTL time.Duration
}

// DefaultRequestTTL is how long a four-eyes request waits by default.
const DefaultRequestTTL = 24 * time.Hour

// required reports whether action needs approval. Without a store of
// requests nothing can wait, so nothing does.
func (s *Server) required(action spoolv1.OperatorAction) bool {
	if s.o.Approvals == nil {
		return false
	}
	switch action {
	case spoolv1.OperatorAction_OPERATOR_ACTION_RESOLVE:
		return s.o.FourEyes.Resolve
	case spoolv1.OperatorAction_OPERATOR_ACTION_REDRIVE:
		return s.o.FourEyes.Redrive
	}
	return false
}

// request records a four-eyes request for r's action, under a REQUEST
// event of the audit trail, and returns it.
func (s *Server) request(ctx context.Context, r audit.Request) (*spoolv1.ApprovalRequest, error) {
	ttl := positive.Or(s.o.FourEyes.TTL, DefaultRequestTTL)
	r.RequestedBy = actor(ctx)
	r.ID = audit.NewRequestID(s.o.Now())
	var made audit.Request
	err := s.audited(ctx, audit.Event{
		JobID: r.JobID, Action: spoolv1.OperatorAction_OPERATOR_ACTION_REQUEST, Reason: r.Reason, RequestID: r.ID,
		Row: r.Row, Resolution: r.Resolution, RequestedAction: r.Action,
	}, func() error {
		var err error
		made, err = s.o.Approvals.Create(ctx, r, ttl)
		if err != nil {
			return status.Errorf(codes.Unavailable, "record four-eyes request: %v", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.o.Log.InfoContext(ctx, "four-eyes request made", "job_id", r.JobID, "request_id", made.ID,
		"action", audit.ActionName(r.Action), "requested_by", made.RequestedBy)
	return s.requestProto(made), nil
}

// permissionOf is the permission an action needs, of its requester and of
// its approver alike.
func permissionOf(a spoolv1.OperatorAction) auth.Permission {
	if a == spoolv1.OperatorAction_OPERATOR_ACTION_REDRIVE {
		return auth.PermRedrive
	}
	return auth.PermResolve
}

// ApproveRequest approves another principal's four-eyes request and
// applies its action, once.
//
// Order of steps: an APPROVE event is written, then the conditional write
// PENDING → APPROVED decides; then the action's own event (named after
// the request, so a retry finds it rather than writing another), the
// action, its outcome, and APPROVED → APPLIED. A call that stops anywhere
// leaves the request APPROVED; approving it again by the same principal
// carries on from there, and the action, keyed by the request, applies
// once (a resolved row records its request; a redrive moves only what is
// still dead-lettered).
func (s *Server) ApproveRequest(ctx context.Context, req *spoolv1.ApproveRequestRequest) (*spoolv1.ApproveRequestResponse, error) {
	if s.o.Approvals == nil {
		return nil, status.Error(codes.Unimplemented, "four-eyes approval not configured")
	}
	if req.GetRequestId() == "" {
		return nil, status.Error(codes.InvalidArgument, "request_id is required")
	}
	r, err := s.o.Approvals.Get(ctx, req.GetRequestId())
	if err != nil {
		return nil, approvalStatus(ctx, err)
	}
	perm := permissionOf(r.Action)
	if p, ok := auth.FromContext(ctx); ok && !p.Has(perm) {
		return nil, status.Errorf(codes.PermissionDenied, "permission %q required to approve a %s request", perm, audit.ActionName(r.Action))
	}
	err = s.audited(ctx, audit.Event{
		JobID: r.JobID, Action: spoolv1.OperatorAction_OPERATOR_ACTION_APPROVE, Reason: req.GetReason(),
		RequestID: r.ID, Row: r.Row, Resolution: r.Resolution, RequestedAction: r.Action,
	}, func() error {
		var err error
		r, err = s.o.Approvals.Approve(ctx, r.ID, actor(ctx), req.GetReason())
		return approvalStatus(ctx, err)
	})
	if err != nil {
		return nil, err
	}
	if r.State != spoolv1.ApprovalState_APPROVAL_STATE_APPROVED {
		// Applied (or failed) by an earlier call whose answer was lost.
		return &spoolv1.ApproveRequestResponse{Request: s.requestProto(r)}, nil
	}
	return s.apply(ctx, r)
}

// apply takes an APPROVED request's action and settles the request.
func (s *Server) apply(ctx context.Context, r audit.Request) (*spoolv1.ApproveRequestResponse, error) {
	out := &spoolv1.ApproveRequestResponse{}
	// The action's event is named after the request, and timed a
	// millisecond after the approval, so that every attempt names the same
	// event and the trail lists it after the approve event (written
	// before the approval).
	ev := audit.Event{
		JobID: r.JobID, ID: r.ID + "-apply", At: r.ApprovedAt.Add(time.Millisecond), Action: r.Action, Actor: r.RequestedBy,
		Reason: r.Reason, ApprovedBy: r.ApprovedBy, RequestID: r.ID, Row: r.Row, Resolution: r.Resolution,
	}
	if s.o.Audit != nil {
		var err error
		if ev, err = s.o.Audit.Begin(ctx, ev); err != nil {
			return nil, status.Errorf(codes.Unavailable, "record audit event, so nothing was done; approve again to apply: %v", err)
		}
	}
	var actErr error
	if ev.Outcome != "" {
		// An earlier attempt applied it and recorded the outcome, but did
		// not settle the request: settle it, and apply nothing again.
		if ev.Outcome != "ok" {
			actErr = status.Errorf(codes.FailedPrecondition, "request %s was applied before, and failed: %s", r.ID, ev.Outcome)
		}
		if r.Action == spoolv1.OperatorAction_OPERATOR_ACTION_RESOLVE && s.o.Ledger != nil {
			if row, err := s.o.Ledger.Row(ctx, r.JobID, r.Row); err == nil {
				out.Entry = row.Entry()
			}
		}
	} else {
		actErr = s.act(ctx, r, out)
		if transient(actErr) {
			// Left APPROVED with the event open: approving again retries.
			return nil, status.Errorf(status.Code(actErr), "%s; approve again to retry", status.Convert(actErr).Message())
		}
		if s.o.Audit != nil {
			s.finish(ctx, ev, actErr)
		}
	}
	settled, err := s.o.Approvals.Settle(context.WithoutCancel(ctx), r.ID, outcomeOf(actErr))
	if err != nil {
		s.o.Log.WarnContext(ctx, "settle four-eyes request", "request_id", r.ID, "error", err)
		r.Outcome = fmt.Sprint(outcomeOf(actErr))
		settled = r
	}
	out.Request = s.requestProto(settled)
	if actErr != nil {
		return nil, actErr
	}
	s.o.Log.InfoContext(ctx, "four-eyes request applied", "job_id", r.JobID, "request_id", r.ID,
		"action", audit.ActionName(r.Action), "requested_by", r.RequestedBy, "approved_by", r.ApprovedBy)
	return out, nil
}

// act takes the action of an approved request, and puts its result in
// out.
func (s *Server) act(ctx context.Context, r audit.Request, out *spoolv1.ApproveRequestResponse) error {
	var err error
	switch {
	case r.Action == spoolv1.OperatorAction_OPERATOR_ACTION_RESOLVE && s.o.Ledger == nil,
		r.Action == spoolv1.OperatorAction_OPERATOR_ACTION_REDRIVE && s.o.DeadLetters == nil:
		// Unavailable, not a failure for good: another dispatcher can.
		err = status.Errorf(codes.Unavailable, "this dispatcher cannot %s: not configured", audit.ActionName(r.Action))
	case r.Action == spoolv1.OperatorAction_OPERATOR_ACTION_RESOLVE:
		by := ledger.Resolver{By: r.RequestedBy, ApprovedBy: r.ApprovedBy, Request: r.ID}
		out.Entry, err = s.resolve(ctx, r.JobID, r.Row, r.Resolution, by)
	case r.Action == spoolv1.OperatorAction_OPERATOR_ACTION_REDRIVE:
		out.Summary, err = s.redrive(ctx, r.JobID, r.MaxScan)
	default:
		err = status.Errorf(codes.FailedPrecondition, "request %s: no action %v", r.ID, r.Action)
	}
	return err
}

// transient says an action failed in a way worth trying again: the
// request stays APPROVED. A refusal for good (the row is not UNKNOWN, the
// job is gone) settles it FAILED.
func transient(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded, codes.Internal, codes.Unknown:
		return true
	}
	return false
}

// ListPendingRequests lists the four-eyes requests awaiting approval, and
// those approved but not yet applied (an approval cut short: approving
// again applies them).
func (s *Server) ListPendingRequests(ctx context.Context, req *spoolv1.ListPendingRequestsRequest) (*spoolv1.ListPendingRequestsResponse, error) {
	if s.o.Approvals == nil {
		return nil, status.Error(codes.Unimplemented, "four-eyes approval not configured")
	}
	reqs, err := s.o.Approvals.Pending(ctx, req.GetJobId())
	if err != nil {
		return nil, scanStatus(ctx, err)
	}
	out := &spoolv1.ListPendingRequestsResponse{}
	for _, r := range reqs {
		out.Requests = append(out.Requests, s.requestProto(r))
	}
	return out, nil
}

func approvalStatus(ctx context.Context, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, audit.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, audit.ErrSelf):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, audit.ErrExpired), errors.Is(err, audit.ErrState):
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return scanStatus(ctx, err)
}

func (s *Server) requestProto(r audit.Request) *spoolv1.ApprovalRequest {
	p := &spoolv1.ApprovalRequest{
		RequestId: r.ID, Action: r.Action, JobId: r.JobID, Row: r.Row, Resolution: r.Resolution,
		MaxScan: r.MaxScan, RequestedBy: r.RequestedBy, RequestedAt: timestamppb.New(r.RequestedAt),
		Reason: r.Reason, ExpiresAt: timestamppb.New(r.ExpiresAt), State: r.StateAt(s.o.Now()),
		ApprovedBy: r.ApprovedBy, ApproveReason: r.ApproveReason, Outcome: r.Outcome,
	}
	if !r.ApprovedAt.IsZero() {
		p.ApprovedAt = timestamppb.New(r.ApprovedAt)
	}
	return p
}
