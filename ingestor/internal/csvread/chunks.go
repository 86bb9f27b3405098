package csvread

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash"
	"io"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// bufferSize is the read buffer of the CSV parser: large enough that a
// typical record is found in one read, small enough not to matter per
// stream.
const bufferSize = 64 << 10

// utf8BOM is the byte order mark some spreadsheet programs write first.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// startChunks builds the parsing pipeline: stream messages → byte reader →
// buffered reader (BOM dropped) → parser, which enforces the limits.
func (r *Reader) startChunks(first []byte) {
	var in io.Reader = &chunkReader{src: r.src, buf: first}
	if r.tap != nil {
		r.tap.r = in
		in = r.tap
	}
	br := bufio.NewReaderSize(in, bufferSize)
	// The BOM may be split across chunks; Peek receives as many as needed.
	// Only a file's first bytes can be one.
	if r.base == 0 {
		if b, _ := br.Peek(len(utf8BOM)); bytes.Equal(b, utf8BOM) {
			_, _ = br.Discard(len(utf8BOM))
			r.skipped = int64(len(utf8BOM))
		}
	}
	r.parser = &parser{br: br, delim: r.delim}
}

func (r *Reader) nextFromChunks() (Row, error) {
	rec, bad, err := r.parser.read(recordLimits{field: r.lim.MaxFieldBytes, record: r.lim.MaxRecordBytes, columns: r.lim.MaxColumns})
	if errors.Is(err, io.EOF) {
		if r.tap != nil {
			r.tap.finish()
		}
		return Row{}, io.EOF
	}
	var hit *limitHit
	if errors.As(err, &hit) {
		e := &LimitError{Limit: hit.limit, Value: hit.value, Row: r.row + 1}
		if hit.field >= 0 {
			e.Column, e.Name = hit.field+1, r.columnName(hit.field)
		}
		return Row{}, e
	}
	if err != nil {
		return Row{}, fmt.Errorf("read data row %d: %w", r.row+1, err)
	}
	if err := r.count(); err != nil {
		return Row{}, err
	}
	if r.tap != nil {
		r.tap.advance(r.Offset())
	}
	if bad != nil {
		// The parser resumes at the next line, so a malformed record costs
		// one row, not the file.
		return Row{Num: r.row, Reject: &spoolv1.RowError{
			Row: r.row, Column: r.columnName(bad.field), Reason: bad.reason,
		}}, nil
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
