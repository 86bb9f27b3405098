package csvread

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// fakeSource replays messages, then io.EOF (or err), and counts receives.
type fakeSource struct {
	msgs  []*spoolv1.StreamFileRequest
	err   error
	recvs int
}

func (f *fakeSource) Recv() (*spoolv1.StreamFileRequest, error) {
	f.recvs++
	if len(f.msgs) == 0 {
		if f.err != nil {
			return nil, f.err
		}
		return nil, io.EOF
	}
	m := f.msgs[0]
	f.msgs = f.msgs[1:]
	return m, nil
}

func chunk(s string) *spoolv1.StreamFileRequest {
	return &spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Chunk{Chunk: []byte(s)}}
}

func rows(rs ...[]string) *spoolv1.StreamFileRequest {
	b := &spoolv1.RowBatch{}
	for _, r := range rs {
		b.Rows = append(b.Rows, &spoolv1.Row{Fields: r})
	}
	return &spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Rows{Rows: b}}
}

func header(cols ...string) *spoolv1.StreamFileRequest {
	return &spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Header{Header: &spoolv1.FileHeader{Columns: cols}}}
}

// result is everything a reader produced, in a form easy to compare.
type result struct {
	columns []string
	rows    [][]string
	rejects []*spoolv1.RowError
}

// readAll reads a whole stream and fails the test on a stream error.
func readAll(tb testing.TB, h *spoolv1.FileHeader, o Options, msgs ...*spoolv1.StreamFileRequest) result {
	tb.Helper()
	res, err := tryReadAll(h, o, msgs...)
	require.NoError(tb, err)
	return res
}

func tryReadAll(h *spoolv1.FileHeader, o Options, msgs ...*spoolv1.StreamFileRequest) (result, error) {
	var res result
	r, err := New(&fakeSource{msgs: msgs}, h, o)
	if err != nil {
		return res, err
	}
	if res.columns, err = r.Columns(); err != nil {
		return res, err
	}
	for want := int64(1); ; want++ {
		row, err := r.Next()
		if errors.Is(err, io.EOF) {
			return res, nil
		}
		if err != nil {
			return res, err
		}
		if row.Num != want {
			return res, errors.New("row numbers are not consecutive")
		}
		if row.Reject != nil {
			res.rejects = append(res.rejects, row.Reject)
			continue
		}
		// Fields are reused in chunk mode: copy them.
		res.rows = append(res.rows, append([]string(nil), row.Fields...))
	}
}

func TestChunks(t *testing.T) {
	tests := []struct {
		name    string
		header  *spoolv1.FileHeader
		chunks  []string
		want    result
		rejects []int64
	}{
		{
			name:   "simple with trailing newline",
			chunks: []string{"a,b\n1,2\n3,4\n"},
			want:   result{columns: []string{"a", "b"}, rows: [][]string{{"1", "2"}, {"3", "4"}}},
		},
		{
			name:   "no trailing newline",
			chunks: []string{"a,b\n1,2"},
			want:   result{columns: []string{"a", "b"}, rows: [][]string{{"1", "2"}}},
		},
		{
			name:   "quoted newline",
			chunks: []string{"a,b\n\"line one\nline two\",2\n"},
			want:   result{columns: []string{"a", "b"}, rows: [][]string{{"line one\nline two", "2"}}},
		},
		{
			name:   "doubled quotes and quoted delimiter",
			chunks: []string{"a,b\n\"say \"\"hi\"\"\",\"x,y\"\n"},
			want:   result{columns: []string{"a", "b"}, rows: [][]string{{`say "hi"`, "x,y"}}},
		},
		{
			name:   "CRLF line endings",
			chunks: []string{"a,b\r\n1,2\r\n3,4\r\n"},
			want:   result{columns: []string{"a", "b"}, rows: [][]string{{"1", "2"}, {"3", "4"}}},
		},
		{
			name:   "BOM stripped",
			chunks: []string{"\xEF\xBB\xBFa,b\n1,2\n"},
			want:   result{columns: []string{"a", "b"}, rows: [][]string{{"1", "2"}}},
		},
		{
			name:   "BOM split across chunks",
			chunks: []string{"\xEF", "\xBB", "\xBFa,b\n1,2\n"},
			want:   result{columns: []string{"a", "b"}, rows: [][]string{{"1", "2"}}},
		},
		{
			name:   "header from FileHeader",
			header: &spoolv1.FileHeader{Columns: []string{"x", "y"}},
			chunks: []string{"1,2\n3,4\n"},
			want:   result{columns: []string{"x", "y"}, rows: [][]string{{"1", "2"}, {"3", "4"}}},
		},
		{
			name:   "semicolon delimiter",
			header: &spoolv1.FileHeader{Csv: &spoolv1.CsvOptions{Delimiter: ";"}},
			chunks: []string{"a;b\n1,5;2\n"},
			want:   result{columns: []string{"a", "b"}, rows: [][]string{{"1,5", "2"}}},
		},
		{
			name:   "tab delimiter",
			header: &spoolv1.FileHeader{Csv: &spoolv1.CsvOptions{Delimiter: "\t"}},
			chunks: []string{"a\tb\n1\t2\n"},
			want:   result{columns: []string{"a", "b"}, rows: [][]string{{"1", "2"}}},
		},
		{
			name:    "wrong field count is a row error",
			chunks:  []string{"a,b\n1,2\n1,2,3\n4\n5,6\n"},
			want:    result{columns: []string{"a", "b"}, rows: [][]string{{"1", "2"}, {"5", "6"}}},
			rejects: []int64{2, 3},
		},
		{
			name:    "bare quote is a row error",
			chunks:  []string{"a,b\n1,x\"y\n3,4\n"},
			want:    result{columns: []string{"a", "b"}, rows: [][]string{{"3", "4"}}},
			rejects: []int64{1},
		},
		{
			name:    "invalid UTF-8 is a row error naming the column",
			chunks:  []string{"a,b\n1,\xff\n"},
			want:    result{columns: []string{"a", "b"}},
			rejects: []int64{1},
		},
		{
			name:   "empty lines skipped",
			chunks: []string{"a,b\n\n1,2\n\n"},
			want:   result{columns: []string{"a", "b"}, rows: [][]string{{"1", "2"}}},
		},
		{
			name:   "header only",
			chunks: []string{"a,b\n"},
			want:   result{columns: []string{"a", "b"}},
		},
		{
			name:   "empty chunks are skipped",
			chunks: []string{"", "a,b\n", "", "1,2\n"},
			want:   result{columns: []string{"a", "b"}, rows: [][]string{{"1", "2"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var msgs []*spoolv1.StreamFileRequest
			for _, c := range tt.chunks {
				msgs = append(msgs, chunk(c))
			}
			got := readAll(t, tt.header, Options{}, msgs...)
			require.Equal(t, tt.want.columns, got.columns)
			require.Equal(t, tt.want.rows, got.rows)
			var rejected []int64
			for _, r := range got.rejects {
				rejected = append(rejected, r.GetRow())
				require.NotEmpty(t, r.GetReason())
			}
			require.Equal(t, tt.rejects, rejected)
		})
	}
}

func TestFieldCountErrorSaysExpectedAndGot(t *testing.T) {
	got := readAll(t, nil, Options{}, chunk("a,b\n1,2,3\n"))
	require.Len(t, got.rejects, 1)
	require.EqualValues(t, 1, got.rejects[0].GetRow())
	require.Equal(t, "expected 2 fields, got 3", got.rejects[0].GetReason())

	got = readAll(t, nil, Options{}, chunk("a,b\n1,\xff\n"))
	require.Equal(t, "b", got.rejects[0].GetColumn())
}

func TestRows(t *testing.T) {
	tests := []struct {
		name    string
		header  *spoolv1.FileHeader
		msgs    []*spoolv1.StreamFileRequest
		want    result
		rejects []int64
	}{
		{
			name: "header from first row",
			msgs: []*spoolv1.StreamFileRequest{rows([]string{"a", "b"}, []string{"1", "2"}), rows([]string{"3", "4"})},
			want: result{columns: []string{"a", "b"}, rows: [][]string{{"1", "2"}, {"3", "4"}}},
		},
		{
			name:   "header from FileHeader",
			header: &spoolv1.FileHeader{Columns: []string{"a", "b"}},
			msgs:   []*spoolv1.StreamFileRequest{rows([]string{"1", "2"}), rows(), rows([]string{"3", "4"})},
			want:   result{columns: []string{"a", "b"}, rows: [][]string{{"1", "2"}, {"3", "4"}}},
		},
		{
			name:    "wrong field count is a row error",
			header:  &spoolv1.FileHeader{Columns: []string{"a", "b"}},
			msgs:    []*spoolv1.StreamFileRequest{rows([]string{"1"}, []string{"1", "2"}, []string{"1", "2", "3"})},
			want:    result{columns: []string{"a", "b"}, rows: [][]string{{"1", "2"}}},
			rejects: []int64{1, 3},
		},
		{
			name:   "no data rows",
			header: &spoolv1.FileHeader{Columns: []string{"a"}},
			want:   result{columns: []string{"a"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := readAll(t, tt.header, Options{}, tt.msgs...)
			require.Equal(t, tt.want.columns, got.columns)
			require.Equal(t, tt.want.rows, got.rows)
			var rejected []int64
			for _, r := range got.rejects {
				rejected = append(rejected, r.GetRow())
			}
			require.Equal(t, tt.rejects, rejected)
		})
	}
}

func TestStreamErrors(t *testing.T) {
	withCols := &spoolv1.FileHeader{Columns: []string{"a"}}
	tests := []struct {
		name    string
		header  *spoolv1.FileHeader
		msgs    []*spoolv1.StreamFileRequest
		wantErr error
		msg     string
	}{
		{name: "duplicate column in FileHeader", header: &spoolv1.FileHeader{Columns: []string{"a", "b", "a"}}, wantErr: ErrInvalidInput, msg: `"a" appears twice`},
		{name: "empty column in FileHeader", header: &spoolv1.FileHeader{Columns: []string{"a", ""}}, wantErr: ErrInvalidInput, msg: "header column 2: empty name"},
		{name: "duplicate column in first row", msgs: []*spoolv1.StreamFileRequest{chunk("id,amount,amount\n")}, wantErr: ErrInvalidInput, msg: `"amount" appears twice`},
		{name: "duplicate column in first row of rows", msgs: []*spoolv1.StreamFileRequest{rows([]string{"id", "id"})}, wantErr: ErrInvalidInput, msg: `"id" appears twice`},
		{name: "empty column in first row", msgs: []*spoolv1.StreamFileRequest{chunk("id,,x\n")}, wantErr: ErrInvalidInput, msg: "header column 2: empty name"},
		{name: "empty header row", msgs: []*spoolv1.StreamFileRequest{rows([]string{})}, wantErr: ErrInvalidInput, msg: "no columns"},
		{name: "empty file", wantErr: ErrInvalidInput, msg: "empty"},
		{name: "chunks of nothing", msgs: []*spoolv1.StreamFileRequest{chunk(""), chunk("\n")}, wantErr: ErrInvalidInput, msg: "no header row"},
		{name: "rows then chunk", header: withCols, msgs: []*spoolv1.StreamFileRequest{rows([]string{"1"}), chunk("2\n")}, wantErr: ErrInvalidInput, msg: "mixed"},
		{name: "chunk then rows", header: withCols, msgs: []*spoolv1.StreamFileRequest{chunk("1\n"), rows([]string{"2"})}, wantErr: ErrInvalidInput, msg: "mixed"},
		{name: "second header before data", msgs: []*spoolv1.StreamFileRequest{header("a")}, wantErr: ErrInvalidInput, msg: "second header"},
		{name: "second header after rows", header: withCols, msgs: []*spoolv1.StreamFileRequest{rows([]string{"1"}), header("a")}, wantErr: ErrInvalidInput, msg: "second header"},
		{name: "second header after chunks", header: withCols, msgs: []*spoolv1.StreamFileRequest{chunk("1\n"), header("a")}, wantErr: ErrInvalidInput, msg: "second header"},
		{name: "empty message", header: withCols, msgs: []*spoolv1.StreamFileRequest{{}}, wantErr: ErrInvalidInput, msg: "neither rows nor a chunk"},
		{name: "two-character delimiter", header: &spoolv1.FileHeader{Csv: &spoolv1.CsvOptions{Delimiter: ";;"}}, wantErr: ErrInvalidInput, msg: "delimiter"},
		{name: "quote delimiter", header: &spoolv1.FileHeader{Csv: &spoolv1.CsvOptions{Delimiter: `"`}}, wantErr: ErrInvalidInput, msg: "delimiter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tryReadAll(tt.header, Options{}, tt.msgs...)
			require.ErrorIs(t, err, tt.wantErr)
			require.ErrorContains(t, err, tt.msg)
		})
	}
}

func TestReceiveErrorEndsStream(t *testing.T) {
	broken := errors.New("connection reset")
	for _, first := range []*spoolv1.StreamFileRequest{chunk("a\n1\n"), rows([]string{"a"}, []string{"1"})} {
		r, err := New(&fakeSource{msgs: []*spoolv1.StreamFileRequest{first}, err: broken}, nil, Options{})
		require.NoError(t, err)
		_, err = r.Columns()
		require.NoError(t, err)
		row, err := r.Next()
		require.NoError(t, err)
		require.Equal(t, []string{"1"}, row.Fields)
		_, err = r.Next()
		require.ErrorIs(t, err, broken)
	}
}

// endless is a source of an unterminated quoted field that goes on far
// past any sane limit: the worst case for a parser that buffers until the
// record is complete. It ends, so that a broken limit fails the test
// instead of hanging it.
type endless struct {
	chunk    []byte
	received int
}

func (e *endless) Recv() (*spoolv1.StreamFileRequest, error) {
	if e.received == 0 {
		e.received = 6
		return chunk("a,b\n\""), nil
	}
	if e.received > 64<<20 {
		return nil, io.EOF
	}
	e.received += len(e.chunk)
	return &spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Chunk{Chunk: e.chunk}}, nil
}

func TestUnterminatedQuoteIsCutAtFieldLimit(t *testing.T) {
	const limit = 256 << 10
	src := &endless{chunk: []byte(strings.Repeat("x", 1000) + "\n")}
	r, err := New(src, nil, Options{Limits: Limits{MaxFieldBytes: limit}})
	require.NoError(t, err)
	_, err = r.Columns()
	require.NoError(t, err)
	_, err = r.Next()
	require.ErrorIs(t, err, ErrLimit)
	var lerr *LimitError
	require.ErrorAs(t, err, &lerr)
	require.Equal(t, LimitError{Limit: "max-field-bytes", Value: limit, Row: 1, Column: 1, Name: "a"}, *lerr)
	require.EqualError(t, err, "row 1, column 1 (a): max-field-bytes=262144 exceeded (an unterminated quote?)")
	// Memory stayed bounded: the reader pulled at most one chunk beyond
	// the limit from a source that would never have ended.
	require.LessOrEqual(t, src.received, limit+len(src.chunk)+6)
}

func TestRecordJustUnderLimitPasses(t *testing.T) {
	const limit = 1024
	long := strings.Repeat("y", limit-10)
	got := readAll(t, nil, Options{Limits: Limits{MaxRecordBytes: limit}}, chunk("a,b\n"), chunk("1,\""+long+"\"\n2,3\n"))
	require.Equal(t, [][]string{{"1", long}, {"2", "3"}}, got.rows)

	_, err := tryReadAll(nil, Options{Limits: Limits{MaxRecordBytes: limit}}, chunk("a,b\n1,"+long+long+"\n"))
	require.ErrorIs(t, err, ErrLimit)
}

// TestEverySplitGivesSameRows cuts a file with quotes, CRLF, a quoted
// newline and a BOM into three chunks at every pair of positions.
func TestEverySplitGivesSameRows(t *testing.T) {
	file := "\xEF\xBB\xBFid,name,amount\r\n1,\"Doe, Jane\",10.50\r\n2,\"multi\r\nline \"\"quoted\"\"\",7\r\n3,é,0\r\n"
	want := result{
		columns: []string{"id", "name", "amount"},
		rows:    [][]string{{"1", "Doe, Jane", "10.50"}, {"2", "multi\nline \"quoted\"", "7"}, {"3", "é", "0"}},
	}
	for i := 0; i <= len(file); i++ {
		for j := i; j <= len(file); j++ {
			got := readAll(t, nil, Options{}, chunk(file[:i]), chunk(file[i:j]), chunk(file[j:]))
			require.Equal(t, want, got, "split at %d and %d", i, j)
		}
	}
}

// TestPullBased checks that a message is received only when a row needs it,
// which is what makes the gRPC stream feel the backpressure.
func TestPullBased(t *testing.T) {
	t.Run("chunks", func(t *testing.T) {
		src := &fakeSource{msgs: []*spoolv1.StreamFileRequest{chunk("a,b\n"), chunk("1,2\n"), chunk("3,4\n"), chunk("5,6\n")}}
		r, err := New(src, nil, Options{})
		require.NoError(t, err)
		_, err = r.Columns()
		require.NoError(t, err)
		require.Equal(t, 1, src.recvs)
		for n := 1; n <= 3; n++ {
			_, err := r.Next()
			require.NoError(t, err)
			require.Equal(t, n+1, src.recvs, "after row %d", n)
		}
	})
	t.Run("rows", func(t *testing.T) {
		src := &fakeSource{msgs: []*spoolv1.StreamFileRequest{rows([]string{"1"}, []string{"2"}), rows([]string{"3"})}}
		r, err := New(src, &spoolv1.FileHeader{Columns: []string{"a"}}, Options{})
		require.NoError(t, err)
		_, err = r.Columns()
		require.NoError(t, err)
		require.Equal(t, 0, src.recvs)
		for n, want := range []int{1, 1, 2} {
			_, err := r.Next()
			require.NoError(t, err)
			require.Equal(t, want, src.recvs, "after row %d", n+1)
		}
	})
}
