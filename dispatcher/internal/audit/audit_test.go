package audit_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/audit"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/testkit"
)

func newStore(t *testing.T) (*audit.Store, *testkit.Clock) {
	t.Helper()
	clk := testkit.NewClock(time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC))
	return audit.New(emutest.Table(t, "spool"), "spool", clk.Now), clk
}

func TestApprove(t *testing.T) {
	s, clk := newStore(t)
	ctx := context.Background()
	mk := func(t *testing.T) audit.Request {
		t.Helper()
		r, err := s.Create(ctx, audit.Request{
			Action: spoolv1.OperatorAction_OPERATOR_ACTION_RESOLVE, JobID: "job-1", Row: 4,
			Resolution: spoolv1.Resolution_RESOLUTION_RESEND, RequestedBy: "ann", Reason: "missing there",
		}, time.Hour)
		require.NoError(t, err)
		return r
	}
	approvedByBob := func(t *testing.T) string {
		t.Helper()
		id := mk(t).ID
		_, err := s.Approve(ctx, id, "bob", "")
		require.NoError(t, err)
		return id
	}
	tests := []struct {
		name    string
		setup   func(t *testing.T) string
		by      string
		want    spoolv1.ApprovalState
		wantErr error
	}{
		{name: "another principal", setup: func(t *testing.T) string { return mk(t).ID }, by: "bob", want: spoolv1.ApprovalState_APPROVAL_STATE_APPROVED},
		{name: "own request", setup: func(t *testing.T) string { return mk(t).ID }, by: "ann", wantErr: audit.ErrSelf},
		{name: "no such request", setup: func(*testing.T) string { return "nope" }, by: "bob", wantErr: audit.ErrNotFound},
		{
			name: "expired", by: "bob", wantErr: audit.ErrExpired,
			setup: func(t *testing.T) string {
				id := mk(t).ID
				clk.Advance(time.Hour)
				return id
			},
		},
		{
			name: "approved again by the same principal", by: "bob", want: spoolv1.ApprovalState_APPROVAL_STATE_APPROVED,
			setup: approvedByBob,
		},
		{
			name: "approved already by another", by: "cat", wantErr: audit.ErrState,
			setup: approvedByBob,
		},
		{
			name: "applied, asked again by its approver", by: "bob", want: spoolv1.ApprovalState_APPROVAL_STATE_APPLIED,
			setup: func(t *testing.T) string {
				id := approvedByBob(t)
				r, err := s.Settle(ctx, id, nil)
				require.NoError(t, err)
				require.Equal(t, spoolv1.ApprovalState_APPROVAL_STATE_APPLIED, r.State)
				return id
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := tt.setup(t)
			r, err := s.Approve(ctx, id, tt.by, "checked")
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				if !errors.Is(err, audit.ErrNotFound) {
					got, gerr := s.Get(ctx, id)
					require.NoError(t, gerr)
					require.NotEqual(t, tt.by, got.ApprovedBy, "a refusal changes nothing")
				}
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, r.State)
			require.Equal(t, tt.by, r.ApprovedBy)
			require.Equal(t, "ann", r.RequestedBy)
			require.Equal(t, int64(4), r.Row)
			require.Equal(t, spoolv1.Resolution_RESOLUTION_RESEND, r.Resolution)
		})
	}
}

func TestSettleOnce(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	r, err := s.Create(ctx, audit.Request{Action: spoolv1.OperatorAction_OPERATOR_ACTION_REDRIVE, JobID: "job-1", RequestedBy: "ann"}, time.Hour)
	require.NoError(t, err)
	_, err = s.Settle(ctx, r.ID, nil)
	require.NoError(t, err, "a pending request is not settled: it comes back as it is")
	got, err := s.Get(ctx, r.ID)
	require.NoError(t, err)
	require.Equal(t, spoolv1.ApprovalState_APPROVAL_STATE_PENDING, got.State)

	_, err = s.Approve(ctx, r.ID, "bob", "")
	require.NoError(t, err)
	first, err := s.Settle(ctx, r.ID, errors.New("NotFound: job gone"))
	require.NoError(t, err)
	require.Equal(t, spoolv1.ApprovalState_APPROVAL_STATE_FAILED, first.State)
	again, err := s.Settle(ctx, r.ID, nil)
	require.NoError(t, err)
	require.Equal(t, first, again, "settled once")
}

func TestEvents(t *testing.T) {
	s, clk := newStore(t)
	ctx := context.Background()
	var began []audit.Event
	for i, a := range []spoolv1.OperatorAction{
		spoolv1.OperatorAction_OPERATOR_ACTION_PAUSE, spoolv1.OperatorAction_OPERATOR_ACTION_RESUME, spoolv1.OperatorAction_OPERATOR_ACTION_CANCEL,
	} {
		e, err := s.Begin(ctx, audit.Event{JobID: "job-1", Action: a, Actor: "ann", Reason: string(rune('a' + i))})
		require.NoError(t, err)
		began = append(began, e)
		clk.Advance(time.Millisecond)
	}
	require.NoError(t, s.Finish(ctx, began[0], nil))
	require.NoError(t, s.Finish(ctx, began[0], errors.New("later")), "an outcome is kept once recorded")
	require.NoError(t, s.Finish(ctx, began[2], errors.New("FailedPrecondition: job is COMPLETED")))

	// An event begun again under its id is the one stored.
	again, err := s.Begin(ctx, audit.Event{JobID: "job-1", ID: began[0].ID, At: began[0].At, Action: began[0].Action, Actor: "someone else"})
	require.NoError(t, err)
	require.Equal(t, "ann", again.Actor)
	require.Equal(t, "ok", again.Outcome)

	page1, next, err := s.List(ctx, "job-1", 2, "")
	require.NoError(t, err)
	require.Len(t, page1, 2)
	require.NotEmpty(t, next)
	page2, next2, err := s.List(ctx, "job-1", 2, next)
	require.NoError(t, err)
	require.Len(t, page2, 1)
	all := slices.Concat(page1, page2)
	for i, e := range all {
		require.Equal(t, began[i].ID, e.ID)
		require.Equal(t, began[i].Action, e.Action)
		require.Equal(t, began[i].Reason, e.Reason)
	}
	require.Equal(t, "ok", all[0].Outcome)
	require.Empty(t, all[1].Outcome, "no outcome: attempted, result unknown")
	require.Equal(t, "FailedPrecondition: job is COMPLETED", all[2].Outcome)
	if next2 != "" {
		rest, _, err := s.List(ctx, "job-1", 2, next2)
		require.NoError(t, err)
		require.Empty(t, rest)
	}
	_, _, err = s.List(ctx, "job-1", 2, "!!")
	require.ErrorIs(t, err, audit.ErrBadToken)
	other, _, err := s.List(ctx, "job-2", 10, "")
	require.NoError(t, err)
	require.Empty(t, other)
}
