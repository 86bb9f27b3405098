package dispatchrpc_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spoolhq/spool/dispatcher/internal/audit"
	"github.com/spoolhq/spool/dispatcher/internal/deadletter"
	"github.com/spoolhq/spool/dispatcher/internal/dispatchrpc"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// scanRecorder records the max_scan each scan was given.
type scanRecorder struct{ asked []int }

func (r *scanRecorder) List(_ context.Context, _ string, maxScan int, _ func(deadletter.Entry) error) (deadletter.Summary, error) {
	r.asked = append(r.asked, maxScan)
	return deadletter.Summary{Complete: true}, nil
}

func (r *scanRecorder) Redrive(_ context.Context, _ string, maxScan int) (deadletter.Summary, error) {
	r.asked = append(r.asked, maxScan)
	return deadletter.Summary{Complete: true}, nil
}

func TestMaxScanCapped(t *testing.T) {
	tests := []struct {
		name    string
		limit   int
		asked   int32
		wantErr string // "" when the scan runs with asked
	}{
		{name: "server default", limit: 100, asked: 0},
		{name: "under the cap", limit: 100, asked: 99},
		{name: "at the cap", limit: 100, asked: 100},
		{name: "over the cap", limit: 100, asked: 101, wantErr: "max_scan 101 is over the server's limit dead-letter-scan-max=100"},
		{name: "negative", limit: 100, asked: -1, wantErr: "max_scan -1"},
		{name: "no cap configured", limit: 0, asked: 1 << 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &scanRecorder{}
			client, _ := serve(t, &fakeJobs{}, newClock(), func(o *dispatchrpc.Options) { o.DeadLetters, o.MaxScanLimit = rec, tt.limit })
			list := func() error {
				s, err := client.ListDeadLetters(t.Context(), &spoolv1.ListDeadLettersRequest{JobId: "j", MaxScan: tt.asked})
				if err != nil {
					return err
				}
				_, err = s.Recv()
				return err
			}
			redrive := func() error {
				_, err := client.RedriveDeadLetters(t.Context(), &spoolv1.RedriveDeadLettersRequest{JobId: "j", MaxScan: tt.asked})
				return err
			}
			for _, call := range []func() error{list, redrive} {
				err := call()
				if tt.wantErr != "" {
					require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
					require.ErrorContains(t, err, tt.wantErr)
					continue
				}
				require.NoError(t, err)
			}
			if tt.wantErr != "" {
				require.Empty(t, rec.asked, "a refused request scans nothing")
				return
			}
			require.Equal(t, []int{int(tt.asked), int(tt.asked)}, rec.asked)
		})
	}
}

// noApprovals fails the test's call if a four-eyes request is recorded.
type noApprovals struct{ created int }

func (n *noApprovals) Create(context.Context, audit.Request, time.Duration) (audit.Request, error) {
	n.created++
	return audit.Request{}, errors.New("no request expected")
}
func (*noApprovals) Get(context.Context, string) (audit.Request, error) { return audit.Request{}, nil }
func (*noApprovals) Approve(context.Context, string, string, string) (audit.Request, error) {
	return audit.Request{}, nil
}
func (*noApprovals) Settle(context.Context, string, error) (audit.Request, error) {
	return audit.Request{}, nil
}
func (*noApprovals) Pending(context.Context, string) ([]audit.Request, error) { return nil, nil }

// TestMaxScanCappedBeforeFourEyes: a redrive over the cap is refused at
// once, not recorded for a second principal to approve in vain.
func TestMaxScanCappedBeforeFourEyes(t *testing.T) {
	rec, approvals := &scanRecorder{}, &noApprovals{}
	client, _ := serve(t, &fakeJobs{}, newClock(), func(o *dispatchrpc.Options) {
		o.DeadLetters, o.MaxScanLimit = rec, 100
		o.Approvals, o.FourEyes = approvals, dispatchrpc.FourEyes{Redrive: true}
	})
	_, err := client.RedriveDeadLetters(t.Context(), &spoolv1.RedriveDeadLettersRequest{JobId: "j", MaxScan: 101})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "dead-letter-scan-max=100")
	require.Zero(t, approvals.created)
	require.Empty(t, rec.asked)
}
