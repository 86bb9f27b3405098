package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/ingestor/internal/csvread"
	"github.com/spoolhq/spool/ingestor/internal/publish"
	"github.com/spoolhq/spool/platform/envelope"
	"github.com/spoolhq/spool/platform/grpcserve"
	"github.com/spoolhq/spool/platform/grpcserve/grpcservetest"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/testkit"
)

// fakeJobs is an in-memory job store with the state rules of jobstore:
// keys, stream fencing, leases on an injected clock, checkpoints and the
// control-total check of Seal.
type fakeJobs struct {
	mu          sync.Mutex
	jobs        map[string]*spoolv1.Job
	keys        map[string]string
	streams     map[string]string
	checkpoints map[string]jobstore.Checkpoint
	ingests     []jobstore.Ingest
	now         time.Time
	abortAfter  time.Duration
	// recordErr, when set, fails every RecordIngest of a job it may
	// write, as a table that does not answer would.
	recordErr error
}

func newFakeJobs() *fakeJobs {
	return &fakeJobs{
		jobs: map[string]*spoolv1.Job{}, keys: map[string]string{}, streams: map[string]string{},
		checkpoints: map[string]jobstore.Checkpoint{},
		now:         time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC), abortAfter: time.Minute,
	}
}

func (f *fakeJobs) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

func (f *fakeJobs) Create(ctx context.Context, j *spoolv1.Job) (*spoolv1.Job, error) {
	return f.Start(ctx, j, "")
}

func (f *fakeJobs) Start(_ context.Context, j *spoolv1.Job, stream string) (*spoolv1.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.jobs[j.GetJobId()]; ok {
		return nil, jobstore.ErrExists
	}
	if k := j.GetJobKey(); k != "" {
		if old, ok := f.keys[k]; ok {
			o := f.expire(f.jobs[old])
			switch o.GetState() {
			case spoolv1.JobState_JOB_STATE_ABORTED, spoolv1.JobState_JOB_STATE_REJECTED, spoolv1.JobState_JOB_STATE_CANCELLED:
			default:
				return nil, &jobstore.KeyTakenError{Key: k, Job: proto.Clone(o).(*spoolv1.Job)}
			}
		}
		f.keys[k] = j.GetJobId()
	}
	c := proto.Clone(j).(*spoolv1.Job)
	c.State = spoolv1.JobState_JOB_STATE_RECEIVING
	c.LeaseExpiresAt = timestamppb.New(f.now.Add(f.abortAfter))
	f.jobs[j.GetJobId()] = c
	f.streams[j.GetJobId()] = stream
	return proto.Clone(c).(*spoolv1.Job), nil
}

func (f *fakeJobs) Get(_ context.Context, id string) (*spoolv1.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.jobs[id]
	if !ok {
		return nil, fmt.Errorf("get job %s: %w", id, jobstore.ErrNotFound)
	}
	return proto.Clone(j).(*spoolv1.Job), nil
}

func (f *fakeJobs) GetByKey(ctx context.Context, key string) (*spoolv1.Job, error) {
	f.mu.Lock()
	id, ok := f.keys[key]
	f.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("get job key %s: %w", key, jobstore.ErrNotFound)
	}
	return f.Get(ctx, id)
}

// expire ends a stored job whose lease ran out; f.mu is held.
func (f *fakeJobs) expire(j *spoolv1.Job) *spoolv1.Job {
	if j.GetState() == spoolv1.JobState_JOB_STATE_RECEIVING && !j.GetLeaseExpiresAt().AsTime().After(f.now) {
		j.State, j.StateReason = spoolv1.JobState_JOB_STATE_ABORTED, "stream not resumed within "+f.abortAfter.String()
	}
	return j
}

func (f *fakeJobs) ExpireIfAbandoned(_ context.Context, j *spoolv1.Job) (*spoolv1.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	stored, ok := f.jobs[j.GetJobId()]
	if !ok {
		return j, nil
	}
	return proto.Clone(f.expire(stored)).(*spoolv1.Job), nil
}

func (f *fakeJobs) Takeover(_ context.Context, id, stream string) (*spoolv1.Job, jobstore.Checkpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.jobs[id]
	if !ok || f.expire(j).GetState() != spoolv1.JobState_JOB_STATE_RECEIVING {
		return nil, jobstore.Checkpoint{}, jobstore.ErrState
	}
	f.streams[id] = stream
	j.LeaseExpiresAt = timestamppb.New(f.now.Add(f.abortAfter))
	return proto.Clone(j).(*spoolv1.Job), f.checkpoints[id], nil
}

// owned returns the job when stream may write it; f.mu is held.
func (f *fakeJobs) owned(id, stream string) (*spoolv1.Job, error) {
	j, ok := f.jobs[id]
	if !ok {
		return nil, jobstore.ErrNotFound
	}
	if j.GetState() != spoolv1.JobState_JOB_STATE_RECEIVING || f.streams[id] != stream {
		return nil, jobstore.ErrState
	}
	return j, nil
}

func (f *fakeJobs) RecordIngest(_ context.Context, id string, in jobstore.Ingest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	j, err := f.owned(id, in.Stream)
	if err != nil {
		return err
	}
	if f.recordErr != nil {
		return fmt.Errorf("record ingest of job %s: %w", id, f.recordErr)
	}
	j.RowsReceived, j.RowsPublished, j.RowsRejected = in.Received, in.Published, in.Rejected
	j.LeaseExpiresAt = timestamppb.New(f.now.Add(f.abortAfter))
	if in.Checkpoint != nil {
		f.checkpoints[id] = *in.Checkpoint
		j.ResumeRow, j.ResumeOffset = in.Checkpoint.Row, in.Checkpoint.Offset
	}
	f.ingests = append(f.ingests, in)
	return nil
}

func (f *fakeJobs) Seal(_ context.Context, id string, in jobstore.Ingest) (*spoolv1.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j, err := f.owned(id, in.Stream)
	if err != nil {
		return nil, err
	}
	j.RowsReceived, j.RowsPublished, j.RowsRejected = in.Received, in.Published, in.Rejected
	j.Actual = in.Actual
	if reason := jobstore.CompareTotals(j.GetControl(), in.Actual); reason != "" {
		j.State, j.StateReason = spoolv1.JobState_JOB_STATE_REJECTED, reason
	} else {
		j.State, j.Total = spoolv1.JobState_JOB_STATE_SEALED, in.Published
		if j.Canary != nil {
			j.Canary.Size = in.CanaryPublished
		}
	}
	return proto.Clone(j).(*spoolv1.Job), nil
}

func (f *fakeJobs) EndStream(_ context.Context, id, stream string, state spoolv1.JobState, reason string) (*spoolv1.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j, err := f.owned(id, stream)
	if err != nil {
		return nil, err
	}
	j.State, j.StateReason = state, reason
	return proto.Clone(j).(*spoolv1.Job), nil
}

// set changes a stored job, as another process would.
func (f *fakeJobs) set(id string, change func(*spoolv1.Job)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f.jobs[id])
}

func (f *fakeJobs) only(tb testing.TB) *spoolv1.Job {
	tb.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Len(tb, f.jobs, 1)
	for _, j := range f.jobs {
		return proto.Clone(j).(*spoolv1.Job)
	}
	return nil
}

func (f *fakeJobs) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.jobs)
}

// fakePub records what it is given. publish, when set, runs first and may
// block or fail.
type fakePub struct {
	mu      sync.Mutex
	got     []*spoolv1.Envelope
	closed  bool
	publish func(ctx context.Context, e *spoolv1.Envelope) error
}

// signallingPub is a publisher that signals on published when it has
// published a row, so a test can act mid-stream without sleeping.
func signallingPub() (pub *fakePub, published <-chan struct{}) {
	c := make(chan struct{}, 1)
	return &fakePub{publish: func(context.Context, *spoolv1.Envelope) error {
		select {
		case c <- struct{}{}:
		default:
		}
		return nil
	}}, c
}

func (p *fakePub) Publish(ctx context.Context, e *spoolv1.Envelope) error {
	if p.publish != nil {
		if err := p.publish(ctx, e); err != nil {
			return err
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.got = append(p.got, proto.CloneOf(e)) // the stream reuses e
	return nil
}

func (p *fakePub) Flush(context.Context) error { return nil }

func (p *fakePub) Stats() publish.Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return publish.Stats{Published: int64(len(p.got))}
}

func (p *fakePub) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
}

func (p *fakePub) envelopes() []*spoolv1.Envelope {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*spoolv1.Envelope(nil), p.got...)
}

// startServer serves New(jobs, cfg) in process over bufconn, with the real
// interceptor chain, and returns a client and the server's log.
func startServer(tb testing.TB, jobs Jobs, cfg Config) (spoolv1.IngestServiceClient, *testkit.Buffer) {
	tb.Helper()
	logs := &testkit.Buffer{}
	log := slog.New(slog.NewJSONHandler(io.MultiWriter(logs, tb.Output()), &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Log = log
	srv := grpcserve.New(log, grpcserve.Security{})
	spoolv1.RegisterIngestServiceServer(srv, New(jobs, cfg))
	conn := grpcservetest.Dial(tb, context.Background(), srv)
	return spoolv1.NewIngestServiceClient(conn), logs
}

func pubFactory(p Publisher) func() (Publisher, error) {
	return func() (Publisher, error) { return p, nil }
}

func hdr(h *spoolv1.FileHeader) *spoolv1.StreamFileRequest {
	return &spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Header{Header: h}}
}

func rowsMsg(rs ...[]string) *spoolv1.StreamFileRequest {
	b := &spoolv1.RowBatch{}
	for _, r := range rs {
		b.Rows = append(b.Rows, &spoolv1.Row{Fields: r})
	}
	return &spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Rows{Rows: b}}
}

func chunkMsg(s string) *spoolv1.StreamFileRequest {
	return &spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Chunk{Chunk: []byte(s)}}
}

// send streams msgs and returns the response or the call's error.
func send(ctx context.Context, c spoolv1.IngestServiceClient, msgs ...*spoolv1.StreamFileRequest) (*spoolv1.StreamFileResponse, error) {
	stream, err := c.StreamFile(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			// The server ended the call; its status comes with CloseAndRecv.
			break
		}
	}
	return stream.CloseAndRecv()
}

const secret = "SECRET-SALARY-98765"

// lenient is a profile that only sets the skip-rows policy.
var lenient = &spoolv1.Profile{Name: "lenient", RowPolicy: spoolv1.RowPolicy_ROW_POLICY_SKIP_ROWS, FormulaPolicy: spoolv1.FormulaPolicy_FORMULA_POLICY_ALLOW}

func TestStreamFileHappyPath(t *testing.T) {
	tests := []struct {
		name string
		msgs []*spoolv1.StreamFileRequest
	}{
		{
			name: "rows with header row",
			msgs: []*spoolv1.StreamFileRequest{
				hdr(&spoolv1.FileHeader{FileName: "pay.csv", JobKey: "payroll-11", InlineProfile: lenient}),
				rowsMsg([]string{"id", "amount"}, []string{"e1", secret}),
				rowsMsg([]string{"e2", "2.00", "extra"}, []string{"e3", "3.00"}),
			},
		},
		{
			name: "rows with FileHeader columns",
			msgs: []*spoolv1.StreamFileRequest{
				hdr(&spoolv1.FileHeader{FileName: "pay.csv", JobKey: "payroll-11", Columns: []string{"id", "amount"}, InlineProfile: lenient}),
				rowsMsg([]string{"e1", secret}, []string{"e2", "2.00", "extra"}),
				rowsMsg([]string{"e3", "3.00"}),
			},
		},
		{
			name: "chunks",
			msgs: []*spoolv1.StreamFileRequest{
				hdr(&spoolv1.FileHeader{FileName: "pay.csv", JobKey: "payroll-11", InlineProfile: lenient}),
				chunkMsg("id,amo"), chunkMsg("unt\r\ne1," + secret[:5]), chunkMsg(secret[5:] + "\r\ne2,2.00,extra\r\ne3,\"3.00\"\r\n"),
			},
		},
	}
	versions := []struct {
		name string
		set  spoolv1.EnvelopeVersion // the server's setting
		want spoolv1.EnvelopeVersion // what it writes
	}{
		{name: "default", want: spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V2},
		{name: "v1", set: spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1, want: spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1},
	}
	for _, tt := range tests {
		for _, v := range versions {
			t.Run(tt.name+"/"+v.name, func(t *testing.T) { testHappyPath(t, tt.msgs, v.set, v.want) })
		}
	}
}

// testHappyPath sends msgs (the file of TestStreamFileHappyPath) to a
// server writing envelopes of version set, and checks that it wrote
// envelopes of version, which a dispatcher turns into the file's rows.
func testHappyPath(t *testing.T, msgs []*spoolv1.StreamFileRequest, set, version spoolv1.EnvelopeVersion) {
	jobs, pub := newFakeJobs(), &fakePub{}
	ids := 0
	c, logs := startServer(t, jobs, Config{
		NewPublisher:    pubFactory(pub),
		MaxErrors:       10,
		NewID:           func() string { ids++; return fmt.Sprintf("job-%d", ids) },
		EnvelopeVersion: set,
	})
	resp, err := send(context.Background(), c, msgs...)
	require.NoError(t, err)

	require.Equal(t, "job-1", resp.GetJobId())
	require.EqualValues(t, 3, resp.GetRowsReceived())
	require.EqualValues(t, 2, resp.GetRowsPublished())
	require.EqualValues(t, 1, resp.GetRowsRejected())
	require.Len(t, resp.GetErrors(), 1)
	require.EqualValues(t, 2, resp.GetErrors()[0].GetRow())
	require.Equal(t, "expected 2 fields, got 3", resp.GetErrors()[0].GetReason())
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, resp.GetJob().GetState())
	require.EqualValues(t, 2, resp.GetJob().GetTotal())

	j := jobs.only(t)
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, j.GetState())
	require.Equal(t, []string{"id", "amount"}, j.GetColumns())
	require.Equal(t, "pay.csv", j.GetFileName())
	require.Equal(t, "payroll-11", j.GetJobKey())

	envs := pub.envelopes()
	require.Len(t, envs, 2)
	for i, want := range []struct {
		row    int64
		id, am string
	}{{1, "e1", secret}, {3, "e3", "3.00"}} {
		e := envs[i]
		require.Equal(t, version, e.GetVersion())
		require.Equal(t, "job-1", e.GetJobId())
		require.Equal(t, want.row, e.GetRow())
		require.NotNil(t, e.GetPublishedAt())
		if version == spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V2 {
			require.Equal(t, []string{want.id, want.am}, e.GetValues())
			require.Empty(t, e.GetFields())
			require.Empty(t, e.GetTransactionKey(), "V2 leaves the default key out")
			// What a dispatcher reads: the job's columns name the values.
			require.NoError(t, envelope.Expand(e, j.GetColumns()))
		}
		require.Equal(t, fmt.Sprintf("job-1:%d", want.row), e.GetTransactionKey())
		require.Empty(t, e.GetValues())
		require.Len(t, e.GetFields(), 2)
		require.Equal(t, "id", e.GetFields()[0].GetName())
		require.Equal(t, want.id, e.GetFields()[0].GetValue())
		require.Equal(t, "amount", e.GetFields()[1].GetName())
		require.Equal(t, want.am, e.GetFields()[1].GetValue())
	}
	require.True(t, pub.closed)
	require.Contains(t, logs.String(), "job sealed")
	require.NotContains(t, logs.String(), secret, "row values must never be logged")
}

func TestStreamFileRefusedBeforeJob(t *testing.T) {
	tests := []struct {
		name string
		msgs []*spoolv1.StreamFileRequest
		msg  string
	}{
		{name: "empty stream", msg: "header"},
		{name: "header missing", msgs: []*spoolv1.StreamFileRequest{rowsMsg([]string{"a"})}, msg: "first message must be a header"},
		{name: "duplicate column", msgs: []*spoolv1.StreamFileRequest{hdr(&spoolv1.FileHeader{}), chunkMsg("a,b,a\n1,2,3\n")}, msg: `"a"`},
		{name: "no header at all", msgs: []*spoolv1.StreamFileRequest{hdr(&spoolv1.FileHeader{})}, msg: "empty"},
		{name: "bad delimiter", msgs: []*spoolv1.StreamFileRequest{hdr(&spoolv1.FileHeader{Csv: &spoolv1.CsvOptions{Delimiter: "::"}})}, msg: "delimiter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jobs := newFakeJobs()
			c, _ := startServer(t, jobs, Config{NewPublisher: pubFactory(&fakePub{})})
			_, err := send(context.Background(), c, tt.msgs...)
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
			require.ErrorContains(t, err, tt.msg)
			require.Zero(t, jobs.count())
		})
	}
}

func TestStreamFileEnded(t *testing.T) {
	unavailable := errors.New("sqs: connection refused")
	tests := []struct {
		name     string
		cfg      Config
		pub      *fakePub
		msgs     []*spoolv1.StreamFileRequest
		wantCode codes.Code
		reason   string
		state    spoolv1.JobState
	}{
		{
			name:     "mixed modes",
			msgs:     []*spoolv1.StreamFileRequest{hdr(&spoolv1.FileHeader{Columns: []string{"a"}}), rowsMsg([]string{"1"}), chunkMsg("2\n")},
			wantCode: codes.InvalidArgument,
			reason:   "mixed",
			state:    spoolv1.JobState_JOB_STATE_REJECTED,
		},
		{
			name:     "second header",
			msgs:     []*spoolv1.StreamFileRequest{hdr(&spoolv1.FileHeader{Columns: []string{"a"}}), rowsMsg([]string{"1"}), hdr(&spoolv1.FileHeader{})},
			wantCode: codes.InvalidArgument,
			reason:   "second header",
			state:    spoolv1.JobState_JOB_STATE_REJECTED,
		},
		{
			name:     "record limit",
			cfg:      Config{CSV: csvread.Options{Limits: csvread.Limits{MaxFieldBytes: 4096, MaxRecordBytes: 1024}}},
			msgs:     []*spoolv1.StreamFileRequest{hdr(&spoolv1.FileHeader{}), chunkMsg("a\n\"" + strings.Repeat("x", 2000))},
			wantCode: codes.ResourceExhausted,
			reason:   "row 1: max-record-bytes=1024 exceeded",
			state:    spoolv1.JobState_JOB_STATE_REJECTED,
		},
		{
			name:     "publish failure",
			pub:      &fakePub{publish: func(context.Context, *spoolv1.Envelope) error { return unavailable }},
			msgs:     []*spoolv1.StreamFileRequest{hdr(&spoolv1.FileHeader{Columns: []string{"a"}}), rowsMsg([]string{"1"})},
			wantCode: codes.Unavailable,
			reason:   "connection refused",
			state:    spoolv1.JobState_JOB_STATE_ABORTED,
		},
		{
			name:     "SQS refuses the request",
			pub:      &fakePub{publish: func(context.Context, *spoolv1.Envelope) error { return fmt.Errorf("send: %w", publish.ErrRejected) }},
			msgs:     []*spoolv1.StreamFileRequest{hdr(&spoolv1.FileHeader{Columns: []string{"a"}}), rowsMsg([]string{"1"})},
			wantCode: codes.Internal,
			reason:   "rejected",
			state:    spoolv1.JobState_JOB_STATE_ABORTED,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jobs := newFakeJobs()
			pub := tt.pub
			if pub == nil {
				pub = &fakePub{}
			}
			tt.cfg.NewPublisher = pubFactory(pub)
			c, _ := startServer(t, jobs, tt.cfg)
			_, err := send(context.Background(), c, tt.msgs...)
			require.Equal(t, tt.wantCode, status.Code(err), "%v", err)
			require.ErrorContains(t, err, tt.reason)
			j := jobs.only(t)
			require.Equal(t, tt.state, j.GetState(), "bad input rejects; a job without a key cannot be resumed")
			require.Contains(t, j.GetStateReason(), tt.reason)
		})
	}
}

func TestClientCancelAbortsJob(t *testing.T) {
	jobs := newFakeJobs()
	pub, published := signallingPub()
	c, _ := startServer(t, jobs, Config{NewPublisher: pubFactory(pub)})
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := c.StreamFile(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(hdr(&spoolv1.FileHeader{Columns: []string{"a"}})))
	require.NoError(t, stream.Send(rowsMsg([]string{"1"})))
	<-published
	cancel()
	require.Eventually(t, func() bool {
		j, err := jobs.Get(context.Background(), jobs.only(t).GetJobId())
		return err == nil && j.GetState() == spoolv1.JobState_JOB_STATE_ABORTED
	}, 5*time.Second, 5*time.Millisecond)
	require.Contains(t, jobs.only(t).GetStateReason(), "stream cancelled")
}

func TestRejectedRowsAndErrorCap(t *testing.T) {
	jobs := newFakeJobs()
	pub := &fakePub{publish: func(_ context.Context, e *spoolv1.Envelope) error {
		if e.GetValues()[1] == "huge" {
			return fmt.Errorf("row %d: message of 2000000 bytes exceeds max-message-bytes=1048576: %w", e.GetRow(), publish.ErrTooLarge)
		}
		return nil
	}}
	c, _ := startServer(t, jobs, Config{NewPublisher: pubFactory(pub), MaxErrors: 2})
	resp, err := send(context.Background(), c,
		hdr(&spoolv1.FileHeader{Columns: []string{"id", "v"}, InlineProfile: lenient}),
		rowsMsg([]string{"1", "huge"}, []string{"2", "ok"}, []string{"3"}, []string{"4"}, []string{"5"}, []string{"6", "ok"}))
	require.NoError(t, err)
	require.EqualValues(t, 6, resp.GetRowsReceived())
	require.EqualValues(t, 2, resp.GetRowsPublished())
	require.EqualValues(t, 4, resp.GetRowsRejected())
	require.Len(t, resp.GetErrors(), 2)
	require.EqualValues(t, 1, resp.GetErrors()[0].GetRow())
	require.Contains(t, resp.GetErrors()[0].GetReason(), "max-message-bytes=1048576")
	require.EqualValues(t, 3, resp.GetErrors()[1].GetRow())
	require.EqualValues(t, 2, jobs.only(t).GetTotal())
}

func TestProgressRecorded(t *testing.T) {
	jobs := newFakeJobs()
	release := make(chan struct{})
	pub := &fakePub{publish: func(ctx context.Context, e *spoolv1.Envelope) error {
		if e.GetRow() == 3 {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}}
	c, _ := startServer(t, jobs, Config{NewPublisher: pubFactory(pub), ProgressInterval: time.Millisecond})
	done := make(chan error, 1)
	go func() {
		_, err := send(context.Background(), c, hdr(&spoolv1.FileHeader{Columns: []string{"a"}}), rowsMsg([]string{"1"}, []string{"2"}, []string{"3"}))
		done <- err
	}()
	// While row 3 waits to be published, progress shows it received and
	// the two before it published.
	require.Eventually(t, func() bool {
		jobs.mu.Lock()
		defer jobs.mu.Unlock()
		for _, in := range jobs.ingests {
			if in.Received == 3 && in.Published == 2 {
				return true
			}
		}
		return false
	}, 5*time.Second, time.Millisecond)
	close(release)
	require.NoError(t, <-done)
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, jobs.only(t).GetState())
}

func TestGetJob(t *testing.T) {
	jobs := newFakeJobs()
	_, err := jobs.Create(context.Background(), &spoolv1.Job{JobId: "j1", FileName: "f.csv"})
	require.NoError(t, err)
	c, _ := startServer(t, jobs, Config{NewPublisher: pubFactory(&fakePub{})})
	tests := []struct {
		name string
		id   string
		code codes.Code
	}{
		{name: "found", id: "j1", code: codes.OK},
		{name: "not found", id: "nope", code: codes.NotFound},
		{name: "id required", id: "", code: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := c.GetJob(context.Background(), &spoolv1.GetJobRequest{JobId: tt.id})
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			if tt.code == codes.OK {
				require.Equal(t, "f.csv", resp.GetJob().GetFileName())
			}
		})
	}
}
