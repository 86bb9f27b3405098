package dispatchrpc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/spoolhq/spool/dispatcher/internal/dispatchrpc"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/grpcserve"
	"github.com/spoolhq/spool/platform/grpcserve/grpcservetest"
	"github.com/spoolhq/spool/platform/jobstore"
)

// fakeJobs serves one job that the test changes.
type fakeJobs struct {
	mu  sync.Mutex
	job *spoolv1.Job
	err error
	// hung, when set, makes reads hang until their context ends; each such
	// read is announced on it first.
	hung chan struct{}
}

func (f *fakeJobs) Get(ctx context.Context, id string) (*spoolv1.Job, error) {
	f.mu.Lock()
	hung := f.hung
	f.mu.Unlock()
	if hung != nil {
		hung <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if f.job == nil || f.job.GetJobId() != id {
		return nil, fmt.Errorf("get job %s: %w", id, jobstore.ErrNotFound)
	}
	return proto.Clone(f.job).(*spoolv1.Job), nil
}

func (f *fakeJobs) set(change func(j *spoolv1.Job)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f.job)
}

// clock is the test's time: Now returns what the test set, and every watch
// ticks when the test sends on tick.
type clock struct {
	mu   sync.Mutex
	now  time.Time
	seen chan struct{}
	tick chan time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen != nil {
		close(c.seen)
		c.seen = nil
	}
	return c.now
}

// later moves the clock by d and returns the new time, without ticking
// or waiting: a tick sent with it starts a new watch interval, so the
// watch reads the job again rather than share its last read.
func (c *clock) later(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// advance moves the clock, ticks, and returns once the watch loop read the
// job and the time for that tick, so the test may change both again.
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	now, seen := c.now, make(chan struct{})
	c.seen = seen
	c.mu.Unlock()
	c.tick <- now
	<-seen
}

// serve runs the real gRPC server chain over bufconn and returns a client.
// Cancelling the returned function shuts the server down as the dispatcher
// does.
func serve(t testing.TB, jobs dispatchrpc.Jobs, clk *clock, opts ...func(*dispatchrpc.Options)) (spoolv1.DispatchServiceClient, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.DiscardHandler)
	srv := grpcserve.New(log, grpcserve.Security{})
	o := dispatchrpc.Options{
		Shutdown: ctx.Done(),
		Now:      clk.Now,
		Tick:     func(time.Duration) (<-chan time.Time, func()) { return clk.tick, func() {} },
		Log:      log,
	}
	for _, opt := range opts {
		opt(&o)
	}
	spoolv1.RegisterDispatchServiceServer(srv, dispatchrpc.New(jobs, o))
	conn := grpcservetest.Dial(t, ctx, srv)
	t.Cleanup(cancel)
	return spoolv1.NewDispatchServiceClient(conn), cancel
}

// watch opens a watch of job j on client.
func watch(t *testing.T, client spoolv1.DispatchServiceClient) grpc.ServerStreamingClient[spoolv1.WatchJobResponse] {
	t.Helper()
	stream, err := client.WatchJob(t.Context(), &spoolv1.WatchJobRequest{JobId: "j"})
	require.NoError(t, err)
	return stream
}

func newClock() *clock {
	return &clock{now: time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC), tick: make(chan time.Time)}
}

func sealed(total, delivered int64) *spoolv1.Job {
	return &spoolv1.Job{JobId: "j", State: spoolv1.JobState_JOB_STATE_SEALED, RowsPublished: total, Total: total, Delivered: delivered}
}

// recvAll reads the stream to its end.
func recvAll(t testing.TB, s grpc.ServerStreamingClient[spoolv1.WatchJobResponse]) ([]*spoolv1.JobProgress, error) {
	t.Helper()
	var out []*spoolv1.JobProgress
	for {
		m, err := s.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		out = append(out, m.GetProgress())
	}
}

func TestWatchSequence(t *testing.T) {
	jobs := &fakeJobs{job: sealed(1000, 0)}
	clk := newClock()
	client, _ := serve(t, jobs, clk)
	stream := watch(t, client)

	first, err := stream.Recv()
	require.NoError(t, err)
	want := &spoolv1.JobProgress{Job: sealed(1000, 0), InFlight: 1000}
	require.Empty(t, cmp.Diff(want, first.GetProgress(), protocmp.Transform()))

	// Changed: 100 settled in one second, 900 left → 9 s.
	jobs.set(func(j *spoolv1.Job) { j.Delivered = 90; j.Failed = 10 })
	clk.advance(time.Second)
	// Unchanged and within the heartbeat: nothing is sent.
	clk.advance(time.Second)
	// Unchanged, but 5 s since the last message: a heartbeat. The window
	// now spans the 6 s since the first sample: 100 rows / 6 s.
	clk.advance(4 * time.Second)
	// Final.
	jobs.set(func(j *spoolv1.Job) { j.Delivered = 990; j.State = spoolv1.JobState_JOB_STATE_COMPLETED })
	clk.advance(time.Second)

	rest, err := recvAll(t, stream)
	require.NoError(t, err)
	require.Len(t, rest, 3)

	update := rest[0]
	require.EqualValues(t, 900, update.GetInFlight())
	require.InDelta(t, 100, update.GetRatePerSecond(), 1e-9)
	require.Equal(t, 9*time.Second, update.GetEta().AsDuration())
	require.False(t, update.GetFinal())

	heartbeat := rest[1]
	require.EqualValues(t, 100, heartbeat.GetJob().GetDelivered()+heartbeat.GetJob().GetFailed())
	require.InDelta(t, 100.0/6, heartbeat.GetRatePerSecond(), 1e-9)
	require.Equal(t, 54*time.Second, heartbeat.GetEta().AsDuration())

	final := rest[2]
	require.True(t, final.GetFinal())
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, final.GetJob().GetState())
	require.Zero(t, final.GetInFlight())
	require.Nil(t, final.GetEta())
}

// TestHungReadDoesNotStallTheWatch: a read of the watched job that hangs
// fails after the read timeout, and the next tick reads again.
func TestHungReadDoesNotStallTheWatch(t *testing.T) {
	jobs := &fakeJobs{job: sealed(1000, 0)}
	clk := newClock()
	client, _ := serve(t, jobs, clk, func(o *dispatchrpc.Options) { o.ReadTimeout = 20 * time.Millisecond })
	stream := watch(t, client)
	_, err := stream.Recv()
	require.NoError(t, err)

	hung := make(chan struct{})
	jobs.mu.Lock()
	jobs.hung = hung
	jobs.mu.Unlock()
	clk.tick <- clk.later(time.Second)
	<-hung
	jobs.mu.Lock()
	jobs.hung = nil
	jobs.mu.Unlock()

	jobs.set(func(j *spoolv1.Job) { j.Delivered = 1000; j.State = spoolv1.JobState_JOB_STATE_COMPLETED })
	next := make(chan *spoolv1.WatchJobResponse, 1)
	go func() {
		m, _ := stream.Recv()
		next <- m
	}()
	for {
		select {
		case clk.tick <- clk.later(time.Second):
			continue
		case m := <-next:
			require.True(t, m.GetProgress().GetFinal(), "the watch went on after the hung read")
		case <-time.After(5 * time.Second):
			t.Fatal("the watch is stuck on a hung read")
		}
		break
	}
}

func TestRateForgetsOldSamples(t *testing.T) {
	jobs := &fakeJobs{job: sealed(1000, 0)}
	clk := newClock()
	client, _ := serve(t, jobs, clk)
	stream := watch(t, client)
	_, err := stream.Recv()
	require.NoError(t, err)

	// 100 rows in the first second, then nothing for ten: heartbeats at 6 s
	// and 11 s. By 11 s the burst has left the 10 s window.
	jobs.set(func(j *spoolv1.Job) { j.Delivered = 100 })
	for range 11 {
		clk.advance(time.Second)
	}
	jobs.set(func(j *spoolv1.Job) { j.State = spoolv1.JobState_JOB_STATE_CANCELLED })
	clk.advance(time.Second)

	got, err := recvAll(t, stream)
	require.NoError(t, err)
	require.Len(t, got, 4)
	require.InDelta(t, 100, got[0].GetRatePerSecond(), 1e-9)
	require.InDelta(t, 100.0/6, got[1].GetRatePerSecond(), 1e-9)
	require.Zero(t, got[2].GetRatePerSecond())
	require.Nil(t, got[2].GetEta())
	require.True(t, got[3].GetFinal())
}

func TestWatchEndsAtOnceOnFinalJob(t *testing.T) {
	for _, state := range []spoolv1.JobState{
		spoolv1.JobState_JOB_STATE_COMPLETED, spoolv1.JobState_JOB_STATE_ABORTED,
		spoolv1.JobState_JOB_STATE_REJECTED, spoolv1.JobState_JOB_STATE_CANCELLED,
	} {
		t.Run(state.String(), func(t *testing.T) {
			job := sealed(5, 5)
			job.State = state
			client, _ := serve(t, &fakeJobs{job: job}, newClock())
			stream := watch(t, client)
			got, err := recvAll(t, stream)
			require.NoError(t, err)
			require.Len(t, got, 1)
			require.True(t, got[0].GetFinal())
		})
	}
}

func TestWatchErrors(t *testing.T) {
	tests := []struct {
		name string
		id   string
		err  error
		want codes.Code
	}{
		{name: "job id required", id: "", want: codes.InvalidArgument},
		{name: "unknown job", id: "other", want: codes.NotFound},
		{name: "store down", id: "j", err: errors.New("throttled"), want: codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, _ := serve(t, &fakeJobs{job: sealed(1, 0), err: tt.err}, newClock())
			stream, err := client.WatchJob(t.Context(), &spoolv1.WatchJobRequest{JobId: tt.id})
			require.NoError(t, err)
			_, err = recvAll(t, stream)
			require.Equal(t, tt.want, status.Code(err), "error %v", err)
		})
	}
}

func TestWatchEndsOnShutdown(t *testing.T) {
	client, shutdown := serve(t, &fakeJobs{job: sealed(10, 0)}, newClock())
	stream := watch(t, client)
	_, err := stream.Recv()
	require.NoError(t, err)
	shutdown()
	_, err = recvAll(t, stream)
	require.Equal(t, codes.Unavailable, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "watch again")
}

func TestProgress(t *testing.T) {
	tests := []struct {
		name string
		job  *spoolv1.Job
		rate float64
		want *spoolv1.JobProgress
	}{
		{
			name: "receiving estimates from published",
			job:  &spoolv1.Job{State: spoolv1.JobState_JOB_STATE_RECEIVING, RowsPublished: 300, Delivered: 100},
			rate: 50,
			want: &spoolv1.JobProgress{InFlight: 200, RatePerSecond: 50, Eta: durationpb.New(4 * time.Second)},
		},
		{
			name: "sealed uses the total",
			job:  &spoolv1.Job{State: spoolv1.JobState_JOB_STATE_SEALED, RowsPublished: 1000, Total: 1000, Delivered: 400, Failed: 100},
			rate: 250,
			want: &spoolv1.JobProgress{InFlight: 500, RatePerSecond: 250, Eta: durationpb.New(2 * time.Second)},
		},
		{
			name: "no rate, no eta",
			job:  &spoolv1.Job{State: spoolv1.JobState_JOB_STATE_SEALED, RowsPublished: 10, Total: 10},
			want: &spoolv1.JobProgress{InFlight: 10},
		},
		{
			name: "in flight never negative",
			job:  &spoolv1.Job{State: spoolv1.JobState_JOB_STATE_RECEIVING, RowsPublished: 10, Delivered: 12},
			rate: 1,
			want: &spoolv1.JobProgress{Eta: durationpb.New(0), RatePerSecond: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.want.Job = tt.job
			require.Empty(t, cmp.Diff(tt.want, dispatchrpc.Progress(tt.job, tt.rate), protocmp.Transform()))
		})
	}
}

func TestWatchedTellsWhichJobsAreAwaited(t *testing.T) {
	tests := []struct {
		name  string
		state spoolv1.JobState
		want  []string
	}{
		{name: "sealed", state: spoolv1.JobState_JOB_STATE_SEALED, want: []string{"j"}},
		{name: "completed", state: spoolv1.JobState_JOB_STATE_COMPLETED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job := sealed(5, 5)
			job.State = tt.state
			watched := make(chan string, 1)
			client, cancel := serve(t, &fakeJobs{job: job}, newClock(), func(o *dispatchrpc.Options) {
				o.Watched = func(id string) { watched <- id }
			})
			stream := watch(t, client)
			_, err := stream.Recv()
			require.NoError(t, err)
			cancel()
			_, _ = recvAll(t, stream)
			close(watched)
			var got []string
			for id := range watched {
				got = append(got, id)
			}
			require.Equal(t, tt.want, got)
		})
	}
}
