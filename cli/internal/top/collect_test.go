package top

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spoolhq/spool/cli/internal/spooltest"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// fakeDispatch answers the status and the open jobs, or hangs until the
// caller gives up.
type fakeDispatch struct {
	spoolv1.UnimplementedDispatchServiceServer
	id   string
	flow *spoolv1.FlowControl
	hang bool
	// noList answers ListOpenJobs Unimplemented, as a dispatcher from
	// before it does.
	noList bool

	mu        sync.Mutex
	jobs      []*spoolv1.Job
	open      int32
	listCalls int
}

func (f *fakeDispatch) GetDispatcherStatus(ctx context.Context, _ *spoolv1.GetDispatcherStatusRequest) (*spoolv1.GetDispatcherStatusResponse, error) {
	if f.hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &spoolv1.GetDispatcherStatusResponse{DispatcherId: f.id, Flow: f.flow}, nil
}

func (f *fakeDispatch) ListOpenJobs(_ context.Context, req *spoolv1.ListOpenJobsRequest) (*spoolv1.ListOpenJobsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listCalls++
	if f.noList {
		return nil, status.Error(codes.Unimplemented, "unknown method ListOpenJobs")
	}
	jobs := f.jobs
	if int(req.GetLimit()) < len(jobs) {
		jobs = jobs[:req.GetLimit()]
	}
	return &spoolv1.ListOpenJobsResponse{Jobs: jobs, Open: f.open}, nil
}

func (f *fakeDispatch) setDelivered(n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.jobs[0].Delivered = n
}

// fleetOf serves each fake at its address (nil: nobody listens there) and
// returns a collector over all of them, with a clock that moves 2 s a call.
func fleetOf(t *testing.T, timeout time.Duration, limit int, fakes map[string]*fakeDispatch, addrs ...string) *Collector {
	t.Helper()
	net := spooltest.NewNetwork()
	clients := make([]spoolv1.DispatchServiceClient, len(addrs))
	for i, addr := range addrs {
		if f := fakes[addr]; f != nil {
			net.Serve(t, addr, func(s grpc.ServiceRegistrar) { spoolv1.RegisterDispatchServiceServer(s, f) })
		}
		clients[i] = spoolv1.NewDispatchServiceClient(net.Dial(t, addr))
	}
	clock := at
	now := func() time.Time { clock = clock.Add(2 * time.Second); return clock }
	return NewCollector(addrs, clients, timeout, limit, now)
}

func TestCollect(t *testing.T) {
	flow := &spoolv1.FlowControl{ConcurrencyLimit: 8, InFlight: 3, BreakerState: spoolv1.BreakerState_BREAKER_STATE_CLOSED}
	job := &spoolv1.Job{JobId: "job-1", State: spoolv1.JobState_JOB_STATE_SEALED, Total: 1000, Delivered: 100}
	hung := &fakeDispatch{hang: true}
	answering := &fakeDispatch{id: "d-2", flow: flow, jobs: []*spoolv1.Job{job}, open: 4}
	c := fleetOf(t, 200*time.Millisecond, 10, map[string]*fakeDispatch{"127.0.0.1:1": hung, "127.0.0.1:2": answering},
		"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")

	start := time.Now()
	snap := c.Collect(context.Background())
	require.Less(t, time.Since(start), 2*time.Second, "a hung dispatcher held the snapshot")

	require.Len(t, snap.Dispatchers, 3)
	require.Equal(t, codes.DeadlineExceeded, status.Code(snap.Dispatchers[0].Err), "%v", snap.Dispatchers[0].Err)
	require.Equal(t, "127.0.0.1:1", snap.Dispatchers[0].Addr)
	require.NoError(t, snap.Dispatchers[1].Err)
	require.Equal(t, "d-2", snap.Dispatchers[1].ID)
	require.Equal(t, int32(3), snap.Dispatchers[1].Flow.GetInFlight())
	require.Equal(t, codes.Unavailable, status.Code(snap.Dispatchers[2].Err), "%v", snap.Dispatchers[2].Err)

	// The hung dispatcher is never asked for the jobs: the one that
	// answered lists them, and the first snapshot has no rate yet.
	require.NoError(t, snap.JobsErr)
	require.Equal(t, 4, snap.Open)
	require.Len(t, snap.Jobs, 1)
	require.False(t, snap.Jobs[0].HasRate)

	// 2 s later 300 rows more are settled: 150 rows/s.
	answering.setDelivered(400)
	snap = c.Collect(context.Background())
	require.Len(t, snap.Jobs, 1)
	require.True(t, snap.Jobs[0].HasRate)
	require.InDelta(t, 150, snap.Jobs[0].Rate, 0.001)
}

func TestCollectJobs(t *testing.T) {
	tests := []struct {
		name    string
		fakes   map[string]*fakeDispatch
		wantErr string
	}{
		{name: "no dispatcher answers", fakes: map[string]*fakeDispatch{}, wantErr: "no dispatcher answered"},
		{
			name:    "dispatchers from before the listing",
			fakes:   map[string]*fakeDispatch{"127.0.0.1:1": {id: "d", noList: true}},
			wantErr: "Unimplemented: unknown method ListOpenJobs",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := fleetOf(t, time.Second, 10, tt.fakes, "127.0.0.1:1")
			snap := c.Collect(context.Background())
			require.ErrorContains(t, snap.JobsErr, tt.wantErr)
			require.Empty(t, snap.Jobs)
		})
	}
}

// frames records what a screen was shown, and ends the run after n.
type frames struct {
	n      int
	cancel context.CancelFunc
	shown  [][]string
	closed bool
}

func (f *frames) Show(lines func(int) []string) error {
	f.shown = append(f.shown, lines(100))
	if len(f.shown) == f.n {
		f.cancel()
	}
	return nil
}

func (f *frames) Close() error { f.closed = true; return nil }

func TestRun(t *testing.T) {
	d := &fakeDispatch{id: "d-1", flow: &spoolv1.FlowControl{ConcurrencyLimit: 8}, jobs: []*spoolv1.Job{{JobId: "job-1", Total: 10}}, open: 1}

	t.Run("once, plain", func(t *testing.T) {
		c := fleetOf(t, time.Second, 10, map[string]*fakeDispatch{"127.0.0.1:1": d}, "127.0.0.1:1")
		var out bytes.Buffer
		require.NoError(t, Run(context.Background(), c, NewScreen(&out, notTerminal), time.Hour, true))
		require.Equal(t, strings.Join([]string{
			"spool top  09:15:44  1 dispatcher",
			"DISPATCHER   ID   LIMIT  IN FLIGHT  RATE LIMIT  BREAKER  OPENS  LATENCY NOW/BASE",
			"127.0.0.1:1  d-1      8          0         off  -            0  -/-",
			"",
			"JOBS  1 open",
			"JOB    STATE        SETTLED     %  RATE  UNKNOWN  FAILED  DLQ  FILE",
			"job-1  UNSPECIFIED     0/10  0.0%     -        0       0    0",
		}, "\n")+"\n", out.String())
	})

	t.Run("every interval until cancelled", func(t *testing.T) {
		c := fleetOf(t, time.Second, 10, map[string]*fakeDispatch{"127.0.0.1:1": d}, "127.0.0.1:1")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		f := &frames{n: 3, cancel: cancel}
		require.NoError(t, Run(ctx, c, f, time.Millisecond, false))
		require.Len(t, f.shown, 3)
		require.Equal(t, "spool top  09:15:48  1 dispatcher", f.shown[2][0])
		require.True(t, f.closed)
	})
}
