package ingest

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/ingestor/internal/csvread"
	"github.com/spoolhq/spool/ingestor/internal/profile"
	"github.com/spoolhq/spool/ingestor/internal/publish"
	"github.com/spoolhq/spool/platform/jobstore"
)

// This file maps every failure of a stream to the gRPC status its caller
// gets. Bad input is InvalidArgument with BadRequest field violations, a
// limit ResourceExhausted with a QuotaFailure; the message is the error's
// own text, the same text `spool validate` prints for the same file.

// admissionStatus maps an error of admitting a file (package admit, or
// the CSV reader's header and limits) to its status, or returns nil when
// err is not one.
func admissionStatus(err error) *status.Status {
	var (
		lerr *csvread.LimitError
		herr *csvread.HeaderError
		perr *profile.Error
	)
	switch {
	case errors.As(err, &lerr):
		return withDetails(status.New(codes.ResourceExhausted, err.Error()), &errdetails.QuotaFailure{
			Violations: []*errdetails.QuotaFailure_Violation{{Subject: lerr.Limit, Description: fmt.Sprintf("%s=%d", lerr.Limit, lerr.Value)}},
		})
	case errors.As(err, &herr):
		field := "header.columns"
		if herr.Column > 0 {
			field = fmt.Sprintf("header.columns[%d]", herr.Column)
		}
		return withDetails(status.New(codes.InvalidArgument, err.Error()),
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: herr.Reason}}})
	case errors.As(err, &perr):
		br := &errdetails.BadRequest{}
		for _, v := range perr.Violations {
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: v.Field, Description: v.Description})
		}
		return withDetails(status.New(codes.InvalidArgument, err.Error()), br)
	case errors.Is(err, csvread.ErrInvalidInput):
		return status.New(codes.InvalidArgument, err.Error())
	}
	return nil
}

// readStatus maps an error of admitting or reading the stream: bad input,
// a limit, the call's context ending, or the transport's own status.
func readStatus(ctx context.Context, err error) error {
	if st := admissionStatus(err); st != nil {
		return st.Err()
	}
	if st := contextStatus(ctx, err); st != nil {
		return st
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return status.Error(st.Code(), err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// publishStatus maps a publisher failure: SQS refusing the request is a bug
// here (Internal); SQS failing to answer is Unavailable.
func publishStatus(ctx context.Context, err error) error {
	if st := contextStatus(ctx, err); st != nil {
		return st
	}
	if errors.Is(err, publish.ErrRejected) {
		return status.Error(codes.Internal, "publish: "+err.Error())
	}
	return status.Error(codes.Unavailable, "publish: "+err.Error())
}

// storeStatus maps a job store failure.
func storeStatus(ctx context.Context, err error) error {
	if st := contextStatus(ctx, err); st != nil {
		return st
	}
	if errors.Is(err, jobstore.ErrState) {
		return status.Error(codes.FailedPrecondition, "job store: "+err.Error())
	}
	return status.Error(codes.Unavailable, "job store: "+err.Error())
}

// contextStatus returns Canceled or DeadlineExceeded when the call's
// context ended, which is why the operation failed; nil otherwise.
func contextStatus(ctx context.Context, err error) error {
	switch {
	case errors.Is(ctx.Err(), context.Canceled) || (ctx.Err() == nil && errors.Is(err, context.Canceled)):
		return status.Error(codes.Canceled, "stream cancelled (the client went away or the server is stopping): "+err.Error())
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "the call's deadline passed: "+err.Error())
	}
	return nil
}

// fencedStatus is the answer of a stream whose job another stream took
// over, or that ended meanwhile.
func fencedStatus(id string) error {
	return status.Errorf(codes.FailedPrecondition, "job %s was resumed by another stream or ended; this stream stops", id)
}

// receivingStatus is the answer to a second submission of a file whose
// job is still receiving: the first stream may be alive, so only an
// explicit resume may take the job over.
func receivingStatus(j *spoolv1.Job) error {
	return status.Errorf(codes.FailedPrecondition, "job %s is still receiving (row %d published); resume with after_row=%d",
		j.GetJobKey(), j.GetResumeRow(), j.GetResumeRow())
}

// withRowErrors attaches row errors to st as BadRequest violations, and
// resp, when given, whole.
func withRowErrors(st *status.Status, errs []*spoolv1.RowError, resp *spoolv1.StreamFileResponse) error {
	br := &errdetails.BadRequest{}
	for _, e := range errs {
		field := fmt.Sprintf("row %d", e.GetRow())
		if e.GetColumn() != "" {
			field += ", column " + e.GetColumn()
		}
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: field, Description: e.GetReason()})
	}
	details := []protoadapt.MessageV1{br}
	if resp != nil {
		details = append(details, resp)
	}
	return withDetails(st, details...).Err()
}

// withDetails returns st with details, or st alone should they not encode.
func withDetails(st *status.Status, details ...protoadapt.MessageV1) *status.Status {
	if with, err := st.WithDetails(details...); err == nil {
		return with
	}
	return st
}
