package scenario

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// rowFile reads a CSV file a row at a time as the JSON body the baseline
// loops send: the header's columns with the row's values, plus the job and
// row fields each loop names its own way.
type rowFile struct {
	f      *os.File
	r      *csv.Reader
	header []string
	n      int
	last   []string // the last row's values
}

// openRowFile opens path and reads its header.
func openRowFile(path string) (*rowFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	r := csv.NewReader(f)
	header, err := r.Read()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read header: %w", err)
	}
	return &rowFile{f: f, r: r, header: header}, nil
}

// next reads the next row and returns its number (from 1) and body, with
// jobKey set to job and rowKey to the number. At the end of the file the
// error is io.EOF, unwrapped.
func (rf *rowFile) next(jobKey, job, rowKey string) (int, []byte, error) {
	rec, err := rf.r.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return rf.n, nil, err
		}
		return rf.n, nil, fmt.Errorf("read row %d: %w", rf.n+1, err)
	}
	rf.n++
	rf.last = rec
	body := map[string]any{jobKey: job, rowKey: rf.n}
	for i, h := range rf.header {
		body[h] = rec[i]
	}
	b, err := json.Marshal(body)
	if err != nil {
		return rf.n, nil, fmt.Errorf("encode row %d: %w", rf.n, err)
	}
	return rf.n, b, nil
}

// Close closes the file.
func (rf *rowFile) Close() error { return rf.f.Close() }
