// Package ingest serves spool.v1.IngestService: it turns one StreamFile
// stream into one job, publishing every valid row to the queue and keeping
// the job record up to date.
//
// A stream either ends with the job SEALED (every valid row acknowledged by
// SQS, the total known) or with the job ABORTED and an error status: a job
// is never left RECEIVING by a stream that is over.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/ingestor/internal/csvread"
	"github.com/spoolhq/spool/ingestor/internal/publish"
	"github.com/spoolhq/spool/platform/jobstore"
)

// abortTimeout bounds the write that marks a failed job ABORTED. It runs
// after the stream's context is done, so it needs its own deadline.
const abortTimeout = 10 * time.Second

// Jobs is the part of the job store the server uses.
type Jobs interface {
	Create(ctx context.Context, j *spoolv1.Job) (*spoolv1.Job, error)
	Get(ctx context.Context, id string) (*spoolv1.Job, error)
	RecordIngest(ctx context.Context, id string, in jobstore.Ingest) error
	Seal(ctx context.Context, id string, in jobstore.Ingest) (*spoolv1.Job, error)
	End(ctx context.Context, id string, state spoolv1.JobState, reason string) (*spoolv1.Job, error)
}

// Publisher publishes the rows of one stream (see publish.Publisher).
type Publisher interface {
	Publish(ctx context.Context, e *spoolv1.Envelope) error
	Flush(ctx context.Context) error
	Stats() publish.Stats
	Close()
}

// Config configures a Server.
type Config struct {
	// NewPublisher returns the publisher of one stream. Required.
	NewPublisher func() (Publisher, error)
	// MaxErrors caps the row errors returned in a response; the count of
	// rejected rows is never capped.
	MaxErrors int
	// ProgressInterval is how often a stream's counters are written to
	// the job record. Zero means every second.
	ProgressInterval time.Duration
	// CSV tunes the parsing of raw chunks.
	CSV csvread.Options
	// Log receives job events; never row contents.
	Log *slog.Logger
	// Now and NewID default to the clock and random UUIDs.
	Now   func() time.Time
	NewID func() string
}

// Server implements spoolv1.IngestServiceServer.
type Server struct {
	spoolv1.UnimplementedIngestServiceServer
	jobs Jobs
	cfg  Config
}

// New returns a server over jobs.
func New(jobs Jobs, cfg Config) *Server {
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = time.Second
	}
	if cfg.MaxErrors < 0 {
		cfg.MaxErrors = 0
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.NewID == nil {
		cfg.NewID = uuid.NewString
	}
	return &Server{jobs: jobs, cfg: cfg}
}

// GetJob returns a job's record.
func (s *Server) GetJob(ctx context.Context, req *spoolv1.GetJobRequest) (*spoolv1.GetJobResponse, error) {
	if req.GetJobId() == "" {
		return nil, status.Error(codes.InvalidArgument, "job_id is required")
	}
	j, err := s.jobs.Get(ctx, req.GetJobId())
	if errors.Is(err, jobstore.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "job %s not found", req.GetJobId())
	}
	if err != nil {
		return nil, storeStatus(ctx, err)
	}
	return &spoolv1.GetJobResponse{Job: j}, nil
}

// StreamFile reads one file and publishes its rows; see ingest.proto.
func (s *Server) StreamFile(stream grpc.ClientStreamingServer[spoolv1.StreamFileRequest, spoolv1.StreamFileResponse]) error {
	ctx := stream.Context()
	start := s.cfg.Now()
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return status.Error(codes.InvalidArgument, "empty stream: the first message must be a header")
	}
	if err != nil {
		return readStatus(ctx, fmt.Errorf("receive header: %w", err))
	}
	header := first.GetHeader()
	if header == nil {
		return status.Error(codes.InvalidArgument, "the first message must be a header")
	}
	r, err := csvread.New(stream, header, s.cfg.CSV)
	if err != nil {
		return readStatus(ctx, err)
	}
	// The columns may be the first record of the data, and the job record
	// holds them, so they are read before the job exists. A file refused
	// here never becomes a job.
	cols, err := r.Columns()
	if err != nil {
		s.cfg.Log.InfoContext(ctx, "stream refused", "err", err)
		return readStatus(ctx, err)
	}
	jobID := s.cfg.NewID()
	if _, err := s.jobs.Create(ctx, &spoolv1.Job{JobId: jobID, JobKey: header.GetJobKey(), FileName: header.GetFileName(), Columns: cols}); err != nil {
		return storeStatus(ctx, err)
	}
	log := s.cfg.Log.With("job_id", jobID)
	log.InfoContext(ctx, "job created", "columns", len(cols))

	pub, err := s.cfg.NewPublisher()
	if err != nil {
		return s.abort(ctx, log, jobID, status.Errorf(codes.Internal, "start publisher: %v", err))
	}
	defer pub.Close() // idempotent

	j := &job{id: jobID, cols: cols, pub: pub, maxErrors: s.cfg.MaxErrors}
	stopProgress := s.reportProgress(ctx, log, j)
	err = j.run(ctx, r, s.cfg.Now)
	stopProgress()
	if err != nil {
		// Stop sending before the job is marked ABORTED, so that no row
		// of it reaches the queue afterwards.
		pub.Close()
		return s.abort(ctx, log, jobID, err)
	}
	in := j.ingest()
	sealed, err := s.jobs.Seal(ctx, jobID, in)
	if err != nil {
		return s.abort(ctx, log, jobID, storeStatus(ctx, fmt.Errorf("seal: %w", err)))
	}
	elapsed := s.cfg.Now().Sub(start)
	log.InfoContext(ctx, "job sealed",
		"rows_received", in.Received, "rows_published", in.Published, "rows_rejected", in.Rejected,
		"duration", elapsed.Round(time.Millisecond).String(), "rows_per_second", rate(in.Received, elapsed))
	return stream.SendAndClose(&spoolv1.StreamFileResponse{
		JobId:         jobID,
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

// job is the state of one stream.
type job struct {
	id        string
	cols      []string
	pub       Publisher
	maxErrors int
	received  atomic.Int64
	rejected  atomic.Int64
	errors    []*spoolv1.RowError
}

// run reads every row and publishes the valid ones, then waits until SQS
// acknowledged all of them. Its error is a gRPC status.
func (j *job) run(ctx context.Context, r *csvread.Reader, now func() time.Time) error {
	for {
		row, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return readStatus(ctx, err)
		}
		j.received.Add(1)
		if row.Reject != nil {
			j.reject(row.Reject)
			continue
		}
		e := &spoolv1.Envelope{
			Version:        spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1,
			JobId:          j.id,
			Row:            row.Num,
			Fields:         make([]*spoolv1.Field, len(j.cols)),
			TransactionKey: j.id + ":" + strconv.FormatInt(row.Num, 10),
			PublishedAt:    timestamppb.New(now()),
		}
		for i, c := range j.cols {
			e.Fields[i] = &spoolv1.Field{Name: c, Value: row.Fields[i]}
		}
		err = j.pub.Publish(ctx, e)
		if errors.Is(err, publish.ErrTooLarge) {
			j.reject(&spoolv1.RowError{Row: row.Num, Reason: err.Error()})
			continue
		}
		if err != nil {
			return publishStatus(ctx, err)
		}
	}
	if err := j.pub.Flush(ctx); err != nil {
		return publishStatus(ctx, err)
	}
	return nil
}

func (j *job) reject(e *spoolv1.RowError) {
	j.rejected.Add(1)
	if len(j.errors) < j.maxErrors {
		j.errors = append(j.errors, e)
	}
}

// ingest returns the counters as the job record keeps them.
func (j *job) ingest() jobstore.Ingest {
	return jobstore.Ingest{Received: j.received.Load(), Published: j.pub.Stats().Published, Rejected: j.rejected.Load()}
}

// reportProgress writes the job's counters every interval until the
// returned function is called; that function waits for the last write, so
// no progress write can land after the job is sealed or aborted.
func (s *Server) reportProgress(ctx context.Context, log *slog.Logger, j *job) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(s.cfg.ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
			case <-done:
				return
			case <-ctx.Done():
				return
			}
			in := j.ingest()
			if err := s.jobs.RecordIngest(ctx, j.id, in); err != nil {
				log.WarnContext(ctx, "record progress", "err", err)
				continue
			}
			log.DebugContext(ctx, "progress", "rows_received", in.Received, "rows_published", in.Published,
				"rows_rejected", in.Rejected, "watermark", j.pub.Stats().Watermark)
		}
	})
	return func() { close(done); wg.Wait() }
}

// abort marks the job ABORTED with the failure as its reason and returns
// the failure. The stream's context is usually done by now (the client went
// away, or the server is stopping), so the write gets a fresh deadline.
func (s *Server) abort(ctx context.Context, log *slog.Logger, jobID string, failure error) error {
	st := status.Convert(failure)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	if _, err := s.jobs.End(wctx, jobID, spoolv1.JobState_JOB_STATE_ABORTED, st.Message()); err != nil {
		log.ErrorContext(ctx, "mark job aborted", "err", err, "reason", st.Message())
		return failure
	}
	log.WarnContext(ctx, "job aborted", "code", st.Code().String(), "reason", st.Message())
	return failure
}

// readStatus maps an error of reading the stream to a status: bad input,
// a limit, the client going away, or the transport's own status.
func readStatus(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, csvread.ErrInvalidInput):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, csvread.ErrLimit):
		return status.Error(codes.ResourceExhausted, err.Error())
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
