package tally_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	"github.com/spoolhq/spool/dispatcher/internal/tally"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/emulator/dbfault"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/testkit"
)

// TestOnDynamoUnderLostAnswers runs the tally on the real job store and
// ledger in dynalite, with the answer of every counter write lost (and the
// write sent again, or given up on): the job's counters stay exact, and
// the job completes when its ledger settles every row, not when its
// counters say so.
func TestOnDynamoUnderLostAnswers(t *testing.T) {
	ctx := context.Background()
	raw := emutest.Table(t, "jobs")
	faults := []dbfault.Fault{dbfault.LoseRetried, dbfault.Lose}
	var n int
	db := dbfault.New(raw, func(c dbfault.Call) dbfault.Fault {
		if c.Op != "PutItem" || len(c.SK) < 4 || c.SK[:4] != "CNT#" {
			return dbfault.Pass
		}
		n++
		return faults[n%len(faults)]
	})
	store := jobstore.New(db, "jobs")
	book := ledger.New(ledger.NewDynamo(raw, "jobs"), ledger.Options{Owner: "d1", Lease: time.Minute})
	clk := testkit.NewClock(time.Now())
	ty := tally.New(store, book, "d1", quiet(), tally.WithClock(clk.Now))

	const rows = 5
	_, err := store.Create(ctx, &spoolv1.Job{JobId: "j"})
	require.NoError(t, err)
	_, err = store.Seal(ctx, "j", jobstore.Ingest{Received: rows, Published: rows})
	require.NoError(t, err)

	deliver := func(row int64) jobstore.Counts {
		t.Helper()
		c, err := book.Claim(ctx, ledger.Tx{Key: fmt.Sprintf("j:%d", row), JobID: "j", Row: row})
		require.NoError(t, err)
		require.Equal(t, ledger.Send, c.Verdict)
		_, counts, err := book.Finish(ctx, c.Record, ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, Status: 200})
		require.NoError(t, err)
		return counts
	}
	flush := func() {
		t.Helper()
		// Lost answers fail a flush; the next writes the counts again.
		for range 4 {
			if ty.Flush(ctx) == nil {
				return
			}
			clk.Advance(time.Minute)
		}
		t.Fatal("flush kept failing")
	}
	for row := int64(1); row < rows; row++ {
		ty.Add("j", deliver(row))
		flush()
	}
	j, err := store.Get(ctx, "j")
	require.NoError(t, err)
	require.EqualValues(t, rows-1, j.GetDelivered(), "every count once, however often written")

	// The last row is being sent, and a count of it arrives too early (as
	// a repair racing a live dispatcher could make): the counters say
	// every row is settled, the ledger does not.
	c, err := book.Claim(ctx, ledger.Tx{Key: fmt.Sprintf("j:%d", rows), JobID: "j", Row: rows})
	require.NoError(t, err)
	ty.Add("j", jobstore.Counts{Delivered: 1})
	flush()
	j, err = store.Get(ctx, "j")
	require.NoError(t, err)
	require.EqualValues(t, rows, jobstore.SettledOf(j).Sum())
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, j.GetState(), "not complete while a row is in flight")

	_, _, err = book.Finish(ctx, c.Record, ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, Status: 200})
	require.NoError(t, err)
	clk.Advance(time.Minute)
	flush()
	j, err = store.Get(ctx, "j")
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, j.GetState())
	require.EqualValues(t, rows, j.GetDelivered())
	require.Positive(t, db.Injected(dbfault.LoseRetried))
	require.Positive(t, db.Injected(dbfault.Lose))
}
