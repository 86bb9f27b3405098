package csvread

import (
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/hostile")

// outcome is what reading one file gave, as its golden file keeps it.
type outcome struct {
	Columns []string      `json:"columns,omitempty"`
	Rows    []goldenRow   `json:"rows,omitempty"`
	Rejects []goldenError `json:"rejects,omitempty"`
	// Error is the error that ended the stream, if any; Code is the class
	// the ingestor maps it to.
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"`
	// Offset is where the reader stood at the end: the byte after the
	// last row it returned.
	Offset int64 `json:"offset"`
}

type goldenRow struct {
	Row    int64    `json:"row"`
	Fields []string `json:"fields"`
}

type goldenError struct {
	Row     int64  `json:"row"`
	Column  string `json:"column,omitempty"`
	Reason  string `json:"reason"`
	Excerpt string `json:"excerpt,omitempty"`
}

// decodeFile reads data as one stream of chunks of the given size.
func decodeFile(data []byte, size int, lim Limits) outcome {
	var parts [][]byte
	for len(data) > 0 {
		n := min(size, len(data))
		parts = append(parts, data[:n])
		data = data[n:]
	}
	return decodeChunks(lim, parts...)
}

// decodeChunks reads the parts as the chunks of one stream.
func decodeChunks(lim Limits, parts ...[]byte) outcome {
	var msgs []*spoolv1.StreamFileRequest
	for _, p := range parts {
		msgs = append(msgs, chunk(string(p)))
	}
	var out outcome
	r, err := New(&fakeSource{msgs: msgs}, &spoolv1.FileHeader{}, Options{Limits: lim})
	if err == nil {
		out.Columns, err = r.Columns()
	}
	for err == nil {
		var row Row
		row, err = r.Next()
		switch {
		case err != nil:
		case row.Reject != nil:
			e := row.Reject
			out.Rejects = append(out.Rejects, goldenError{Row: e.GetRow(), Column: e.GetColumn(), Reason: e.GetReason(), Excerpt: e.GetExcerpt()})
		default:
			out.Rows = append(out.Rows, goldenRow{Row: row.Num, Fields: append([]string(nil), row.Fields...)})
		}
	}
	if r != nil {
		out.Offset = r.Offset()
	}
	if !errors.Is(err, io.EOF) {
		out.Error = err.Error()
		switch {
		case errors.Is(err, ErrLimit):
			out.Code = "ResourceExhausted"
		case errors.Is(err, ErrInvalidInput):
			out.Code = "InvalidArgument"
		default:
			out.Code = "Internal"
		}
	}
	return out
}

// TestHostileCorpus reads every file of testdata/hostile and compares the
// outcome with its golden file (regenerate with -update, then review the
// diff). Each file is read whole and in chunks of 1 and 7 bytes, which
// must give the same outcome.
func TestHostileCorpus(t *testing.T) {
	limits := map[string]Limits{}
	raw, err := os.ReadFile(filepath.Join("testdata", "hostile", "limits.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &limits))

	files, err := filepath.Glob(filepath.Join("testdata", "hostile", "*.csv"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, path := range files {
		name := filepath.Base(path)
		t.Run(strings.TrimSuffix(name, ".csv"), func(t *testing.T) {
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			got := decodeFile(data, 1<<20, limits[name])
			for _, size := range []int{1, 7} {
				require.Equal(t, got, decodeFile(data, size, limits[name]), "chunks of %d bytes", size)
			}
			gotJSON, err := json.MarshalIndent(got, "", "  ")
			require.NoError(t, err)
			gotJSON = append(gotJSON, '\n')
			golden := strings.TrimSuffix(path, ".csv") + ".golden.json"
			if *update {
				require.NoError(t, os.WriteFile(golden, gotJSON, 0o644))
				return
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "no golden file: run go test -run TestHostileCorpus -update")
			require.JSONEq(t, string(want), string(gotJSON))
		})
	}
}
