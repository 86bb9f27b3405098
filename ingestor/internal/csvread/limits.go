package csvread

import (
	"errors"
	"fmt"

	"github.com/spoolhq/spool/platform/positive"
)

// Default limits, used where Limits leave a field zero. They are far above
// what a payroll row needs and far below what would strain the process.
const (
	DefaultMaxFieldBytes  = 64 << 10
	DefaultMaxRecordBytes = 1 << 20
	DefaultMaxHeaderBytes = 64 << 10
	DefaultMaxColumns     = 1024
	DefaultMaxRows        = 100_000_000
)

var (
	// ErrInvalidInput marks a stream that breaks the StreamFile contract or
	// whose header is unusable. The caller maps it to InvalidArgument.
	ErrInvalidInput = errors.New("invalid input")
	// ErrLimit marks a stream that exceeded a configured limit. The caller
	// maps it to ResourceExhausted; errors.As gives the *LimitError.
	ErrLimit = errors.New("limit exceeded")
)

// Limits bound what one stream may hold. Every one is checked while the
// data is read, before it is buffered, so no input can grow memory past
// them. Zero fields take the defaults.
type Limits struct {
	// MaxFieldBytes caps one field; an unterminated quote is cut off here.
	MaxFieldBytes int64
	// MaxRecordBytes caps one record as it is in the file (delimiters,
	// quotes and line break included), or the sum of a row's fields.
	MaxRecordBytes int64
	// MaxHeaderBytes caps the header row.
	MaxHeaderBytes int64
	// MaxColumns caps the fields of any record, the header included.
	MaxColumns int
	// MaxRows caps the data rows of a file.
	MaxRows int64
}

// WithDefaults returns l with every zero (or negative) field set to its
// default.
func (l Limits) WithDefaults() Limits {
	l.MaxFieldBytes = positive.Or(l.MaxFieldBytes, DefaultMaxFieldBytes)
	l.MaxRecordBytes = positive.Or(l.MaxRecordBytes, DefaultMaxRecordBytes)
	l.MaxHeaderBytes = positive.Or(l.MaxHeaderBytes, DefaultMaxHeaderBytes)
	l.MaxColumns = positive.Or(l.MaxColumns, DefaultMaxColumns)
	l.MaxRows = positive.Or(l.MaxRows, DefaultMaxRows)
	return l
}

// LimitError says which limit a stream exceeded, and where. It matches
// ErrLimit with errors.Is.
type LimitError struct {
	// Limit is the limit's name, as its flag is spelled: max-field-bytes.
	Limit string
	// Value is the limit's configured value.
	Value int64
	// Row is the 1-based data row, or 0 for the header row.
	Row int64
	// Column is the 1-based column, or 0 when the whole record is over;
	// Name is its name when the header gives one.
	Column int
	Name   string
}

func (e *LimitError) Error() string {
	where := fmt.Sprintf("row %d", e.Row)
	if e.Row == 0 {
		where = "header row"
	}
	if e.Column > 0 {
		where += fmt.Sprintf(", column %d", e.Column)
		if e.Name != "" {
			where += fmt.Sprintf(" (%s)", e.Name)
		}
	}
	hint := ""
	if e.Limit == "max-field-bytes" || e.Limit == "max-record-bytes" {
		hint = " (an unterminated quote?)"
	}
	return fmt.Sprintf("%s: %s=%d exceeded%s", where, e.Limit, e.Value, hint)
}

// Is makes errors.Is(err, ErrLimit) true.
func (e *LimitError) Is(target error) bool { return target == ErrLimit }

// HeaderError is a header that cannot be used: Column is its 1-based
// column, or 0 when the header as a whole is at fault. It matches
// ErrInvalidInput with errors.Is.
type HeaderError struct {
	Column int
	Reason string
}

func (e *HeaderError) Error() string {
	if e.Column == 0 {
		return fmt.Sprintf("%v: header: %s", ErrInvalidInput, e.Reason)
	}
	return fmt.Sprintf("%v: header column %d: %s", ErrInvalidInput, e.Column, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidInput) true.
func (e *HeaderError) Is(target error) bool { return target == ErrInvalidInput }
