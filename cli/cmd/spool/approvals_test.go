package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spoolhq/spool/cli/internal/spooltest"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

var (
	t0      = time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	request = &spoolv1.ApprovalRequest{
		RequestId: "19ad-1f2e3d4c", Action: spoolv1.OperatorAction_OPERATOR_ACTION_RESOLVE, JobId: "job-1", Row: 7,
		Resolution: spoolv1.Resolution_RESOLUTION_DELIVERED, RequestedBy: "ops-ann", RequestedAt: timestamppb.New(t0),
		Reason: "seen in the portal", ExpiresAt: timestamppb.New(t0.Add(24 * time.Hour)), State: spoolv1.ApprovalState_APPROVAL_STATE_PENDING,
	}
)

func TestResolvePendingApproval(t *testing.T) {
	var got *spoolv1.ResolveTransactionRequest
	h := newHarness(t)
	h.dispatch(t, dispA, &spooltest.Dispatch{Resolve: func(req *spoolv1.ResolveTransactionRequest) (*spoolv1.ResolveTransactionResponse, error) {
		got = req
		return &spoolv1.ResolveTransactionResponse{PendingApproval: request}, nil
	}})
	require.NoError(t, h.run("resolve", "-dispatcher-addrs", dispA, "-delivered", "-reason", "seen in the portal", "job-1", "7"))
	require.Equal(t, "seen in the portal", got.GetReason())
	require.Equal(t, "resolve row 7 DELIVERED of job job-1 awaits approval by another person (four-eyes): nothing changed yet\n"+
		"request 19ad-1f2e3d4c, expires 2026-12-01T09:00:00Z; they approve it with: spool approve 19ad-1f2e3d4c\n", h.stdout.String())
}

func TestApprove(t *testing.T) {
	var got *spoolv1.ApproveRequestRequest
	applied := &spoolv1.ApprovalRequest{
		RequestId: request.GetRequestId(), Action: request.GetAction(), JobId: "job-1", Row: 7, Resolution: request.GetResolution(),
		RequestedBy: "ops-ann", ApprovedBy: "ops-bob", State: spoolv1.ApprovalState_APPROVAL_STATE_APPLIED,
	}
	tests := []struct {
		name    string
		answer  func(*spoolv1.ApproveRequestRequest) (*spoolv1.ApproveRequestResponse, error)
		want    string
		wantErr string
	}{
		{
			name: "applied",
			answer: func(*spoolv1.ApproveRequestRequest) (*spoolv1.ApproveRequestResponse, error) {
				return &spoolv1.ApproveRequestResponse{Request: applied, Entry: &spoolv1.LedgerEntry{
					JobId: "job-1", Row: 7, State: spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED,
				}}, nil
			},
			want: "request 19ad-1f2e3d4c (resolve row 7 DELIVERED of job job-1, asked by ops-ann) approved by ops-bob: applied\n" +
				"row 7 of job job-1 is now DELIVERED\n",
		},
		{
			name: "own request",
			answer: func(*spoolv1.ApproveRequestRequest) (*spoolv1.ApproveRequestResponse, error) {
				return nil, status.Error(codes.PermissionDenied, "four-eyes rule: a request must be approved by a principal other than the one who made it")
			},
			wantErr: "four-eyes rule",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.dispatch(t, dispA, &spooltest.Dispatch{Approve: func(req *spoolv1.ApproveRequestRequest) (*spoolv1.ApproveRequestResponse, error) {
				got = req
				return tt.answer(req)
			}})
			err := h.run("approve", "-dispatcher-addrs", dispA, "-reason", "called them", "19ad-1f2e3d4c")
			require.Equal(t, "19ad-1f2e3d4c", got.GetRequestId())
			require.Equal(t, "called them", got.GetReason())
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, h.stdout.String())
		})
	}
}

func TestPending(t *testing.T) {
	var asked []string
	h := newHarness(t)
	h.dispatch(t, dispA, &spooltest.Dispatch{Pending: func(req *spoolv1.ListPendingRequestsRequest) (*spoolv1.ListPendingRequestsResponse, error) {
		asked = append(asked, req.GetJobId())
		if req.GetJobId() == "job-2" {
			return &spoolv1.ListPendingRequestsResponse{}, nil
		}
		return &spoolv1.ListPendingRequestsResponse{Requests: []*spoolv1.ApprovalRequest{request}}, nil
	}})
	h.env["SPOOL_DISPATCHER_ADDRS"] = dispA
	require.NoError(t, h.run("pending"))
	require.Equal(t, `request        job    what                     asked by  at                    expires               reason              state
19ad-1f2e3d4c  job-1  resolve row 7 DELIVERED  ops-ann   2026-11-30T09:00:00Z  2026-12-01T09:00:00Z  seen in the portal  awaits approval
`, h.stdout.String())
	h.stdout.Reset()
	require.NoError(t, h.run("pending", "job-2"))
	require.Equal(t, "no request awaits approval\n", h.stdout.String())
	require.Equal(t, []string{"", "job-2"}, asked)
}

func TestAudit(t *testing.T) {
	// Two pages: the command follows the token to the end.
	pages := map[string]*spoolv1.ListAuditEventsResponse{
		"": {Events: []*spoolv1.AuditEvent{
			{Action: spoolv1.OperatorAction_OPERATOR_ACTION_PAUSE, Actor: "ops-ann", At: timestamppb.New(t0), Reason: "bank holiday", Outcome: "ok"},
			{
				Action: spoolv1.OperatorAction_OPERATOR_ACTION_REQUEST, Actor: "ops-ann", At: timestamppb.New(t0.Add(time.Minute)),
				RequestedAction: spoolv1.OperatorAction_OPERATOR_ACTION_RESOLVE, Row: 7, Resolution: spoolv1.Resolution_RESOLUTION_DELIVERED,
				RequestId: "19ad-1f2e3d4c", Outcome: "ok",
			},
		}, NextPageToken: "p2"},
		"p2": {Events: []*spoolv1.AuditEvent{
			{
				Action: spoolv1.OperatorAction_OPERATOR_ACTION_RESOLVE, Actor: "ops-ann", ApprovedBy: "ops-bob", At: timestamppb.New(t0.Add(2 * time.Minute)),
				Row: 7, Resolution: spoolv1.Resolution_RESOLUTION_DELIVERED, RequestId: "19ad-1f2e3d4c",
			},
		}},
	}
	h := newHarness(t)
	h.dispatch(t, dispA, &spooltest.Dispatch{Audit: func(req *spoolv1.ListAuditEventsRequest) (*spoolv1.ListAuditEventsResponse, error) {
		require.Equal(t, "job-1", req.GetJobId())
		return pages[req.GetPageToken()], nil
	}})
	require.NoError(t, h.run("audit", "-dispatcher-addrs", dispA, "job-1"))
	require.Equal(t, `at                    action                                                   by       approved by  reason        outcome
2026-11-30T09:00:00Z  pause                                                    ops-ann  -            bank holiday  ok
2026-11-30T09:01:00Z  request resolve row 7 DELIVERED (request 19ad-1f2e3d4c)  ops-ann  -            -             ok
2026-11-30T09:02:00Z  resolve row 7 DELIVERED (request 19ad-1f2e3d4c)          ops-ann  ops-bob      -             unknown: look at the job
`, h.stdout.String())
}
