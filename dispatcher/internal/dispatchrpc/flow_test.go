package dispatchrpc_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"

	"github.com/spoolhq/spool/dispatcher/internal/dispatchrpc"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// fakeFlow reports a fixed flow control.
type fakeFlow struct{ f *spoolv1.FlowControl }

func (f fakeFlow) Status() *spoolv1.FlowControl { return f.f }

func TestDispatcherStatusAndWatchCarryFlow(t *testing.T) {
	want := &spoolv1.FlowControl{
		ConcurrencyLimit: 12, InFlight: 3, RateLimit: 50,
		BreakerState: spoolv1.BreakerState_BREAKER_STATE_OPEN, BreakerOpens: 2,
	}
	jobs := &fakeJobs{job: sealed(10, 10)}
	client, _ := serve(t, jobs, newClock(), func(o *dispatchrpc.Options) {
		o.DispatcherID = "dispatcher-7"
		o.Flow = fakeFlow{want}
	})
	ctx := context.Background()

	got, err := client.GetDispatcherStatus(ctx, &spoolv1.GetDispatcherStatusRequest{})
	require.NoError(t, err)
	require.Equal(t, "dispatcher-7", got.GetDispatcherId())
	require.Empty(t, cmp.Diff(want, got.GetFlow(), protocmp.Transform()))

	w, err := client.WatchJob(ctx, &spoolv1.WatchJobRequest{JobId: "j"})
	require.NoError(t, err)
	msg, err := w.Recv()
	require.NoError(t, err)
	require.Empty(t, cmp.Diff(want, msg.GetFlow(), protocmp.Transform()))
}

func TestDispatcherStatusWithoutFlowControl(t *testing.T) {
	client, _ := serve(t, &fakeJobs{}, newClock())
	got, err := client.GetDispatcherStatus(context.Background(), &spoolv1.GetDispatcherStatusRequest{})
	require.NoError(t, err)
	require.Nil(t, got.GetFlow())
}
