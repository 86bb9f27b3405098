package dispatchrpc

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spoolhq/spool/dispatcher/internal/audit"
	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/decimal"
	"github.com/spoolhq/spool/platform/jobstore"
)

// Ledger is the part of the delivery ledger reports and resolutions use.
type Ledger interface {
	Report(ctx context.Context, jobID string, fn func(ledger.Record) error) error
	Row(ctx context.Context, jobID string, row int64) (ledger.Record, error)
	Resolve(ctx context.Context, jobID string, row int64, res spoolv1.Resolution, by ledger.Resolver) (ledger.Record, jobstore.Counts, error)
}

// Counter accumulates job counter deltas.
type Counter interface {
	Add(jobID string, c jobstore.Counts)
}

// ReportJob streams every ledger entry of the job (UNKNOWN first, then by
// state, rows ascending), then a summary with the job and, per state, the
// row count and the exact sum of the amounts.
func (s *Server) ReportJob(req *spoolv1.ReportJobRequest, stream grpc.ServerStreamingServer[spoolv1.ReportJobResponse]) error {
	ctx := stream.Context()
	if s.o.Ledger == nil {
		return status.Error(codes.Unimplemented, "no delivery ledger configured")
	}
	id := req.GetJobId()
	if id == "" {
		return status.Error(codes.InvalidArgument, "job_id is required")
	}
	job, err := s.jobs.Get(ctx, id)
	if err != nil {
		return toStatus(ctx, err)
	}
	totals := map[spoolv1.TransactionState]*stateTotal{}
	err = s.o.Ledger.Report(ctx, id, func(r ledger.Record) error {
		t := totals[r.State]
		if t == nil {
			t = &stateTotal{}
			totals[r.State] = t
		}
		t.rows++
		t.sum.Add(r.Amount)
		return stream.Send(&spoolv1.ReportJobResponse{Msg: &spoolv1.ReportJobResponse_Entry{Entry: r.Entry()}})
	})
	if err != nil {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		return status.Errorf(codes.Unavailable, "read ledger: %v", err)
	}
	sum := &spoolv1.ReportSummary{Job: job}
	for _, st := range ledger.ReportOrder {
		if t := totals[st]; t != nil {
			sum.Totals = append(sum.Totals, &spoolv1.StateTotal{State: st, Rows: t.rows, AmountSum: t.sum.String()})
		}
	}
	return stream.Send(&spoolv1.ReportJobResponse{Msg: &spoolv1.ReportJobResponse_Summary{Summary: sum}})
}

type stateTotal struct {
	rows int64
	sum  decimal.Total
}

// ResolveTransaction settles an UNKNOWN row: DELIVERED records it so;
// RESEND marks it and puts its envelope back on the queue. Under
// four-eyes it only records a request, which ApproveRequest applies.
func (s *Server) ResolveTransaction(ctx context.Context, req *spoolv1.ResolveTransactionRequest) (*spoolv1.ResolveTransactionResponse, error) {
	if s.o.Ledger == nil {
		return nil, status.Error(codes.Unimplemented, "no delivery ledger configured")
	}
	switch {
	case req.GetJobId() == "":
		return nil, status.Error(codes.InvalidArgument, "job_id is required")
	case req.GetRow() <= 0:
		return nil, status.Error(codes.InvalidArgument, "row must be positive")
	case req.GetResolution() != spoolv1.Resolution_RESOLUTION_DELIVERED && req.GetResolution() != spoolv1.Resolution_RESOLUTION_RESEND:
		return nil, status.Error(codes.InvalidArgument, "resolution must be DELIVERED or RESEND")
	}
	if s.required(spoolv1.OperatorAction_OPERATOR_ACTION_RESOLVE) {
		// A request no approval could apply is refused now, not after a
		// second person has looked at it; the approval checks again.
		if err := s.resolvable(ctx, req.GetJobId(), req.GetRow(), req.GetResolution()); err != nil {
			return nil, err
		}
		p, err := s.request(ctx, audit.Request{
			Action: spoolv1.OperatorAction_OPERATOR_ACTION_RESOLVE, JobID: req.GetJobId(), Row: req.GetRow(),
			Resolution: req.GetResolution(), Reason: req.GetReason(),
		})
		if err != nil {
			return nil, err
		}
		return &spoolv1.ResolveTransactionResponse{PendingApproval: p}, nil
	}
	var entry *spoolv1.LedgerEntry
	err := s.audited(ctx, audit.Event{
		JobID: req.GetJobId(), Action: spoolv1.OperatorAction_OPERATOR_ACTION_RESOLVE, Reason: req.GetReason(),
		Row: req.GetRow(), Resolution: req.GetResolution(),
	}, func() error {
		var err error
		entry, err = s.resolve(ctx, req.GetJobId(), req.GetRow(), req.GetResolution(), ledger.Resolver{By: actor(ctx)})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &spoolv1.ResolveTransactionResponse{Entry: entry}, nil
}

// resolvable checks that the row is UNKNOWN, and for RESEND that its
// envelope was kept.
func (s *Server) resolvable(ctx context.Context, jobID string, row int64, res spoolv1.Resolution) error {
	r, err := s.o.Ledger.Row(ctx, jobID, row)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case err != nil:
		return status.Errorf(codes.Unavailable, "read row: %v", err)
	case r.State != spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN:
		return status.Errorf(codes.FailedPrecondition, "row %d of job %s is %s, not UNKNOWN", row, jobID, ledger.StateName(r.State))
	case res == spoolv1.Resolution_RESOLUTION_RESEND && len(r.Envelope) == 0:
		return status.Errorf(codes.FailedPrecondition, "row %d of job %s has no envelope kept to resend", row, jobID)
	}
	return nil
}

// resolve settles the row in the ledger, as by says, and requeues it for
// RESEND.
func (s *Server) resolve(ctx context.Context, jobID string, row int64, res spoolv1.Resolution, by ledger.Resolver) (*spoolv1.LedgerEntry, error) {
	r, counts, err := s.o.Ledger.Resolve(ctx, jobID, row, res, by)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return nil, status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ledger.ErrState):
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "resolve: %v", err)
	}
	if s.o.Counter != nil {
		s.o.Counter.Add(jobID, counts)
	}
	if res == spoolv1.Resolution_RESOLUTION_RESEND {
		env, err := r.EnvelopeProto()
		if err == nil && s.o.Requeue != nil {
			err = s.o.Requeue(ctx, env)
		}
		if err != nil {
			// The row stays UNKNOWN and marked: resolving it again requeues.
			return nil, status.Errorf(codes.Unavailable, "requeue row %d: %v; resolve again", row, err)
		}
	}
	s.o.Log.InfoContext(ctx, "transaction resolved", "job_id", jobID, "row", row, "resolution", res.String(),
		"resolved_by", by.By, "approved_by", by.ApprovedBy)
	return r.Entry(), nil
}
