package ingest

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/auth"
	"github.com/spoolhq/spool/platform/grpcserve"
	"github.com/spoolhq/spool/platform/grpcserve/grpcservetest"
)

func TestStreamSlots(t *testing.T) {
	type step struct {
		who     string // "" for a call without a principal
		release int    // >0: release the slot taken at this step (1-based) instead
		refused bool
	}
	tests := []struct {
		name  string
		max   int
		steps []step
	}{
		{name: "no limit", max: 0, steps: []step{{who: "a"}, {who: "a"}, {who: "a"}}},
		{name: "per principal", max: 2, steps: []step{{who: "a"}, {who: "a"}, {who: "a", refused: true}, {who: "b"}, {who: "b"}}},
		{name: "anonymous calls share one count", max: 1, steps: []step{{}, {refused: true}, {who: "a"}}},
		{name: "a released slot is taken again", max: 1, steps: []step{{who: "a"}, {who: "a", refused: true}, {release: 1}, {who: "a"}}},
		{name: "releasing twice frees one slot", max: 2, steps: []step{{who: "a"}, {who: "a"}, {release: 1}, {release: 1}, {who: "a"}, {who: "a", refused: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStreamSlots(tt.max)
			releases := map[int]func(){}
			for i, st := range tt.steps {
				if st.release > 0 {
					releases[st.release]()
					continue
				}
				ctx := context.Background()
				if st.who != "" {
					ctx = auth.NewContext(ctx, auth.Principal{Subject: st.who})
				}
				release, err := s.acquire(ctx)
				if st.refused {
					require.Equal(t, codes.ResourceExhausted, status.Code(err), "step %d", i+1)
					require.ErrorContains(t, err, "max-streams-per-principal=")
					continue
				}
				require.NoError(t, err, "step %d", i+1)
				releases[i+1] = release
			}
		})
	}
}

// subjectHeader carries the test's caller, which a stand-in for the auth
// interceptor puts into the context as the real one would.
const subjectHeader = "x-test-subject"

func asCaller(ss grpc.ServerStream) grpc.ServerStream {
	md, _ := metadata.FromIncomingContext(ss.Context())
	if v := md.Get(subjectHeader); len(v) > 0 {
		return &callerStream{ServerStream: ss, ctx: auth.NewContext(ss.Context(), auth.Principal{Subject: v[0]})}
	}
	return ss
}

type callerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *callerStream) Context() context.Context { return c.ctx }

// startBounded serves srv over bufconn behind the stand-in auth
// interceptor.
func startBounded(tb testing.TB, srv *Server) spoolv1.IngestServiceClient {
	tb.Helper()
	s := grpcserve.New(slog.New(slog.NewTextHandler(tb.Output(), nil)), grpcserve.Security{}, grpc.ChainStreamInterceptor(
		func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, asCaller(ss))
		}))
	spoolv1.RegisterIngestServiceServer(s, srv)
	conn := grpcservetest.Dial(tb, context.Background(), s)
	return spoolv1.NewIngestServiceClient(conn)
}

func TestStreamFileCapPerPrincipal(t *testing.T) {
	jobs := newFakeJobs()
	srv := New(jobs, Config{NewPublisher: pubFactory(&fakePub{}), MaxStreams: 2})
	c := startBounded(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	as := func(who string) context.Context { return metadata.AppendToOutgoingContext(ctx, subjectHeader, who) }

	// Two streams of alice stay open: they sent a header and wait.
	var cancels []context.CancelFunc
	for range 2 {
		sctx, scancel := context.WithCancel(as("alice"))
		cancels = append(cancels, scancel)
		stream, err := c.StreamFile(sctx)
		require.NoError(t, err)
		require.NoError(t, stream.Send(hdr(&spoolv1.FileHeader{Columns: []string{"a"}})))
	}
	require.Eventually(t, func() bool { return srv.slots.inUse("alice") == 2 }, 5*time.Second, time.Millisecond)

	_, err := send(as("alice"), c, hdr(&spoolv1.FileHeader{Columns: []string{"a"}}), rowsMsg([]string{"1"}))
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "limit max-streams-per-principal=2")
	require.Equal(t, 2, jobs.count(), "a refused stream touches no job")

	_, err = send(as("bob"), c, hdr(&spoolv1.FileHeader{Columns: []string{"a"}}), rowsMsg([]string{"1"}))
	require.NoError(t, err, "another caller has slots of its own")

	// A stream that ends, here by its client going away, frees its slot.
	cancels[0]()
	require.Eventually(t, func() bool { return srv.slots.inUse("alice") == 1 }, 5*time.Second, time.Millisecond)
	_, err = send(as("alice"), c, hdr(&spoolv1.FileHeader{Columns: []string{"a"}}), rowsMsg([]string{"1"}))
	require.NoError(t, err)
	require.Equal(t, 1, srv.slots.inUse("alice"), "a finished stream frees its slot")
	cancels[1]()
	require.Eventually(t, func() bool { return srv.slots.inUse("alice") == 0 }, 5*time.Second, time.Millisecond)
}

// fakeIdle is an idle timer the test fires by hand.
type fakeIdle struct {
	mu     sync.Mutex
	n      int
	active map[int]chan time.Time
}

func (f *fakeIdle) timer(time.Duration) (<-chan time.Time, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	id, c := f.n, make(chan time.Time, 1)
	if f.active == nil {
		f.active = map[int]chan time.Time{}
	}
	f.active[id] = c
	return c, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.active, id)
	}
}

// fire runs out the timer of a Recv waiting for the client, and reports
// whether one was waiting.
func (f *fakeIdle) fire() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.active {
		c <- time.Now()
		return true
	}
	return false
}

func TestStreamFileIdleTimeout(t *testing.T) {
	tests := []struct {
		name    string
		header  *spoolv1.FileHeader
		rows    bool // a row was published before the client fell silent
		state   spoolv1.JobState
		created bool
	}{
		{name: "silent after the header: no job", header: &spoolv1.FileHeader{FileName: "f.csv"}},
		{name: "no key: aborted as a broken stream", header: &spoolv1.FileHeader{Columns: []string{"a"}}, rows: true, created: true,
			state: spoolv1.JobState_JOB_STATE_ABORTED},
		{name: "keyed: left receiving for a resume as a broken stream", header: &spoolv1.FileHeader{Columns: []string{"a"}, JobKey: "k1"}, rows: true, created: true,
			state: spoolv1.JobState_JOB_STATE_RECEIVING},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jobs := newFakeJobs()
			pub, published := signallingPub()
			idle := &fakeIdle{}
			c, logs := startServer(t, jobs, Config{NewPublisher: pubFactory(pub), IdleTimeout: time.Minute, idleTimer: idle.timer})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stream, err := c.StreamFile(ctx)
			require.NoError(t, err)
			require.NoError(t, stream.Send(hdr(tt.header)))
			if tt.rows {
				require.NoError(t, stream.Send(rowsMsg([]string{"1"})))
				<-published
			}
			require.Eventually(t, idle.fire, 5*time.Second, time.Millisecond, "the server waits for the client")
			_, err = stream.CloseAndRecv()
			require.Equal(t, codes.DeadlineExceeded, status.Code(err), "%v", err)
			require.ErrorContains(t, err, "limit stream-idle-timeout=1m0s")
			if !tt.created {
				require.Zero(t, jobs.count())
				return
			}
			require.Eventually(t, func() bool {
				j, err := jobs.Get(context.Background(), jobs.only(t).GetJobId())
				return err == nil && j.GetState() == tt.state
			}, 5*time.Second, time.Millisecond)
			if tt.state == spoolv1.JobState_JOB_STATE_RECEIVING {
				require.Eventually(t, func() bool { return strings.Contains(logs.String(), "stream broke") }, 5*time.Second, time.Millisecond)
			} else {
				require.Contains(t, jobs.only(t).GetStateReason(), "stream-idle-timeout")
			}
		})
	}
}
