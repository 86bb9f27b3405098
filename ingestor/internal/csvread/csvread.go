// Package csvread turns the messages of a StreamFile stream into numbered
// rows, whether the client sent rows already split (RowBatch) or the raw
// bytes of a CSV file (chunks).
//
// Reading is pull-based: the next message is received only when the caller
// asks for a row that is not yet available, so the gRPC stream is read
// exactly as fast as rows are consumed. That is what turns a slow queue into
// backpressure on the client instead of memory growth here.
package csvread

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// DefaultMaxRecordBytes caps one CSV record when Options leave it zero.
const DefaultMaxRecordBytes = 1 << 20

// bufferSize is the read buffer of the CSV parser: large enough that a
// typical record is found without growing a line buffer, small enough not to
// matter per stream.
const bufferSize = 64 << 10

var (
	// ErrInvalidInput marks a stream that breaks the StreamFile contract or
	// whose header is unusable. The caller maps it to InvalidArgument.
	ErrInvalidInput = errors.New("invalid input")
	// ErrLimit marks a stream that exceeded a configured limit. The caller
	// maps it to ResourceExhausted.
	ErrLimit = errors.New("limit exceeded")
)

// utf8BOM is the byte order mark some spreadsheet programs write first.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// Source is the part of the gRPC stream the reader consumes.
type Source interface {
	Recv() (*spoolv1.StreamFileRequest, error)
}

// Options tune the reader.
type Options struct {
	// MaxRecordBytes caps the bytes of one CSV record in chunk mode, so an
	// unterminated quote cannot make the parser buffer the whole file.
	// Zero means DefaultMaxRecordBytes.
	MaxRecordBytes int64
	// Resume, when set, reads a resumed stream of a job; see Resume.
	Resume *Resume
	// Hash, when set, receives the raw bytes of a chunk stream, exactly as
	// sent (a BOM included), in step with the rows: after each row its
	// state is that of the file up to Offset. A resumed stream passes the
	// digest restored from the job's checkpoint.
	Hash hash.Hash
}

// Resume says where a resumed stream starts and what the job already knows.
type Resume struct {
	// AfterRow is the number of the last row before the stream's data.
	AfterRow int64
	// Offset is the byte offset in the file where chunks start. At offset
	// zero the chunks start with the file's header row, if it has one, as
	// in a fresh stream.
	Offset int64
	// Columns are the job's columns. Rows and chunks past offset zero
	// carry no header row; a header row at offset zero must match them.
	Columns []string
}

// Row is one data row. Exactly one of Fields and Reject is set.
type Row struct {
	// Num is the 1-based number of the data row (the header excluded).
	Num int64
	// Fields are the values in column order. In chunk mode the slice is
	// reused by the next call to Next; the strings are not.
	Fields []string
	// Reject says why the row is invalid; the stream goes on.
	Reject *spoolv1.RowError
}

type mode int

const (
	modeUnknown mode = iota
	modeRows
	modeChunks
	modeEmpty
)

// Reader reads the rows that follow a FileHeader. It is not safe for
// concurrent use.
type Reader struct {
	src     Source
	header  *spoolv1.FileHeader
	delim   rune
	maxRec  int64
	mode    mode
	columns []string
	row     int64

	// Rows mode: the batch being consumed.
	pending []*spoolv1.Row

	// Chunk mode: the parser, the reader that caps record size, and the
	// bytes dropped before the parser saw them (a BOM).
	csv     *csv.Reader
	limit   *limitReader
	skipped int64

	resume *Resume
	base   int64 // file offset of the first byte of the stream
	tap    *hashTap
}

// New returns a reader of the messages that follow header on src. It fails
// with ErrInvalidInput when the header's own settings are unusable.
func New(src Source, header *spoolv1.FileHeader, o Options) (*Reader, error) {
	r := &Reader{src: src, header: header, delim: ',', maxRec: o.MaxRecordBytes, resume: o.Resume}
	if o.Hash != nil {
		r.tap = &hashTap{h: o.Hash}
	}
	if o.Resume != nil {
		r.row, r.base = o.Resume.AfterRow, o.Resume.Offset
		if r.tap != nil {
			r.tap.hashed = o.Resume.Offset
		}
	}
	if r.maxRec <= 0 {
		r.maxRec = DefaultMaxRecordBytes
	}
	if d := header.GetCsv().GetDelimiter(); d != "" {
		c, size := utf8.DecodeRuneInString(d)
		if size != len(d) || c == utf8.RuneError || c == '"' || c == '\r' || c == '\n' {
			return nil, fmt.Errorf("%w: delimiter %q must be a single character other than a quote or line break", ErrInvalidInput, d)
		}
		r.delim = c
	}
	if cols := header.GetColumns(); len(cols) > 0 {
		if err := checkHeader(cols); err != nil {
			return nil, err
		}
		r.columns = cols
	}
	return r, nil
}

// Columns returns the column names: the FileHeader's, or else the first
// record of the data, which is then not a data row.
func (r *Reader) Columns() ([]string, error) {
	if r.columns != nil {
		return r.columns, nil
	}
	if r.resume != nil {
		return r.resumeColumns()
	}
	if err := r.start(); err != nil {
		return nil, err
	}
	var cols []string
	switch r.mode {
	case modeEmpty:
		return nil, fmt.Errorf("%w: the file is empty and the header names no columns", ErrInvalidInput)
	case modeRows:
		first, err := r.nextRow()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: the file has no header row and the header names no columns", ErrInvalidInput)
		}
		if err != nil {
			return nil, err
		}
		cols = append([]string(nil), first.GetFields()...)
	case modeChunks:
		rec, err := r.csv.Read()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: the file has no header row and the header names no columns", ErrInvalidInput)
		}
		var perr *csv.ParseError
		if errors.As(err, &perr) {
			return nil, fmt.Errorf("%w: header row: %v", ErrInvalidInput, perr)
		}
		if err != nil {
			return nil, fmt.Errorf("read header row: %w", err)
		}
		r.limit.mark(r.skipped + r.csv.InputOffset())
		// The record is reused by the next Read; keep a copy.
		cols = append([]string(nil), rec...)
	}
	if len(cols) > 0 {
		cols[0] = strings.TrimPrefix(cols[0], string(utf8BOM))
	}
	if err := checkHeader(cols); err != nil {
		return nil, err
	}
	r.columns = cols
	return cols, nil
}

// resumeColumns returns the job's columns for a resumed stream, checking
// the header row when the chunks start at the top of the file.
func (r *Reader) resumeColumns() ([]string, error) {
	if err := r.start(); err != nil {
		return nil, err
	}
	want := r.resume.Columns
	if r.mode != modeChunks || r.base > 0 || len(r.header.GetColumns()) > 0 {
		r.columns = want
		return want, nil
	}
	r.resume = nil // read the header row as a fresh stream would
	cols, err := r.Columns()
	if err != nil {
		return nil, err
	}
	if !slices.Equal(cols, want) {
		return nil, fmt.Errorf("%w: the header row of the resumed stream differs from the job's columns", ErrInvalidInput)
	}
	return cols, nil
}

// Chunked reports whether the stream carries raw chunks, receiving its
// first data message when needed.
func (r *Reader) Chunked() (bool, error) {
	if err := r.start(); err != nil {
		return false, err
	}
	return r.mode == modeChunks, nil
}

// Offset is the file offset just after the last row returned (or the
// header row), in chunk mode; zero otherwise.
func (r *Reader) Offset() int64 {
	if r.csv == nil {
		return 0
	}
	return r.base + r.skipped + r.csv.InputOffset()
}

// checkHeader rejects a header without columns, or with a column whose name
// is empty or repeated, because fields are addressed by name downstream.
func checkHeader(cols []string) error {
	if len(cols) == 0 || (len(cols) == 1 && cols[0] == "") {
		return fmt.Errorf("%w: header has no columns", ErrInvalidInput)
	}
	seen := make(map[string]int, len(cols))
	for i, c := range cols {
		if c == "" {
			return fmt.Errorf("%w: header column %d has an empty name", ErrInvalidInput, i+1)
		}
		if !utf8.ValidString(c) {
			return fmt.Errorf("%w: header column %d is not valid UTF-8", ErrInvalidInput, i+1)
		}
		if j, dup := seen[c]; dup {
			return fmt.Errorf("%w: header column %q appears twice (columns %d and %d)", ErrInvalidInput, c, j+1, i+1)
		}
		seen[c] = i
	}
	return nil
}

// Next returns the next data row, or io.EOF after the last one. Any other
// error ends the stream; an invalid row does not (see Row.Reject). Columns
// must have succeeded first.
func (r *Reader) Next() (Row, error) {
	if r.columns == nil {
		return Row{}, errors.New("csvread: Next called before Columns")
	}
	if err := r.start(); err != nil {
		return Row{}, err
	}
	switch r.mode {
	case modeRows:
		return r.nextFromRows()
	case modeChunks:
		return r.nextFromChunks()
	default:
		return Row{}, io.EOF
	}
}

// start receives the first data message, which decides the stream's mode.
func (r *Reader) start() error {
	if r.mode != modeUnknown {
		return nil
	}
	msg, err := r.src.Recv()
	if errors.Is(err, io.EOF) {
		r.mode = modeEmpty
		return nil
	}
	if err != nil {
		return fmt.Errorf("receive first data message: %w", err)
	}
	switch m := msg.GetMsg().(type) {
	case *spoolv1.StreamFileRequest_Rows:
		r.mode = modeRows
		r.pending = m.Rows.GetRows()
	case *spoolv1.StreamFileRequest_Chunk:
		r.mode = modeChunks
		r.startChunks(m.Chunk)
	case *spoolv1.StreamFileRequest_Header:
		return errSecondHeader
	default:
		return errEmptyMessage
	}
	return nil
}

var (
	errSecondHeader = fmt.Errorf("%w: a second header arrived; the header must be the first message and only the first", ErrInvalidInput)
	errEmptyMessage = fmt.Errorf("%w: a message carries neither rows nor a chunk", ErrInvalidInput)
	errMixedModes   = fmt.Errorf("%w: rows and chunks are mixed in one stream; send one or the other", ErrInvalidInput)
)

// nextRow returns the next row of the current batch, receiving batches as
// needed.
func (r *Reader) nextRow() (*spoolv1.Row, error) {
	for len(r.pending) == 0 {
		msg, err := r.src.Recv()
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		if err != nil {
			return nil, fmt.Errorf("receive rows after row %d: %w", r.row, err)
		}
		switch m := msg.GetMsg().(type) {
		case *spoolv1.StreamFileRequest_Rows:
			r.pending = m.Rows.GetRows()
		case *spoolv1.StreamFileRequest_Chunk:
			return nil, errMixedModes
		case *spoolv1.StreamFileRequest_Header:
			return nil, errSecondHeader
		default:
			return nil, errEmptyMessage
		}
	}
	row := r.pending[0]
	// Drop the reference so the batch can be collected once consumed.
	r.pending[0] = nil
	r.pending = r.pending[1:]
	return row, nil
}

func (r *Reader) nextFromRows() (Row, error) {
	row, err := r.nextRow()
	if err != nil {
		return Row{}, err
	}
	r.row++
	return r.check(row.GetFields()), nil
}

// check turns fields into a row, or a rejected row when their count is
// wrong or a value is not UTF-8 (which the envelope cannot carry).
func (r *Reader) check(fields []string) Row {
	if len(fields) != len(r.columns) {
		return Row{Num: r.row, Reject: &spoolv1.RowError{
			Row:    r.row,
			Reason: fmt.Sprintf("expected %d fields, got %d", len(r.columns), len(fields)),
		}}
	}
	for i, f := range fields {
		if !utf8.ValidString(f) {
			return Row{Num: r.row, Reject: &spoolv1.RowError{
				Row: r.row, Column: r.columns[i], Reason: "value is not valid UTF-8",
			}}
		}
	}
	return Row{Num: r.row, Fields: fields}
}

// startChunks builds the parsing pipeline: stream messages → byte reader →
// record-size cap → buffered reader (BOM dropped) → CSV parser.
func (r *Reader) startChunks(first []byte) {
	var in io.Reader = &chunkReader{src: r.src, buf: first}
	if r.tap != nil {
		r.tap.r = in
		in = r.tap
	}
	r.limit = &limitReader{r: in, max: r.maxRec}
	br := bufio.NewReaderSize(r.limit, bufferSize)
	// The BOM may be split across chunks; Peek receives as many as needed.
	// Only a file's first bytes can be one.
	if r.base == 0 {
		if b, _ := br.Peek(len(utf8BOM)); bytes.Equal(b, utf8BOM) {
			_, _ = br.Discard(len(utf8BOM))
			r.skipped = int64(len(utf8BOM))
		}
	}
	r.csv = csv.NewReader(br)
	r.csv.Comma = r.delim
	r.csv.ReuseRecord = true
	// The field count is checked here, so that a wrong count is a row error
	// with both figures rather than a parse error.
	r.csv.FieldsPerRecord = -1
}

func (r *Reader) nextFromChunks() (Row, error) {
	rec, err := r.csv.Read()
	if errors.Is(err, io.EOF) {
		if r.tap != nil {
			r.tap.finish()
		}
		return Row{}, io.EOF
	}
	var perr *csv.ParseError
	if err != nil && !errors.As(err, &perr) {
		var lerr *recordLimitError
		if errors.As(err, &lerr) {
			return Row{}, fmt.Errorf("%w: record after data row %d exceeds max-record-bytes=%d (an unterminated quote?)", ErrLimit, r.row, lerr.max)
		}
		return Row{}, fmt.Errorf("read data row %d: %w", r.row+1, err)
	}
	r.row++
	r.limit.mark(r.skipped + r.csv.InputOffset())
	if r.tap != nil {
		r.tap.advance(r.Offset())
	}
	if perr != nil {
		// The parser resumes at the next line, so a malformed record costs
		// one row, not the file. The error names positions, never content.
		return Row{Num: r.row, Reject: &spoolv1.RowError{Row: r.row, Reason: perr.Error()}}, nil
	}
	return r.check(rec), nil
}

// chunkReader presents the chunks of a stream as one byte stream, receiving
// the next message only when the current chunk is used up.
type chunkReader struct {
	src Source
	buf []byte
	err error // sticky: once the stream ends or fails, it stays so
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for len(c.buf) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		msg, err := c.src.Recv()
		if err != nil {
			c.err = err
			continue
		}
		switch m := msg.GetMsg().(type) {
		case *spoolv1.StreamFileRequest_Chunk:
			c.buf = m.Chunk
		case *spoolv1.StreamFileRequest_Rows:
			c.err = errMixedModes
		case *spoolv1.StreamFileRequest_Header:
			c.err = errSecondHeader
		default:
			c.err = errEmptyMessage
		}
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

// recordLimitError is what limitReader returns once a record is too long.
type recordLimitError struct{ max int64 }

func (e *recordLimitError) Error() string {
	return fmt.Sprintf("record longer than %d bytes", e.max)
}

// limitReader hands the parser at most max bytes past the start of the
// current record (the parser's offset at the last record boundary). The
// parser buffers a record until it ends, so this caps its memory whatever
// the input.
type limitReader struct {
	r    io.Reader
	max  int64
	read int64 // bytes handed out so far
	base int64 // input offset of the current record's start
}

func (l *limitReader) mark(offset int64) { l.base = offset }

func (l *limitReader) Read(p []byte) (int, error) {
	room := l.base + l.max - l.read
	if room <= 0 {
		return 0, &recordLimitError{max: l.max}
	}
	if int64(len(p)) > room {
		p = p[:room]
	}
	n, err := l.r.Read(p)
	l.read += int64(n)
	return n, err
}

// hashTap hashes the raw bytes of a chunk stream in step with the parser.
// The parser reads ahead of the rows it returns, so the bytes it has read
// wait in pending until a row boundary passes them; the digest then
// covers the file exactly up to the last row, which is what a checkpoint
// needs. pending holds at most the parser's read-ahead plus one record.
type hashTap struct {
	r       io.Reader
	h       hash.Hash
	pending []byte
	start   int   // index in pending of the first byte not yet hashed
	hashed  int64 // file offset of pending[start]
}

func (t *hashTap) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		if t.start > 0 && t.start >= len(t.pending)/2 {
			t.pending = append(t.pending[:0], t.pending[t.start:]...)
			t.start = 0
		}
		t.pending = append(t.pending, p[:n]...)
	}
	return n, err
}

// advance hashes the bytes up to file offset off.
func (t *hashTap) advance(off int64) {
	n := int(off - t.hashed)
	if n <= 0 {
		return
	}
	n = min(n, len(t.pending)-t.start)
	t.h.Write(t.pending[t.start : t.start+n])
	t.start += n
	t.hashed += int64(n)
}

// finish hashes every byte read, at the end of the stream.
func (t *hashTap) finish() { t.advance(t.hashed + int64(len(t.pending)-t.start)) }
