package csvread

import (
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// splitChunks cuts s into chunks of n bytes.
func splitChunks(s string, n int) []*spoolv1.StreamFileRequest {
	var out []*spoolv1.StreamFileRequest
	for len(s) > 0 {
		k := min(n, len(s))
		out = append(out, chunk(s[:k]))
		s = s[k:]
	}
	return out
}

func TestHashAndOffsetFollowRows(t *testing.T) {
	file := "\xEF\xBB\xBFid,note\n1,\"multi\nline\"\n2,b\r\n3,c"
	for _, size := range []int{1, 2, 5, 64} {
		h := sha256.New()
		r, err := New(&fakeSource{msgs: splitChunks(file, size)}, &spoolv1.FileHeader{}, Options{Hash: h})
		require.NoError(t, err)
		_, err = r.Columns()
		require.NoError(t, err)
		for {
			row, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			// After each row the digest covers exactly the file up to Offset.
			want := sha256.Sum256([]byte(file[:r.Offset()]))
			require.Equal(t, hex.EncodeToString(want[:]), hex.EncodeToString(h.Sum(nil)), "row %d, chunks of %d", row.Num, size)
		}
		want := sha256.Sum256([]byte(file))
		require.Equal(t, want[:], h.Sum(nil))
	}
}

func TestResumeChunksContinuesNumberingAndHash(t *testing.T) {
	file := "id,amount\n1,10\n2,20\n3,30\n"
	// Read the first two rows, then break.
	h := sha256.New()
	r, err := New(&fakeSource{msgs: splitChunks(file, 3)}, &spoolv1.FileHeader{}, Options{Hash: h})
	require.NoError(t, err)
	cols, err := r.Columns()
	require.NoError(t, err)
	for range 2 {
		_, err := r.Next()
		require.NoError(t, err)
	}
	offset := r.Offset()
	require.Equal(t, int64(len("id,amount\n1,10\n2,20\n")), offset)
	state, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	require.NoError(t, err)

	h2 := sha256.New()
	require.NoError(t, h2.(encoding.BinaryUnmarshaler).UnmarshalBinary(state))
	res := readFrom(t, file[offset:], Options{Hash: h2, Resume: &Resume{AfterRow: 2, Offset: offset, Columns: cols}})
	require.Equal(t, []string{"id", "amount"}, res.columns)
	require.Equal(t, map[int64][]string{3: {"3", "30"}}, res.rows)
	want := sha256.Sum256([]byte(file))
	require.Equal(t, want[:], h2.Sum(nil))
}

func TestResumeAtOffsetZeroChecksHeaderRow(t *testing.T) {
	res := readFrom(t, "id,amount\n1,10\n", Options{Resume: &Resume{Columns: []string{"id", "amount"}}})
	require.Equal(t, map[int64][]string{1: {"1", "10"}}, res.rows)

	r, err := New(&fakeSource{msgs: []*spoolv1.StreamFileRequest{chunk("id,other\n1,10\n")}}, &spoolv1.FileHeader{},
		Options{Resume: &Resume{Columns: []string{"id", "amount"}}})
	require.NoError(t, err)
	_, err = r.Columns()
	require.ErrorIs(t, err, ErrInvalidInput)
}

func TestResumeRowsUsesJobColumns(t *testing.T) {
	r, err := New(&fakeSource{msgs: []*spoolv1.StreamFileRequest{rows([]string{"5", "50"})}}, &spoolv1.FileHeader{},
		Options{Resume: &Resume{AfterRow: 4, Columns: []string{"id", "amount"}}})
	require.NoError(t, err)
	chunked, err := r.Chunked()
	require.NoError(t, err)
	require.False(t, chunked)
	cols, err := r.Columns()
	require.NoError(t, err)
	require.Equal(t, []string{"id", "amount"}, cols)
	row, err := r.Next()
	require.NoError(t, err)
	require.EqualValues(t, 5, row.Num)
}

type numbered struct {
	columns []string
	rows    map[int64][]string
}

// readFrom reads a chunk stream of data, keeping row numbers.
func readFrom(tb testing.TB, data string, o Options) numbered {
	tb.Helper()
	r, err := New(&fakeSource{msgs: splitChunks(data, 4)}, &spoolv1.FileHeader{}, o)
	require.NoError(tb, err)
	res := numbered{rows: map[int64][]string{}}
	res.columns, err = r.Columns()
	require.NoError(tb, err)
	for {
		row, err := r.Next()
		if errors.Is(err, io.EOF) {
			return res
		}
		require.NoError(tb, err)
		res.rows[row.Num] = append([]string(nil), row.Fields...)
	}
}
