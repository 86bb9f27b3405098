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
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// Source is the part of the gRPC stream the reader consumes.
type Source interface {
	Recv() (*spoolv1.StreamFileRequest, error)
}

// Options tune the reader.
type Options struct {
	// Limits bound fields, records, columns and rows.
	Limits Limits
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
	delim   byte
	lim     Limits
	mode    mode
	columns []string
	row     int64

	// Rows mode: the batch being consumed.
	pending []*spoolv1.Row

	// Chunk mode: the parser, and the bytes dropped before it saw them (a
	// BOM).
	parser  *parser
	skipped int64

	resume *Resume
	base   int64 // file offset of the first byte of the stream
	tap    *hashTap
}

// New returns a reader of the messages that follow header on src. It fails
// with ErrInvalidInput when the header's own settings are unusable.
func New(src Source, header *spoolv1.FileHeader, o Options) (*Reader, error) {
	r := &Reader{src: src, header: header, delim: ',', lim: o.Limits.WithDefaults(), resume: o.Resume}
	if o.Hash != nil {
		r.tap = &hashTap{h: o.Hash}
	}
	if o.Resume != nil {
		r.row, r.base = o.Resume.AfterRow, o.Resume.Offset
		if r.tap != nil {
			r.tap.hashed = o.Resume.Offset
		}
	}
	if d := header.GetCsv().GetDelimiter(); d != "" {
		// One ASCII byte: the parser splits on bytes, and every
		// delimiter in real use (comma, semicolon, tab, pipe) is one.
		if len(d) != 1 || d[0] >= utf8.RuneSelf || d[0] == '"' || d[0] == '\r' || d[0] == '\n' {
			return nil, fmt.Errorf("%w: delimiter %q must be one ASCII character other than a quote or line break", ErrInvalidInput, d)
		}
		r.delim = d[0]
	}
	if cols := header.GetColumns(); len(cols) > 0 {
		if err := r.checkHeader(cols); err != nil {
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
		if err := r.checkRowSize(cols, r.lim.MaxHeaderBytes, "max-header-bytes"); err != nil {
			return nil, err
		}
	case modeChunks:
		rec, bad, err := r.parser.read(recordLimits{field: r.lim.MaxHeaderBytes, record: r.lim.MaxHeaderBytes, columns: r.lim.MaxColumns})
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: the file has no header row and the header names no columns", ErrInvalidInput)
		}
		var hit *limitHit
		if errors.As(err, &hit) {
			// The header's field and record limit is the header's own.
			if hit.limit == "max-columns" {
				return nil, &LimitError{Limit: hit.limit, Value: hit.value}
			}
			return nil, &LimitError{Limit: "max-header-bytes", Value: r.lim.MaxHeaderBytes, Column: hit.field + 1}
		}
		if err != nil {
			return nil, fmt.Errorf("read header row: %w", err)
		}
		if bad != nil {
			return nil, fmt.Errorf("%w: header row, column %d: %s", ErrInvalidInput, bad.field+1, bad.reason)
		}
		// The record is reused by the next read; keep a copy.
		cols = append([]string(nil), rec...)
	}
	if len(cols) > 0 {
		cols[0] = strings.TrimPrefix(cols[0], string(utf8BOM))
	}
	if err := r.checkHeader(cols); err != nil {
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
	if r.parser == nil {
		return 0
	}
	return r.base + r.skipped + r.parser.offset
}

// checkHeader rejects a header without columns, or with a column whose name
// is empty, repeated or not text, because fields are addressed by name
// downstream and names travel in every SQS message.
func (r *Reader) checkHeader(cols []string) error {
	if len(cols) == 0 || (len(cols) == 1 && cols[0] == "") {
		return &HeaderError{Reason: "no columns"}
	}
	if len(cols) > r.lim.MaxColumns {
		return &LimitError{Limit: "max-columns", Value: int64(r.lim.MaxColumns)}
	}
	seen := make(map[string]int, len(cols))
	for i, c := range cols {
		if c == "" {
			return &HeaderError{Column: i + 1, Reason: "empty name"}
		}
		if reason := CheckText(c); reason != "" {
			return &HeaderError{Column: i + 1, Reason: reason}
		}
		if strings.ContainsAny(c, "\r\n") {
			// A file with CR-only line endings reads as one long header.
			return &HeaderError{Column: i + 1, Reason: "line break in a column name (CR-only line endings?)"}
		}
		if j, dup := seen[c]; dup {
			return &HeaderError{Column: i + 1, Reason: fmt.Sprintf("%q appears twice (columns %d and %d)", c, j+1, i+1)}
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

// count numbers the next row, within the row limit.
func (r *Reader) count() error {
	r.row++
	if r.row > r.lim.MaxRows {
		return &LimitError{Limit: "max-rows", Value: r.lim.MaxRows, Row: r.row}
	}
	return nil
}

// checkRowSize applies to a row sent already split the limits the parser
// applies to raw records.
func (r *Reader) checkRowSize(fields []string, maxBytes int64, limit string) error {
	row := r.row
	if r.columns == nil {
		row = 0
	}
	if len(fields) > r.lim.MaxColumns {
		return &LimitError{Limit: "max-columns", Value: int64(r.lim.MaxColumns), Row: row}
	}
	var total int64
	for i, f := range fields {
		if int64(len(f)) > r.lim.MaxFieldBytes {
			return &LimitError{Limit: "max-field-bytes", Value: r.lim.MaxFieldBytes, Row: row, Column: i + 1, Name: r.columnName(i)}
		}
		total += int64(len(f))
	}
	if total > maxBytes {
		return &LimitError{Limit: limit, Value: maxBytes, Row: row}
	}
	return nil
}

func (r *Reader) columnName(i int) string {
	if i >= 0 && i < len(r.columns) {
		return r.columns[i]
	}
	return ""
}

// check turns fields into a row, or a rejected row when their count is
// wrong or a value is not text SQS can carry.
func (r *Reader) check(fields []string) Row {
	if len(fields) != len(r.columns) {
		return Row{Num: r.row, Reject: &spoolv1.RowError{
			Row:    r.row,
			Reason: fmt.Sprintf("expected %d fields, got %d", len(r.columns), len(fields)),
		}}
	}
	for i, f := range fields {
		if reason := CheckText(f); reason != "" {
			return Row{Num: r.row, Reject: &spoolv1.RowError{
				Row: r.row, Column: r.columns[i], Reason: reason, Excerpt: Excerpt(f),
			}}
		}
	}
	return Row{Num: r.row, Fields: fields}
}
