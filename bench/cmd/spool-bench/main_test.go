package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/bench/internal/report"
)

// TestFinishFailsBelowAFloor: a ratio below its floor makes the run fail
// (make bench exits non-zero) after the table and its JSON are written; a
// row the emulators bound does not.
func TestFinishFailsBelowAFloor(t *testing.T) {
	start := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		rows    []report.Row
		wantErr string
	}{
		{
			name: "every floor kept",
			rows: []report.Row{{Name: "delivery", Value: 70, Baseline: 80, Min: 0.8}},
		},
		{
			name:    "a floor broken",
			rows:    []report.Row{{Name: "delivery", Value: 60, Baseline: 80, Min: 0.8}, {Name: "ingest", Value: 95, Baseline: 100, Min: 0.9}},
			wantErr: "1 ratios out of their bounds",
		},
		{
			name: "below the floor, but the emulators are the bound",
			rows: []report.Row{{Name: "delivery", Value: 60, Baseline: 80, Min: 0.8, Unchecked: "the ideal is above 80 % of the emulators' ceiling"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tab := &report.Table{Started: start, Finished: start.Add(time.Minute), Rows: tt.rows}
			var out bytes.Buffer
			err := finish(tab, dir, &out)
			if tt.wantErr == "" {
				require.NoError(t, err)
			} else {
				require.EqualError(t, err, tt.wantErr)
				require.Contains(t, out.String(), "FAIL delivery")
			}
			_, serr := os.Stat(filepath.Join(dir, "run-20261201T030000Z.json"))
			require.NoError(t, serr, "the figures are written whatever the verdict")
		})
	}
}
