package compare

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/bench/internal/gobench"
)

func TestE2ETime(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		rows    int
		want    time.Duration
		wantErr string
	}{
		{
			name: "go test -v output",
			out: `=== RUN   TestLargeFileThreeDispatchers
    send_test.go:96: 50000 rows through 3 dispatchers in 1m12.345s
--- PASS: TestLargeFileThreeDispatchers (80.12s)
PASS
`,
			rows: 50000, want: time.Minute + 12345*time.Millisecond,
		},
		{
			name: "seconds only",
			out:  "    send_test.go:70: 2000 rows through 3 dispatchers in 9.87s\n",
			rows: 2000, want: 9870 * time.Millisecond,
		},
		{
			name:    "another size than asked for",
			out:     "    send_test.go:96: 5000 rows through 3 dispatchers in 20s\n",
			rows:    50000,
			wantErr: "no e2e time for 50000 rows (logged: 5000 rows through 3 dispatchers in 20s)",
		},
		{
			name:    "no time logged",
			out:     "--- FAIL: TestLargeFileThreeDispatchers (3.00s)\nFAIL\n",
			rows:    2000,
			wantErr: `no line "N rows through 3 dispatchers in T" in the e2e output`,
		},
		{
			name:    "a time that is not a duration",
			out:     "2000 rows through 3 dispatchers in soon\n",
			rows:    2000,
			wantErr: `e2e time "soon": time: invalid duration "soon"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := E2ETime(strings.NewReader(tt.out), tt.rows)
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, d)
		})
	}
}

// TestMetric reads the ledger benchmark's line as each side prints it: the
// head reports a path the base lacks, and a metric missing on a side is an
// error naming what the side did report.
func TestMetric(t *testing.T) {
	base := "BenchmarkLedgerWrites-2   3   4000000000 ns/op   1500 put-rows/s   700 ledger-rows/s   500 three-writes-rows/s   2.10 ledger/put   3.00 three-writes/put\n"
	head := "BenchmarkLedgerWrites-2   3   5000000000 ns/op   1480 put-rows/s   710 ledger-rows/s   600 ledger-legacy-keys-rows/s   490 three-writes-rows/s   2.08 ledger/put   2.46 ledger-legacy-keys/put   3.02 three-writes/put\n"
	tests := []struct {
		name, out, metric string
		want              float64
		wantErr           string
	}{
		{name: "base ledger rows/s", out: base, metric: "ledger-rows/s", want: 700},
		{name: "head ledger rows/s", out: head, metric: "ledger-rows/s", want: 710},
		{name: "base ledger/put", out: base, metric: "ledger/put", want: 2.10},
		{name: "head's new path", out: head, metric: "ledger-legacy-keys/put", want: 2.46},
		{
			name: "a path the base does not report", out: base, metric: "ledger-legacy-keys/put",
			wantErr: `no metric "ledger-legacy-keys/put" (reported: ledger-rows/s, ledger/put, ns/op, put-rows/s, three-writes-rows/s, three-writes/put)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := gobench.Parse(strings.NewReader(tt.out))
			require.NoError(t, err)
			v, err := Metric(m, tt.metric)
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, v)
		})
	}
}
