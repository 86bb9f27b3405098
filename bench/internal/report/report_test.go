package report

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestFailure(t *testing.T) {
	tests := []struct {
		name string
		row  Row
		want string
	}{
		{name: "above its floor", row: Row{Name: "x", Value: 90, Baseline: 100, Min: 0.8}},
		{name: "below its floor", row: Row{Name: "x", Value: 70, Baseline: 100, Min: 0.8}, want: "x: ratio 0.700 below its floor 0.80"},
		{name: "above its ceiling", row: Row{Name: "x", Value: 1.5, Ratio: 1.5, Max: 1.3}, want: "x: ratio 1.500 above its ceiling 1.30"},
		{name: "ratio set by hand wins", row: Row{Name: "x", Value: 300, Baseline: 80, Ratio: 3.75, Min: 3.3}},
		{name: "bound by the machine", row: Row{Name: "x", Value: 10, Baseline: 100, Min: 0.8, Unchecked: "emulators"}},
		{name: "no bound", row: Row{Name: "x", Value: 1, Baseline: 100}},
		{name: "no baseline in this run", row: Row{Name: "x", Value: 1, Min: 0.85}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, tt.row.Failure())
		})
	}
}

func TestPrintAndJSON(t *testing.T) {
	tab := Table{Started: time.Date(2026, 12, 1, 1, 2, 3, 0, time.UTC)}
	tab.Add(
		Row{Name: "delivery, 1 dispatcher", Value: 70, Unit: "rows/s", Baseline: 80, BaselineName: "ideal", Min: 0.8},
		Row{Name: "delivery, 2 % loss", Value: 40, Unit: "rows/s", Baseline: 70, BaselineName: "0 %", Min: 0.85},
	)
	var out bytes.Buffer
	require.NoError(t, tab.Print(&out))
	require.Contains(t, out.String(), "0.88")
	require.Contains(t, out.String(), "≥ 0.80 ok")
	require.Contains(t, out.String(), "≥ 0.85 FAIL")
	require.Contains(t, out.String(), "FAIL delivery, 2 % loss: ratio 0.571 below its floor 0.85")

	path, err := tab.WriteJSON(t.TempDir())
	require.NoError(t, err)
	require.Contains(t, path, "run-20261201T010203Z.json")
	back, err := ReadJSON(path)
	require.NoError(t, err)
	require.Equal(t, tab.Rows, back.Rows)

	// The README's table, from the JSON: every column but the notes.
	out.Reset()
	require.NoError(t, back.Markdown(&out))
	require.Equal(t, `| measured | figure | baseline | ratio | bound |
|---|---|---|---|---|
| delivery, 1 dispatcher | 70.0 rows/s | 80.0 (ideal) | 0.88 | ≥ 0.80 ok |
| delivery, 2 % loss | 40.0 rows/s | 70.0 (0 %) | 0.57 | ≥ 0.85 FAIL |
`, out.String())
}

// TestRoundsAndKind: a figure measured in rounds shows them beside its
// median, and a table of another kind than make bench's run is written
// under its kind's name.
func TestRoundsAndKind(t *testing.T) {
	tab := Table{Kind: "compare", Started: time.Date(2026, 12, 1, 1, 2, 3, 0, time.UTC)}
	tab.Add(
		Row{Name: "e2e", Value: 60.5, Unit: "s", Rounds: []float64{60, 61}, Baseline: 59.5, BaselineName: "base abc", BaselineRounds: []float64{59, 60}, Max: 1.05},
		Row{Name: "once", Value: 7, Unit: "s", Rounds: []float64{7}, Baseline: 6, BaselineName: "base abc", BaselineRounds: []float64{6}},
	)
	var out bytes.Buffer
	require.NoError(t, tab.Print(&out))
	require.Contains(t, out.String(), "60.5 s (rounds 60.0, 61.0)")
	require.Contains(t, out.String(), "59.5 (base abc; rounds 59.0, 60.0)")
	require.Contains(t, out.String(), "7.00 s  ", "one round is the figure itself")
	require.Contains(t, out.String(), "6.00 (base abc)")

	path, err := tab.WriteJSON(t.TempDir())
	require.NoError(t, err)
	require.Contains(t, path, "compare-20261201T010203Z.json")
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var back Table
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, tab, back)
}
