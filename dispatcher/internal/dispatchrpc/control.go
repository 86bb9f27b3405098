package dispatchrpc

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spoolhq/spool/dispatcher/internal/audit"
	"github.com/spoolhq/spool/dispatcher/internal/deadletter"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/threshold"
)

// DeadLetters lists and redrives a job's dead letters (deadletter.Scanner).
type DeadLetters interface {
	List(ctx context.Context, jobID string, maxScan int, fn func(deadletter.Entry) error) (deadletter.Summary, error)
	Redrive(ctx context.Context, jobID string, maxScan int) (deadletter.Summary, error)
}

// Control changes a job on an operator's word. The job record is the
// shared truth every dispatcher gates on, so any dispatcher can serve it.
type Control interface {
	SetPaused(ctx context.Context, id string, paused bool) (*spoolv1.Job, error)
	End(ctx context.Context, id string, state spoolv1.JobState, reason string) (*spoolv1.Job, error)
	UpdateThreshold(ctx context.Context, id string, ch jobstore.ThresholdChange) (*spoolv1.Job, error)
}

// ListDeadLetters streams the job's dead letters, then the scan's summary.
func (s *Server) ListDeadLetters(req *spoolv1.ListDeadLettersRequest, stream grpc.ServerStreamingServer[spoolv1.ListDeadLettersResponse]) error {
	ctx := stream.Context()
	if s.o.DeadLetters == nil {
		return status.Error(codes.Unimplemented, "no dead-letter queue configured")
	}
	if req.GetJobId() == "" {
		return status.Error(codes.InvalidArgument, "job_id is required")
	}
	maxScan, err := s.maxScan(req.GetMaxScan())
	if err != nil {
		return err
	}
	sum, err := s.o.DeadLetters.List(ctx, req.GetJobId(), maxScan, func(e deadletter.Entry) error {
		return stream.Send(&spoolv1.ListDeadLettersResponse{Msg: &spoolv1.ListDeadLettersResponse_Entry{Entry: deadLetterProto(e)}})
	})
	if err != nil {
		return scanStatus(ctx, err)
	}
	return stream.Send(&spoolv1.ListDeadLettersResponse{Msg: &spoolv1.ListDeadLettersResponse_Summary{Summary: summaryProto(sum)}})
}

// RedriveDeadLetters moves the job's dead letters back to the main queue.
// Under four-eyes it only records a request, which ApproveRequest applies.
func (s *Server) RedriveDeadLetters(ctx context.Context, req *spoolv1.RedriveDeadLettersRequest) (*spoolv1.RedriveDeadLettersResponse, error) {
	if s.o.DeadLetters == nil {
		return nil, status.Error(codes.Unimplemented, "no dead-letter queue configured")
	}
	if req.GetJobId() == "" {
		return nil, status.Error(codes.InvalidArgument, "job_id is required")
	}
	// Checked before a four-eyes request is recorded, and again when the
	// redrive runs (the cap may have changed while it waited).
	if _, err := s.maxScan(req.GetMaxScan()); err != nil {
		return nil, err
	}
	if s.required(spoolv1.OperatorAction_OPERATOR_ACTION_REDRIVE) {
		p, err := s.request(ctx, audit.Request{
			Action: spoolv1.OperatorAction_OPERATOR_ACTION_REDRIVE, JobID: req.GetJobId(), MaxScan: req.GetMaxScan(), Reason: req.GetReason(),
		})
		if err != nil {
			return nil, err
		}
		return &spoolv1.RedriveDeadLettersResponse{PendingApproval: p}, nil
	}
	var sum *spoolv1.DeadLetterSummary
	err := s.audited(ctx, audit.Event{JobID: req.GetJobId(), Action: spoolv1.OperatorAction_OPERATOR_ACTION_REDRIVE, Reason: req.GetReason()}, func() error {
		var err error
		sum, err = s.redrive(ctx, req.GetJobId(), req.GetMaxScan())
		return err
	})
	if err != nil {
		return nil, err
	}
	return &spoolv1.RedriveDeadLettersResponse{Summary: sum}, nil
}

func (s *Server) redrive(ctx context.Context, jobID string, maxScan int32) (*spoolv1.DeadLetterSummary, error) {
	n, err := s.maxScan(maxScan)
	if err != nil {
		return nil, err
	}
	sum, err := s.o.DeadLetters.Redrive(ctx, jobID, n)
	if err != nil {
		// Some may have moved before the failure: say how many.
		return nil, scanStatus(ctx, fmt.Errorf("%d moved before: %w", sum.Matched, err))
	}
	s.o.Log.InfoContext(ctx, "dead letters redriven", "job_id", jobID, "moved", sum.Matched, "scanned", sum.Scanned, "complete", sum.Complete)
	return summaryProto(sum), nil
}

// maxScan checks a request's max_scan against the server's cap. A request
// over it is refused rather than cut down: a redrive that silently moved
// fewer letters than asked would read as done. 0 asks for the server's
// default, which the scanner fills in.
func (s *Server) maxScan(asked int32) (int, error) {
	switch {
	case asked < 0:
		return 0, status.Errorf(codes.InvalidArgument, "max_scan %d: want 0 (the server's default) or more", asked)
	case s.o.MaxScanLimit > 0 && int(asked) > s.o.MaxScanLimit:
		return 0, status.Errorf(codes.InvalidArgument, "max_scan %d is over the server's limit dead-letter-scan-max=%d; scan in parts (the summary says when a scan is complete)",
			asked, s.o.MaxScanLimit)
	}
	return int(asked), nil
}

// PauseJob pauses the job; every dispatcher sees it within its job cache
// time to live.
func (s *Server) PauseJob(ctx context.Context, req *spoolv1.PauseJobRequest) (*spoolv1.PauseJobResponse, error) {
	j, err := s.setPaused(ctx, req.GetJobId(), true, req.GetReason())
	if err != nil {
		return nil, err
	}
	return &spoolv1.PauseJobResponse{Job: j}, nil
}

// ResumeJob resumes a paused job.
func (s *Server) ResumeJob(ctx context.Context, req *spoolv1.ResumeJobRequest) (*spoolv1.ResumeJobResponse, error) {
	j, err := s.setPaused(ctx, req.GetJobId(), false, req.GetReason())
	if err != nil {
		return nil, err
	}
	return &spoolv1.ResumeJobResponse{Job: j}, nil
}

func (s *Server) setPaused(ctx context.Context, id string, paused bool, reason string) (*spoolv1.Job, error) {
	if s.o.Control == nil {
		return nil, status.Error(codes.Unimplemented, "job control not configured")
	}
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "job_id is required")
	}
	action := spoolv1.OperatorAction_OPERATOR_ACTION_RESUME
	if paused {
		action = spoolv1.OperatorAction_OPERATOR_ACTION_PAUSE
	}
	var j *spoolv1.Job
	err := s.audited(ctx, audit.Event{JobID: id, Action: action, Reason: reason}, func() error {
		var err error
		j, err = s.o.Control.SetPaused(ctx, id, paused)
		return controlStatus(ctx, err)
	})
	if err != nil {
		return nil, err
	}
	s.o.Log.InfoContext(ctx, "job paused flag set", "job_id", id, "paused", paused, "by", actor(ctx))
	return j, nil
}

// CancelJob ends the job CANCELLED; dispatchers drop its remaining rows.
func (s *Server) CancelJob(ctx context.Context, req *spoolv1.CancelJobRequest) (*spoolv1.CancelJobResponse, error) {
	if s.o.Control == nil {
		return nil, status.Error(codes.Unimplemented, "job control not configured")
	}
	if req.GetJobId() == "" {
		return nil, status.Error(codes.InvalidArgument, "job_id is required")
	}
	reason := req.GetReason()
	if reason == "" {
		reason = "cancelled by an operator"
	}
	var j *spoolv1.Job
	err := s.audited(ctx, audit.Event{JobID: req.GetJobId(), Action: spoolv1.OperatorAction_OPERATOR_ACTION_CANCEL, Reason: req.GetReason()}, func() error {
		var err error
		j, err = s.o.Control.End(ctx, req.GetJobId(), spoolv1.JobState_JOB_STATE_CANCELLED, reason)
		return controlStatus(ctx, err)
	})
	if err != nil {
		return nil, err
	}
	s.o.Log.InfoContext(ctx, "job cancelled", "job_id", req.GetJobId(), "by", actor(ctx))
	return &spoolv1.CancelJobResponse{Job: j}, nil
}

// UpdateJob changes the job's failure threshold; a job its threshold
// paused resumes when the new one is not crossed (see
// jobstore.Store.UpdateThreshold).
func (s *Server) UpdateJob(ctx context.Context, req *spoolv1.UpdateJobRequest) (*spoolv1.UpdateJobResponse, error) {
	if s.o.Control == nil {
		return nil, status.Error(codes.Unimplemented, "job control not configured")
	}
	if req.GetJobId() == "" {
		return nil, status.Error(codes.InvalidArgument, "job_id is required")
	}
	if req.MaxFailures == nil && req.MaxFailureRate == nil && req.MinSettled == nil {
		return nil, status.Error(codes.InvalidArgument, "nothing to change: set max_failures, max_failure_rate or min_settled")
	}
	// Validated as the threshold they make; a negative max_failures is
	// allowed here, as the request's way to remove the count limit.
	if err := threshold.Validate(&spoolv1.FailureThreshold{MaxFailureRate: req.GetMaxFailureRate(), MinSettled: req.GetMinSettled()}); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	var j *spoolv1.Job
	err := s.audited(ctx, audit.Event{
		JobID: req.GetJobId(), Action: spoolv1.OperatorAction_OPERATOR_ACTION_UPDATE, Reason: req.GetReason(), Detail: updateDetail(req),
	}, func() error {
		var err error
		j, err = s.o.Control.UpdateThreshold(ctx, req.GetJobId(), jobstore.ThresholdChange{
			MaxFailures: req.MaxFailures, MaxFailureRate: req.MaxFailureRate, MinSettled: req.MinSettled,
		})
		return controlStatus(ctx, err)
	})
	if err != nil {
		return nil, err
	}
	s.o.Log.InfoContext(ctx, "job threshold updated", "job_id", req.GetJobId(), "threshold", threshold.Describe(j.GetFailureThreshold()),
		"paused", j.GetPaused(), "pause_cause", j.GetPauseCause().String())
	return &spoolv1.UpdateJobResponse{Job: j}, nil
}

// updateDetail says what an UpdateJob asks to change, for its audit event.
func updateDetail(req *spoolv1.UpdateJobRequest) string {
	var parts []string
	if req.MaxFailures != nil {
		parts = append(parts, fmt.Sprintf("max_failures=%d", req.GetMaxFailures()))
	}
	if req.MaxFailureRate != nil {
		parts = append(parts, fmt.Sprintf("max_failure_rate=%g", req.GetMaxFailureRate()))
	}
	if req.MinSettled != nil {
		parts = append(parts, fmt.Sprintf("min_settled=%d", req.GetMinSettled()))
	}
	return strings.Join(parts, " ")
}

func controlStatus(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, jobstore.ErrState) {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return toStatus(ctx, err)
}

func scanStatus(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	return status.Error(codes.Unavailable, err.Error())
}

func deadLetterProto(e deadletter.Entry) *spoolv1.DeadLetter {
	d := &spoolv1.DeadLetter{
		JobId: e.JobID, Row: e.Row, Reason: e.Reason.Reason, Status: int32(e.Reason.Status),
		Attempts: int32(e.Reason.Attempts), DispatcherId: e.Reason.Dispatcher, MessageId: e.MessageID,
	}
	if !e.Reason.At.IsZero() {
		d.DeadLetteredAt = timestamppb.New(e.Reason.At)
	}
	return d
}

func summaryProto(s deadletter.Summary) *spoolv1.DeadLetterSummary {
	return &spoolv1.DeadLetterSummary{Matched: s.Matched, Scanned: s.Scanned, Complete: s.Complete, HeldElsewhere: s.HeldElsewhere}
}
