package ingest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/ingestor/internal/admit"
	"github.com/spoolhq/spool/ingestor/internal/csvread"
	"github.com/spoolhq/spool/ingestor/internal/profile"
	"github.com/spoolhq/spool/platform/auth"
	"github.com/spoolhq/spool/platform/jobstore"
)

// opened is a stream admitted before its job is touched: every check of
// its header, profile and columns passed, and a resume fits the job it
// names as far as the job's record tells.
type opened struct {
	header   *spoolv1.FileHeader // as admitted: the profile's columns merged in
	key      string              // the job key; "" when the file has none
	existing *spoolv1.Job        // the job the key names; nil when none
	resume   *spoolv1.Resume     // nil for a fresh stream
	reader   *csvread.Reader
	cols     []string
	rows     *admit.Rows
	// hash receives a chunk stream's raw bytes. Nothing is written to it
	// before the first row, so a resume restores the checkpoint's digest
	// into it once the job is taken over.
	hash    hash.Hash
	chunked bool // known before the takeover for resumes only
}

// open reads the header and admits the stream. A key that names a job
// decides before anything else is read: a finished job is answered as it
// is (existing is then done), a receiving one only takes a resume. The
// columns may be the first record of the data and the job record holds
// them, so they are read here too: a file refused here never becomes a
// job, and a resume refused here leaves its job and the stream that owns
// it alone.
func (s *Server) open(ctx context.Context, stream grpc.ClientStreamingServer[spoolv1.StreamFileRequest, spoolv1.StreamFileResponse]) (*opened, error) {
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return nil, status.Error(codes.InvalidArgument, "empty stream: the first message must be a header")
	}
	if err != nil {
		return nil, readStatus(ctx, fmt.Errorf("receive header: %w", err))
	}
	header := first.GetHeader()
	if header == nil {
		return nil, status.Error(codes.InvalidArgument, "the first message must be a header")
	}
	if err := checkDryRun(header); err != nil {
		return nil, err
	}
	// Business keys decide which rows count as the same payment, so a
	// caller who may not declare them must not smuggle them in inline.
	// Checked before anything is read or created.
	if caller, ok := auth.FromContext(ctx); ok && len(header.GetInlineProfile().GetBusinessKeyColumns()) > 0 && !caller.Has(auth.PermInlineKeys) {
		return nil, auth.Denied(ctx, s.cfg.Log, auth.PermInlineKeys)
	}
	p, err := admit.Profile(header, s.cfg.Profiles)
	if err != nil {
		return nil, readStatus(ctx, err)
	}
	file, err := admit.Header(header, p)
	if err != nil {
		return nil, readStatus(ctx, err)
	}
	if err := s.checkDeliverAfter(header); err != nil {
		return nil, err
	}
	o := &opened{header: file.Header(), key: jobKeyOf(file.Header()), resume: header.GetResume(), hash: sha256.New()}
	// A dry run reads the file whatever job its key names: it creates and
	// touches none.
	if o.key != "" && !header.GetDryRun() {
		o.existing, err = s.jobs.GetByKey(ctx, o.key)
		if errors.Is(err, jobstore.ErrNotFound) {
			o.existing, err = nil, nil
		}
		if err == nil && o.existing != nil && !s.mayRead(ctx, o.existing) {
			// Another submitter's job: neither its state nor a take-over
			// of its stream is this caller's business.
			return nil, auth.Denied(ctx, s.cfg.Log, auth.PermView)
		}
		if err == nil && o.existing != nil {
			o.existing, err = s.jobs.ExpireIfAbandoned(ctx, o.existing)
		}
		if err != nil {
			return nil, storeStatus(ctx, err)
		}
		if isDone(o.existing) {
			return o, nil
		}
	}
	if o.resume != nil {
		if err := o.checkResume(); err != nil {
			return nil, err
		}
	} else if o.existing.GetState() == spoolv1.JobState_JOB_STATE_RECEIVING {
		return nil, receivingStatus(o.existing)
	}

	opts := s.cfg.CSV
	opts.Hash = o.hash
	if o.resume != nil {
		opts.Resume = &csvread.Resume{AfterRow: o.resume.GetAfterRow(), Offset: o.resume.GetOffset(), Columns: o.existing.GetColumns()}
	}
	if o.reader, err = csvread.New(stream, o.header, opts); err != nil {
		return nil, readStatus(ctx, err)
	}
	if o.cols, err = o.reader.Columns(); err != nil {
		s.cfg.Log.InfoContext(ctx, "stream refused", "error", err)
		return nil, readStatus(ctx, err)
	}
	if o.rows, err = file.Columns(o.cols); err != nil {
		return nil, readStatus(ctx, err)
	}
	if o.resume != nil {
		if err := o.checkResumeMode(ctx); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// checkResume checks a resume against the job its key names, as far as
// the header alone tells.
func (o *opened) checkResume() error {
	res, j := o.resume, o.existing
	switch {
	case o.key == "":
		return status.Error(codes.InvalidArgument, "resume needs the job key of the broken stream (job_key or control.sha256)")
	case j == nil:
		return status.Errorf(codes.NotFound, "no job has key %s; submit the file without resume", o.key)
	case j.GetState() != spoolv1.JobState_JOB_STATE_RECEIVING:
		return status.Errorf(codes.FailedPrecondition, "job %s is %s (%s); submit the file again without resume",
			j.GetJobId(), strings.TrimPrefix(j.GetState().String(), "JOB_STATE_"), j.GetStateReason())
	case res.GetAfterRow() < 0 || res.GetAfterRow() > j.GetResumeRow():
		return status.Errorf(codes.FailedPrecondition, "resume after_row=%d is past the job's last durably published row %d",
			res.GetAfterRow(), j.GetResumeRow())
	}
	// The rows already published carry the job's transaction keys and
	// amounts; the rest must be read the same way.
	var vs []profile.Violation
	if !slices.Equal(o.header.GetBusinessKeyColumns(), j.GetBusinessKeyColumns()) {
		vs = append(vs, profile.Violation{Field: "header.business_key_columns",
			Description: fmt.Sprintf("differ from those of job %s (%s)", j.GetJobId(), strings.Join(j.GetBusinessKeyColumns(), ", "))})
	}
	if o.header.GetAmountColumn() != j.GetAmountColumn() {
		vs = append(vs, profile.Violation{Field: "header.amount_column",
			Description: fmt.Sprintf("differs from that of job %s (%q)", j.GetJobId(), j.GetAmountColumn())})
	}
	if len(vs) > 0 {
		return admissionStatus(&profile.Error{Subject: "header", Violations: vs}).Err()
	}
	return nil
}

// checkResumeMode checks a resumed stream against the job's checkpoint
// once its mode is known, which takes its first data message. Chunks must
// start exactly at the checkpoint, because their rows are numbered from it
// and the file's hash continues there.
func (o *opened) checkResumeMode(ctx context.Context) error {
	chunked, err := o.reader.Chunked()
	if err != nil {
		return readStatus(ctx, err)
	}
	o.chunked = chunked
	return checkChunkStart(o.resume, o.existing.GetResumeRow(), o.existing.GetResumeOffset(), o.chunked)
}

// checkChunkStart refuses chunks that do not start at the checkpoint.
func checkChunkStart(res *spoolv1.Resume, row, offset int64, chunked bool) error {
	if chunked && (res.GetOffset() != offset || res.GetAfterRow() != row) {
		return status.Errorf(codes.FailedPrecondition,
			"chunks must resume at the checkpoint: after_row=%d offset=%d, the job's resume_row=%d resume_offset=%d",
			res.GetAfterRow(), res.GetOffset(), row, offset)
	}
	return nil
}

// jobKeyOf is the key that identifies the file: the caller's, or else the
// declared SHA-256 of its bytes.
func jobKeyOf(h *spoolv1.FileHeader) string {
	if k := h.GetJobKey(); k != "" {
		return k
	}
	if sum := h.GetControl().GetSha256(); sum != "" {
		return "sha256:" + strings.ToLower(sum)
	}
	return ""
}

func isDone(j *spoolv1.Job) bool {
	return j.GetState() == spoolv1.JobState_JOB_STATE_SEALED || j.GetState() == spoolv1.JobState_JOB_STATE_COMPLETED
}

// sendExisting answers a submission of a file that is already a job:
// nothing is read or published.
func sendExisting(stream grpc.ClientStreamingServer[spoolv1.StreamFileRequest, spoolv1.StreamFileResponse], j *spoolv1.Job) error {
	return stream.SendAndClose(&spoolv1.StreamFileResponse{
		JobId:         j.GetJobId(),
		RowsReceived:  j.GetRowsReceived(),
		RowsPublished: j.GetRowsPublished(),
		RowsRejected:  j.GetRowsRejected(),
		Job:           j,
		Existing:      true,
	})
}
