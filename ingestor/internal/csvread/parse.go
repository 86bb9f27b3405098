package csvread

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// parser splits a byte stream into CSV records (RFC 4180) and enforces the
// field, record and column limits while it reads, so that no input, however
// hostile, makes it hold more than a record's limit in memory.
//
// It is written for this package rather than taken from encoding/csv for
// two reasons: encoding/csv buffers a record until it ends, so an
// unterminated quote could only be cut at the record limit, not the field
// limit; and its recovery from a malformed record is not specified, while
// here every outcome is decided and tested.
//
// Decided outcomes: a record ends at LF or CRLF outside quotes; a quoted
// field may hold delimiters, quotes doubled ("") and line breaks (a CRLF
// inside quotes becomes LF, as in encoding/csv); a quote inside an unquoted
// field, or text after a closing quote, makes the record malformed and the
// parser skips to the end of the line; a quote still open at the end of the
// input makes the last record malformed; a record whose fields are all
// empty (a blank line, or a line of delimiters that spreadsheets leave at
// the end of an export) is skipped and not numbered.
type parser struct {
	br     *bufio.Reader
	delim  byte
	offset int64 // bytes consumed from br: just after the last record read

	rec    []byte   // the current record's field contents, concatenated
	ends   []int    // end in rec of each field
	fields []string // reused between records
}

// recordLimits bound one record.
type recordLimits struct {
	field   int64
	record  int64
	columns int
}

// limitHit is a limit the current record exceeded; the caller adds the
// row and the column's name.
type limitHit struct {
	limit string
	value int64
	field int // 0-based index of the field, or -1 for the whole record
}

// malformed describes a record the parser could not split.
type malformed struct {
	field  int // 0-based index of the field where the problem is
	reason string
}

const (
	stFieldStart = iota
	stUnquoted
	stQuoted
	stQuoteSeen // a quote in a quoted field: its end, or the first of ""
	stQuoteCR   // a CR after a closing quote, which only LF may follow
	stSkip      // a malformed record: its line is skipped
)

// read returns the next non-empty record. fields are valid until the next
// call. A malformed record is returned with bad set and no fields. The
// error is io.EOF at the end of the input, a *limitHit, or the input's
// error.
func (p *parser) read(lim recordLimits) (fields []string, bad *malformed, err error) {
	for {
		fields, bad, err := p.readOne(lim)
		if err != nil || bad != nil {
			return nil, bad, err
		}
		if len(p.rec) > 0 {
			return fields, nil, nil
		}
		// Every field is empty: a blank line or a line of delimiters.
	}
}

func (p *parser) readOne(lim recordLimits) ([]string, *malformed, error) {
	p.rec, p.ends = p.rec[:0], p.ends[:0]
	start := p.offset
	state := stFieldStart
	var bad *malformed
	fieldStart := 0
	// endField closes the current field; false when that exceeds the
	// column limit.
	endField := func() bool {
		p.ends = append(p.ends, len(p.rec))
		fieldStart = len(p.rec)
		return len(p.ends) <= lim.columns
	}
	fieldHit := func() error {
		return &limitHit{limit: "max-field-bytes", value: lim.field, field: len(p.ends)}
	}
	columnsHit := &limitHit{limit: "max-columns", value: int64(lim.columns), field: -1}
	for {
		s, err := p.br.ReadSlice('\n')
		done := false
		for i := 0; i < len(s) && !done; {
			switch state {
			case stFieldStart:
				if s[i] == '"' {
					state = stQuoted
					i++
				} else {
					state = stUnquoted
				}
			case stUnquoted:
				j := i
				for j < len(s) && s[j] != p.delim && s[j] != '\n' && s[j] != '"' {
					j++
				}
				p.rec = append(p.rec, s[i:j]...)
				if int64(len(p.rec)-fieldStart) > lim.field {
					return nil, nil, fieldHit()
				}
				i = j
				if j == len(s) {
					break
				}
				switch s[j] {
				case p.delim:
					if !endField() {
						return nil, nil, columnsHit
					}
					state = stFieldStart
					i++
				case '\n':
					if n := len(p.rec); n > fieldStart && p.rec[n-1] == '\r' {
						p.rec = p.rec[:n-1]
					}
					if !endField() {
						return nil, nil, columnsHit
					}
					done = true
					i++
				default: // a quote
					bad = &malformed{field: len(p.ends), reason: "bare quote in an unquoted field (quote the whole field and double the quote)"}
					state = stSkip
				}
			case stQuoted:
				j := bytes.IndexByte(s[i:], '"')
				end := len(s)
				if j >= 0 {
					end = i + j
				}
				p.rec = append(p.rec, s[i:end]...)
				// A CRLF inside quotes is a line break of the value: LF.
				if n := len(p.rec); n-fieldStart >= 2 && p.rec[n-1] == '\n' && p.rec[n-2] == '\r' {
					p.rec[n-2] = '\n'
					p.rec = p.rec[:n-1]
				}
				if int64(len(p.rec)-fieldStart) > lim.field {
					return nil, nil, fieldHit()
				}
				i = end
				if j >= 0 {
					state = stQuoteSeen
					i++
				}
			case stQuoteSeen:
				switch s[i] {
				case '"':
					p.rec = append(p.rec, '"')
					if int64(len(p.rec)-fieldStart) > lim.field {
						return nil, nil, fieldHit()
					}
					state = stQuoted
					i++
				case p.delim:
					if !endField() {
						return nil, nil, columnsHit
					}
					state = stFieldStart
					i++
				case '\n':
					if !endField() {
						return nil, nil, columnsHit
					}
					done = true
					i++
				case '\r':
					state = stQuoteCR
					i++
				default:
					bad = &malformed{field: len(p.ends), reason: "text after the closing quote of a quoted field"}
					state = stSkip
				}
			case stQuoteCR:
				if s[i] != '\n' {
					bad = &malformed{field: len(p.ends), reason: "text after the closing quote of a quoted field"}
					state = stSkip
					break
				}
				if !endField() {
					return nil, nil, columnsHit
				}
				done = true
				i++
			case stSkip:
				// ReadSlice stops at a line feed, so it can only be last.
				if s[len(s)-1] == '\n' {
					done = true
				}
				i = len(s)
			}
		}
		p.offset += int64(len(s))
		if p.offset-start > lim.record {
			return nil, nil, &limitHit{limit: "max-record-bytes", value: lim.record, field: -1}
		}
		if done {
			return p.finish(bad)
		}
		switch {
		case err == nil || errors.Is(err, bufio.ErrBufferFull):
			continue
		case !errors.Is(err, io.EOF):
			return nil, nil, err
		}
		// The end of the input.
		switch {
		case p.offset == start:
			return nil, nil, io.EOF
		case state == stQuoted:
			bad = &malformed{field: len(p.ends), reason: "quoted field not closed before the end of the file"}
		case state == stUnquoted || state == stFieldStart:
			if n := len(p.rec); state == stUnquoted && n > fieldStart && p.rec[n-1] == '\r' {
				p.rec = p.rec[:n-1]
			}
			if !endField() {
				return nil, nil, columnsHit
			}
		case state == stQuoteSeen || state == stQuoteCR:
			if !endField() {
				return nil, nil, columnsHit
			}
		}
		return p.finish(bad)
	}
}

// finish turns the record's contents into fields, with one allocation.
func (p *parser) finish(bad *malformed) ([]string, *malformed, error) {
	if bad != nil {
		p.rec = p.rec[:0]
		return nil, bad, nil
	}
	all := string(p.rec)
	p.fields = p.fields[:0]
	prev := 0
	for _, end := range p.ends {
		p.fields = append(p.fields, all[prev:end])
		prev = end
	}
	return p.fields, nil, nil
}

func (h *limitHit) Error() string { return h.limit + " exceeded" }
