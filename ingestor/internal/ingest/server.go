// Package ingest serves spool.v1.IngestService: it turns one StreamFile
// stream into one job, publishing every valid row to the queue and keeping
// the job record up to date.
//
// A stream goes through four steps, one file each:
//
//  1. open.go: the header, the profile, the file's columns and a resume's
//     fit with its checkpoint are admitted (package admit) before any job
//     is created or taken over, so a stream refused for its header leaves
//     every job as it was.
//  2. lifecycle.go: the job is created, or a broken stream's job taken
//     over; progress and checkpoints are written while rows flow; a
//     failure ends the job or leaves it to be resumed.
//  3. rows.go and checkpoint.go: rows are checked, published and
//     checkpointed.
//  4. status.go: every failure becomes the gRPC status the caller gets.
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
	"cmp"
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/ingestor/internal/csvread"
	"github.com/spoolhq/spool/ingestor/internal/profile"
	"github.com/spoolhq/spool/ingestor/internal/publish"
	"github.com/spoolhq/spool/platform/auth"
	"github.com/spoolhq/spool/platform/envelope"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/positive"
)

// DefaultCheckpointEvery is how many rows pass between two resume
// checkpoints when Config leaves it zero.
const DefaultCheckpointEvery = 256

// DefaultStoreTimeout bounds one job store call when Config leaves
// StoreTimeout zero.
const DefaultStoreTimeout = 10 * time.Second

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
	// Publish hands over e's row. It must not keep e, which the stream
	// fills again for its next row: what it keeps it copies (the
	// encoding, or a clone).
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
	// AbortAfter is the stream's lease, as the job store grants it with
	// each progress write. A stream whose progress writes have failed for
	// half of it stops publishing and fails: past that, its job may be
	// ended under it. Zero means jobstore.DefaultAbortAfter.
	AbortAfter time.Duration
	// StoreTimeout bounds each job store call. Zero means
	// DefaultStoreTimeout.
	StoreTimeout time.Duration
	// CheckpointEvery is how many rows pass between two candidate resume
	// points. Zero means DefaultCheckpointEvery.
	CheckpointEvery int64
	// CSV tunes the parsing of raw chunks and the limits of every stream.
	CSV csvread.Options
	// Profiles are the profiles a FileHeader may name; nil means none.
	Profiles *profile.Set
	// MaxMessageBytes is the queue's maximum message size, which a dry
	// run checks each row against as the publisher would; zero means SQS's
	// (1 MiB).
	MaxMessageBytes int
	// EnvelopeVersion is the version of the envelopes streams write:
	// unspecified means V2. V1 is for a fleet whose dispatchers do not all
	// read V2 yet (envelope.proto says why, and in which order to deploy).
	EnvelopeVersion spoolv1.EnvelopeVersion
	// Log receives job events; never row contents.
	Log *slog.Logger
	// RowRejected, when set, is called for each row a stream rejects (for
	// metrics; rows up to a resumed stream's checkpoint are not counted
	// again).
	RowRejected func()
	// MaxDeliverAfter is how far ahead a header's deliver_after may be:
	// the job's messages wait in the queue until then, so it must stay
	// below the queue's message retention. Zero means
	// DefaultMaxDeliverAfter.
	MaxDeliverAfter time.Duration
	// MaxStreams is how many StreamFile calls one caller (auth.Principal
	// subject; calls without one share a count) may have open at once.
	// Zero means no limit.
	MaxStreams int
	// IdleTimeout ends a stream whose client sent nothing for this long.
	// Zero means no limit.
	IdleTimeout time.Duration
	// Now and NewID default to the clock and random UUIDs.
	Now   func() time.Time
	NewID func() string
	// idleTimer defaults to a real timer; tests fire it themselves.
	idleTimer idleTimer
}

// Server implements spoolv1.IngestServiceServer.
type Server struct {
	spoolv1.UnimplementedIngestServiceServer
	jobs  Jobs
	cfg   Config
	slots *streamSlots
}

// New returns a server over jobs.
func New(jobs Jobs, cfg Config) *Server {
	cfg.ProgressInterval = positive.Or(cfg.ProgressInterval, time.Second)
	cfg.AbortAfter = positive.Or(cfg.AbortAfter, jobstore.DefaultAbortAfter)
	cfg.StoreTimeout = positive.Or(cfg.StoreTimeout, DefaultStoreTimeout)
	cfg.CheckpointEvery = positive.Or(cfg.CheckpointEvery, DefaultCheckpointEvery)
	if cfg.MaxErrors < 0 {
		cfg.MaxErrors = 0
	}
	cfg.Log = cmp.Or(cfg.Log, slog.New(slog.DiscardHandler))
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.NewID == nil {
		cfg.NewID = uuid.NewString
	}
	cfg.MaxDeliverAfter = positive.Or(cfg.MaxDeliverAfter, DefaultMaxDeliverAfter)
	cfg.EnvelopeVersion = cmp.Or(cfg.EnvelopeVersion, spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V2)
	if cfg.idleTimer == nil {
		cfg.idleTimer = realIdleTimer
	}
	return &Server{jobs: withDeadlines(jobs, cfg.StoreTimeout), cfg: cfg, slots: newStreamSlots(cfg.MaxStreams)}
}

// GetJob returns a job's record, by id or by job key. A job whose stream
// broke and was not resumed in time is ended ABORTED first, so the answer
// never offers a resume that would be refused. A caller who may submit but
// not view gets only the jobs it submitted; for any other id it is refused
// the same way whether the job exists or not.
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
	if (err == nil || errors.Is(err, jobstore.ErrNotFound)) && !s.mayRead(ctx, j) {
		return nil, auth.Denied(ctx, s.cfg.Log, auth.PermView)
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

// mayRead reports whether the caller may read job j (nil: not found). A
// server run without authentication has no caller and refuses nothing: the
// interceptor is the gate, and it is absent only when the operator chose
// to run insecure.
func (s *Server) mayRead(ctx context.Context, j *spoolv1.Job) bool {
	p, ok := auth.FromContext(ctx)
	if !ok || p.Has(auth.PermView) {
		return true
	}
	return j != nil && j.GetSubmittedBy() != "" && j.GetSubmittedBy() == p.Subject
}

// ListProfiles returns the configured profiles.
func (s *Server) ListProfiles(context.Context, *spoolv1.ListProfilesRequest) (*spoolv1.ListProfilesResponse, error) {
	return &spoolv1.ListProfilesResponse{Profiles: s.cfg.Profiles.List()}, nil
}

// StreamFile reads one file and publishes its rows; see ingest.proto.
func (s *Server) StreamFile(stream grpc.ClientStreamingServer[spoolv1.StreamFileRequest, spoolv1.StreamFileResponse]) error {
	ctx := stream.Context()
	start := s.cfg.Now()
	release, err := s.slots.acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	stream = withIdleTimeout(stream, s.cfg.IdleTimeout, s.cfg.idleTimer)
	o, err := s.open(ctx, stream)
	if err != nil {
		return err
	}
	if isDone(o.existing) {
		return sendExisting(stream, o.existing)
	}
	if o.header.GetDryRun() {
		return s.dryRun(ctx, stream, o)
	}
	st := &streamState{id: uuid.NewString(), key: o.key}
	if o.resume != nil {
		err = s.takeover(ctx, o, st)
	} else {
		err = s.create(ctx, o, st)
	}
	if err != nil {
		return err
	}
	log := s.cfg.Log.With("job_id", st.job.GetJobId())
	if o.resume != nil {
		log.InfoContext(ctx, "stream resumed", "after_row", o.resume.GetAfterRow(), "checkpoint_row", st.base.Row)
	} else {
		log.InfoContext(ctx, "job created", "columns", len(o.cols), "resumable", o.key != "", "envelope_version", envelope.VersionName(s.cfg.EnvelopeVersion))
	}

	pub, err := s.cfg.NewPublisher()
	if err != nil {
		return s.fail(ctx, log, st, nil, status.Errorf(codes.Internal, "start publisher: %v", err))
	}
	defer pub.Close() // idempotent

	j, err := s.newJob(st, o, pub)
	if err != nil {
		return s.fail(ctx, log, st, nil, err)
	}
	j.onReject = s.cfg.RowRejected
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopProgress := s.reportProgress(runCtx, log, j, cancel)
	err = j.run(runCtx, o.reader, s.cfg.Now)
	stopProgress()
	if err != nil {
		// Stop sending before the job is ended or checkpointed, so that no
		// row of it reaches the queue afterwards.
		pub.Close()
		cause := context.Cause(runCtx)
		var unrecorded *unrecordedError
		switch {
		case errors.Is(cause, errFenced):
			log.WarnContext(ctx, "stream fenced")
			return fencedStatus(j.id)
		case errors.As(cause, &unrecorded):
			err = storeStatus(ctx, unrecorded)
		case errors.Is(err, errInvalidRows):
			// The job keeps the figures of what was read, so its record
			// says why it was rejected.
			if rerr := s.jobs.RecordIngest(ctx, j.id, j.ingest(false)); rerr != nil {
				log.WarnContext(ctx, "record counts of rejected file", "error", rerr)
			}
			err = j.rejectedStatus()
		}
		return s.fail(ctx, log, st, j, err)
	}
	return s.seal(ctx, stream, log, st, j, start)
}
