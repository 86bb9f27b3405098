package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/envelope"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/provision"
)

// destination is a test HTTP API that records every accepted transaction
// and can refuse first attempts.
type destination struct {
	// failFirst says whether the first attempt of a row is refused.
	failFirst func(row int64) bool

	mu       sync.Mutex
	attempts map[int64]int
	accepted map[string]int // "job/row"
	byWorker map[string]int
	problems []string
}

func newDestination(t testing.TB, failFirst func(int64) bool) (*destination, string) {
	t.Helper()
	d := &destination{failFirst: failFirst, attempts: map[int64]int{}, accepted: map[string]int{}, byWorker: map[string]int{}}
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close)
	return d, srv.URL
}

func (d *destination) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		JobID  string `json:"spool_job_id"`
		Row    int64  `json:"spool_row"`
		Amount string `json:"amount"`
	}
	err := json.NewDecoder(r.Body).Decode(&body)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.problems = append(d.problems, err.Error())
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if want := fmt.Sprintf("%s:%d", body.JobID, body.Row); r.Header.Get("Idempotency-Key") != want || body.Amount != strconv.FormatInt(body.Row, 10)+".00" {
		d.problems = append(d.problems, fmt.Sprintf("row %d: key %q, amount %q", body.Row, r.Header.Get("Idempotency-Key"), body.Amount))
	}
	d.attempts[body.Row]++
	if d.attempts[body.Row] == 1 && d.failFirst(body.Row) {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	d.accepted[fmt.Sprintf("%s/%d", body.JobID, body.Row)]++
	d.byWorker[r.Header.Get("X-Dispatcher")]++
	w.WriteHeader(http.StatusOK)
}

// stack is a queue and a table on real emulators, with the environment
// set so that run finds them as it would on AWS.
type stack struct {
	sqs      *sqs.Client
	db       *dynamodb.Client
	jobs     *jobstore.Store
	queueURL string
	table    string
}

func newStack(t testing.TB, visibility time.Duration) *stack {
	t.Helper()
	sqsEndpoint := emutest.Start(t, emulator.SQS)
	ddbEndpoint := emutest.Start(t, emulator.DynamoDB)
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL_SQS":        sqsEndpoint,
		"AWS_ENDPOINT_URL_DYNAMODB":   ddbEndpoint,
		"AWS_REGION":                  "us-east-1",
		"AWS_ACCESS_KEY_ID":           "local",
		"AWS_SECRET_ACCESS_KEY":       "local",
		"AWS_CONFIG_FILE":             filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED":   "true",
		// These tests are about delivery; the e2e tests run dispatchers
		// with TLS and authentication.
		"SPOOL_INSECURE": "true",
	} {
		t.Setenv(k, v)
	}
	ctx := t.Context()
	q := sqs.NewFromConfig(emutest.Config(sqsEndpoint))
	opts := provision.DefaultQueueOptions
	opts.VisibilityTimeout = visibility
	queues, err := provision.EnsureQueue(ctx, q, "spool-dispatch-test", opts)
	require.NoError(t, err)
	db := dynamodb.NewFromConfig(emutest.Config(ddbEndpoint))
	require.NoError(t, provision.EnsureTable(ctx, db, "spool-jobs"))
	return &stack{sqs: q, db: db, jobs: jobstore.New(db, "spool-jobs"), queueURL: queues.URL, table: "spool-jobs"}
}

// publish creates and seals a job of rows transactions and queues them, as
// the ingestor does.
func (s *stack) publish(t testing.TB, jobID string, rows int64) {
	t.Helper()
	s.publishFrom(t, jobID, 1, rows)
}

// publishFrom is publish of a job of rows transactions that queues only
// those from row from on: the others were delivered already.
func (s *stack) publishFrom(t testing.TB, jobID string, from, rows int64) {
	t.Helper()
	ctx := t.Context()
	_, err := s.jobs.Create(ctx, &spoolv1.Job{JobId: jobID, Columns: []string{"employee", "amount"}})
	require.NoError(t, err)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for first := from; first <= rows; first += 10 {
		g.Go(func() error {
			var entries []sqstypes.SendMessageBatchRequestEntry
			for row := first; row < first+10 && row <= rows; row++ {
				body, attrs, err := envelope.Encode(&spoolv1.Envelope{
					Version: spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1, JobId: jobID, Row: row,
					TransactionKey: fmt.Sprintf("%s:%d", jobID, row),
					Fields: []*spoolv1.Field{
						{Name: "employee", Value: fmt.Sprintf("E%d", row)},
						{Name: "amount", Value: fmt.Sprintf("%d.00", row)},
					},
				})
				if err != nil {
					return err
				}
				entries = append(entries, sqstypes.SendMessageBatchRequestEntry{
					Id: aws.String(strconv.FormatInt(row, 10)), MessageBody: aws.String(body), MessageAttributes: attrs,
				})
			}
			out, err := s.sqs.SendMessageBatch(gctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(s.queueURL), Entries: entries})
			if err != nil {
				return err
			}
			if len(out.Failed) > 0 {
				return fmt.Errorf("send batch from row %d: %d failed", first, len(out.Failed))
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	_, err = s.jobs.Seal(ctx, jobID, jobstore.Ingest{Received: rows, Published: rows})
	require.NoError(t, err)
}

// startDispatcher runs the whole dispatcher in-process, as main would, and
// returns its gRPC address and a function that stops it and returns run's
// error.
func startDispatcher(t testing.TB, s *stack, destURL, name, logLevel string, extra ...string) (string, func() error) {
	t.Helper()
	port, err := emulator.FreePort()
	require.NoError(t, err)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	stop := runInBackground(t, func(ctx context.Context) error {
		return run(ctx, append([]string{
			"-listen", addr, "-queue-url", s.queueURL, "-table", s.table, "-destination-url", destURL, "-allow-insecure-destination",
			"-destination-header", "X-Dispatcher: " + name, "-log-level", logLevel,
			"-receive-wait", "1s", "-counter-flush", "100ms", "-watch-interval", "100ms", "-shutdown-grace", "10s",
		}, extra...), t.Output())
	})
	return addr, stop
}

// runInBackground runs fn in a goroutine until the returned function, or
// the test's end, cancels its context; the function waits for fn and
// returns its error, the same on every call.
func runInBackground(t testing.TB, fn func(ctx context.Context) error) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	stop := sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() { _ = stop() })
	return stop
}

// watchToEnd follows the job on addr until its final message.
func watchToEnd(t testing.TB, addr, jobID string) *spoolv1.JobProgress {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	// WaitForReady: the dispatcher may still be starting.
	stream, err := spoolv1.NewDispatchServiceClient(conn).WatchJob(ctx, &spoolv1.WatchJobRequest{JobId: jobID}, grpc.WaitForReady(true))
	require.NoError(t, err)
	for {
		m, err := stream.Recv()
		require.NoError(t, err)
		if m.GetProgress().GetFinal() {
			return m.GetProgress()
		}
	}
}

// deliverAs records rows 1 to rows of jobID DELIVERED in the ledger as a
// dispatcher named owner would have, without sending anything: the rows
// a dispatcher gone before (or an older release) delivered.
func (s *stack) deliverAs(t testing.TB, owner, jobID string, rows int64) {
	t.Helper()
	s.settleAs(t, owner, jobID, rows, func(int64) spoolv1.TransactionState {
		return spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED
	})
}

// settleAs is deliverAs with each row's final state chosen by state.
func (s *stack) settleAs(t testing.TB, owner, jobID string, rows int64, state func(row int64) spoolv1.TransactionState) {
	t.Helper()
	ctx := t.Context()
	l := ledger.New(ledger.NewDynamo(s.db, s.table), ledger.Options{Owner: owner, Lease: time.Minute})
	for row := int64(1); row <= rows; row++ {
		c, err := l.Claim(ctx, ledger.Tx{Key: fmt.Sprintf("%s:%d", jobID, row), JobID: jobID, Row: row})
		require.NoError(t, err)
		require.Equal(t, ledger.Send, c.Verdict)
		r, err := l.Sending(ctx, c.Record)
		require.NoError(t, err)
		_, _, err = l.Finish(ctx, r, ledger.Outcome{State: state(row), Status: 200})
		require.NoError(t, err)
	}
}

func (s *stack) requireQueueEmpty(t testing.TB) {
	t.Helper()
	visible, inFlight, err := emutest.QueueCounts(t.Context(), s.sqs, s.queueURL)
	require.NoError(t, err)
	require.Equal(t, "0", visible)
	require.Equal(t, "0", inFlight)
}

func TestTwoDispatchersDeliverEveryRowOnce(t *testing.T) {
	tests := []struct {
		name        string
		rows        int64
		visibility  time.Duration
		failFirst   func(row int64) bool
		wantRetries int64
		logLevel    string
	}{
		{
			name: "all accepted", rows: 2000, visibility: 60 * time.Second,
			failFirst: func(int64) bool { return false }, logLevel: "warn",
		},
		{
			// Every fifth row is refused once; it comes back after the 2 s
			// visibility timeout and is delivered then.
			name: "a fifth refused once", rows: 1000, visibility: 2 * time.Second,
			failFirst: func(row int64) bool { return row%5 == 0 }, wantRetries: 200, logLevel: "error",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStack(t, tt.visibility)
			dest, destURL := newDestination(t, tt.failFirst)
			s.publish(t, "job-1", tt.rows)

			addrA, stopA := startDispatcher(t, s, destURL, "a", tt.logLevel)
			_, stopB := startDispatcher(t, s, destURL, "b", tt.logLevel)

			final := watchToEnd(t, addrA, "job-1")
			require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, final.GetJob().GetState())
			require.Equal(t, tt.rows, final.GetJob().GetDelivered())
			require.Zero(t, final.GetJob().GetFailed())
			require.Zero(t, final.GetInFlight())

			// Shutdown flushes the last deletes and counters.
			require.NoError(t, stopA())
			require.NoError(t, stopB())
			s.requireQueueEmpty(t)

			job, err := s.jobs.Get(t.Context(), "job-1")
			require.NoError(t, err)
			require.Equal(t, tt.rows, job.GetDelivered())
			require.Equal(t, tt.wantRetries, job.GetRetries())

			dest.mu.Lock()
			defer dest.mu.Unlock()
			require.Empty(t, dest.problems)
			require.Len(t, dest.accepted, int(tt.rows))
			for row := int64(1); row <= tt.rows; row++ {
				require.Equal(t, 1, dest.accepted[fmt.Sprintf("job-1/%d", row)], "row %d delivered once", row)
			}
			require.Positive(t, dest.byWorker["a"], "dispatcher a delivered")
			require.Positive(t, dest.byWorker["b"], "dispatcher b delivered")
			require.Equal(t, int(tt.rows), dest.byWorker["a"]+dest.byWorker["b"])
		})
	}
}

// hangingDestination applies every request, and for the rows in hang it
// then holds the first answer past the client's timeout: the dispatcher
// cannot know that the payment went through.
type hangingDestination struct {
	hang map[int64]bool

	mu      sync.Mutex
	applied map[int64]int
	keys    map[int64][]string
}

func (d *hangingDestination) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Row int64 `json:"spool_row"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	d.mu.Lock()
	d.applied[body.Row]++
	d.keys[body.Row] = append(d.keys[body.Row], r.Header.Get("Idempotency-Key"))
	first := d.applied[body.Row] == 1
	d.mu.Unlock()
	if first && d.hang[body.Row] {
		<-r.Context().Done()
		return
	}
	w.WriteHeader(http.StatusOK)
}

func TestUnknownOutcomes(t *testing.T) {
	const rows = 200
	hang := map[int64]bool{7: true, 50: true, 123: true}
	tests := []struct {
		policy string
		// wantApplied is how often a hanging row reaches the destination.
		wantApplied   int
		wantUnknown   int64
		wantDelivered int64
	}{
		{policy: "hold", wantApplied: 1, wantUnknown: 3, wantDelivered: rows - 3},
		{policy: "retry-with-key", wantApplied: 2, wantUnknown: 0, wantDelivered: rows},
	}
	for _, tt := range tests {
		t.Run(tt.policy, func(t *testing.T) {
			s := newStack(t, 2*time.Second)
			dest := &hangingDestination{hang: hang, applied: map[int64]int{}, keys: map[int64][]string{}}
			srv := httptest.NewServer(dest)
			t.Cleanup(srv.Close)
			s.publish(t, "job-u", rows)

			start := time.Now()
			addr, stop := startDispatcher(t, s, srv.URL, "a", "error",
				"-destination-timeout", "500ms", "-unknown-policy", tt.policy,
				// Without authentication every caller is the same
				// anonymous one: no second principal can approve.
				"-four-eyes", "none")
			// Under retry-with-key the job completes while the unknown rows
			// still wait for their resend: wait for the figures instead.
			require.Eventually(t, func() bool {
				j, err := s.jobs.Get(t.Context(), "job-u")
				require.NoError(t, err)
				return j.GetState() == spoolv1.JobState_JOB_STATE_COMPLETED &&
					j.GetDelivered() == tt.wantDelivered && j.GetUnknown() == tt.wantUnknown
			}, 40*time.Second, 50*time.Millisecond)
			t.Logf("policy %s: %d rows with the ledger in %s", tt.policy, rows, time.Since(start))

			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			require.NoError(t, err)
			t.Cleanup(func() { conn.Close() })
			client := spoolv1.NewDispatchServiceClient(conn)
			report := readReport(t, client, "job-u")
			if tt.policy == "hold" {
				require.Equal(t, []string{"UNKNOWN 7", "UNKNOWN 50", "UNKNOWN 123"}, report.first)
				require.Equal(t, "3", report.rows["UNKNOWN"])

				// A person checked: row 7 arrived.
				res, err := client.ResolveTransaction(t.Context(), &spoolv1.ResolveTransactionRequest{
					JobId: "job-u", Row: 7, Resolution: spoolv1.Resolution_RESOLUTION_DELIVERED,
				})
				require.NoError(t, err)
				require.Equal(t, spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, res.GetEntry().GetState())
				_, err = client.ResolveTransaction(t.Context(), &spoolv1.ResolveTransactionRequest{
					JobId: "job-u", Row: 8, Resolution: spoolv1.Resolution_RESOLUTION_DELIVERED,
				})
				require.Equal(t, codes.FailedPrecondition, status.Code(err))
				require.ErrorContains(t, err, "DELIVERED")
				// Both calls are in the audit trail, with their outcomes.
				trail, err := client.ListAuditEvents(t.Context(), &spoolv1.ListAuditEventsRequest{JobId: "job-u"})
				require.NoError(t, err)
				require.Len(t, trail.GetEvents(), 2)
				for i, want := range []string{"ok", "FailedPrecondition"} {
					e := trail.GetEvents()[i]
					require.Equal(t, spoolv1.OperatorAction_OPERATOR_ACTION_RESOLVE, e.GetAction())
					require.Equal(t, "anonymous", e.GetActor())
					require.Contains(t, e.GetOutcome(), want)
				}
				require.Eventually(t, func() bool {
					j, err := s.jobs.Get(t.Context(), "job-u")
					require.NoError(t, err)
					return j.GetUnknown() == 2 && j.GetDelivered() == rows-2
				}, 5*time.Second, 50*time.Millisecond)
			} else {
				require.Empty(t, report.first)
				require.Equal(t, "200", report.rows["DELIVERED"])
			}
			require.NoError(t, stop())

			dest.mu.Lock()
			defer dest.mu.Unlock()
			for row := int64(1); row <= rows; row++ {
				want := 1
				if hang[row] {
					want = tt.wantApplied
				}
				require.Equal(t, want, dest.applied[row], "row %d applied", row)
				for _, k := range dest.keys[row] {
					require.Equal(t, fmt.Sprintf("job-u:%d", row), k, "same key on every send")
				}
			}
		})
	}
}

type report struct {
	// first lists the UNKNOWN entries, in order.
	first []string
	// rows maps a state to its row count in the summary.
	rows map[string]string
}

func readReport(t testing.TB, c spoolv1.DispatchServiceClient, jobID string) report {
	t.Helper()
	stream, err := c.ReportJob(t.Context(), &spoolv1.ReportJobRequest{JobId: jobID})
	require.NoError(t, err)
	r := report{rows: map[string]string{}}
	for {
		m, err := stream.Recv()
		require.NoError(t, err)
		if e := m.GetEntry(); e != nil {
			if e.GetState() == spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN {
				r.first = append(r.first, fmt.Sprintf("UNKNOWN %d", e.GetRow()))
			}
			continue
		}
		for _, st := range m.GetSummary().GetTotals() {
			name := strings.TrimPrefix(st.GetState().String(), "TRANSACTION_STATE_")
			r.rows[name] = strconv.FormatInt(st.GetRows(), 10)
		}
		return r
	}
}
