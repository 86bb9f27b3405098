package csvread

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzDecode feeds the row decoder arbitrary bytes, cut into two chunks at
// an arbitrary point, under small limits. It must never panic, must give
// the same outcome however the bytes are cut, must keep every field within
// the field limit, and must agree with encoding/csv on every input both
// accept. Seeds: testdata/hostile and testdata/fuzz/FuzzDecode. Run it
// with
//
//	go test -run '^$' -fuzz '^FuzzDecode$' -fuzztime 20s ./internal/csvread/
func FuzzDecode(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "hostile", "*.csv"))
	require.NoError(f, err)
	for _, path := range files {
		data, err := os.ReadFile(path)
		require.NoError(f, err)
		f.Add(data, uint16(len(data)/2))
	}
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		lim := Limits{MaxFieldBytes: 64, MaxRecordBytes: 256, MaxHeaderBytes: 128, MaxColumns: 16, MaxRows: 64}
		whole := decodeFile(data, len(data)+1, lim)
		split := int(cut) % (len(data) + 1)
		parts := decodeParts(data[:split], data[split:], lim)
		require.Equal(t, whole, parts, "cut at %d", split)
		require.LessOrEqual(t, whole.Offset, int64(len(data)))
		for _, row := range whole.Rows {
			for _, v := range row.Fields {
				require.LessOrEqual(t, len(v), 64)
				require.Empty(t, CheckText(v), "a returned value must be text SQS accepts")
			}
			require.Len(t, row.Fields, len(whole.Columns))
		}
		agreeWithEncodingCSV(t, data)
	})
}

// decodeParts is decodeFile over exactly two chunks.
func decodeParts(a, b []byte, lim Limits) outcome {
	// decodeFile cuts by size; emulate the two parts by decoding their
	// concatenation with a chunk size that puts the boundary at len(a)
	// when possible, and otherwise through the general path.
	if len(a) == 0 || len(b) == 0 {
		return decodeFile(append(append([]byte(nil), a...), b...), len(a)+len(b)+1, lim)
	}
	return decodeChunks(lim, a, b)
}

// agreeWithEncodingCSV parses data with the package's parser and with
// encoding/csv. Inputs with a CR or a BOM are left out (encoding/csv
// treats a lone CR and a BOM differently, by design here); records whose
// fields are all empty are dropped from encoding/csv's output, because the
// parser skips them.
func agreeWithEncodingCSV(t *testing.T, data []byte) {
	t.Helper()
	if bytes.IndexByte(data, '\r') >= 0 || bytes.HasPrefix(data, utf8BOM) {
		return
	}
	want, wantErr := csvRecords(data)
	p := &parser{br: bufio.NewReader(bytes.NewReader(data)), delim: ','}
	lim := recordLimits{field: 1 << 20, record: 1 << 20, columns: 1 << 20}
	var got [][]string
	malformed := false
	for {
		rec, bad, err := p.read(lim)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if bad != nil {
			malformed = true
			continue
		}
		got = append(got, append([]string(nil), rec...))
	}
	require.Equal(t, int64(len(data)), p.offset, "the parser consumed the whole input")
	if wantErr != nil {
		require.True(t, malformed, "encoding/csv refused the input (%v); the parser found nothing malformed", wantErr)
		return
	}
	require.False(t, malformed)
	require.Equal(t, want, got)
}

func csvRecords(data []byte) ([][]string, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	var out [][]string
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		empty := true
		for _, f := range rec {
			empty = empty && f == ""
		}
		if !empty {
			out = append(out, rec)
		}
	}
}
