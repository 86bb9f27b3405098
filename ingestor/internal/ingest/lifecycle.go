package ingest

import (
	"context"
	"encoding"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/auth"
	"github.com/spoolhq/spool/platform/jobstore"
)

// endTimeout bounds the writes that end or checkpoint a job after its
// stream failed. They run after the stream's context is done, so they need
// their own deadline.
const endTimeout = 10 * time.Second

// streamState is what a stream knows about its job once it owns it.
type streamState struct {
	id   string // the stream id that fences the job's writes
	key  string
	job  *spoolv1.Job        // nil until created or taken over
	base jobstore.Checkpoint // the job's checkpoint when taken over
}

// errFenced is the cause of a stream's cancellation when its job was taken
// over by a resumed stream or ended.
var errFenced = errors.New("job no longer owned by this stream")

// unrecordedError is the cause of a stream's cancellation when its
// progress could not be written for so long that its lease may run out.
type unrecordedError struct {
	since time.Duration
	err   error
}

func (e *unrecordedError) Error() string {
	return fmt.Sprintf("record progress: no write succeeded for %s: %v", e.since.Round(time.Millisecond), e.err)
}

func (e *unrecordedError) Unwrap() error { return e.err }

// create starts the job of a fresh stream, claiming its key.
func (s *Server) create(ctx context.Context, o *opened, st *streamState) error {
	h := o.header
	j, err := s.jobs.Start(ctx, &spoolv1.Job{
		JobId: s.cfg.NewID(), JobKey: st.key, FileName: h.GetFileName(), Columns: o.cols, SubmittedBy: submitter(ctx),
		Control: h.GetControl(), BusinessKeyColumns: h.GetBusinessKeyColumns(), AmountColumn: h.GetAmountColumn(),
		FailureThreshold: h.GetFailureThreshold(), Canary: canaryOf(h), DeliverAfter: h.GetDeliverAfter(),
	}, st.id)
	var taken *jobstore.KeyTakenError
	if errors.As(err, &taken) {
		// A concurrent submission of the same key won the race.
		if isDone(taken.Job) {
			return status.Errorf(codes.AlreadyExists, "job key %s was submitted meanwhile as job %s (%s)", st.key,
				taken.Job.GetJobId(), strings.TrimPrefix(taken.Job.GetState().String(), "JOB_STATE_"))
		}
		return receivingStatus(taken.Job)
	}
	if err != nil {
		return storeStatus(ctx, err)
	}
	st.job = j
	return nil
}

// submitter names the authenticated caller, recorded on the job it
// creates.
func submitter(ctx context.Context) string {
	p, _ := auth.FromContext(ctx)
	return p.Subject
}

// takeover makes this stream the owner of the receiving job its key names;
// open checked everything the header and the job's record could tell.
// Rows between after_row and the job's checkpoint, and any the broken
// stream published past it, are published again; that is harmless, because
// a row keeps its number and transaction key and the dispatchers' delivery
// ledger suppresses the second message of a transaction.
//
// The checkpoint the takeover returns is the one that counts: the broken
// stream may still have moved it since open read the job. Chunks that no
// longer start at it are refused; the job then stays RECEIVING, owned by
// this stream, as after any break, and may be resumed again.
func (s *Server) takeover(ctx context.Context, o *opened, st *streamState) error {
	res := o.resume
	j, cp, err := s.jobs.Takeover(ctx, o.existing.GetJobId(), st.id)
	if errors.Is(err, jobstore.ErrState) {
		return status.Errorf(codes.FailedPrecondition, "job %s ended before it could be resumed", o.existing.GetJobId())
	}
	if err != nil {
		return storeStatus(ctx, err)
	}
	st.job, st.base = j, cp
	hashed := false
	if res.GetOffset() == cp.Offset && len(cp.HashState) > 0 {
		hashed = o.hash.(encoding.BinaryUnmarshaler).UnmarshalBinary(cp.HashState) == nil
	}
	if cp.Row == 0 && res.GetOffset() == 0 {
		// Nothing was durable: the file starts over, hash included.
		o.hash.Reset()
		hashed = true
	}
	if err := checkChunkStart(res, cp.Row, cp.Offset, o.chunked); err != nil {
		return err
	}
	if o.chunked && !hashed {
		return status.Errorf(codes.FailedPrecondition, "job %s has no hash state at offset %d to continue", j.GetJobId(), res.GetOffset())
	}
	return nil
}

// reportProgress writes the job's counters and checkpoint every interval
// until the returned function is called, renewing the stream's lease; that
// function waits for the last write, so no progress write can land after
// the job is sealed or ended. When the store says the stream no longer
// owns the job, the stream is cancelled with errFenced.
//
// A failed write is retried at the next tick: the checkpoint it carried is
// not durable, and the job keeps the last one that was, which a resume
// starts from. But each write also renews the lease; a stream that has not
// renewed it for half of AbortAfter stops (cancelled with an
// *unrecordedError) rather than go on publishing rows of a job that may be
// ended under it.
func (s *Server) reportProgress(ctx context.Context, log *slog.Logger, j *job, cancel context.CancelCauseFunc) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(s.cfg.ProgressInterval)
		defer t.Stop()
		renewed := s.cfg.Now() // the takeover or creation renewed the lease
		for {
			select {
			case <-t.C:
			case <-done:
				return
			case <-ctx.Done():
				return
			}
			in := j.ingest(false)
			err := s.jobs.RecordIngest(ctx, j.id, in)
			if errors.Is(err, jobstore.ErrState) {
				log.WarnContext(ctx, "stream lost its job", "error", err)
				cancel(errFenced)
				return
			}
			if err != nil {
				since := s.cfg.Now().Sub(renewed)
				if since >= s.cfg.AbortAfter/2 {
					log.ErrorContext(ctx, "record progress; stream stops", "error", err, "since", since.String())
					cancel(&unrecordedError{since: since, err: err})
					return
				}
				log.WarnContext(ctx, "record progress", "error", err, "since", since.String())
				continue
			}
			renewed = s.cfg.Now()
			log.DebugContext(ctx, "progress", "rows_received", in.Received, "rows_published", in.Published,
				"rows_rejected", in.Rejected, "resume_row", in.Checkpoint.Row)
		}
	})
	return func() { close(done); wg.Wait() }
}

// seal ends a stream that read its file to the end with every row
// acknowledged: the job is SEALED, or REJECTED when a control total does
// not match.
func (s *Server) seal(ctx context.Context, stream grpc.ClientStreamingServer[spoolv1.StreamFileRequest, spoolv1.StreamFileResponse],
	log *slog.Logger, st *streamState, j *job, start time.Time) error {
	in := j.ingest(true)
	sealed, err := s.jobs.Seal(ctx, j.id, in)
	if errors.Is(err, jobstore.ErrState) {
		return fencedStatus(j.id)
	}
	if err != nil {
		// The rows are published; the stream may be resumed to seal it.
		return s.fail(ctx, log, st, j, storeStatus(ctx, fmt.Errorf("seal: %w", err)))
	}
	elapsed := s.cfg.Now().Sub(start)
	if sealed.GetState() == spoolv1.JobState_JOB_STATE_REJECTED {
		log.WarnContext(ctx, "job rejected", "reason", sealed.GetStateReason())
		return status.Errorf(codes.InvalidArgument, "job %s rejected, nothing will be delivered: %s", j.id, sealed.GetStateReason())
	}
	log.InfoContext(ctx, "job sealed",
		"rows_received", in.Received, "rows_published", in.Published, "rows_rejected", in.Rejected,
		"duration", elapsed.Round(time.Millisecond).String(), "rows_per_second", rate(in.Received, elapsed))
	return stream.SendAndClose(&spoolv1.StreamFileResponse{
		JobId:         j.id,
		RowsReceived:  in.Received,
		RowsPublished: in.Published,
		RowsRejected:  in.Rejected,
		Errors:        j.errors,
		Job:           sealed,
	})
}

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// fail handles a stream that cannot go on and returns its failure. Bad
// input and exceeded limits are the file's fault: the job ends REJECTED.
// Anything else (the client went away, the server is stopping, SQS or the
// table failed) may be resumed: the job keeps its last durable checkpoint
// and stays RECEIVING until its lease expires, unless it has no key to
// resume by, in which case it ends ABORTED now. j is nil when no row was
// read.
func (s *Server) fail(ctx context.Context, log *slog.Logger, st *streamState, j *job, failure error) error {
	fs := status.Convert(failure)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), endTimeout)
	defer cancel()
	id := st.job.GetJobId()
	var state spoolv1.JobState
	switch {
	case fs.Code() == codes.InvalidArgument || fs.Code() == codes.ResourceExhausted:
		state = spoolv1.JobState_JOB_STATE_REJECTED
	case st.key == "":
		state = spoolv1.JobState_JOB_STATE_ABORTED
	default:
		const broke = "stream broke; job stays receiving until resumed or its lease expires"
		if j == nil {
			log.WarnContext(ctx, broke, "code", fs.Code().String(), "reason", fs.Message())
			return failure
		}
		// The last checkpoint is worth a write: a resume then publishes
		// fewer rows again. When the write fails, the job keeps the last
		// checkpoint that was written, which is the one a resume uses.
		in := j.ingest(false)
		if err := s.jobs.RecordIngest(wctx, id, in); err != nil {
			log.ErrorContext(ctx, broke+"; its last checkpoint was not recorded", "code", fs.Code().String(), "reason", fs.Message(),
				"error", err, "unrecorded_resume_row", in.Checkpoint.Row)
			return failure
		}
		log.WarnContext(ctx, broke, "code", fs.Code().String(), "reason", fs.Message(), "resume_row", in.Checkpoint.Row)
		return failure
	}
	reason := fs.Message()
	if state == spoolv1.JobState_JOB_STATE_ABORTED {
		reason = "stream broke and the job has no key to resume it by: " + reason
	}
	if _, err := s.jobs.EndStream(wctx, id, st.id, state, reason); err != nil {
		log.ErrorContext(ctx, "end job", "error", err, "state", state.String(), "reason", reason)
		return failure
	}
	log.WarnContext(ctx, "job ended", "state", state.String(), "code", fs.Code().String(), "reason", reason)
	return failure
}
