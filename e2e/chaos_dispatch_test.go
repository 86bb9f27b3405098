package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/local/stack"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/provision"
)

// The chaos runs: dispatchers killed under load. `make test` runs them at 3 000 rows;
// `make chaos` sets SPOOL_CHAOS_ROWS=20000. SPOOL_CHAOS_SEED picks the
// kills and the sink's failures, so a failing run can be replayed.
const (
	defaultChaosRows = 3000
	chaosKillEvery   = 2 * time.Second
	// The dispatchers give up on a request after destTimeout; the sink holds
	// a hung answer a little longer, so the request was applied but the
	// dispatcher cannot know it.
	destTimeout = 2 * time.Second
	hangFor     = 3 * time.Second
	// A claim's lease covers one delivery; the visibility timeout is longer
	// than the lease (so a live claim is never seen expired by the next
	// receiver) and short, so a killed dispatcher's messages come back
	// quickly.
	claimLease = 5 * time.Second
	visibility = 8 * time.Second
)

// chaosQueue is the queue of a chaos run: short visibility, and a receive
// count high enough that kills, delays and the emulator's habit of counting
// ChangeMessageVisibility as a receive never push a message to the DLQ.
var chaosQueue = provision.QueueOptions{VisibilityTimeout: visibility, MaxReceiveCount: 1000, Retention: time.Hour}

// TestChaosDispatchersHold: a destination that ignores the idempotency key,
// dispatchers under the default `hold` policy. Nothing may be applied twice.
func TestChaosDispatchersHold(t *testing.T) {
	runDispatcherChaos(t, "hold", false)
}

// TestChaosDispatchersRetryWithKeyHonoured: the destination honours the
// key, so resending an unknown row is safe. Nothing may be applied twice.
func TestChaosDispatchersRetryWithKeyHonoured(t *testing.T) {
	runDispatcherChaos(t, "retry-with-key", true)
}

// TestChaosDispatchersRetryWithKeyIgnored is the misconfiguration: the
// policy trusts a key the destination ignores. Rows may be applied twice,
// but only rows the ledger knows it resent; none may be lost.
func TestChaosDispatchersRetryWithKeyIgnored(t *testing.T) {
	runDispatcherChaos(t, "retry-with-key", false)
}

// startChaosStack starts 3 dispatchers under policy with the chaos run's
// short queue and timeouts, against a sink that fails 10 % of requests
// with 503, applies and then hangs past the timeout 3 %, and applies and
// then resets the connection 1 % (honouring idempotency keys when asked).
// A non-nil awsEndpoint puts the services' AWS calls through it.
func startChaosStack(t *testing.T, seed uint64, policy string, honourKey bool, awsEndpoint func(emulator.Kind, string) (string, error)) *stack.Stack {
	t.Helper()
	sinkArgs := []string{"-fail-rate", "0.10", "-hang-rate", "0.03", "-hang-for", hangFor.String(),
		"-reset-rate", "0.01", "-seed", fmt.Sprint(seed)}
	if honourKey {
		sinkArgs = append(sinkArgs, "-honour-key")
	}
	return startStack(t, 3, func(o *stack.Options) {
		o.AWSEndpoint = awsEndpoint
		o.QueueOptions = &chaosQueue
		o.SinkArgs = sinkArgs
		o.DispatcherArgs = []string{
			"-unknown-policy", policy,
			"-destination-timeout", destTimeout.String(),
			"-claim-lease", claimLease.String(),
			// Asked for on every receive: as short as the queue's, so a
			// killed dispatcher's messages come back quickly.
			"-visibility-timeout", visibility.String(),
			"-receiving-delay", "1s",
			"-shutdown-grace", "5s",
		}
	})
}

// runDispatcherChaos sends a file through 3 dispatchers while one of them
// is SIGKILLed about every 2 s, against a sink that fails 10 % of requests
// with 503, applies and then hangs past the timeout 3 %, and applies and
// then resets the connection 1 % (the case Go's transport would silently
// replay). Then it checks the README's guarantees against the delivery ledger
// and the sink's own record.
func runDispatcherChaos(t *testing.T, policy string, honourKey bool) {
	requireFlags(t, "dispatcher", "unknown-policy", "claim-lease", "receiving-delay")
	requireFlags(t, "sink", "hang-rate", "hang-for", "reset-rate", "honour-key")
	rows := envInt(t, "SPOOL_CHAOS_ROWS", defaultChaosRows)
	seed := uint64(envInt(t, "SPOOL_CHAOS_SEED", 1))

	s := startChaosStack(t, seed, policy, honourKey, nil)
	file := writeSample(t, rows)

	start := time.Now()
	resp := streamFile(t, s.Ingestor.Addr, file, &spoolv1.FileHeader{FileName: "chaos.csv"})
	jobID := resp.GetJobId()
	require.NotEmpty(t, jobID)
	require.EqualValues(t, rows, resp.GetRowsPublished())
	t.Cleanup(func() {
		// A job that never settles is easier to read with the sink's side
		// of the story; this runs before the stack stops.
		if t.Failed() {
			st := getSinkTotals(t, s, jobID)
			t.Logf("sink's record of the job: %+v (every row applied at least once: %t)", st, st.Distinct == int64(rows))
		}
	})

	k := startKiller(t, s, seed, chaosKillEvery)
	timeout := time.Minute + time.Duration(rows)*20*time.Millisecond
	done := func(j *spoolv1.Job) bool {
		if !isFinal(j.GetState()) {
			return false
		}
		// Under retry-with-key an UNKNOWN row is resent until it is
		// delivered, possibly after the job first completed.
		return policy != "retry-with-key" || j.GetUnknown() == 0
	}
	job := waitJob(t, s, &spoolv1.GetJobRequest{JobId: jobID}, timeout, "job settled under chaos", done)
	kills, err := k.Stop()
	require.NoError(t, err, "kill and restart a dispatcher")
	wall := time.Since(start)

	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, job.GetState(), "reason: %s", job.GetStateReason())
	require.EqualValues(t, rows, job.GetTotal())
	require.EqualValues(t, rows, job.GetDelivered()+job.GetFailed()+job.GetUnknown(), "job counters: %v", job)

	rep := reportJob(t, s.Dispatchers[0].Addr, jobID)
	entries := rep.byRow(t)
	sink := sinkLedger(t, s, jobID)
	totals := getSinkTotals(t, s, jobID)

	// Lost = 0: every row is in the ledger in a settled state.
	var lost []int64
	perState := map[spoolv1.TransactionState]int64{}
	for r := int64(1); r <= int64(rows); r++ {
		e, ok := entries[r]
		switch {
		case !ok:
			lost = append(lost, r)
			continue
		case e.GetState() != spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED &&
			e.GetState() != spoolv1.TransactionState_TRANSACTION_STATE_REJECTED &&
			e.GetState() != spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN:
			lost = append(lost, r)
		}
		perState[e.GetState()]++
	}
	require.Empty(t, lost, "rows missing from the ledger or not settled")
	require.Len(t, entries, rows, "ledger rows outside 1..%d", rows)
	// The sink refuses nothing for good, so nothing may be REJECTED.
	require.Zero(t, perState[spoolv1.TransactionState_TRANSACTION_STATE_REJECTED])
	require.Equal(t, job.GetUnknown(), perState[spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN], "job's unknown count vs the ledger")
	requireSummaryMatches(t, rep.summary, perState)

	// The ledger and the sink agree: a row recorded DELIVERED was applied;
	// a row applied twice was one the ledger knows is unknown or resent.
	var notApplied, twice, twiceUnexplained []int64
	for r, e := range entries {
		applied := sink[r].Applied
		if e.GetState() == spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED && applied == 0 {
			notApplied = append(notApplied, r)
		}
		if applied < 2 {
			continue
		}
		twice = append(twice, r)
		resent := policy == "retry-with-key" && e.GetAttempts() >= 2
		if e.GetState() != spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN && !resent {
			twiceUnexplained = append(twiceUnexplained, r)
		}
	}
	for r := range sink {
		require.Contains(t, entries, r, "the sink applied row %d, which the ledger does not know", r)
	}
	t.Logf("chaos %s, sink honours key: %t: rows %d, kills %d, UNKNOWN %d, duplicates suppressed %d, applied twice %d, "+
		"sink: 503 %d, hung %d, resets %d, deduplicated %d; wall time %s; reproduce: SPOOL_CHAOS_ROWS=%d SPOOL_CHAOS_SEED=%d go test -run '^%s$' ./e2e/",
		policy, honourKey, rows, kills, job.GetUnknown(), job.GetDuplicatesSuppressed(), len(twice),
		totals.Failed, totals.Hung, totals.Resets, totals.Deduplicated, wall.Round(time.Millisecond), rows, seed, t.Name())

	require.Empty(t, notApplied, "rows the ledger says DELIVERED that the sink never applied")
	require.Empty(t, twiceUnexplained, "rows applied twice that are neither UNKNOWN nor resent under retry-with-key")
	if honourKey || policy == "hold" {
		require.Empty(t, twice, "rows applied twice")
	}
	if policy == "retry-with-key" {
		// Every row was resent until delivered.
		require.EqualValues(t, rows, perState[spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED])
		require.EqualValues(t, rows, totals.Distinct)
	}
	// The faults really happened, or the run proves little.
	require.Positive(t, kills)
	require.Positive(t, totals.Failed)
	require.Positive(t, totals.Hung)

	if policy == "hold" {
		requireReportCLI(t, s, jobID, rows)
	}
}

// requireSummaryMatches checks the report's closing summary against the
// entries it listed.
func requireSummaryMatches(t *testing.T, sum *spoolv1.ReportSummary, perState map[spoolv1.TransactionState]int64) {
	t.Helper()
	got := map[spoolv1.TransactionState]int64{}
	for _, st := range sum.GetTotals() {
		got[st.GetState()] = st.GetRows()
		if st.GetRows() > 0 {
			require.NotEmpty(t, st.GetAmountSum(), "amount sum of %s", st.GetState())
		}
	}
	for st, n := range perState {
		require.Equal(t, n, got[st], "summary rows of %s", st)
	}
}

// requireReportCLI runs `spool report JOB -json` and checks it lists every
// row as one JSON object per line.
func requireReportCLI(t *testing.T, s *stack.Stack, jobID string, rows int) {
	t.Helper()
	out, err := runCLI(t, s, "report", "-json", jobID)
	require.NoError(t, err, "spool report:\n%s", out)
	var lines int
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var v map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &v), "line %q", l)
		lines++
	}
	require.GreaterOrEqual(t, lines, rows, "one line per row at least")
}
