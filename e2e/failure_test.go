package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/local/stack"
)

// Delivery failure handling: refused rows, a destination down or throttling,
// dispatchers stopped under load. `make test` runs these at a few thousand
// rows; SPOOL_FAILURE_ROWS sets another size (`make chaos` runs 5 000).
const defaultFailureRows = 3000

// deadLetters lists a job's dead letters through a dispatcher.
func deadLetters(t *testing.T, addr, jobID string) ([]*spoolv1.DeadLetter, *spoolv1.DeadLetterSummary) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := spoolv1.NewDispatchServiceClient(dial(t, addr)).ListDeadLetters(ctx, &spoolv1.ListDeadLettersRequest{JobId: jobID})
	require.NoError(t, err)
	var out []*spoolv1.DeadLetter
	for {
		msg, err := stream.Recv()
		require.False(t, errors.Is(err, io.EOF), "listing ended without a summary")
		require.NoError(t, err)
		if s := msg.GetSummary(); s != nil {
			return out, s
		}
		out = append(out, msg.GetEntry())
	}
}

// TestRejectedRowsAreNeverRetried: the destination refuses 2 % of the
// rows (every 50th) with 422. Exactly those rows end REJECTED with the
// status and the destination's reason, each was requested exactly once,
// and every other row is delivered once.
func TestRejectedRowsAreNeverRetried(t *testing.T) {
	requireFlags(t, "sink", "reject-every")
	rows := envInt(t, "SPOOL_FAILURE_ROWS", defaultFailureRows)
	s := startStack(t, 2, func(o *stack.Options) {
		o.SinkArgs = []string{"-reject-every", "50"}
		o.DispatcherArgs = []string{"-receiving-delay", "1s"}
	})
	resp := streamFile(t, s.Ingestor.Addr, writeSample(t, rows), &spoolv1.FileHeader{FileName: "refused.csv"})
	jobID := resp.GetJobId()
	final := watchToEnd(t, s.Dispatchers[0].Addr, jobID, 90*time.Second)

	refused := int64(rows / 50)
	job := final.GetJob()
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, job.GetState())
	require.Equal(t, refused, job.GetFailed())
	require.Equal(t, int64(rows)-refused, job.GetDelivered())

	// The sink saw one request per refused row, no more.
	st := getSinkTotals(t, s, jobID)
	require.Equal(t, refused, st.RefusedRows)
	require.Equal(t, refused, st.Refused, "a refused row was retried")
	got := sinkRows(t, s, jobID)
	require.Len(t, got, rows-int(refused))
	for r, n := range got {
		require.NotZero(t, r%50, "refused row %d applied", r)
		require.Equal(t, 1, n, "row %d applied %d times", r, n)
	}

	// The ledger names exactly those rows, with the status and reason.
	rep := reportJob(t, s.Dispatchers[1].Addr, jobID)
	rejected := 0
	for row, e := range rep.byRow(t) {
		if e.GetState() != spoolv1.TransactionState_TRANSACTION_STATE_REJECTED {
			require.NotZero(t, row%50, "row %d is %s", row, e.GetState())
			continue
		}
		rejected++
		require.Zero(t, row%50, "row %d rejected", row)
		require.EqualValues(t, 422, e.GetLastStatus())
		require.EqualValues(t, 1, e.GetAttempts())
		require.Contains(t, e.GetReason(), "422 Unprocessable Entity")
		require.Contains(t, e.GetReason(), fmt.Sprintf("row %d refused: invalid account", row))
	}
	require.EqualValues(t, refused, rejected)
	t.Logf("%d rows, %d refused: job %s in %s", rows, refused, job.GetState(), job.GetCompletedAt().AsTime().Sub(job.GetCreatedAt().AsTime()))
}

// TestSIGTERMUnderLoad stops each of three dispatchers in turn with
// SIGTERM while the job is delivered, and starts it again. Each exits 0
// within its shutdown grace; no row is lost or applied twice, and no row
// is left UNKNOWN, since a clean shutdown lets deliveries under way finish.
func TestSIGTERMUnderLoad(t *testing.T) {
	rows := envInt(t, "SPOOL_FAILURE_ROWS", defaultFailureRows)
	const grace = 10 * time.Second
	s := startStack(t, 3, func(o *stack.Options) {
		// Slow enough that the job is still being delivered while each
		// dispatcher in turn is stopped.
		o.SinkArgs = []string{"-latency", "40ms"}
		o.DispatcherArgs = []string{"-concurrency", "4", "-receiving-delay", "1s", "-shutdown-grace", grace.String()}
	})
	resp := streamFile(t, s.Ingestor.Addr, writeSample(t, rows), &spoolv1.FileHeader{FileName: "sigterm.csv"})
	jobID := resp.GetJobId()
	req := &spoolv1.GetJobRequest{JobId: jobID}

	for i, p := range s.Dispatchers {
		// Stop one only while deliveries are under way.
		at := int64(rows) * int64(i+1) / 5
		waitJob(t, s, req, time.Minute, fmt.Sprintf("%d rows delivered", at), func(j *spoolv1.Job) bool { return j.GetDelivered() >= at })
		start := time.Now()
		require.NoError(t, p.Signal(syscall.SIGTERM))
		require.NoError(t, p.Wait(grace+5*time.Second), "%s exits 0 after SIGTERM", p.Name)
		took := time.Since(start)
		require.Less(t, took, grace, "%s took %s to stop", p.Name, took)
		t.Logf("%s stopped in %s", p.Name, took.Round(time.Millisecond))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		require.NoError(t, p.Restart(ctx, s.Ready(p)))
		cancel()
	}
	job := waitJob(t, s, req, 2*time.Minute, "job completed", func(j *spoolv1.Job) bool { return isFinal(j.GetState()) })
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, job.GetState())
	require.EqualValues(t, rows, job.GetDelivered())
	require.Zero(t, job.GetUnknown(), "a clean shutdown leaves no outcome unknown")
	require.Zero(t, job.GetFailed())
	requireEachRowOnce(t, s, jobID, int64(rows))
}

// TestDestinationDownMidJob takes the destination down (503 to
// everything) for 30 s in the middle of a job. Each dispatcher's circuit
// breaker opens and stops receiving, probing now and then; backoff carries
// the rows that met the outage. Nothing is dead-lettered, the job
// completes after the destination is back, each row applied once, and the
// breakers' open time shows in the dispatchers' status and metrics.
func TestDestinationDownMidJob(t *testing.T) {
	requireFlags(t, "dispatcher", "backoff-max", "max-attempts")
	rows := envInt(t, "SPOOL_FAILURE_ROWS", defaultFailureRows)
	down := 30 * time.Second
	if v := envInt(t, "SPOOL_FAILURE_DOWN_SECONDS", 0); v > 0 {
		down = time.Duration(v) * time.Second
	}
	s := startStack(t, 3, func(o *stack.Options) {
		o.SinkArgs = []string{"-latency", "40ms"}
		// A backoff ceiling of 10 s keeps the test short after recovery;
		// the budget of 20 attempts is the default.
		o.DispatcherArgs = []string{"-concurrency", "4", "-receiving-delay", "1s", "-backoff-max", "10s"}
	})
	resp := streamFile(t, s.Ingestor.Addr, writeSample(t, rows), &spoolv1.FileHeader{FileName: "down.csv"})
	jobID := resp.GetJobId()
	req := &spoolv1.GetJobRequest{JobId: jobID}
	waitJob(t, s, req, time.Minute, "a fifth delivered", func(j *spoolv1.Job) bool { return j.GetDelivered() >= int64(rows)/5 })

	r, err := http.Post(s.Sink.Addr+"/down?for="+down.String(), "", nil)
	require.NoError(t, err)
	r.Body.Close()
	require.Equal(t, http.StatusOK, r.StatusCode)
	downAt := time.Now()

	// While it is down, the breakers open: every dispatcher says so, in
	// its status and on its metrics page.
	opened, shown := map[string]bool{}, map[string]bool{}
	require.Eventually(t, func() bool {
		for _, d := range s.Dispatchers {
			if flowOf(t, d.Addr).GetBreakerOpens() > 0 {
				opened[d.Addr] = true
			}
			m := scrape(t, d.MetricsURL)
			if metric(t, m, "spool_breaker_state", "state", "closed") == 0 && metric(t, m, "spool_breaker_opens_total", "", "") > 0 {
				shown[d.Addr] = true
			}
		}
		return len(opened) == len(s.Dispatchers) && len(shown) == len(s.Dispatchers)
	}, down, 100*time.Millisecond, "breakers opened: %v, on the metrics pages: %v", opened, shown)

	job := waitJob(t, s, req, down+90*time.Second, "job completed", func(j *spoolv1.Job) bool { return isFinal(j.GetState()) })
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, job.GetState())
	require.Greater(t, time.Since(downAt), down, "the job completed only after the destination came back")
	require.EqualValues(t, rows, job.GetDelivered())
	st := getSinkTotals(t, s, jobID)
	require.Positive(t, st.Down, "the outage met deliveries")
	requireEachRowOnce(t, s, jobID, int64(rows))

	dead, sum := deadLetters(t, s.Dispatchers[0].Addr, jobID)
	require.Empty(t, dead, "rows dead-lettered")
	require.True(t, sum.GetComplete(), "the dead-letter listing saw the whole queue: %v", sum)
	var openFor []string
	var down5xx, retried, delivered float64
	for _, d := range s.Dispatchers {
		f := flowOf(t, d.Addr)
		require.Equal(t, spoolv1.BreakerState_BREAKER_STATE_CLOSED, f.GetBreakerState(), "%s closed again", d.Name)
		open := f.GetBreakerOpenTime().AsDuration()
		require.Greater(t, open, down/2, "%s's breaker was open most of the outage", d.Name)
		openFor = append(openFor, fmt.Sprintf("%s %s (%d opens)", d.Name, open.Round(100*time.Millisecond), f.GetBreakerOpens()))

		m := scrape(t, d.MetricsURL)
		require.Equal(t, 1.0, metric(t, m, "spool_breaker_state", "state", "closed"), "%s closed again on its metrics page", d.Name)
		require.EqualValues(t, f.GetBreakerOpens(), metric(t, m, "spool_breaker_opens_total", "", ""), d.Name)
		require.Greater(t, metric(t, m, "spool_breaker_open_seconds_total", "", ""), (down / 2).Seconds(), d.Name)
		down5xx += histogramCount(m, "spool_destination_request_duration_seconds", "status_class", "5xx")
		retried += metric(t, m, "spool_deliveries_total", "outcome", "retried")
		delivered += metric(t, m, "spool_deliveries_total", "outcome", "delivered")
		require.Zero(t, metric(t, m, "spool_deliveries_total", "outcome", "dead_lettered"), d.Name)
	}
	// The sink counts the 503s it answered, the dispatchers the requests
	// answered 5xx: the same requests.
	require.EqualValues(t, st.Down, down5xx, "requests answered 5xx")
	require.EqualValues(t, job.GetRetries(), retried, "retries in the job record and the metrics")
	require.EqualValues(t, rows, delivered)
	t.Logf("%d rows, destination down %s: %d requests answered 503, %d retries, breakers open %v, completed %s after the outage began",
		rows, down, st.Down, job.GetRetries(), openFor, job.GetCompletedAt().AsTime().Sub(downAt).Round(time.Second))
}

// flowOf asks one dispatcher for its flow control.
func flowOf(t *testing.T, addr string) *spoolv1.FlowControl {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := spoolv1.NewDispatchServiceClient(dial(t, addr)).GetDispatcherStatus(ctx, &spoolv1.GetDispatcherStatusRequest{})
	require.NoError(t, err)
	require.NotNil(t, resp.GetFlow())
	return resp.GetFlow()
}

// TestThrottledDestination: the destination answers 429 with Retry-After:
// 1 above 50 requests/s. Three dispatchers share a fleet-wide rate limit
// set a little above it (60/s, as an operator who knows the destination's
// limit only roughly would), so the destination is kept saturated: the
// excess is answered 429, shrinks the concurrency limits without opening
// the breakers, and comes back after the second asked for. The rate the
// destination accepts stays within 10 % of 50/s over the run, and nothing
// is dead-lettered. SPOOL_RATE_ROWS sets the size (3 000: about a minute).
func TestThrottledDestination(t *testing.T) {
	requireFlags(t, "sink", "rate-limit")
	const perSecond, fleetRate = 50, 60
	rows := envInt(t, "SPOOL_RATE_ROWS", 3000)
	s := startStack(t, 3, func(o *stack.Options) {
		o.SinkArgs = []string{"-rate-limit", fmt.Sprint(perSecond), "-latency", "20ms"}
		o.DispatcherArgs = []string{"-receiving-delay", "1s", "-rate-limit", fmt.Sprint(fleetRate)}
	})
	resp := streamFile(t, s.Ingestor.Addr, writeSample(t, rows), &spoolv1.FileHeader{FileName: "throttled.csv"})
	jobID := resp.GetJobId()
	job := watchToEnd(t, s.Dispatchers[0].Addr, jobID, time.Duration(rows/perSecond)*time.Second+2*time.Minute).GetJob()
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, job.GetState())
	require.EqualValues(t, rows, job.GetDelivered())
	requireEachRowOnce(t, s, jobID, int64(rows))

	var st struct {
		Throttled         int64   `json:"throttled"`
		AcceptedPerSecond float64 `json:"accepted_per_second"`
		AcceptedSeconds   float64 `json:"accepted_seconds"`
	}
	getJSON(t, s.Sink.Addr+"/stats?job="+jobID, &st)
	require.InEpsilon(t, perSecond, st.AcceptedPerSecond, 0.10, "accepted %.1f/s over %.1f s", st.AcceptedPerSecond, st.AcceptedSeconds)

	dead, sum := deadLetters(t, s.Dispatchers[1].Addr, jobID)
	require.Empty(t, dead, "rows dead-lettered")
	require.True(t, sum.GetComplete())
	var limits []int32
	for _, d := range s.Dispatchers {
		f := flowOf(t, d.Addr)
		require.EqualValues(t, fleetRate, f.GetRateLimit())
		require.Zero(t, f.GetBreakerOpens(), "%s: a destination answering 429 is up", d.Name)
		limits = append(limits, f.GetConcurrencyLimit())
	}
	t.Logf("%d rows at a destination taking %d/s, fleet limit %d/s: accepted %.1f/s over %.1f s, %d answered 429, %d retries, concurrency limits now %v",
		rows, perSecond, fleetRate, st.AcceptedPerSecond, st.AcceptedSeconds, st.Throttled, job.GetRetries(), limits)
}
