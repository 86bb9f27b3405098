package compare

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestJudge(t *testing.T) {
	tests := []struct {
		name       string
		base, head []float64
		lower      bool
		want       Verdict
		wantRatio  float64
		wantNoise  float64
	}{
		{
			name: "a time within the rounds' spread", lower: true,
			base: []float64{100, 110}, head: []float64{108, 112},
			want: WithinNoise, wantRatio: 110.0 / 105, wantNoise: 10.0 / 105,
		},
		{
			name: "a time longer beyond the spread", lower: true,
			base: []float64{100, 102}, head: []float64{120, 121},
			want: Slower, wantRatio: 120.5 / 101, wantNoise: 0.03,
		},
		{
			name: "a time shorter beyond the spread", lower: true,
			base: []float64{120, 121}, head: []float64{100, 102},
			want: Faster, wantRatio: 101 / 120.5, wantNoise: 0.03,
		},
		{
			name: "a rate lower beyond the spread is slower", lower: false,
			base: []float64{1000, 1010}, head: []float64{800, 820},
			want: Slower, wantRatio: 810.0 / 1005, wantNoise: 0.03,
		},
		{
			name: "a rate higher beyond the spread is faster", lower: false,
			base: []float64{800, 820}, head: []float64{1000, 1010},
			want: Faster, wantRatio: 1005.0 / 810, wantNoise: 0.03,
		},
		{
			name: "the head's own spread counts too", lower: false,
			base: []float64{1000, 1001}, head: []float64{800, 1000},
			want: WithinNoise, wantRatio: 900 / 1000.5, wantNoise: 200.0 / 900,
		},
		{
			name: "steady rounds are held to the floor", lower: true,
			base: []float64{100, 100, 100}, head: []float64{102, 102, 102},
			want: WithinNoise, wantRatio: 1.02, wantNoise: 0.03,
		},
		{
			name: "just past the floor", lower: true,
			base: []float64{100, 100}, head: []float64{104, 104},
			want: Slower, wantRatio: 1.04, wantNoise: 0.03,
		},
		{
			name: "the median, not the mean: one slow round of three", lower: true,
			base: []float64{100, 101, 100}, head: []float64{100, 180, 101},
			want: WithinNoise, wantRatio: 101.0 / 100, wantNoise: 80.0 / 101,
		},
		{
			name: "one round has no spread", lower: true,
			base: []float64{100}, head: []float64{150},
			want: Unjudged, wantRatio: 1.5,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, err := Judge(tt.base, tt.head, tt.lower, 0.03)
			require.NoError(t, err)
			require.Equal(t, tt.want, j.Verdict)
			require.InDelta(t, tt.wantRatio, j.Ratio, 1e-9)
			require.InDelta(t, tt.wantNoise, j.Noise, 1e-9)
		})
	}
}

func TestJudgeRefusesNothingToCompare(t *testing.T) {
	_, err := Judge(nil, []float64{1}, true, 0.03)
	require.EqualError(t, err, "no rounds (base 0, head 1)")
	_, err = Judge([]float64{0, 0}, []float64{1, 1}, true, 0.03)
	require.ErrorContains(t, err, "medians must be above 0")
}

// TestFigureRow: the table's bound agrees with the verdict, on the worse
// side of the ratio, so a figure slower beyond noise fails the table.
func TestFigureRow(t *testing.T) {
	tests := []struct {
		name        string
		fig         Figure
		base, head  []float64
		wantFailure bool
		wantNote    string
		wantUncheck string
	}{
		{
			name: "a slower time fails", fig: Figure{Name: "e2e", Unit: "s", Lower: true},
			base: []float64{10, 10.1}, head: []float64{12, 12.1}, wantFailure: true,
			wantNote: "slower beyond noise (± 3.0 %)",
		},
		{
			name: "a faster time passes", fig: Figure{Name: "e2e", Unit: "s", Lower: true},
			base: []float64{12, 12.1}, head: []float64{10, 10.1},
			wantNote: "faster beyond noise (± 3.0 %)",
		},
		{
			name: "a lower rate fails", fig: Figure{Name: "ledger", Unit: "rows/s"},
			base: []float64{1000, 1000}, head: []float64{900, 900}, wantFailure: true,
			wantNote: "slower beyond noise (± 3.0 %)",
		},
		{
			name: "a rate within noise passes", fig: Figure{Name: "ledger", Unit: "rows/s"},
			base: []float64{1000, 900}, head: []float64{920, 930},
			wantNote: "within noise (± 10.5 %)",
		},
		{
			name: "a gauge of the machine is shown, not judged", fig: Figure{Name: "put", Unit: "rows/s", Gauge: "the emulator alone"},
			base: []float64{1000, 1000}, head: []float64{500, 500}, wantUncheck: "the emulator alone",
		},
		{
			name: "one round is shown, not judged", fig: Figure{Name: "e2e", Unit: "s", Lower: true},
			base: []float64{10}, head: []float64{20}, wantUncheck: "one round has no spread to judge by",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := tt.fig.Row("base abc", tt.base, tt.head, 0.03)
			require.NoError(t, err)
			require.Equal(t, tt.wantFailure, r.Failure() != "", r.Failure())
			require.Equal(t, tt.wantNote, r.Note)
			require.Equal(t, tt.wantUncheck, r.Unchecked)
			require.Equal(t, Median(tt.head), r.Value)
			require.Equal(t, Median(tt.base), r.Baseline)
			require.Equal(t, tt.head, r.Rounds)
			require.Equal(t, tt.base, r.BaselineRounds)
		})
	}
}

func TestMedianAndSpread(t *testing.T) {
	tests := []struct {
		name         string
		xs           []float64
		median, span float64
	}{
		{name: "none", xs: nil},
		{name: "one", xs: []float64{5}, median: 5},
		{name: "two", xs: []float64{4, 6}, median: 5, span: 0.4},
		{name: "three, unsorted", xs: []float64{9, 1, 5}, median: 5, span: 1.6},
		{name: "four", xs: []float64{1, 4, 2, 3}, median: 2.5, span: 1.2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.InDelta(t, tt.median, Median(tt.xs), 1e-9)
			require.InDelta(t, tt.span, Spread(tt.xs), 1e-9)
		})
	}
}
