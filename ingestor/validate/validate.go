// Package validate checks a CSV file exactly as the ingestor's StreamFile
// does, without publishing anything: the same reader (csvread: limits,
// hostile CSV) and the same admission rules (admit: header and profile,
// columns, rows), so it refuses a file with the error StreamFile would
// give. It is the one package of the ingestor other modules may import
// (internal packages cannot be), so that `spool validate` runs the
// ingestor's own code.
package validate

import (
	"errors"
	"io"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/ingestor/internal/admit"
	"github.com/spoolhq/spool/ingestor/internal/csvread"
	"github.com/spoolhq/spool/ingestor/internal/profile"
)

// Limits bound a file as on the ingestor; zero fields take its defaults.
type Limits = csvread.Limits

// ErrLimit and ErrInvalidInput classify a file that cannot be read to its
// end: a limit exceeded (the ingestor answers ResourceExhausted), or a
// header it cannot use (InvalidArgument).
var (
	ErrLimit        = csvread.ErrLimit
	ErrInvalidInput = csvread.ErrInvalidInput
)

// ProfileError lists what is wrong with a profile or with a header under
// it.
type ProfileError = profile.Error

// LoadProfiles reads a profile file as the ingestor's -profiles flag does.
func LoadProfiles(path string) ([]*spoolv1.Profile, error) {
	set, err := profile.Load(path)
	if err != nil {
		return nil, err
	}
	return set.List(), nil
}

// Options say how to read the file.
type Options struct {
	// Header is what `spool send` would send: columns when the file has no
	// header row, the delimiter, business-key and amount columns.
	Header *spoolv1.FileHeader
	// Profile checks the rows; nil checks the CSV alone.
	Profile *spoolv1.Profile
	Limits  Limits
	// MaxErrors caps the row errors kept; the count is never capped.
	MaxErrors int
}

// Report is the outcome of a file.
type Report struct {
	Columns  []string
	Rows     int64 // data rows read
	Rejected int64 // invalid rows
	Errors   []*spoolv1.RowError
	// Policy is the profile's; under REJECT_FILE one invalid row rejects
	// the file.
	Policy spoolv1.RowPolicy
}

// Accepted reports whether the ingestor would accept the file.
func (r *Report) Accepted() bool {
	return r.Rejected == 0 || r.Policy == spoolv1.RowPolicy_ROW_POLICY_SKIP_ROWS
}

// File reads the CSV file in in and checks every row with the ingestor's
// admission rules (package admit). The error is the one that would end the
// stream on the ingestor (a limit, a bad header or profile); an invalid row
// is not an error but part of the report.
func File(in io.Reader, o Options) (*Report, error) {
	p := o.Profile
	if p == nil {
		var err error
		if p, err = admit.Profile(o.Header, nil); err != nil {
			return nil, err
		}
	}
	f, err := admit.Header(o.Header, p)
	if err != nil {
		return nil, err
	}
	r, err := csvread.New(&readerSource{r: in, buf: make([]byte, 64<<10)}, f.Header(), csvread.Options{Limits: o.Limits})
	if err != nil {
		return nil, err
	}
	cols, err := r.Columns()
	if err != nil {
		return nil, err
	}
	rows, err := f.Columns(cols)
	if err != nil {
		return nil, err
	}
	rep := &Report{Columns: cols, Policy: rows.Policy()}
	for {
		row, err := r.Next()
		if errors.Is(err, io.EOF) {
			return rep, nil
		}
		if err != nil {
			return rep, err
		}
		rep.Rows++
		if bad := rows.Check(row); bad != nil {
			rep.Rejected++
			if len(rep.Errors) < o.MaxErrors {
				rep.Errors = append(rep.Errors, bad)
			}
		}
	}
}

// readerSource presents a reader as a stream of chunks.
type readerSource struct {
	r   io.Reader
	buf []byte
}

func (s *readerSource) Recv() (*spoolv1.StreamFileRequest, error) {
	n, err := s.r.Read(s.buf)
	if n > 0 {
		chunk := append([]byte(nil), s.buf[:n]...)
		return &spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Chunk{Chunk: chunk}}, nil
	}
	if err == nil {
		return &spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Chunk{}}, nil
	}
	return nil, err
}
