package dispatchrpc_test

import (
	"context"
	"fmt"
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
	"google.golang.org/protobuf/proto"

	"github.com/spoolhq/spool/dispatcher/internal/audit"
	"github.com/spoolhq/spool/dispatcher/internal/deadletter"
	"github.com/spoolhq/spool/dispatcher/internal/dispatchrpc"
	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/auth"
	"github.com/spoolhq/spool/platform/emulator/dbfault"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/grpcserve"
	"github.com/spoolhq/spool/platform/grpcserve/grpcservetest"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/tablelayout"
)

const (
	operator = "ops-ann"
	approver = "ops-bob"
	viewer   = "vic"
)

// principals stands for the auth interceptor: the caller named by the
// x-test-subject header, with the permissions the test gives that name.
var principals = map[string][]auth.Permission{
	operator: {auth.PermView, auth.PermOperate, auth.PermResolve, auth.PermRedrive},
	approver: {auth.PermView, auth.PermOperate, auth.PermResolve, auth.PermRedrive},
	viewer:   {auth.PermView},
}

func asPrincipal(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("x-test-subject"); len(v) == 1 {
		ctx = auth.NewContext(ctx, auth.Principal{Subject: v[0], Method: "jwt", Permissions: principals[v[0]]})
	}
	return h(ctx, req)
}

func as(subject string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "x-test-subject", subject)
}

// ticking is a clock that moves a millisecond each time it is read, as
// time does between two calls, and jumps when the test says.
type ticking struct {
	mu sync.Mutex
	t  time.Time
}

func (c *ticking) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

func (c *ticking) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// counter records the counter deltas the server adds.
type counter struct {
	mu  sync.Mutex
	sum jobstore.Counts
	n   int
}

func (c *counter) Add(_ string, d jobstore.Counts) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sum = c.sum.Plus(d)
	c.n++
}

// redrives counts redrives of a dead-letter queue that holds nothing.
type redrives struct {
	mu sync.Mutex
	n  int
}

func (r *redrives) List(context.Context, string, int, func(deadletter.Entry) error) (deadletter.Summary, error) {
	return deadletter.Summary{Complete: true}, nil
}

func (r *redrives) Redrive(context.Context, string, int) (deadletter.Summary, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	return deadletter.Summary{Matched: 2, Scanned: 2, Complete: true}, nil
}

// oversight is a dispatcher's API over a real table (dynalite), with its
// ledger holding UNKNOWN rows 1 to 3 of job-1, and the table's client
// behind a fault injector.
type oversight struct {
	client  spoolv1.DispatchServiceClient
	book    *ledger.Ledger
	faults  *dbfault.DB
	clock   *ticking
	counts  *counter
	drives  *redrives
	control *control
}

func newOversight(t *testing.T, fourEyes dispatchrpc.FourEyes) *oversight {
	t.Helper()
	db := emutest.Table(t, "spool")
	clk := &ticking{t: time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)}
	o := &oversight{faults: dbfault.New(db, nil), clock: clk, counts: &counter{}, drives: &redrives{},
		control: &control{job: &spoolv1.Job{JobId: "job-1", State: spoolv1.JobState_JOB_STATE_SEALED}}}
	o.book = ledger.New(ledger.NewDynamo(db, "spool"), ledger.Options{Owner: "d1", Lease: 10 * time.Second, Now: clk.Now})
	ctx := context.Background()
	for row := int64(1); row <= 3; row++ {
		env := &spoolv1.Envelope{JobId: "job-1", Row: row}
		c, err := o.book.Claim(ctx, ledger.Tx{Key: fmt.Sprintf("job-1:%d", row), JobID: "job-1", Row: row, Envelope: env})
		require.NoError(t, err)
		r, err := o.book.Sending(ctx, c.Record)
		require.NoError(t, err)
		_, _, err = o.book.Finish(ctx, r, ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN, Envelope: env})
		require.NoError(t, err)
	}
	trail := audit.New(o.faults, "spool", clk.Now)
	log := slog.New(slog.DiscardHandler)
	srv := grpcserve.New(log, grpcserve.Security{}, grpc.ChainUnaryInterceptor(asPrincipal))
	spoolv1.RegisterDispatchServiceServer(srv, dispatchrpc.New(tableJobs{}, dispatchrpc.Options{
		Now: clk.Now, Log: log, Ledger: o.book, Counter: o.counts, DeadLetters: o.drives, Control: o.control,
		Audit: trail, Approvals: trail, FourEyes: fourEyes,
	}))
	conn := grpcservetest.Dial(t, context.Background(), srv)
	o.client = spoolv1.NewDispatchServiceClient(conn)
	return o
}

// row reads a row of job-1 from the ledger.
func (o *oversight) row(t *testing.T, row int64) ledger.Record {
	t.Helper()
	var got ledger.Record
	require.NoError(t, o.book.Report(context.Background(), "job-1", func(r ledger.Record) error {
		if r.Row == row {
			got = r
		}
		return nil
	}))
	return got
}

// trail reads job-1's whole audit trail, pageSize events a page.
func (o *oversight) trail(t *testing.T, pageSize int32) []*spoolv1.AuditEvent {
	t.Helper()
	var all []*spoolv1.AuditEvent
	token := ""
	for {
		res, err := o.client.ListAuditEvents(as(viewer), &spoolv1.ListAuditEventsRequest{JobId: "job-1", PageSize: pageSize, PageToken: token})
		require.NoError(t, err)
		require.LessOrEqual(t, len(res.GetEvents()), int(pageSize))
		all = append(all, res.GetEvents()...)
		if token = res.GetNextPageToken(); token == "" {
			return all
		}
	}
}

func TestFourEyesResolve(t *testing.T) {
	o := newOversight(t, dispatchrpc.FourEyes{Resolve: true, Redrive: true, TTL: time.Hour})
	unknown := spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN

	// The operator's resolve only records a request: the row stays UNKNOWN.
	res, err := o.client.ResolveTransaction(as(operator), &spoolv1.ResolveTransactionRequest{
		JobId: "job-1", Row: 1, Resolution: spoolv1.Resolution_RESOLUTION_DELIVERED, Reason: "seen in the portal",
	})
	require.NoError(t, err)
	require.Nil(t, res.GetEntry())
	pending := res.GetPendingApproval()
	require.NotEmpty(t, pending.GetRequestId())
	require.Equal(t, spoolv1.ApprovalState_APPROVAL_STATE_PENDING, pending.GetState())
	require.Equal(t, operator, pending.GetRequestedBy())
	require.Equal(t, "seen in the portal", pending.GetReason())
	require.WithinDuration(t, o.clock.Now().Add(time.Hour), pending.GetExpiresAt().AsTime(), time.Second)
	require.Equal(t, unknown, o.row(t, 1).State)

	list, err := o.client.ListPendingRequests(as(viewer), &spoolv1.ListPendingRequestsRequest{JobId: "job-1"})
	require.NoError(t, err)
	require.Len(t, list.GetRequests(), 1)
	require.Equal(t, pending.GetRequestId(), list.GetRequests()[0].GetRequestId())

	// Refusals change nothing.
	_, err = o.client.ApproveRequest(as(operator), &spoolv1.ApproveRequestRequest{RequestId: pending.GetRequestId()})
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	require.ErrorContains(t, err, "four-eyes rule")
	_, err = o.client.ApproveRequest(as(viewer), &spoolv1.ApproveRequestRequest{RequestId: pending.GetRequestId()})
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	require.ErrorContains(t, err, `permission "resolve" required`)
	_, err = o.client.ApproveRequest(as(approver), &spoolv1.ApproveRequestRequest{RequestId: "no-such"})
	require.Equal(t, codes.NotFound, status.Code(err))
	_, err = o.client.ResolveTransaction(as(operator), &spoolv1.ResolveTransactionRequest{JobId: "job-1", Row: 9, Resolution: spoolv1.Resolution_RESOLUTION_DELIVERED})
	require.Equal(t, codes.NotFound, status.Code(err), "no request for a row that is not there")
	require.Equal(t, unknown, o.row(t, 1).State)

	// The approval's write is applied but its answer lost: the call fails,
	// and approving again carries on, applying the resolution once.
	o.faults.SetPlan(dbfault.Once(1, dbfault.Lose, func(c dbfault.Call) bool {
		return c.Op == "UpdateItem" && c.PK == tablelayout.RequestPartition
	}))
	_, err = o.client.ApproveRequest(as(approver), &spoolv1.ApproveRequestRequest{RequestId: pending.GetRequestId(), Reason: "called them"})
	require.Equal(t, codes.Unavailable, status.Code(err))
	require.Equal(t, 1, o.faults.Injected(dbfault.Lose))
	require.Equal(t, unknown, o.row(t, 1).State)

	// The settle's answer is lost and retried by the SDK: still once.
	o.faults.SetPlan(dbfault.Once(1, dbfault.LoseRetried, func(c dbfault.Call) bool {
		return c.Op == "UpdateItem" && c.PK == tablelayout.RequestPartition
	}))
	got, err := o.client.ApproveRequest(as(approver), &spoolv1.ApproveRequestRequest{RequestId: pending.GetRequestId(), Reason: "called them"})
	require.NoError(t, err)
	require.Equal(t, spoolv1.ApprovalState_APPROVAL_STATE_APPLIED, got.GetRequest().GetState())
	require.Equal(t, approver, got.GetRequest().GetApprovedBy())
	require.Equal(t, spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, got.GetEntry().GetState())
	require.Equal(t, operator, got.GetEntry().GetResolvedBy())
	require.Equal(t, approver, got.GetEntry().GetApprovedBy())
	r := o.row(t, 1)
	require.Equal(t, ledger.Resolver{By: operator, ApprovedBy: approver, Request: pending.GetRequestId()}, r.Resolved)

	// Approving once more answers with the applied request, and changes
	// nothing.
	again, err := o.client.ApproveRequest(as(approver), &spoolv1.ApproveRequestRequest{RequestId: pending.GetRequestId()})
	require.NoError(t, err)
	require.Equal(t, spoolv1.ApprovalState_APPROVAL_STATE_APPLIED, again.GetRequest().GetState())
	require.Equal(t, r.Version, o.row(t, 1).Version)
	require.Equal(t, jobstore.Counts{Unknown: -1, Delivered: 1}, o.counts.sum, "counted once")
	_, err = o.client.ResolveTransaction(as(operator), &spoolv1.ResolveTransactionRequest{JobId: "job-1", Row: 1, Resolution: spoolv1.Resolution_RESOLUTION_RESEND})
	require.Equal(t, codes.FailedPrecondition, status.Code(err))
	require.ErrorContains(t, err, "is DELIVERED, not UNKNOWN")

	// A request not approved in time expires.
	res, err = o.client.ResolveTransaction(as(operator), &spoolv1.ResolveTransactionRequest{
		JobId: "job-1", Row: 2, Resolution: spoolv1.Resolution_RESOLUTION_RESEND, Reason: "missing there",
	})
	require.NoError(t, err)
	o.clock.advance(time.Hour)
	_, err = o.client.ApproveRequest(as(approver), &spoolv1.ApproveRequestRequest{RequestId: res.GetPendingApproval().GetRequestId()})
	require.Equal(t, codes.FailedPrecondition, status.Code(err))
	require.ErrorContains(t, err, "expired at")
	require.Equal(t, unknown, o.row(t, 2).State)
	require.False(t, o.row(t, 2).Resend)
	list, err = o.client.ListPendingRequests(as(viewer), &spoolv1.ListPendingRequestsRequest{})
	require.NoError(t, err)
	require.Empty(t, list.GetRequests())

	// The trail, read a page of two at a time, names both principals.
	events := o.trail(t, 2)
	var lines []string
	for _, e := range events {
		lines = append(lines, strings.Join([]string{
			audit.ActionName(e.GetAction()), e.GetActor(), e.GetApprovedBy(), outcomeWord(e.GetOutcome()),
		}, " "))
	}
	require.Equal(t, []string{
		"request ops-ann  ok",
		"approve ops-ann  PermissionDenied",
		// The approval took effect in the call whose answer was lost; the
		// resolution's event is timed at the approval, and the retry
		// that applied it follows.
		"approve ops-bob  Unavailable",
		"resolve ops-ann ops-bob ok",
		"approve ops-bob  ok",
		"approve ops-bob  ok",
		"request ops-ann  ok",
		"approve ops-bob  FailedPrecondition",
	}, lines)
	require.Equal(t, events, o.trail(t, 100), "one page or many, the same trail")
}

// outcomeWord is an outcome's status code, or ok.
func outcomeWord(outcome string) string {
	word, _, _ := strings.Cut(outcome, ":")
	return word
}

func TestFourEyesRedriveAppliesOnce(t *testing.T) {
	o := newOversight(t, dispatchrpc.FourEyes{Redrive: true, TTL: time.Hour})
	res, err := o.client.RedriveDeadLetters(as(operator), &spoolv1.RedriveDeadLettersRequest{JobId: "job-1", Reason: "destination fixed"})
	require.NoError(t, err)
	require.Nil(t, res.GetSummary())
	id := res.GetPendingApproval().GetRequestId()
	require.Equal(t, spoolv1.OperatorAction_OPERATOR_ACTION_REDRIVE, res.GetPendingApproval().GetAction())
	require.Zero(t, o.drives.n)

	// The redrive is done and its outcome recorded, but the request's
	// last step (APPROVED → APPLIED) fails: approving again settles it
	// and redrives nothing more.
	var requestWrites int
	o.faults.SetPlan(func(c dbfault.Call) dbfault.Fault {
		if c.Op != "UpdateItem" || c.PK != tablelayout.RequestPartition {
			return dbfault.Pass
		}
		if requestWrites++; requestWrites == 2 {
			return dbfault.Throttle
		}
		return dbfault.Pass
	})
	got, err := o.client.ApproveRequest(as(approver), &spoolv1.ApproveRequestRequest{RequestId: id})
	require.NoError(t, err)
	require.EqualValues(t, 2, got.GetSummary().GetMatched())
	require.Equal(t, spoolv1.ApprovalState_APPROVAL_STATE_APPROVED, got.GetRequest().GetState())
	require.Equal(t, 1, o.faults.Injected(dbfault.Throttle))
	// The approval cut short is listed, until approving again settles it.
	list, err := o.client.ListPendingRequests(as(viewer), &spoolv1.ListPendingRequestsRequest{})
	require.NoError(t, err)
	require.Len(t, list.GetRequests(), 1)
	require.Equal(t, spoolv1.ApprovalState_APPROVAL_STATE_APPROVED, list.GetRequests()[0].GetState())
	for range 2 {
		got, err := o.client.ApproveRequest(as(approver), &spoolv1.ApproveRequestRequest{RequestId: id})
		require.NoError(t, err)
		require.Equal(t, spoolv1.ApprovalState_APPROVAL_STATE_APPLIED, got.GetRequest().GetState())
	}
	require.Equal(t, 1, o.drives.n)
	list, err = o.client.ListPendingRequests(as(viewer), &spoolv1.ListPendingRequestsRequest{JobId: "job-1"})
	require.NoError(t, err)
	require.Empty(t, list.GetRequests())
	var redriveEvents int
	for _, e := range o.trail(t, 100) {
		if e.GetAction() == spoolv1.OperatorAction_OPERATOR_ACTION_REDRIVE {
			redriveEvents++
			require.Equal(t, operator, e.GetActor())
			require.Equal(t, approver, e.GetApprovedBy())
			require.Equal(t, "destination fixed", e.GetReason())
			require.Equal(t, "ok", e.GetOutcome())
		}
	}
	require.Equal(t, 1, redriveEvents)

	// Resolutions are not under four-eyes here: applied at once, and
	// recorded with who did it.
	rr, err := o.client.ResolveTransaction(as(operator), &spoolv1.ResolveTransactionRequest{JobId: "job-1", Row: 3, Resolution: spoolv1.Resolution_RESOLUTION_DELIVERED})
	require.NoError(t, err)
	require.Nil(t, rr.GetPendingApproval())
	require.Equal(t, operator, rr.GetEntry().GetResolvedBy())
	require.Empty(t, rr.GetEntry().GetApprovedBy())
}

func TestAuditedControls(t *testing.T) {
	o := newOversight(t, dispatchrpc.FourEyes{})

	// An action whose audit event cannot be written is not taken.
	o.faults.SetPlan(dbfault.Once(1, dbfault.Throttle, func(c dbfault.Call) bool {
		return c.Op == "PutItem" && c.PK == tablelayout.AuditPartition("job-1")
	}))
	_, err := o.client.PauseJob(as(operator), &spoolv1.PauseJobRequest{JobId: "job-1", Reason: "bank holiday"})
	require.Equal(t, codes.Unavailable, status.Code(err))
	require.ErrorContains(t, err, "nothing was done")
	require.False(t, o.control.job.GetPaused())

	_, err = o.client.PauseJob(as(operator), &spoolv1.PauseJobRequest{JobId: "job-1", Reason: "bank holiday"})
	require.NoError(t, err)
	_, err = o.client.ResumeJob(as(approver), &spoolv1.ResumeJobRequest{JobId: "job-1"})
	require.NoError(t, err)
	_, err = o.client.UpdateJob(as(operator), &spoolv1.UpdateJobRequest{JobId: "job-1", MaxFailureRate: proto.Float64(0.05), Reason: "known bad accounts"})
	require.NoError(t, err)
	_, err = o.client.CancelJob(context.Background(), &spoolv1.CancelJobRequest{JobId: "job-1", Reason: "wrong file"})
	require.NoError(t, err)
	_, err = o.client.CancelJob(context.Background(), &spoolv1.CancelJobRequest{JobId: "job-1", Reason: "again"})
	require.Equal(t, codes.FailedPrecondition, status.Code(err))

	events := o.trail(t, 100)
	require.Len(t, events, 5)
	want := []struct {
		action  spoolv1.OperatorAction
		actor   string
		reason  string
		outcome string
	}{
		{spoolv1.OperatorAction_OPERATOR_ACTION_PAUSE, operator, "bank holiday", "ok"},
		{spoolv1.OperatorAction_OPERATOR_ACTION_RESUME, approver, "", "ok"},
		{spoolv1.OperatorAction_OPERATOR_ACTION_UPDATE, operator, "known bad accounts", "ok"},
		{spoolv1.OperatorAction_OPERATOR_ACTION_CANCEL, dispatchrpc.Anonymous, "wrong file", "ok"},
		{spoolv1.OperatorAction_OPERATOR_ACTION_CANCEL, dispatchrpc.Anonymous, "again", "FailedPrecondition"},
	}
	for i, w := range want {
		e := events[i]
		require.Equal(t, w.action, e.GetAction(), i)
		require.Equal(t, w.actor, e.GetActor(), i)
		require.Equal(t, w.reason, e.GetReason(), i)
		require.Equal(t, w.outcome, outcomeWord(e.GetOutcome()), i)
		require.NotNil(t, e.GetOutcomeAt(), i)
	}
	require.Equal(t, "max_failure_rate=0.05", events[2].GetDetail())

	_, err = o.client.ResumeJob(as(operator), &spoolv1.ResumeJobRequest{JobId: "job-1", Reason: strings.Repeat("x", dispatchrpc.MaxReason+1)})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Len(t, o.trail(t, 100), 5, "a refused call leaves no event")

	_, err = o.client.ListAuditEvents(as(viewer), &spoolv1.ListAuditEventsRequest{JobId: "job-1", PageToken: "%%%"})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
}
