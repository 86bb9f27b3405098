package csvread

import (
	"errors"
	"fmt"
	"io"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
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
	if err := r.count(); err != nil {
		return Row{}, err
	}
	if err := r.checkRowSize(row.GetFields(), r.lim.MaxRecordBytes, "max-record-bytes"); err != nil {
		return Row{}, err
	}
	return r.check(row.GetFields()), nil
}
