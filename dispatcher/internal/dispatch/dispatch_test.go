package dispatch_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spoolhq/spool/dispatcher/internal/consume"
	"github.com/spoolhq/spool/dispatcher/internal/deadletter"
	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/dispatcher/internal/dispatch"
	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

var t0 = time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)

// sender returns the next scripted error per call, nil once the script
// runs out, and counts calls. An accepted row's reference is "ref-" and
// its row.
type sender struct {
	mu     sync.Mutex
	script []error
	calls  int
	last   *spoolv1.Envelope // the envelope of the last call
}

func (s *sender) Send(_ context.Context, e *spoolv1.Envelope) (deliver.Receipt, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	s.last = proto.CloneOf(e)
	ok := deliver.Receipt{Reference: fmt.Sprintf("ref-%d", e.GetRow())}
	if len(s.script) == 0 {
		return ok, nil
	}
	err := s.script[0]
	s.script = s.script[1:]
	if err != nil {
		return deliver.Receipt{}, err
	}
	return ok, nil
}

type counts struct {
	mu sync.Mutex
	c  map[string]jobstore.Counts
}

func (c *counts) Add(id string, d jobstore.Counts) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.c[id] = c.c[id].Plus(d)
}

func (c *counts) of(id string) jobstore.Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.c[id]
}

// jobs is a job store with one job; Get can be held until released.
type jobs struct {
	job     *spoolv1.Job
	gets    atomic.Int64
	hold    chan struct{}
	expired atomic.Int64
}

func (j *jobs) Get(ctx context.Context, id string) (*spoolv1.Job, error) {
	j.gets.Add(1)
	if j.hold != nil {
		select {
		case <-j.hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if j.job == nil || j.job.GetJobId() != id {
		return nil, jobstore.ErrNotFound
	}
	return j.job, nil
}

func (j *jobs) ExpireIfAbandoned(_ context.Context, job *spoolv1.Job) (*spoolv1.Job, error) {
	j.expired.Add(1)
	out := &spoolv1.Job{JobId: job.GetJobId(), State: spoolv1.JobState_JOB_STATE_ABORTED}
	return out, nil
}

type fixture struct {
	h      *dispatch.Handler
	send   *sender
	counts *counts
	jobs   *jobs
	ledger *ledger.Memory
	logs   *bytes.Buffer
}

func newFixture(t testing.TB, state spoolv1.JobState, policy ledger.Policy, script ...error) *fixture {
	t.Helper()
	return newFixtureWith(t, state, policy, dispatch.Options{}, script...)
}

// newFixtureWith is newFixture with options; the clock, the log and a
// jitter of one half are set unless o sets them.
func newFixtureWith(t testing.TB, state spoolv1.JobState, policy ledger.Policy, o dispatch.Options, script ...error) *fixture {
	t.Helper()
	f := &fixture{
		send: &sender{script: script}, counts: &counts{c: map[string]jobstore.Counts{}}, ledger: ledger.NewMemory(), logs: &bytes.Buffer{},
		jobs: &jobs{job: &spoolv1.Job{
			JobId: "job", State: state, BusinessKeyColumns: []string{"employee", "period"}, AmountColumn: "amount",
			LeaseExpiresAt: timestamppb.New(t0.Add(time.Minute)),
		}},
	}
	now := func() time.Time { return t0 }
	l := ledger.New(f.ledger, ledger.Options{Owner: "me", Lease: 25 * time.Second, Policy: policy, Now: now})
	if o.Now == nil {
		o.Now = now
	}
	if o.Rand == nil {
		o.Rand = func() float64 { return 0.5 }
	}
	o.Log = slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.h = dispatch.New(f.send, f.counts, l, f.jobs, o)
	return f
}

func message(row int64) consume.Message {
	return consume.Message{ID: "m", Envelope: &spoolv1.Envelope{
		Version: spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1, JobId: "job", Row: row, TransactionKey: "job:1",
		Fields: []*spoolv1.Field{
			{Name: "employee", Value: "E1"}, {Name: "iban", Value: "SECRET-IBAN"},
			{Name: "period", Value: "2026-11"}, {Name: "amount", Value: "10.50"},
		},
	}}
}

var (
	sealed   = spoolv1.JobState_JOB_STATE_SEALED
	timedOut = &deliver.Failure{Err: errors.New("context deadline exceeded"), Written: true}
)

func TestHandle(t *testing.T) {
	tests := []struct {
		name   string
		policy ledger.Policy
		script []error
		// want is the disposition of the first and of a redelivery.
		want, wantAgain     consume.Disposition
		wantSends           int
		wantCounts          jobstore.Counts
		wantState           spoolv1.TransactionState
		wantLog, wantReason string
		// wantRef is the reference the ledger keeps: the accepting
		// answer's, none from a refusal or an already-applied 409.
		wantRef string
	}{
		{
			name: "delivered, then a redelivery is suppressed", want: consume.Delete, wantAgain: consume.Delete, wantSends: 1,
			wantCounts: jobstore.Counts{Delivered: 1, Suppressed: 1}, wantState: spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, wantRef: "ref-1",
		},
		{
			name: "refused for good", script: []error{&deliver.Failure{Status: 422, Written: true, Excerpt: "bad iban"}},
			want: consume.Delete, wantAgain: consume.Delete, wantSends: 1,
			wantCounts: jobstore.Counts{Failed: 1, Suppressed: 1}, wantState: spoolv1.TransactionState_TRANSACTION_STATE_REJECTED,
			wantLog: "status=422", wantReason: "422 Unprocessable Entity: bad iban",
		},
		{
			name: "503 is retried", script: []error{&deliver.Failure{Status: 503, Written: true}},
			want: consume.After(time.Second), wantAgain: consume.Delete, wantSends: 2,
			wantCounts: jobstore.Counts{Retries: 1, Delivered: 1}, wantState: spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, wantRef: "ref-1",
			wantLog: "status=503",
		},
		{
			name: "429 is retried", script: []error{&deliver.Failure{Status: 429, Written: true}},
			want: consume.After(time.Second), wantAgain: consume.Delete, wantSends: 2,
			wantCounts: jobstore.Counts{Retries: 1, Delivered: 1}, wantState: spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, wantRef: "ref-1",
		},
		{
			name: "never written is retried under hold", script: []error{&deliver.Failure{Err: errors.New("dial tcp: refused")}},
			want: consume.After(time.Second), wantAgain: consume.Delete, wantSends: 2,
			wantCounts: jobstore.Counts{Retries: 1, Delivered: 1}, wantState: spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, wantRef: "ref-1",
			wantLog: "dial tcp",
		},
		{
			name: "404 is refused for good", script: []error{&deliver.Failure{Status: 404, Written: true}},
			want: consume.Delete, wantAgain: consume.Delete, wantSends: 1,
			wantCounts: jobstore.Counts{Failed: 1, Suppressed: 1}, wantState: spoolv1.TransactionState_TRANSACTION_STATE_REJECTED,
			wantReason: "404 Not Found",
		},
		{
			name: "409 is already applied", script: []error{&deliver.Failure{Status: 409, Written: true, Excerpt: "duplicate key"}},
			want: consume.Delete, wantAgain: consume.Delete, wantSends: 1,
			wantCounts: jobstore.Counts{Delivered: 1, Suppressed: 1}, wantState: spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED,
			wantReason: "409 Conflict: already applied",
		},
		{
			name: "408 is retried", script: []error{&deliver.Failure{Status: 408, Written: true}},
			want: consume.After(time.Second), wantAgain: consume.Delete, wantSends: 2,
			wantCounts: jobstore.Counts{Retries: 1, Delivered: 1}, wantState: spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, wantRef: "ref-1",
		},
		{
			name: "Retry-After is honoured", script: []error{&deliver.Failure{Status: 429, Written: true, RetryAfter: 42 * time.Second}},
			want: consume.After(42 * time.Second), wantAgain: consume.Delete, wantSends: 2,
			wantCounts: jobstore.Counts{Retries: 1, Delivered: 1}, wantState: spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, wantRef: "ref-1",
		},
		{
			name: "Retry-After is capped", script: []error{&deliver.Failure{Status: 503, Written: true, RetryAfter: 24 * time.Hour}},
			want: consume.After(dispatch.DefaultRetryAfterMax), wantAgain: consume.Delete, wantSends: 2,
			wantCounts: jobstore.Counts{Retries: 1, Delivered: 1}, wantState: spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, wantRef: "ref-1",
		},
		{
			name: "timeout after writing is held", script: []error{timedOut},
			want: consume.Delete, wantAgain: consume.Delete, wantSends: 1,
			wantCounts: jobstore.Counts{Unknown: 1}, wantState: spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN,
			wantLog: "delivery outcome unknown",
		},
		{
			name: "timeout after writing is resent with the key", policy: ledger.RetryWithKey, script: []error{timedOut},
			want: consume.After(time.Second), wantAgain: consume.Delete, wantSends: 2,
			wantCounts: jobstore.Counts{Delivered: 1}, wantState: spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, wantRef: "ref-1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixtureWith(t, sealed, tt.policy, dispatch.Options{AlreadyApplied: []int{409}}, tt.script...)
			require.Equal(t, tt.want, f.h.Handle(t.Context(), message(1)))
			require.Equal(t, tt.wantAgain, f.h.Handle(t.Context(), message(1)))
			require.Equal(t, tt.wantSends, f.send.calls)
			require.Equal(t, tt.wantCounts, f.counts.of("job"))

			r, ok, err := f.ledger.Get(t.Context(), "job:1")
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, tt.wantState, r.State)
			require.Equal(t, "E1|2026-11", r.BusinessKey)
			require.Equal(t, "10.50", r.Amount)
			require.Equal(t, tt.wantRef, r.Reference)
			require.Equal(t, tt.wantRef, r.Entry().GetReference())
			if tt.wantReason != "" {
				require.Equal(t, tt.wantReason, r.Reason)
			}
			require.Contains(t, f.logs.String(), tt.wantLog)
			require.NotContains(t, f.logs.String(), "SECRET-IBAN")
		})
	}
}

func TestGating(t *testing.T) {
	tests := []struct {
		name        string
		state       spoolv1.JobState
		leaseGone   bool
		job         string
		want        consume.Disposition
		wantCounts  jobstore.Counts
		wantExpired int64
	}{
		{name: "receiving comes back soon at first", state: spoolv1.JobState_JOB_STATE_RECEIVING, want: consume.After(time.Second)},
		{name: "receiving and abandoned is aborted and dropped", state: spoolv1.JobState_JOB_STATE_RECEIVING, leaseGone: true,
			want: consume.Delete, wantCounts: jobstore.Counts{Dropped: 1}, wantExpired: 1},
		{name: "aborted is dropped", state: spoolv1.JobState_JOB_STATE_ABORTED, want: consume.Delete, wantCounts: jobstore.Counts{Dropped: 1}},
		{name: "rejected is dropped", state: spoolv1.JobState_JOB_STATE_REJECTED, want: consume.Delete, wantCounts: jobstore.Counts{Dropped: 1}},
		{name: "cancelled is dropped", state: spoolv1.JobState_JOB_STATE_CANCELLED, want: consume.Delete, wantCounts: jobstore.Counts{Dropped: 1}},
		{name: "unknown job is left", state: sealed, job: "other", want: consume.Leave},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.state, ledger.Hold)
			if tt.leaseGone {
				f.jobs.job.LeaseExpiresAt = timestamppb.New(t0.Add(-time.Second))
			}
			m := message(1)
			if tt.job != "" {
				m.Envelope.JobId = tt.job
			}
			require.Equal(t, tt.want, f.h.Handle(t.Context(), m))
			require.Zero(t, f.send.calls, "nothing is sent")
			require.Equal(t, tt.wantCounts, f.counts.of(m.Envelope.GetJobId()))
			require.Equal(t, tt.wantExpired, f.jobs.expired.Load())
			_, claimed, err := f.ledger.Get(t.Context(), "job:1")
			require.NoError(t, err)
			require.False(t, claimed, "no ledger record")
		})
	}
}

// A V2 envelope is delivered with its values named from the job's
// columns; one whose values do not match them is dead-lettered with the
// reason, before anything is claimed or sent.
func TestV2EnvelopeIsNamedFromItsJob(t *testing.T) {
	columns := []string{"employee", "iban", "period", "amount"}
	tests := []struct {
		name    string
		columns []string
		values  []string
		dead    string // the dead-letter reason; "" for a delivery
	}{
		{name: "named and delivered", columns: columns, values: []string{"E1", "SECRET-IBAN", "2026-11", "10.50"}},
		{name: "more values than columns", columns: columns[:3], values: []string{"E1", "SECRET-IBAN", "2026-11", "10.50"},
			dead: "undeliverable envelope: name the values of row 1 of job job: 4 values, the job has 3 columns"},
		{name: "a job recorded without columns", values: []string{"E1"},
			dead: "undeliverable envelope: name the values of row 1 of job job: 1 values, the job has 0 columns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, sealed, ledger.Hold)
			f.jobs.job.Columns = tt.columns
			m := consume.Message{ID: "m", Envelope: &spoolv1.Envelope{
				Version: spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V2, JobId: "job", Row: 1, TransactionKey: "job:1", Values: tt.values,
			}}
			d := f.h.Handle(t.Context(), m)
			require.NotContains(t, f.logs.String(), "SECRET-IBAN", "row values never reach a log")
			if tt.dead != "" {
				require.Equal(t, consume.DeadLetter(deadletter.Reason{Reason: tt.dead}), d)
				require.Zero(t, f.send.calls, "nothing is sent")
				_, claimed, err := f.ledger.Get(t.Context(), "job:1")
				require.NoError(t, err)
				require.False(t, claimed, "no ledger record")
				return
			}
			require.Equal(t, consume.Delete, d)
			want := message(1).Envelope
			if diff := cmp.Diff(want, f.send.last, protocmp.Transform()); diff != "" {
				t.Fatalf("delivered envelope (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReceivingDelayGrowsToItsCap(t *testing.T) {
	tests := []struct {
		receiveCount int
		want         time.Duration
	}{
		{0, time.Second}, {1, time.Second}, {2, 2 * time.Second}, {4, 8 * time.Second},
		{8, 2 * time.Minute}, {99, 2 * time.Minute},
	}
	f := newFixture(t, spoolv1.JobState_JOB_STATE_RECEIVING, ledger.Hold)
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.receiveCount), func(t *testing.T) {
			m := message(1)
			m.ReceiveCount = tt.receiveCount
			require.Equal(t, consume.After(tt.want), f.h.Handle(t.Context(), m))
		})
	}
}

func TestJobReadOncePerTTL(t *testing.T) {
	f := newFixture(t, sealed, ledger.Hold)
	f.jobs.hold = make(chan struct{})
	const n = 16
	var started sync.WaitGroup
	started.Add(n)
	var done sync.WaitGroup
	for row := range int64(n) {
		done.Go(func() {
			m := message(row + 1)
			m.Envelope.TransactionKey = m.Envelope.GetJobId() + ":" + string(rune('a'+row))
			started.Done()
			f.h.Handle(context.Background(), m)
		})
	}
	started.Wait()
	require.Eventually(t, func() bool { return f.jobs.gets.Load() == 1 }, 5*time.Second, time.Millisecond)
	close(f.jobs.hold)
	done.Wait()
	require.EqualValues(t, 1, f.jobs.gets.Load())
	require.Equal(t, n, f.send.calls)
}

func TestSeenTellsWhichJobsAreRead(t *testing.T) {
	f := newFixture(t, sealed, ledger.Hold)
	var seen []string
	now := func() time.Time { return t0 }
	l := ledger.New(f.ledger, ledger.Options{Owner: "me", Lease: 25 * time.Second, Now: now})
	h := dispatch.New(f.send, f.counts, l, f.jobs, dispatch.Options{Now: now, Seen: func(id string) { seen = append(seen, id) }})
	for row := range int64(3) {
		m := message(row + 1)
		m.Envelope.TransactionKey = fmt.Sprintf("job:%d", row+1)
		require.Equal(t, consume.Delete, h.Handle(context.Background(), m))
	}
	missing := message(9)
	missing.Envelope.JobId = "gone"
	h.Handle(context.Background(), missing)
	require.Equal(t, []string{"job"}, seen, "one read of the job within the TTL; a job that does not exist is not seen")
}
