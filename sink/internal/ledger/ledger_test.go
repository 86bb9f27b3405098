package ledger

import (
	"errors"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestApplyCountsDistinctAndDuplicates(t *testing.T) {
	tests := []struct {
		name    string
		applies []Transaction // Applied is ignored on input.
		job     string
		want    Stats
	}{
		{name: "nothing", job: "a", want: Stats{}},
		{name: "one", applies: []Transaction{{Job: "a", Row: 1}}, job: "a", want: Stats{Requests: 1, Distinct: 1}},
		{
			name:    "duplicate row",
			applies: []Transaction{{Job: "a", Row: 1}, {Job: "a", Row: 1}, {Job: "a", Row: 2}},
			job:     "a",
			want:    Stats{Requests: 3, Distinct: 2, Duplicates: 1},
		},
		{
			name:    "same row in another job is another transaction",
			applies: []Transaction{{Job: "a", Row: 1}, {Job: "b", Row: 1}},
			job:     "b",
			want:    Stats{Requests: 1, Distinct: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New()
			for _, a := range tt.applies {
				l.Apply(a.Job, a.Row, "k")
			}
			require.Equal(t, tt.want, l.JobStats(tt.job))
		})
	}
}

func TestLedgerRecordsFirstKeyAndApplyCount(t *testing.T) {
	l := New()
	applied, _ := l.Apply("j", 7, "first")
	require.EqualValues(t, 1, applied)
	applied, ref := l.Apply("j", 7, "second")
	require.EqualValues(t, 2, applied)
	got, ok := l.Lookup("j", 7)
	require.True(t, ok)
	require.Equal(t, Transaction{Job: "j", Row: 7, Applied: 2, Key: "first", Reference: ref}, got)
	_, ok = l.Lookup("j", 8)
	require.False(t, ok)
	_, ok = l.Lookup("other", 7)
	require.False(t, ok)
}

func TestStatsAddsJobsFailuresAndRejections(t *testing.T) {
	l := New()
	l.Apply("a", 1, "")
	l.Apply("a", 1, "")
	l.Apply("b", 1, "")
	l.Failed("a", 4)
	l.Rejected("b")
	l.Rejected("")
	require.Equal(t, Stats{Requests: 3, Distinct: 2, Duplicates: 1, Failed: 1, Rejected: 2}, l.Stats())
	require.Equal(t, Stats{Requests: 2, Distinct: 1, Duplicates: 1, Failed: 1}, l.JobStats("a"))
	require.Equal(t, []string{"a", "b"}, l.Jobs())

	l.Reset()
	require.Equal(t, Stats{}, l.Stats())
	require.Empty(t, l.Jobs())
}

func TestFailedRowsCountsEachRowsFailures(t *testing.T) {
	l := New()
	l.Failed("a", 4)
	l.Failed("a", 4)
	l.Failed("a", 9)
	l.Failed("b", 4)
	require.Equal(t, map[int64]int64{4: 2, 9: 1}, l.FailedRows("a"))
	require.Equal(t, map[int64]int64{4: 1}, l.FailedRows("b"))
	require.Empty(t, l.FailedRows("none"))
	_, applied := l.Lookup("a", 4)
	require.False(t, applied, "a failed request applies nothing")
	require.EqualValues(t, 3, l.JobStats("a").Failed)

	l.Reset()
	require.Empty(t, l.FailedRows("a"))
}

func TestEachListsInRowOrderAcrossBatches(t *testing.T) {
	l := New()
	const n = 3*lookupBatch + 5
	// Apply in reverse to prove the listing sorts.
	for r := int64(n); r >= 1; r-- {
		l.Apply("j", r, "k"+strconv.FormatInt(r, 10))
	}
	l.Apply("j", 10, "again")
	l.Apply("other", 1, "x")

	var got []Transaction
	require.NoError(t, l.Each("j", func(tx Transaction) error { got = append(got, tx); return nil }))
	require.Len(t, got, n)
	for i, tx := range got {
		row := int64(i + 1)
		want := Transaction{Job: "j", Row: row, Applied: 1, Key: "k" + strconv.FormatInt(row, 10)}
		if row == 10 {
			want.Applied = 2
		}
		tx.Reference = "" // keyed per process; see TestReferences
		require.Equal(t, want, tx)
	}
}

func TestEachStopsAtTheFirstError(t *testing.T) {
	l := New()
	for r := int64(1); r <= 10; r++ {
		l.Apply("j", r, "")
	}
	stop := errors.New("stop")
	calls := 0
	err := l.Each("j", func(Transaction) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, 3, calls)
	require.NoError(t, l.Each("missing", func(Transaction) error { return stop }))
}

func TestConcurrentAppliesAreExact(t *testing.T) {
	l := New()
	const workers, rows = 8, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for r := int64(1); r <= rows; r++ {
				l.Apply("j"+strconv.Itoa(w%2), r, "")
				if r%50 == 0 {
					_ = l.Stats()
				}
			}
		})
	}
	wg.Wait()
	want := Stats{Requests: workers / 2 * rows, Distinct: rows, Duplicates: (workers/2 - 1) * rows}
	require.Equal(t, want, l.JobStats("j0"))
	require.Equal(t, want, l.JobStats("j1"))
}

// TestMillionRowsFitInLittleMemory guards the promise that a million-row
// job costs the sink one small entry per row.
func TestMillionRowsFitInLittleMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates a million entries")
	}
	const rows = 1_000_000
	before := heapInUse()
	l := New()
	// Keys are shared strings here, so this measures the ledger's own
	// overhead; real keys add their length once per row.
	for r := int64(1); r <= rows; r++ {
		l.Apply("job", r, "key")
	}
	perRow := float64(heapInUse()-before) / rows
	require.EqualValues(t, rows, l.JobStats("job").Distinct)
	t.Logf("ledger bytes per row: %.1f", perRow)
	require.Less(t, perRow, 100.0)
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

func TestApplyOnceHonoursKeys(t *testing.T) {
	type apply struct {
		job, key string
		row      int64
		applied  int64
		ok       bool
	}
	tests := []struct {
		name    string
		applies []apply
		job     string
		want    Stats
		rows    []Transaction
	}{
		{
			name: "a key seen again is not applied",
			applies: []apply{
				{job: "a", row: 1, key: "k1", applied: 1, ok: true},
				{job: "a", row: 1, key: "k1", applied: 1, ok: false},
				{job: "a", row: 1, key: "k1", applied: 1, ok: false},
			},
			job:  "a",
			want: Stats{Requests: 1, Distinct: 1, Deduplicated: 2},
			rows: []Transaction{{Job: "a", Row: 1, Applied: 1, Key: "k1", Deduplicated: 2}},
		},
		{
			name: "another key for the same row is applied",
			applies: []apply{
				{job: "a", row: 1, key: "k1", applied: 1, ok: true},
				{job: "a", row: 1, key: "k2", applied: 2, ok: true},
			},
			job:  "a",
			want: Stats{Requests: 2, Distinct: 1, Duplicates: 1},
			rows: []Transaction{{Job: "a", Row: 1, Applied: 2, Key: "k1"}},
		},
		{
			name: "an empty key cannot be honoured",
			applies: []apply{
				{job: "a", row: 1, applied: 1, ok: true},
				{job: "a", row: 1, applied: 2, ok: true},
			},
			job:  "a",
			want: Stats{Requests: 2, Distinct: 1, Duplicates: 1},
			rows: []Transaction{{Job: "a", Row: 1, Applied: 2}},
		},
		{
			name: "a key applied by another job is not applied again",
			applies: []apply{
				{job: "a", row: 4, key: "bk", applied: 1, ok: true},
				{job: "b", row: 9, key: "bk", applied: 0, ok: false},
			},
			job:  "b",
			want: Stats{Deduplicated: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New()
			for i, a := range tt.applies {
				applied, _, ok := l.ApplyOnce(a.job, a.row, a.key)
				require.Equal(t, a.applied, applied, "apply %d", i)
				require.Equal(t, a.ok, ok, "apply %d", i)
			}
			require.Equal(t, tt.want, l.JobStats(tt.job))
			var rows []Transaction
			require.NoError(t, l.Each(tt.job, func(tx Transaction) error {
				tx.Reference = "" // see TestReferences
				rows = append(rows, tx)
				return nil
			}))
			require.Equal(t, tt.rows, rows)
		})
	}
}

func TestApplyOnceUnderContentionAppliesEachKeyOnce(t *testing.T) {
	l := New()
	const workers, rows = 8, 300
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for r := int64(1); r <= rows; r++ {
				l.ApplyOnce("j", r, "k"+strconv.FormatInt(r, 10))
			}
		})
	}
	wg.Wait()
	require.Equal(t, Stats{Requests: rows, Distinct: rows, Deduplicated: (workers - 1) * rows}, l.JobStats("j"))
	require.NoError(t, l.Each("j", func(tx Transaction) error {
		require.EqualValues(t, 1, tx.Applied, "row %d", tx.Row)
		return nil
	}))
}

func TestHungResetsAndResetForgetsKeys(t *testing.T) {
	l := New()
	l.ApplyOnce("a", 1, "k")
	l.Hung("a")
	l.ConnReset("a")
	l.ConnReset("b")
	require.Equal(t, Stats{Requests: 1, Distinct: 1, Hung: 1, Resets: 1}, l.JobStats("a"))
	require.Equal(t, Stats{Requests: 1, Distinct: 1, Hung: 1, Resets: 2}, l.Stats())

	l.Reset()
	// The key is forgotten with the rest: it applies again.
	_, _, ok := l.ApplyOnce("a", 1, "k")
	require.True(t, ok)
	require.Equal(t, Stats{Requests: 1, Distinct: 1}, l.Stats())
}

func TestReferences(t *testing.T) {
	l := New()
	n, first, ok := l.ApplyOnce("j", 1, "k1")
	require.True(t, ok)
	require.Equal(t, int64(1), n)
	require.Regexp(t, `^pay_[0-9a-f]{20}$`, first)
	_, second := l.Apply("j", 2, "k2")
	require.NotEqual(t, first, second, "each transaction its own")
	_, ref, ok := l.ApplyOnce("other", 5, "k1")
	require.False(t, ok, "k1 was applied already")
	require.Empty(t, ref, "deduplicated under another job: this job has no reference")
	_, ref, ok = l.ApplyOnce("j", 1, "k1")
	require.False(t, ok)
	require.Equal(t, first, ref, "a deduplicated request is answered with the first reference")
	_, again := l.Apply("j", 1, "k1")
	require.NotEqual(t, first, again, "applied again: a new one")
	require.NotEqual(t, second, again)
	got, ok := l.Lookup("j", 1)
	require.True(t, ok)
	require.Equal(t, again, got.Reference)
	_, elsewhere := New().Apply("j", 1, "k1")
	require.NotEqual(t, first, elsewhere, "another sink process issues other references: they cannot be guessed from the row")
}
