package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/bench/internal/compare"
	"github.com/spoolhq/spool/bench/internal/report"
)

// TestSideEnv: each side runs with its own go.work, binaries and
// emulators, whatever make exported for the head, and with the same
// e2e size and DynamoDB emulator as the other side.
func TestSideEnv(t *testing.T) {
	environ := []string{
		"PATH=/usr/bin", "HOME=/home/dev",
		"GOWORK=/repo/go.work", "MAKEFLAGS=BASE=abc", "MAKELEVEL=1", "MFLAGS=-s",
		"SPOOL_BIN_DIR=/repo/bin", "SPOOL_LOCAL_DIR=/repo/local", "SPOOL_DYNAMODB_EMULATOR=dynamodb-local",
		"SPOOL_E2E_ROWS=7", "SPOOL_E2E_LOG_DIR=/tmp/logs",
	}
	require.Equal(t, []string{
		"PATH=/usr/bin", "HOME=/home/dev", "SPOOL_E2E_LOG_DIR=/tmp/logs",
		"GOWORK=/tmp/base/go.work",
		"SPOOL_BIN_DIR=/tmp/base/bin",
		"SPOOL_DYNAMODB_EMULATOR=dynalite",
		"SPOOL_E2E_ROWS=2000",
		"SPOOL_LOCAL_DIR=/tmp/base/local",
	}, sideEnv(environ, "/tmp/base", 2000))
}

// TestFinish: the run fails when a figure is slower beyond noise, after
// the table and its JSON are written, and not when it is within noise or
// measured once.
func TestFinish(t *testing.T) {
	start := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	e2e := compare.Figure{Name: "e2e", Unit: "s", Lower: true}
	tests := []struct {
		name       string
		base, head []float64
		wantErr    string
		wantOut    string
	}{
		{name: "within noise", base: []float64{60, 62}, head: []float64{61, 63}, wantOut: "within noise (± 3.3 %)"},
		{name: "slower", base: []float64{60, 61}, head: []float64{70, 71}, wantErr: "1 figure(s) slower than the base beyond noise", wantOut: "FAIL e2e"},
		{name: "one round", base: []float64{60}, head: []float64{70}, wantOut: "not checked: one round has no spread to judge by"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			r, err := e2e.Row("base abc", tt.base, tt.head, 0.03)
			require.NoError(t, err)
			tab := &report.Table{Kind: "compare", Title: "head def against base abc", Started: start, Finished: start.Add(time.Minute), Rows: []report.Row{r}}
			var out bytes.Buffer
			err = finish(tab, config{rounds: len(tt.base), minNoise: 0.03, results: dir}, &out)
			if tt.wantErr == "" {
				require.NoError(t, err)
			} else {
				require.EqualError(t, err, tt.wantErr)
			}
			require.Contains(t, out.String(), tt.wantOut)
			require.Contains(t, out.String(), "head def against base abc")
			_, serr := os.Stat(filepath.Join(dir, "compare-20261201T030000Z.json"))
			require.NoError(t, serr, "the figures are written whatever the verdict")
		})
	}
}
