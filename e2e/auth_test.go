package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/local/stack"
	"github.com/spoolhq/spool/platform/devpki"
	"github.com/spoolhq/spool/platform/emulator/emutest"
)

// What the test expects the dev policy to grant, written out here rather
// than read from the policy, so that a wrong policy or a wrong rule fails.
var matrixRoles = map[string][]string{
	"submitter": {"submit"},
	"viewer":    {"view"},
	"operator":  {"view", "operate", "resolve", "redrive"},
	"approver":  {"view", "operate", "resolve", "redrive"},
	"admin":     {"submit", "view", "operate", "resolve", "redrive", "inline-business-keys"},
}

// matrixCred is one way of calling: a credential, and what it is granted.
type matrixCred struct {
	name string
	// authenticated is false for credentials that must be refused
	// Unauthenticated whatever the call.
	authenticated bool
	subject       string
	perms         []string
	opts          []grpc.DialOption
}

// matrixCall is one RPC (or one variant of it) and who may make it.
type matrixCall struct {
	name string
	// allowed says whether a caller with perms and subject may make it.
	allowed func(perms []string, subject string) bool
	// changes marks calls that change state when allowed; a refused one
	// must leave the table and the queues as they were.
	changes bool
	call    func(ctx context.Context, ing spoolv1.IngestServiceClient, dis spoolv1.DispatchServiceClient) error
}

func anyOf(want ...string) func([]string, string) bool {
	return func(perms []string, _ string) bool {
		for _, w := range want {
			if slices.Contains(perms, w) {
				return true
			}
		}
		return false
	}
}

// TestAuthMatrix calls every RPC of both services with every kind of
// credential: none, malformed, expired, wrong issuer, wrong audience, a key
// the servers do not know, no roles, each role, and a client certificate.
// Exactly the cells the policy allows get past authentication and
// authorization; every other is refused with the right code and changes
// nothing in the table or the queues.
func TestAuthMatrix(t *testing.T) {
	s := startStack(t, 1, func(o *stack.Options) {
		// Every request is applied and answered too late: job A's rows
		// all end UNKNOWN, so a resolve has something to settle.
		o.SinkArgs = []string{"-hang-rate", "1", "-hang-for", "1500ms"}
		o.DispatcherArgs = []string{"-destination-timeout", "500ms", "-receiving-delay", "1s"}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env := stackEnv(s.Env)

	tokenConn := func(token string) []grpc.DialOption { return dialOptionsAs(t, token) }
	mint := func(sub string, roles []string, ttl time.Duration) string {
		tok, err := pki.Token(sub, roles, ttl)
		require.NoError(t, err)
		return tok
	}
	sign := func(claims map[string]any) string {
		tok, err := pki.Sign(claims)
		require.NoError(t, err)
		return tok
	}
	other, err := devpki.New(t.TempDir())
	require.NoError(t, err)
	foreign, err := other.Token("e2e-foreign", []string{"admin"}, time.Hour)
	require.NoError(t, err)
	clientTLS, err := pki.ClientTLS()
	require.NoError(t, err)
	exp := time.Now().Add(time.Hour).Unix()

	// Refused credentials come first, so the state they must not change is
	// still there to be changed; the operators' allowed calls come last.
	creds := []matrixCred{
		{name: "no credential", opts: tokenConn("")},
		{name: "malformed token", opts: tokenConn("not.a-token")},
		{name: "expired token", opts: tokenConn(mint("e2e-expired", []string{"admin"}, -time.Hour))},
		{name: "wrong issuer", opts: tokenConn(sign(map[string]any{"iss": "someone-else", "aud": devpki.Audience, "sub": "e2e-x", "exp": exp, "roles": []string{"admin"}}))},
		{name: "wrong audience", opts: tokenConn(sign(map[string]any{"iss": devpki.Issuer, "aud": "another-service", "sub": "e2e-x", "exp": exp, "roles": []string{"admin"}}))},
		{name: "unknown signing key", opts: tokenConn(foreign)},
		{name: "no roles", authenticated: true, subject: "e2e-nobody", opts: tokenConn(mint("e2e-nobody", nil, time.Hour))},
	}
	for _, role := range []string{"submitter", "viewer", "operator", "approver", "admin"} {
		sub := "e2e-" + role
		creds = append(creds, matrixCred{name: role, authenticated: true, subject: sub, perms: matrixRoles[role], opts: tokenConn(mint(sub, []string{role}, time.Hour))})
	}
	creds = append(creds, matrixCred{name: "client certificate", authenticated: true, subject: devpki.ClientName, perms: matrixRoles["admin"],
		opts: []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(clientTLS))}})

	// Job A: three rows, all UNKNOWN, submitted by the harness's admin.
	jobA := streamFile(t, s.Ingestor.Addr, writeSample(t, 3), &spoolv1.FileHeader{FileName: "a.csv"}).GetJobId()
	waitJob(t, s, &spoolv1.GetJobRequest{JobId: jobA}, time.Minute, "every row of A UNKNOWN", func(j *spoolv1.Job) bool {
		return isFinal(j.GetState()) && j.GetUnknown() == 3
	})
	// Job S: submitted by the submitter, so it may read it back.
	submitterConn := dialWith(t, s.Ingestor.Addr, creds[slices.IndexFunc(creds, func(c matrixCred) bool { return c.name == "submitter" })].opts)
	jobS, err := emptyStream(ctx, spoolv1.NewIngestServiceClient(submitterConn), &spoolv1.FileHeader{FileName: "s.csv", Columns: []string{"employee_id", "name", "amount"}})
	require.NoError(t, err)
	// Job B: RECEIVING, its stream held open, so it can be paused,
	// resumed and cancelled.
	bctx, bcancel := context.WithCancel(ctx)
	defer bcancel()
	held, err := spoolv1.NewIngestServiceClient(dial(t, s.Ingestor.Addr)).StreamFile(bctx)
	require.NoError(t, err)
	require.NoError(t, held.Send(&spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Header{Header: &spoolv1.FileHeader{
		FileName: "b.csv", JobKey: "auth-matrix-b", Columns: []string{"employee_id", "name", "amount"}}}}))
	jobB := waitJob(t, s, &spoolv1.GetJobRequest{JobKey: "auth-matrix-b"}, 30*time.Second, "job B receiving", func(j *spoolv1.Job) bool {
		return j.GetState() == spoolv1.JobState_JOB_STATE_RECEIVING
	}).GetJobId()

	view := anyOf("view")
	calls := []matrixCall{
		{name: "StreamFile", allowed: anyOf("submit"), changes: true, call: func(ctx context.Context, ing spoolv1.IngestServiceClient, _ spoolv1.DispatchServiceClient) error {
			_, err := emptyStream(ctx, ing, &spoolv1.FileHeader{FileName: "m.csv", Columns: []string{"employee_id", "name", "amount"}})
			return err
		}},
		{name: "StreamFile with inline business keys", changes: true,
			allowed: func(p []string, _ string) bool {
				return slices.Contains(p, "submit") && slices.Contains(p, "inline-business-keys")
			},
			call: func(ctx context.Context, ing spoolv1.IngestServiceClient, _ spoolv1.DispatchServiceClient) error {
				_, err := emptyStream(ctx, ing, &spoolv1.FileHeader{FileName: "k.csv", InlineProfile: &spoolv1.Profile{
					Name: "inline", Columns: []*spoolv1.ColumnSpec{{Name: "employee_id"}, {Name: "name"}}, BusinessKeyColumns: []string{"employee_id"},
				}})
				return err
			}},
		{name: "GetJob of another's job", allowed: view, call: func(ctx context.Context, ing spoolv1.IngestServiceClient, _ spoolv1.DispatchServiceClient) error {
			_, err := ing.GetJob(ctx, &spoolv1.GetJobRequest{JobId: jobA})
			return err
		}},
		{name: "GetJob of the submitter's job",
			allowed: func(p []string, sub string) bool {
				return slices.Contains(p, "view") || (slices.Contains(p, "submit") && sub == "e2e-submitter")
			},
			call: func(ctx context.Context, ing spoolv1.IngestServiceClient, _ spoolv1.DispatchServiceClient) error {
				_, err := ing.GetJob(ctx, &spoolv1.GetJobRequest{JobId: jobS})
				return err
			}},
		{name: "GetJob of no job", allowed: view, call: func(ctx context.Context, ing spoolv1.IngestServiceClient, _ spoolv1.DispatchServiceClient) error {
			// A viewer learns it does not exist (NotFound); a submitter
			// learns nothing.
			_, err := ing.GetJob(ctx, &spoolv1.GetJobRequest{JobId: "no-such-job"})
			if status.Code(err) == codes.NotFound {
				return nil
			}
			return err
		}},
		{name: "ListProfiles", allowed: view, call: func(ctx context.Context, ing spoolv1.IngestServiceClient, _ spoolv1.DispatchServiceClient) error {
			_, err := ing.ListProfiles(ctx, &spoolv1.ListProfilesRequest{})
			return err
		}},
		{name: "WatchJob", allowed: view, call: func(ctx context.Context, _ spoolv1.IngestServiceClient, dis spoolv1.DispatchServiceClient) error {
			return firstOf(dis.WatchJob(ctx, &spoolv1.WatchJobRequest{JobId: jobA}))
		}},
		{name: "ReportJob", allowed: view, call: func(ctx context.Context, _ spoolv1.IngestServiceClient, dis spoolv1.DispatchServiceClient) error {
			return firstOf(dis.ReportJob(ctx, &spoolv1.ReportJobRequest{JobId: jobA}))
		}},
		{name: "ListDeadLetters", allowed: view, call: func(ctx context.Context, _ spoolv1.IngestServiceClient, dis spoolv1.DispatchServiceClient) error {
			return firstOf(dis.ListDeadLetters(ctx, &spoolv1.ListDeadLettersRequest{JobId: jobA}))
		}},
		{name: "GetDispatcherStatus", allowed: view, call: func(ctx context.Context, _ spoolv1.IngestServiceClient, dis spoolv1.DispatchServiceClient) error {
			_, err := dis.GetDispatcherStatus(ctx, &spoolv1.GetDispatcherStatusRequest{})
			return err
		}},
		{name: "ListOpenJobs", allowed: view, call: func(ctx context.Context, _ spoolv1.IngestServiceClient, dis spoolv1.DispatchServiceClient) error {
			_, err := dis.ListOpenJobs(ctx, &spoolv1.ListOpenJobsRequest{})
			return err
		}},
		{name: "ResolveTransaction", allowed: anyOf("resolve"), changes: true, call: func(ctx context.Context, _ spoolv1.IngestServiceClient, dis spoolv1.DispatchServiceClient) error {
			_, err := dis.ResolveTransaction(ctx, &spoolv1.ResolveTransactionRequest{JobId: jobA, Row: 1, Resolution: spoolv1.Resolution_RESOLUTION_DELIVERED})
			return err
		}},
		{name: "RedriveDeadLetters", allowed: anyOf("redrive"), changes: true, call: func(ctx context.Context, _ spoolv1.IngestServiceClient, dis spoolv1.DispatchServiceClient) error {
			_, err := dis.RedriveDeadLetters(ctx, &spoolv1.RedriveDeadLettersRequest{JobId: jobA})
			return err
		}},
		{name: "PauseJob", allowed: anyOf("operate"), changes: true, call: func(ctx context.Context, _ spoolv1.IngestServiceClient, dis spoolv1.DispatchServiceClient) error {
			_, err := dis.PauseJob(ctx, &spoolv1.PauseJobRequest{JobId: jobB})
			return err
		}},
		{name: "ResumeJob", allowed: anyOf("operate"), changes: true, call: func(ctx context.Context, _ spoolv1.IngestServiceClient, dis spoolv1.DispatchServiceClient) error {
			_, err := dis.ResumeJob(ctx, &spoolv1.ResumeJobRequest{JobId: jobB})
			return err
		}},
		{name: "UpdateJob", allowed: anyOf("operate"), changes: true, call: func(ctx context.Context, _ spoolv1.IngestServiceClient, dis spoolv1.DispatchServiceClient) error {
			maxFailures := int64(1000)
			_, err := dis.UpdateJob(ctx, &spoolv1.UpdateJobRequest{JobId: jobB, MaxFailures: &maxFailures})
			return err
		}},
		{name: "ApproveRequest", allowed: anyOf("resolve", "redrive"), changes: true, call: func(ctx context.Context, _ spoolv1.IngestServiceClient, dis spoolv1.DispatchServiceClient) error {
			_, err := dis.ApproveRequest(ctx, &spoolv1.ApproveRequestRequest{RequestId: "no-such-request", Reason: "auth matrix"})
			return err
		}},
		{name: "ListPendingRequests", allowed: view, call: func(ctx context.Context, _ spoolv1.IngestServiceClient, dis spoolv1.DispatchServiceClient) error {
			_, err := dis.ListPendingRequests(ctx, &spoolv1.ListPendingRequestsRequest{JobId: jobA})
			return err
		}},
		{name: "ListAuditEvents", allowed: view, call: func(ctx context.Context, _ spoolv1.IngestServiceClient, dis spoolv1.DispatchServiceClient) error {
			_, err := dis.ListAuditEvents(ctx, &spoolv1.ListAuditEventsRequest{JobId: jobB})
			return err
		}},
		{name: "ListJobs", allowed: view, call: func(ctx context.Context, _ spoolv1.IngestServiceClient, dis spoolv1.DispatchServiceClient) error {
			_, err := dis.ListJobs(ctx, &spoolv1.ListJobsRequest{})
			return err
		}},
		{name: "RenderRequests", allowed: anyOf("submit", "view"), call: func(ctx context.Context, _ spoolv1.IngestServiceClient, dis spoolv1.DispatchServiceClient) error {
			_, err := dis.RenderRequests(ctx, &spoolv1.RenderRequestsRequest{Envelopes: []*spoolv1.Envelope{{
				JobId: jobA, Row: 1, TransactionKey: "auth-matrix-render", Fields: []*spoolv1.Field{{Name: "employee_id", Value: "E1"}, {Name: "amount", Value: "1.00"}},
			}}})
			return err
		}},
		{name: "CancelJob", allowed: anyOf("operate"), changes: true, call: func(ctx context.Context, _ spoolv1.IngestServiceClient, dis spoolv1.DispatchServiceClient) error {
			_, err := dis.CancelJob(ctx, &spoolv1.CancelJobRequest{JobId: jobB, Reason: "auth matrix"})
			return err
		}},
	}

	// Every method of both services is in the matrix: a new RPC without a
	// row here fails this test rather than going unchecked.
	for _, sd := range []grpc.ServiceDesc{spoolv1.IngestService_ServiceDesc, spoolv1.DispatchService_ServiceDesc} {
		for _, m := range append(methodNames(sd.Methods), streamNames(sd.Streams)...) {
			require.Truef(t, slices.ContainsFunc(calls, func(c matrixCall) bool { return c.name == m || strings.HasPrefix(c.name, m+" ") }),
				"%s.%s has no row in the auth matrix", sd.ServiceName, m)
		}
	}

	snap := newSnapshotter(t, s, env, jobA, jobB)
	var allowedCells, refusedCells int
	for _, c := range creds {
		ingConn, disConn := dialWith(t, s.Ingestor.Addr, c.opts), dialWith(t, s.Dispatchers[0].Addr, c.opts)
		ing, dis := spoolv1.NewIngestServiceClient(ingConn), spoolv1.NewDispatchServiceClient(disConn)
		for _, call := range calls {
			t.Run(c.name+"/"+call.name, func(t *testing.T) {
				allowed := c.authenticated && call.allowed(c.perms, c.subject)
				var before snapshot
				if call.changes && !allowed {
					before = snap.take(ctx)
				}
				cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
				defer ccancel()
				err := call.call(cctx, ing, dis)
				code := status.Code(err)
				switch {
				case allowed:
					allowedCells++
					assert.NotContains(t, []codes.Code{codes.Unauthenticated, codes.PermissionDenied}, code, "allowed call refused: %v", err)
				case !c.authenticated:
					refusedCells++
					assert.Equal(t, codes.Unauthenticated, code, "%v", err)
				default:
					refusedCells++
					assert.Equal(t, codes.PermissionDenied, code, "%v", err)
					assert.Contains(t, status.Convert(err).Message(), `permission "`, "the refusal names the permission")
				}
				if call.changes && !allowed {
					assert.Equal(t, before, snap.take(ctx), "a refused call changed nothing")
				}
			})
		}
	}
	t.Logf("auth matrix: %d credentials × %d calls = %d cells; %d allowed, %d refused",
		len(creds), len(calls), len(creds)*len(calls), allowedCells, refusedCells)
	// The allowed state changes did happen: the operators cancelled B and
	// asked for row 1 of A to be resolved (four-eyes holds it for approval).
	b, err := spoolv1.NewIngestServiceClient(dial(t, s.Ingestor.Addr)).GetJob(ctx, &spoolv1.GetJobRequest{JobId: jobB})
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_CANCELLED, b.GetJob().GetState())
	pending, err := spoolv1.NewDispatchServiceClient(dial(t, s.Dispatchers[0].Addr)).ListPendingRequests(ctx, &spoolv1.ListPendingRequestsRequest{JobId: jobA})
	require.NoError(t, err)
	require.NotEmpty(t, pending.GetRequests())
}

func dialWith(t *testing.T, addr string, opts []grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// emptyStream streams a header and no rows, and returns the job's id.
func emptyStream(ctx context.Context, ing spoolv1.IngestServiceClient, h *spoolv1.FileHeader) (string, error) {
	stream, err := ing.StreamFile(ctx)
	if err != nil {
		return "", err
	}
	if err := stream.Send(&spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Header{Header: h}}); err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	resp, err := stream.CloseAndRecv()
	return resp.GetJobId(), err
}

// firstOf returns the error of a server stream's first message; the end of
// the stream is no error.
func firstOf[T any](stream interface{ Recv() (T, error) }, err error) error {
	if err != nil {
		return err
	}
	if _, err := stream.Recv(); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// snapshot is what a refused call must not change: how many jobs there
// are, the state of the jobs the calls aim at, job A's ledger, its
// four-eyes requests, job B's audit trail, and the messages in both
// queues.
type snapshot struct {
	Jobs          int
	A, B          string
	Ledger        string
	Queue, Letter string
	// Four-eyes requests on A and audit events of B.
	Pending, Audit int
}

type snapshotter struct {
	t            *testing.T
	db           *dynamodb.Client
	q            *sqs.Client
	table        string
	queue, dlq   string
	jobA, jobB   string
	ingest       spoolv1.IngestServiceClient
	dispatchAddr string
}

func newSnapshotter(t *testing.T, s *stack.Stack, env map[string]string, jobA, jobB string) *snapshotter {
	return &snapshotter{
		t: t, table: env["SPOOL_TABLE"], queue: env["SPOOL_QUEUE_URL"], dlq: env["SPOOL_DLQ_URL"], jobA: jobA, jobB: jobB,
		db:           dynamodb.NewFromConfig(emutest.Config(s.Dynamo.Addr)),
		q:            sqs.NewFromConfig(emutest.Config(s.SQS.Addr)),
		ingest:       spoolv1.NewIngestServiceClient(dial(t, s.Ingestor.Addr)),
		dispatchAddr: s.Dispatchers[0].Addr,
	}
}

func (sn *snapshotter) take(ctx context.Context) snapshot {
	t := sn.t
	var snap snapshot
	p := dynamodb.NewScanPaginator(sn.db, &dynamodb.ScanInput{TableName: aws.String(sn.table), ConsistentRead: aws.Bool(true)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		require.NoError(t, err)
		for _, item := range page.Items {
			if sk, ok := item["sk"].(*ddbtypes.AttributeValueMemberS); ok && sk.Value == "JOB" {
				snap.Jobs++
			}
		}
	}
	for _, j := range []struct {
		id  string
		out *string
	}{{sn.jobA, &snap.A}, {sn.jobB, &snap.B}} {
		resp, err := sn.ingest.GetJob(ctx, &spoolv1.GetJobRequest{JobId: j.id})
		require.NoError(t, err)
		*j.out = fmt.Sprintf("%s paused=%t", resp.GetJob().GetState(), resp.GetJob().GetPaused())
	}
	dis := spoolv1.NewDispatchServiceClient(dial(t, sn.dispatchAddr))
	pending, err := dis.ListPendingRequests(ctx, &spoolv1.ListPendingRequestsRequest{JobId: sn.jobA})
	require.NoError(t, err)
	snap.Pending = len(pending.GetRequests())
	events, err := dis.ListAuditEvents(ctx, &spoolv1.ListAuditEventsRequest{JobId: sn.jobB, PageSize: 1000})
	require.NoError(t, err)
	snap.Audit = len(events.GetEvents())
	for _, e := range reportJob(t, sn.dispatchAddr, sn.jobA).entries {
		snap.Ledger += fmt.Sprintf("%d:%s ", e.GetRow(), e.GetState())
	}
	for _, q := range []struct {
		url string
		out *string
	}{{sn.queue, &snap.Queue}, {sn.dlq, &snap.Letter}} {
		attrs, err := sn.q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(q.url), AttributeNames: []types.QueueAttributeName{
			types.QueueAttributeNameApproximateNumberOfMessages, types.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
			types.QueueAttributeNameApproximateNumberOfMessagesDelayed,
		}})
		require.NoError(t, err)
		*q.out = fmt.Sprint(attrs.Attributes)
	}
	return snap
}

func methodNames(ms []grpc.MethodDesc) []string {
	names := make([]string, 0, len(ms))
	for _, m := range ms {
		names = append(names, m.MethodName)
	}
	return names
}

func streamNames(ss []grpc.StreamDesc) []string {
	names := make([]string, 0, len(ss))
	for _, s := range ss {
		names = append(names, s.StreamName)
	}
	return names
}
