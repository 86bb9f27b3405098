package e2e

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// TestSendExactlyOnce sends a payroll file with the CLI through two
// dispatchers and checks that every row reached the destination once,
// and that every view of the job agrees.
func TestSendExactlyOnce(t *testing.T) {
	const rows = 3000
	s := startStack(t, 2, nil)
	file := writeSample(t, rows)

	out, err := runCLI(t, s, "send", file)
	require.NoError(t, err, "spool send:\n%s", out)
	require.Contains(t, out, "delivered 3000 of 3000")
	jobID := jobIDFrom(t, out)

	st := getSinkStats(t, s, jobID)
	require.Equal(t, sinkStats{Requests: rows, Distinct: rows, Duplicates: 0}, st)
	requireEachRowOnce(t, s, jobID, rows)

	// Any dispatcher answers for the whole job.
	for _, d := range s.Dispatchers {
		p := watchToEnd(t, d.Addr, jobID, 30*time.Second)
		require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, p.GetJob().GetState())
		require.EqualValues(t, rows, p.GetJob().GetTotal())
		require.EqualValues(t, rows, p.GetJob().GetDelivered())
		require.Zero(t, p.GetInFlight())
	}

	out, err = runCLI(t, s, "status", jobID)
	require.NoError(t, err, out)
	require.Contains(t, out, "COMPLETED")
}

// TestLargeFileThreeDispatchers is the acceptance run: 50 000 rows
// through 3 dispatchers (SPOOL_E2E_ROWS overrides the size; -short runs
// 5 000).
func TestLargeFileThreeDispatchers(t *testing.T) {
	rows := 50_000
	if testing.Short() {
		rows = 5_000
	}
	if v := os.Getenv("SPOOL_E2E_ROWS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err)
		rows = n
	}
	s := startStack(t, 3, nil)
	file := writeSample(t, rows)

	start := time.Now()
	out, err := runCLI(t, s, "send", file)
	require.NoError(t, err, "spool send:\n%s", out)
	jobID := jobIDFrom(t, out)
	t.Logf("%d rows through 3 dispatchers in %s", rows, time.Since(start).Round(time.Millisecond))

	st := getSinkStats(t, s, jobID)
	require.EqualValues(t, rows, st.Distinct)
	require.Zero(t, st.Duplicates)
	requireEachRowOnce(t, s, jobID, int64(rows))

	p := watchToEnd(t, s.Dispatchers[2].Addr, jobID, 30*time.Second)
	require.True(t, p.GetFinal())
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, p.GetJob().GetState())
	require.EqualValues(t, rows, p.GetJob().GetDelivered())
	require.EqualValues(t, rows, p.GetJob().GetTotal())
}
