package ledger

import (
	"context"
	"slices"
	"sync"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// Memory is a Backend in memory, for tests. It keeps the same conditional
// semantics as DynamoDB: one writer of a version wins. A lost condition is a
// bare ErrConflict, as from an endpoint that does not return the item, so
// the ledger reads the record after it.
type Memory struct {
	mu      sync.Mutex
	records map[string]Record
}

// NewMemory returns an empty backend.
func NewMemory() *Memory { return &Memory{records: map[string]Record{}} }

// Get implements Backend.
func (m *Memory) Get(_ context.Context, key string) (Record, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.records[key]
	return clone(r), ok, nil
}

// Create implements Backend.
func (m *Memory) Create(_ context.Context, r Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.records[r.Key]; ok {
		return ErrConflict
	}
	m.records[r.Key] = clone(r)
	return nil
}

// Replace implements Backend.
func (m *Memory) Replace(_ context.Context, prev int64, next Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.records[next.Key]
	if !ok || cur.Version != prev {
		return ErrConflict
	}
	m.records[next.Key] = clone(next)
	return nil
}

// Marks implements Backend.
func (m *Memory) Marks(ctx context.Context, jobID string, fn func(Mark) error) error {
	return m.each(ctx, func(r Record) bool { return r.JobID == jobID }, func(r Record) error { return fn(markOf(r)) })
}

// ByJob implements Backend.
func (m *Memory) ByJob(ctx context.Context, jobID string, state spoolv1.TransactionState, fn func(Record) error) error {
	return m.each(ctx, func(r Record) bool { return r.JobID == jobID && r.State == state }, fn)
}

// each calls fn for a copy of every record keep keeps, rows ascending; fn
// runs without the lock, so it may call the backend.
func (m *Memory) each(ctx context.Context, keep func(Record) bool, fn func(Record) error) error {
	m.mu.Lock()
	var out []Record
	for _, r := range m.records {
		if keep(r) {
			out = append(out, clone(r))
		}
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Record) int { return int(a.Row - b.Row) })
	for _, r := range out {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// Find implements Backend.
func (m *Memory) Find(_ context.Context, jobID string, row int64) (Record, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.records {
		if r.JobID == jobID && r.Row == row {
			return clone(r), true, nil
		}
	}
	return Record{}, false, nil
}

func clone(r Record) Record {
	r.Envelope = slices.Clone(r.Envelope)
	return r
}
