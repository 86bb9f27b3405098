// Package ingest serves spool.v1.IngestService: it turns one StreamFile
// stream into one job, publishing every valid row to the queue and keeping
// the job record up to date.
//
// A stream that reads its file to the end seals the job (every valid row
// acknowledged by SQS, the total known), or rejects it when a declared
// control total does not match. A stream that breaks leaves a job with a
// key RECEIVING: its client may resume it (see FileHeader.resume) until the
// stream's lease expires, after which the job is ABORTED by whoever
// notices. Bad input ends the job REJECTED at once; a job without a key
// cannot be resumed, so a broken stream ends it ABORTED at once.
package ingest

import (
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/timestamppb"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/ingestor/internal/csvread"
	"github.com/spoolhq/spool/ingestor/internal/profile"
	"github.com/spoolhq/spool/ingestor/internal/publish"
	"github.com/spoolhq/spool/platform/decimal"
	"github.com/spoolhq/spool/platform/jobstore"
)

// endTimeout bounds the writes that end or checkpoint a job after its
// stream failed. They run after the stream's context is done, so they need
// their own deadline.
const endTimeout = 10 * time.Second

// DefaultCheckpointEvery is how many rows pass between two resume
// checkpoints when Config leaves it zero.
const DefaultCheckpointEvery = 256

// Jobs is the part of the job store the server uses.
type Jobs interface {
	Start(ctx context.Context, j *spoolv1.Job, stream string) (*spoolv1.Job, error)
	Get(ctx context.Context, id string) (*spoolv1.Job, error)
	GetByKey(ctx context.Context, key string) (*spoolv1.Job, error)
	ExpireIfAbandoned(ctx context.Context, j *spoolv1.Job) (*spoolv1.Job, error)
	Takeover(ctx context.Context, id, stream string) (*spoolv1.Job, jobstore.Checkpoint, error)
	RecordIngest(ctx context.Context, id string, in jobstore.Ingest) error
	Seal(ctx context.Context, id string, in jobstore.Ingest) (*spoolv1.Job, error)
	EndStream(ctx context.Context, id, stream string, state spoolv1.JobState, reason string) (*spoolv1.Job, error)
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
	// ProgressInterval is how often a stream's counters and checkpoint are
	// written to the job record, renewing its lease. Zero means every
	// second.
	ProgressInterval time.Duration
	// CheckpointEvery is how many rows pass between two candidate resume
	// points. Zero means DefaultCheckpointEvery.
	CheckpointEvery int64
	// CSV tunes the parsing of raw chunks and the limits of every stream.
	CSV csvread.Options
	// Profiles are the profiles a FileHeader may name; nil means none.
	Profiles *profile.Set
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
	if cfg.CheckpointEvery <= 0 {
		cfg.CheckpointEvery = DefaultCheckpointEvery
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

// GetJob returns a job's record, by id or by job key. A job whose stream
// broke and was not resumed in time is ended ABORTED first, so the answer
// never offers a resume that would be refused.
func (s *Server) GetJob(ctx context.Context, req *spoolv1.GetJobRequest) (*spoolv1.GetJobResponse, error) {
	var (
		j   *spoolv1.Job
		err error
	)
	switch {
	case req.GetJobId() != "" && req.GetJobKey() != "":
		return nil, status.Error(codes.InvalidArgument, "give job_id or job_key, not both")
	case req.GetJobId() != "":
		j, err = s.jobs.Get(ctx, req.GetJobId())
	case req.GetJobKey() != "":
		j, err = s.jobs.GetByKey(ctx, req.GetJobKey())
	default:
		return nil, status.Error(codes.InvalidArgument, "job_id or job_key is required")
	}
	if errors.Is(err, jobstore.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "job %s%s not found", req.GetJobId(), req.GetJobKey())
	}
	if err == nil {
		j, err = s.jobs.ExpireIfAbandoned(ctx, j)
	}
	if err != nil {
		return nil, storeStatus(ctx, err)
	}
	return &spoolv1.GetJobResponse{Job: j}, nil
}

// ListProfiles returns the configured profiles.
func (s *Server) ListProfiles(context.Context, *spoolv1.ListProfilesRequest) (*spoolv1.ListProfilesResponse, error) {
	return &spoolv1.ListProfilesResponse{Profiles: s.cfg.Profiles.List()}, nil
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
	prof, header, err := s.applyProfile(header)
	if err != nil {
		return err
	}
	if err := checkControl(header.GetControl(), header.GetAmountColumn()); err != nil {
		return err
	}
	key := jobKeyOf(header)
	streamID := uuid.NewString()

	// A key that names a job decides before anything is read: a finished
	// job is answered as it is, a receiving one only takes a resume.
	var existing *spoolv1.Job
	if key != "" {
		existing, err = s.jobs.GetByKey(ctx, key)
		if errors.Is(err, jobstore.ErrNotFound) {
			existing, err = nil, nil
		}
		if err == nil && existing != nil {
			existing, err = s.jobs.ExpireIfAbandoned(ctx, existing)
		}
		if err != nil {
			return storeStatus(ctx, err)
		}
		if isDone(existing) {
			return sendExisting(stream, existing)
		}
	}
	st := &streamState{id: streamID, key: key}
	if header.GetResume() != nil {
		if err := s.takeover(ctx, header, existing, st); err != nil {
			return err
		}
	} else if existing.GetState() == spoolv1.JobState_JOB_STATE_RECEIVING {
		return receivingStatus(existing)
	}

	opts := s.cfg.CSV
	opts.Resume = st.resume
	opts.Hash = st.hash
	if st.resume == nil {
		opts.Hash = sha256.New()
	}
	r, err := csvread.New(stream, header, opts)
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
	validator, err := profile.Compile(prof, cols)
	if err != nil {
		return badRequest("the file does not fit its profile", err)
	}
	if err := checkColumns(cols, header); err != nil {
		return err
	}
	if st.job == nil {
		if err := s.create(ctx, header, cols, st); err != nil {
			return err
		}
	}
	if st.resume != nil {
		if err := checkResumeMode(r, header.GetResume(), st); err != nil {
			return err
		}
	}
	log := s.cfg.Log.With("job_id", st.job.GetJobId())
	if st.resume != nil {
		log.InfoContext(ctx, "stream resumed", "after_row", st.resume.AfterRow, "checkpoint_row", st.base.Row)
	} else {
		log.InfoContext(ctx, "job created", "columns", len(cols), "resumable", key != "")
	}

	pub, err := s.cfg.NewPublisher()
	if err != nil {
		return s.fail(ctx, log, st, nil, status.Errorf(codes.Internal, "start publisher: %v", err))
	}
	defer pub.Close() // idempotent

	j, err := newJob(st, cols, pub, s.cfg.MaxErrors, s.cfg.CheckpointEvery, opts.Hash)
	if err != nil {
		return s.fail(ctx, log, st, nil, err)
	}
	j.validator = validator
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopProgress := s.reportProgress(runCtx, log, j, cancel)
	err = j.run(runCtx, r, s.cfg.Now)
	stopProgress()
	if err != nil {
		// Stop sending before the job is ended or checkpointed, so that no
		// row of it reaches the queue afterwards.
		pub.Close()
		if errors.Is(context.Cause(runCtx), errFenced) {
			log.WarnContext(ctx, "stream fenced")
			return status.Errorf(codes.FailedPrecondition, "job %s was resumed by another stream or ended; this stream stops", j.id)
		}
		if errors.Is(err, errInvalidRows) {
			// The job keeps the figures of what was read, so its record
			// says why it was rejected.
			if rerr := s.jobs.RecordIngest(ctx, j.id, j.ingest(false)); rerr != nil {
				log.WarnContext(ctx, "record counts of rejected file", "err", rerr)
			}
			err = j.rejectedStatus()
		}
		return s.fail(ctx, log, st, j, err)
	}
	in := j.ingest(true)
	sealed, err := s.jobs.Seal(ctx, j.id, in)
	if errors.Is(err, jobstore.ErrState) {
		return status.Errorf(codes.FailedPrecondition, "job %s was resumed by another stream or ended; this stream stops", j.id)
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

// streamState is what a stream knows about its job before it reads rows.
type streamState struct {
	id     string // the stream id that fences the job's writes
	key    string
	job    *spoolv1.Job // nil until created or taken over
	resume *csvread.Resume
	base   jobstore.Checkpoint
	hash   hash.Hash // restored from the checkpoint, when it can be
	hashed bool      // whether the file's hash can be finished
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

// receivingStatus is the answer to a second submission of a file whose
// job is still receiving: the first stream may be alive, so only an
// explicit resume may take the job over.
func receivingStatus(j *spoolv1.Job) error {
	return status.Errorf(codes.FailedPrecondition, "job %s is still receiving (row %d published); resume with after_row=%d",
		j.GetJobKey(), j.GetResumeRow(), j.GetResumeRow())
}

// takeover makes this stream the owner of the receiving job its key names.
// Rows between after_row and the job's checkpoint, and any the broken
// stream published past it, are published again; that is harmless, because
// a row keeps its number and transaction key and the dispatchers' delivery
// ledger suppresses the second message of a transaction.
func (s *Server) takeover(ctx context.Context, h *spoolv1.FileHeader, existing *spoolv1.Job, st *streamState) error {
	res := h.GetResume()
	switch {
	case st.key == "":
		return status.Error(codes.InvalidArgument, "resume needs the job key of the broken stream (job_key or control.sha256)")
	case existing == nil:
		return status.Errorf(codes.NotFound, "no job has key %s; submit the file without resume", st.key)
	case existing.GetState() != spoolv1.JobState_JOB_STATE_RECEIVING:
		return status.Errorf(codes.FailedPrecondition, "job %s is %s (%s); submit the file again without resume",
			existing.GetJobId(), strings.TrimPrefix(existing.GetState().String(), "JOB_STATE_"), existing.GetStateReason())
	case res.GetAfterRow() < 0 || res.GetAfterRow() > existing.GetResumeRow():
		return status.Errorf(codes.FailedPrecondition, "resume after_row=%d is past the job's last durably published row %d",
			res.GetAfterRow(), existing.GetResumeRow())
	}
	j, cp, err := s.jobs.Takeover(ctx, existing.GetJobId(), st.id)
	if errors.Is(err, jobstore.ErrState) {
		return status.Errorf(codes.FailedPrecondition, "job %s ended before it could be resumed", existing.GetJobId())
	}
	if err != nil {
		return storeStatus(ctx, err)
	}
	st.job, st.base = j, cp
	st.resume = &csvread.Resume{AfterRow: res.GetAfterRow(), Offset: res.GetOffset(), Columns: j.GetColumns()}
	if res.GetOffset() == cp.Offset && len(cp.HashState) > 0 {
		h := sha256.New()
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(cp.HashState); err == nil {
			st.hash, st.hashed = h, true
		}
	}
	if cp.Row == 0 && res.GetOffset() == 0 {
		// Nothing was durable: the file starts over, hash included.
		st.hash, st.hashed = sha256.New(), true
	}
	return nil
}

// checkResumeMode checks a resumed stream against the checkpoint once its
// mode is known. Chunks must start exactly at the checkpoint, because
// their rows are numbered from it and the file's hash continues there.
func checkResumeMode(r *csvread.Reader, res *spoolv1.Resume, st *streamState) error {
	chunked, err := r.Chunked()
	if err != nil {
		return readStatus(context.Background(), err)
	}
	if !chunked {
		return nil
	}
	if res.GetOffset() != st.base.Offset || res.GetAfterRow() != st.base.Row {
		return status.Errorf(codes.FailedPrecondition,
			"chunks must resume at the checkpoint: after_row=%d offset=%d, the job's resume_row=%d resume_offset=%d",
			res.GetAfterRow(), res.GetOffset(), st.base.Row, st.base.Offset)
	}
	if !st.hashed {
		return status.Errorf(codes.FailedPrecondition, "job %s has no hash state at offset %d to continue", st.job.GetJobId(), res.GetOffset())
	}
	return nil
}

// create starts the job of a fresh stream, claiming its key.
func (s *Server) create(ctx context.Context, h *spoolv1.FileHeader, cols []string, st *streamState) error {
	j, err := s.jobs.Start(ctx, &spoolv1.Job{
		JobId: s.cfg.NewID(), JobKey: st.key, FileName: h.GetFileName(), Columns: cols,
		Control: h.GetControl(), BusinessKeyColumns: h.GetBusinessKeyColumns(), AmountColumn: h.GetAmountColumn(),
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

// checkControl refuses control totals that cannot be checked.
func checkControl(c *spoolv1.ControlTotals, amountColumn string) error {
	if c == nil {
		return nil
	}
	if c.RowCount != nil && c.GetRowCount() < 0 {
		return status.Errorf(codes.InvalidArgument, "control row_count %d is negative", c.GetRowCount())
	}
	if sum := c.GetAmountSum(); sum != "" {
		if !decimal.Valid(sum) {
			return status.Errorf(codes.InvalidArgument, "control amount_sum %q is not a decimal number", sum)
		}
		if amountColumn == "" {
			return status.Error(codes.InvalidArgument, "control amount_sum needs amount_column")
		}
	}
	if sum := c.GetSha256(); sum != "" {
		if b, err := hex.DecodeString(sum); err != nil || len(b) != sha256.Size {
			return status.Errorf(codes.InvalidArgument, "control sha256 %q is not 64 hex digits", sum)
		}
	}
	return nil
}

// checkColumns refuses business-key and amount columns the file lacks.
func checkColumns(cols []string, h *spoolv1.FileHeader) error {
	named := slices.Clone(h.GetBusinessKeyColumns())
	if c := h.GetAmountColumn(); c != "" {
		named = append(named, c)
	}
	for _, c := range named {
		if !slices.Contains(cols, c) {
			return attach(status.Newf(codes.InvalidArgument, "column %q named in the header is not a column of the file", c),
				&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "header.columns", Description: fmt.Sprintf("column %q is missing", c)}}})
		}
	}
	return nil
}

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// errFenced is the cause of a stream's cancellation when its job was taken
// over by a resumed stream or ended.
var errFenced = errors.New("job no longer owned by this stream")

// job is the state of one stream.
type job struct {
	id        string
	stream    string
	cols      []string
	pub       Publisher
	maxErrors int
	every     int64
	base      jobstore.Checkpoint // the figures of rows up to base.Row
	hash      hash.Hash           // nil when the file's hash is not kept
	bkIdx     []int               // business-key column indexes
	amountIdx int                 // -1 without an amount column
	sum       *decimal.Sum
	validator *profile.Validator

	// Counted over rows past base.Row only: rows up to it were counted by
	// the stream that checkpointed them.
	received    atomic.Int64
	rejected    atomic.Int64
	handed      atomic.Int64 // rows handed to the publisher
	republished atomic.Int64 // rows up to base.Row handed again
	errors      []*spoolv1.RowError

	mu          sync.Mutex
	checkpoints []jobstore.Checkpoint // candidates, oldest first
	committed   jobstore.Checkpoint
}

func newJob(st *streamState, cols []string, pub Publisher, maxErrors int, every int64, hsh hash.Hash) (*job, error) {
	sum, err := decimal.Parse(st.base.AmountSum)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "checkpoint amount sum: %v", err)
	}
	j := &job{
		id: st.job.GetJobId(), stream: st.id, cols: cols, pub: pub, maxErrors: maxErrors, every: every,
		base: st.base, committed: st.base, hash: hsh, amountIdx: -1, sum: sum,
	}
	for _, c := range st.job.GetBusinessKeyColumns() {
		j.bkIdx = append(j.bkIdx, slices.Index(cols, c))
	}
	if c := st.job.GetAmountColumn(); c != "" {
		j.amountIdx = slices.Index(cols, c)
	}
	return j, nil
}

// run reads every row and publishes the valid ones, then waits until SQS
// acknowledged all of them. Its error is a gRPC status.
func (j *job) run(ctx context.Context, r *csvread.Reader, now func() time.Time) error {
	if j.hash != nil {
		// Only raw chunks have a hash; rows were split by the client. The
		// first data message decides, once for the whole stream.
		chunked, err := r.Chunked()
		if err != nil {
			return readStatus(ctx, err)
		}
		if !chunked {
			j.hash = nil
		}
	}
	for {
		// A fenced stream stops at its next row, before publishing it. A
		// stream blocked waiting for its client stops when the client
		// sends or goes away; it publishes nothing meanwhile.
		if err := context.Cause(ctx); errors.Is(err, errFenced) {
			return err
		}
		row, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return readStatus(ctx, err)
		}
		if err := context.Cause(ctx); errors.Is(err, errFenced) {
			return err
		}
		counted := row.Num > j.base.Row
		if counted {
			j.received.Add(1)
		}
		if row.Reject == nil {
			row.Reject = j.validator.Row(row.Num, row.Fields)
		}
		if row.Reject != nil {
			j.reject(row.Reject, counted)
			j.maybeCheckpoint(row.Num, r.Offset())
			continue
		}
		var amount string
		if j.amountIdx >= 0 {
			amount = row.Fields[j.amountIdx]
			if !decimal.Valid(amount) {
				j.reject(&spoolv1.RowError{Row: row.Num, Column: j.cols[j.amountIdx], Reason: "amount is not a decimal number"}, counted)
				j.maybeCheckpoint(row.Num, r.Offset())
				continue
			}
		}
		if j.refusing() {
			// The file is rejected whatever follows; the rest is only read
			// to count and report its invalid rows.
			continue
		}
		e := &spoolv1.Envelope{
			Version:        spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1,
			JobId:          j.id,
			Row:            row.Num,
			Fields:         make([]*spoolv1.Field, len(j.cols)),
			TransactionKey: j.transactionKey(row),
			PublishedAt:    timestamppb.New(now()),
		}
		for i, c := range j.cols {
			e.Fields[i] = &spoolv1.Field{Name: c, Value: row.Fields[i]}
		}
		e.Body = j.validator.Body(row.Fields, profile.Meta{JobID: j.id, Row: row.Num, TransactionKey: e.GetTransactionKey()})
		err = j.pub.Publish(ctx, e)
		if errors.Is(err, publish.ErrTooLarge) {
			j.reject(&spoolv1.RowError{Row: row.Num, Reason: err.Error()}, counted)
			j.maybeCheckpoint(row.Num, r.Offset())
			continue
		}
		if err != nil {
			return publishStatus(ctx, err)
		}
		if counted {
			j.handed.Add(1)
			if amount != "" {
				// Valid was checked above, so Add cannot fail.
				_ = j.sum.Add(amount)
			}
		} else {
			j.republished.Add(1)
		}
		j.maybeCheckpoint(row.Num, r.Offset())
	}
	if j.refusing() {
		return errInvalidRows
	}
	if err := j.pub.Flush(ctx); err != nil {
		return publishStatus(ctx, err)
	}
	return nil
}

// errInvalidRows ends a stream whose file is rejected for its rows.
var errInvalidRows = errors.New("invalid rows under the reject-file policy")

// refusing reports whether the file is rejected for an invalid row.
func (j *job) refusing() bool {
	return j.validator.Policy() == spoolv1.RowPolicy_ROW_POLICY_REJECT_FILE && j.base.Rejected+j.rejected.Load() > 0
}

// rejectedStatus is the answer for a file rejected for its rows: the
// count, and the first row errors as BadRequest field violations. The row
// errors with their value excerpts travel in a StreamFileResponse detail
// only: the status message is logged, and must not carry payroll data.
func (j *job) rejectedStatus() error {
	n := j.base.Rejected + j.rejected.Load()
	st := status.Newf(codes.InvalidArgument, "job %s rejected, nothing will be delivered: %d invalid rows of %d (row policy reject-file)",
		j.id, n, j.base.Row+j.received.Load())
	return withRowErrors(st, j.errors, &spoolv1.StreamFileResponse{
		JobId:        j.id,
		RowsReceived: j.base.Row + j.received.Load(),
		RowsRejected: n,
		Errors:       j.errors,
	})
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
	return attach(st, details...)
}

// transactionKey is the row's stable key, sent to the destination as the
// idempotency key: derived from the business-key columns when the file
// names them (so the same transaction in another file has the same key),
// else from the job and row. Each value is length-prefixed before hashing,
// so no choice of values can make two different keys collide by shifting
// a separator.
func (j *job) transactionKey(row csvread.Row) string {
	if len(j.bkIdx) == 0 {
		return j.id + ":" + strconv.FormatInt(row.Num, 10)
	}
	h := sha256.New()
	for _, i := range j.bkIdx {
		v := row.Fields[i]
		h.Write([]byte(strconv.Itoa(len(v)) + ":"))
		h.Write([]byte(v))
	}
	return "bk:" + hex.EncodeToString(h.Sum(nil))
}

func (j *job) reject(e *spoolv1.RowError, counted bool) {
	if !counted {
		return
	}
	j.rejected.Add(1)
	if len(j.errors) < j.maxErrors {
		j.errors = append(j.errors, e)
	}
}

// maybeCheckpoint records a candidate resume point after row every so
// often. Marshalling the hash state costs more than a row, so not every
// row is one; a resume republishes at most the rows since the last.
func (j *job) maybeCheckpoint(row, offset int64) {
	if row <= j.base.Row || row%j.every != 0 {
		return
	}
	cp := j.figures(row, offset)
	j.mu.Lock()
	j.checkpoints = append(j.checkpoints, cp)
	j.mu.Unlock()
}

// figures are the job's figures after row, as a checkpoint.
func (j *job) figures(row, offset int64) jobstore.Checkpoint {
	cp := jobstore.Checkpoint{
		Row:       row,
		Offset:    offset,
		Published: j.base.Published + j.handed.Load(),
		Rejected:  j.base.Rejected + j.rejected.Load(),
	}
	if j.amountIdx >= 0 {
		cp.AmountSum = j.sum.String()
	}
	if j.hash != nil {
		if m, ok := j.hash.(encoding.BinaryMarshaler); ok {
			cp.HashState, _ = m.MarshalBinary()
		}
	}
	return cp
}

// commit promotes the newest candidate whose rows are all acknowledged,
// and returns the job's checkpoint. Candidates are read before the
// publisher's figures, so every row a candidate counts was handed over
// before those figures were taken.
func (j *job) commit() jobstore.Checkpoint {
	j.mu.Lock()
	defer j.mu.Unlock()
	cands := j.checkpoints
	st := j.pub.Stats()
	limit := st.Watermark
	if st.Pending == 0 {
		limit = math.MaxInt64
	}
	n := 0
	for n < len(cands) && cands[n].Row <= limit {
		n++
	}
	if n > 0 {
		j.committed = cands[n-1]
		j.checkpoints = slices.Delete(cands, 0, n)
	}
	return j.committed
}

// ingest returns the figures as the job record keeps them. final is true
// once every row is acknowledged and the stream read to its end: then the
// counts are exact and the actual control totals are set.
func (j *job) ingest(final bool) jobstore.Ingest {
	cp := j.commit()
	handed := j.base.Published + j.handed.Load()
	// While rows are in flight, acknowledgements of republished rows are
	// not told apart from new ones; the figure is for progress only.
	published := min(handed, j.base.Published+max(0, j.pub.Stats().Published-j.republished.Load()))
	in := jobstore.Ingest{
		Received:   j.base.Row + j.received.Load(),
		Published:  published,
		Rejected:   j.base.Rejected + j.rejected.Load(),
		Stream:     j.stream,
		Checkpoint: &cp,
	}
	if final {
		in.Published = handed
		in.Checkpoint = nil
		in.Actual = &spoolv1.ControlTotals{RowCount: proto.Int64(in.Received)}
		if j.amountIdx >= 0 {
			in.Actual.AmountSum = j.sum.String()
		}
		if j.hash != nil {
			in.Actual.Sha256 = hex.EncodeToString(j.hash.Sum(nil))
		}
	}
	return in
}

// reportProgress writes the job's counters and checkpoint every interval
// until the returned function is called, renewing the stream's lease; that
// function waits for the last write, so no progress write can land after
// the job is sealed or ended. When the store says the stream no longer
// owns the job, the stream is cancelled with errFenced.
func (s *Server) reportProgress(ctx context.Context, log *slog.Logger, j *job, cancel context.CancelCauseFunc) (stop func()) {
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
			in := j.ingest(false)
			err := s.jobs.RecordIngest(ctx, j.id, in)
			if errors.Is(err, jobstore.ErrState) {
				log.WarnContext(ctx, "stream lost its job", "err", err)
				cancel(errFenced)
				return
			}
			if err != nil {
				log.WarnContext(ctx, "record progress", "err", err)
				continue
			}
			log.DebugContext(ctx, "progress", "rows_received", in.Received, "rows_published", in.Published,
				"rows_rejected", in.Rejected, "resume_row", in.Checkpoint.Row)
		}
	})
	return func() { close(done); wg.Wait() }
}

// fail handles a stream that cannot go on and returns its failure. Bad
// input and exceeded limits are the file's fault: the job ends REJECTED.
// Anything else (the client went away, the server is stopping, SQS or the
// table failed) may be resumed: the job keeps its last checkpoint and stays
// RECEIVING until its lease expires, unless it has no key to resume by, in
// which case it ends ABORTED now. j is nil when no row was read.
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
		if j != nil {
			in := j.ingest(false)
			if err := s.jobs.RecordIngest(wctx, id, in); err != nil {
				log.ErrorContext(ctx, "record checkpoint of broken stream", "err", err)
			}
			log.WarnContext(ctx, "stream broke; job stays receiving until resumed or its lease expires",
				"code", fs.Code().String(), "reason", fs.Message(), "resume_row", in.Checkpoint.Row)
		} else {
			log.WarnContext(ctx, "stream broke; job stays receiving until resumed or its lease expires",
				"code", fs.Code().String(), "reason", fs.Message())
		}
		return failure
	}
	reason := fs.Message()
	if state == spoolv1.JobState_JOB_STATE_ABORTED {
		reason = "stream broke and the job has no key to resume it by: " + reason
	}
	if _, err := s.jobs.EndStream(wctx, id, st.id, state, reason); err != nil {
		log.ErrorContext(ctx, "end job", "err", err, "state", state.String(), "reason", reason)
		return failure
	}
	log.WarnContext(ctx, "job ended", "state", state.String(), "code", fs.Code().String(), "reason", reason)
	return failure
}

// attach returns st with details, or st alone should they not encode.
func attach(st *status.Status, details ...protoadapt.MessageV1) error {
	if with, err := st.WithDetails(details...); err == nil {
		return with.Err()
	}
	return st.Err()
}

// badRequest is InvalidArgument for a profile or header that does not fit,
// each problem a BadRequest field violation.
func badRequest(msg string, err error) error {
	var perr *profile.Error
	if !errors.As(err, &perr) {
		return status.Errorf(codes.InvalidArgument, "%s: %v", msg, err)
	}
	br := &errdetails.BadRequest{}
	for _, v := range perr.Violations {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: v.Field, Description: v.Description})
	}
	return attach(status.Newf(codes.InvalidArgument, "%s: %v", msg, err), br)
}

// applyProfile finds the profile the header names, or the one it carries,
// and returns it with the header as the stream uses it: the business-key
// and amount columns are the profile's unless the header names its own,
// which must then agree.
func (s *Server) applyProfile(h *spoolv1.FileHeader) (*spoolv1.Profile, *spoolv1.FileHeader, error) {
	var p *spoolv1.Profile
	switch {
	case h.GetProfile() != "" && h.GetInlineProfile() != nil:
		return nil, nil, attach(status.New(codes.InvalidArgument, "the header names a profile and carries one; give one or the other"),
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "header.profile", Description: "give profile or inline_profile, not both"}}})
	case h.GetProfile() != "":
		var ok bool
		if p, ok = s.cfg.Profiles.Get(h.GetProfile()); !ok {
			return nil, nil, attach(status.Newf(codes.InvalidArgument, "no profile %q on this ingestor (see ListProfiles)", h.GetProfile()),
				&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "header.profile", Description: fmt.Sprintf("unknown profile %q", h.GetProfile())}}})
		}
	case h.GetInlineProfile() != nil:
		p = h.GetInlineProfile()
		if err := profile.Check(p); err != nil {
			return nil, nil, badRequest("the header's inline profile is invalid", err)
		}
	default:
		return nil, h, nil
	}
	bk, amount := h.GetBusinessKeyColumns(), h.GetAmountColumn()
	var vs []profile.Violation
	if len(bk) > 0 && len(p.GetBusinessKeyColumns()) > 0 && !slices.Equal(bk, p.GetBusinessKeyColumns()) {
		vs = append(vs, profile.Violation{Field: "header.business_key_columns", Description: fmt.Sprintf("differ from profile %q's", p.GetName())})
	}
	if amount != "" && p.GetAmountColumn() != "" && amount != p.GetAmountColumn() {
		vs = append(vs, profile.Violation{Field: "header.amount_column", Description: fmt.Sprintf("differs from profile %q's", p.GetName())})
	}
	if len(vs) > 0 {
		return nil, nil, badRequest("the header contradicts its profile", &profile.Error{Subject: "header", Violations: vs})
	}
	h = proto.Clone(h).(*spoolv1.FileHeader)
	if len(bk) == 0 {
		h.BusinessKeyColumns = p.GetBusinessKeyColumns()
	}
	if amount == "" {
		h.AmountColumn = p.GetAmountColumn()
	}
	return p, h, nil
}

// readStatus maps an error of reading the stream to a status: bad input,
// a limit, the client going away, or the transport's own status. A limit
// carries a QuotaFailure naming it; a bad header a BadRequest.
func readStatus(ctx context.Context, err error) error {
	var lerr *csvread.LimitError
	var herr *csvread.HeaderError
	switch {
	case errors.As(err, &lerr):
		return attach(status.New(codes.ResourceExhausted, err.Error()), &errdetails.QuotaFailure{
			Violations: []*errdetails.QuotaFailure_Violation{{Subject: lerr.Limit, Description: fmt.Sprintf("%s=%d", lerr.Limit, lerr.Value)}},
		})
	case errors.As(err, &herr):
		field := "header.columns"
		if herr.Column > 0 {
			field = fmt.Sprintf("header.columns[%d]", herr.Column)
		}
		return attach(status.New(codes.InvalidArgument, err.Error()),
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: herr.Reason}}})
	case errors.Is(err, csvread.ErrInvalidInput):
		return status.Error(codes.InvalidArgument, err.Error())
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
