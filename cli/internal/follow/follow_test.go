package follow

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/spoolhq/spool/cli/internal/spooltest"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

func progress(settled, total int64, state spoolv1.JobState, final bool) *spoolv1.JobProgress {
	return &spoolv1.JobProgress{
		Job:   &spoolv1.Job{JobId: "j1", State: state, Total: total, Delivered: settled, RowsPublished: total},
		Final: final,
	}
}

var (
	sealed1 = progress(10, 100, spoolv1.JobState_JOB_STATE_SEALED, false)
	sealed2 = progress(50, 100, spoolv1.JobState_JOB_STATE_SEALED, false)
	done    = progress(100, 100, spoolv1.JobState_JOB_STATE_COMPLETED, true)
)

func TestFollow(t *testing.T) {
	shuttingDown := status.Error(codes.Unavailable, "dispatcher shutting down; watch again")
	tests := []struct {
		name string
		// dispatchers by address; an address listed in addrs but absent
		// here is unreachable.
		dispatchers map[string]*spooltest.Dispatch
		addrs       []string
		wantFinal   *spoolv1.JobProgress
		wantUpdates []*spoolv1.JobProgress
		wantSwitch  []string
		wantCode    codes.Code
		wantErr     string
		wantCalls   map[string]int
	}{
		{
			name:        "first dispatcher answers",
			dispatchers: map[string]*spooltest.Dispatch{"127.0.0.1:1": {Progress: []*spoolv1.JobProgress{sealed1, done}}},
			addrs:       []string{"127.0.0.1:1", "127.0.0.1:2"},
			wantFinal:   done,
			wantUpdates: []*spoolv1.JobProgress{sealed1, done},
			wantCalls:   map[string]int{"127.0.0.1:1": 1},
		},
		{
			name:        "unreachable first address fails over",
			dispatchers: map[string]*spooltest.Dispatch{"127.0.0.1:2": {Progress: []*spoolv1.JobProgress{sealed2, done}}},
			addrs:       []string{"127.0.0.1:1", "127.0.0.1:2"},
			wantFinal:   done,
			wantUpdates: []*spoolv1.JobProgress{sealed2, done},
			wantSwitch:  []string{"127.0.0.1:1->127.0.0.1:2"},
			wantCalls:   map[string]int{"127.0.0.1:2": 1},
		},
		{
			name: "dispatcher shutting down mid-watch resumes on the next",
			dispatchers: map[string]*spooltest.Dispatch{
				"127.0.0.1:1": {Progress: []*spoolv1.JobProgress{sealed1}, End: shuttingDown},
				"127.0.0.1:2": {Progress: []*spoolv1.JobProgress{sealed2, done}},
			},
			addrs:       []string{"127.0.0.1:1", "127.0.0.1:2"},
			wantFinal:   done,
			wantUpdates: []*spoolv1.JobProgress{sealed1, sealed2, done},
			wantSwitch:  []string{"127.0.0.1:1->127.0.0.1:2"},
			wantCalls:   map[string]int{"127.0.0.1:1": 1, "127.0.0.1:2": 1},
		},
		{
			name: "stream ending without a final message resumes, wrapping around",
			dispatchers: map[string]*spooltest.Dispatch{
				"127.0.0.1:1": {Progress: []*spoolv1.JobProgress{sealed1, done}},
				"127.0.0.1:2": {Progress: []*spoolv1.JobProgress{sealed2}},
			},
			addrs:       []string{"127.0.0.1:2", "127.0.0.1:1"},
			wantFinal:   done,
			wantUpdates: []*spoolv1.JobProgress{sealed2, sealed1, done},
			wantSwitch:  []string{"127.0.0.1:2->127.0.0.1:1"},
			wantCalls:   map[string]int{"127.0.0.1:1": 1, "127.0.0.1:2": 1},
		},
		{
			name:        "not found is final, no failover",
			dispatchers: map[string]*spooltest.Dispatch{"127.0.0.1:1": {End: status.Error(codes.NotFound, "job j1 not found")}, "127.0.0.1:2": {}},
			addrs:       []string{"127.0.0.1:1", "127.0.0.1:2"},
			wantCode:    codes.NotFound,
			wantErr:     "watch job j1 on 127.0.0.1:1: NotFound: job j1 not found",
			wantCalls:   map[string]int{"127.0.0.1:1": 1},
		},
		{
			name: "every dispatcher unavailable gives up after the rounds",
			dispatchers: map[string]*spooltest.Dispatch{
				"127.0.0.1:1": {End: shuttingDown},
				"127.0.0.1:2": {End: shuttingDown},
			},
			addrs:      []string{"127.0.0.1:1", "127.0.0.1:2"},
			wantCode:   codes.Unavailable,
			wantErr:    "no dispatcher answered (tried 4 times",
			wantSwitch: []string{"127.0.0.1:1->127.0.0.1:2", "127.0.0.1:2->127.0.0.1:1", "127.0.0.1:1->127.0.0.1:2"},
			wantCalls:  map[string]int{"127.0.0.1:1": 2, "127.0.0.1:2": 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			net := spooltest.NewNetwork()
			for addr, d := range tt.dispatchers {
				net.Serve(t, addr, func(s grpc.ServiceRegistrar) { spoolv1.RegisterDispatchServiceServer(s, d) })
			}
			var switches []string
			f := &Follower{Rounds: 2, OnSwitch: func(from, to string, err error) {
				require.Error(t, err)
				switches = append(switches, from+"->"+to)
			}}
			for _, a := range tt.addrs {
				f.Targets = append(f.Targets, Target{Addr: a, Client: spoolv1.NewDispatchServiceClient(net.Dial(t, a))})
			}
			var updates []*spoolv1.JobProgress
			final, err := f.Follow(context.Background(), "j1", func(p *spoolv1.JobProgress) { updates = append(updates, p) })
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Equal(t, tt.wantCode, status.Code(err))
			} else {
				require.NoError(t, err)
				require.Empty(t, cmp.Diff(tt.wantFinal, final, protocmp.Transform()))
			}
			require.Empty(t, cmp.Diff(tt.wantUpdates, updates, protocmp.Transform()))
			require.Equal(t, tt.wantSwitch, switches)
			for addr, d := range tt.dispatchers {
				require.Len(t, d.Calls(), tt.wantCalls[addr], "calls to %s", addr)
				for _, id := range d.Calls() {
					require.Equal(t, "j1", id)
				}
			}
		})
	}
}

func TestFollowStopsWithTheContext(t *testing.T) {
	net := spooltest.NewNetwork()
	f := &Follower{Targets: []Target{{Addr: "127.0.0.1:9", Client: spoolv1.NewDispatchServiceClient(net.Dial(t, "127.0.0.1:9"))}}, Rounds: 1000, Backoff: 1 << 40}
	ctx, cancel := context.WithCancel(context.Background())
	f.OnSwitch = func(string, string, error) { cancel() }
	_, err := f.Follow(ctx, "j1", nil)
	require.ErrorIs(t, err, context.Canceled)
}

func TestFollowNeedsATarget(t *testing.T) {
	_, err := (&Follower{}).Follow(context.Background(), "j1", nil)
	require.ErrorContains(t, err, "no dispatcher")
}
