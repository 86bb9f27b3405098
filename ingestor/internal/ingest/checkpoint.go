package ingest

import (
	"encoding"
	"encoding/hex"
	"math"
	"slices"

	"google.golang.org/protobuf/proto"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

// maybeCheckpoint records a candidate resume point after row every so
// often. Marshalling the hash state costs more than a row, so not every
// row is one; a resume republishes at most the rows since the last.
func (j *job) maybeCheckpoint(row, offset int64) {
	if row <= j.base.Row || row%j.every != 0 {
		return
	}
	cp := j.figures(row, offset)
	j.mu.Lock()
	j.checkpoints = append(j.checkpoints, cp)
	j.mu.Unlock()
}

// figures are the job's figures after row, as a checkpoint.
func (j *job) figures(row, offset int64) jobstore.Checkpoint {
	cp := jobstore.Checkpoint{
		Row:       row,
		Offset:    offset,
		Published: j.base.Published + j.handed.Load(),
		Rejected:  j.base.Rejected + j.rejected.Load(),
		// Every canary row is handed before any row after it, so this
		// count is final once Row passes the canary.
		CanaryPublished: j.base.CanaryPublished + j.canary.Load(),
	}
	if j.rows.HasAmount() {
		cp.AmountSum = j.sum.String()
	}
	if j.hash != nil {
		if m, ok := j.hash.(encoding.BinaryMarshaler); ok {
			cp.HashState, _ = m.MarshalBinary()
		}
	}
	return cp
}

// commit promotes the newest candidate whose rows are all acknowledged,
// and returns the job's checkpoint. Candidates are read before the
// publisher's figures, so every row a candidate counts was handed over
// before those figures were taken.
func (j *job) commit() jobstore.Checkpoint {
	j.mu.Lock()
	defer j.mu.Unlock()
	cands := j.checkpoints
	st := j.pub.Stats()
	limit := st.Watermark
	if st.Pending == 0 {
		limit = math.MaxInt64
	}
	n := 0
	for n < len(cands) && cands[n].Row <= limit {
		n++
	}
	if n > 0 {
		j.committed = cands[n-1]
		j.checkpoints = slices.Delete(cands, 0, n)
	}
	return j.committed
}

// ingest returns the figures as the job record keeps them. final is true
// once every row is acknowledged and the stream read to its end: then the
// counts are exact and the actual control totals are set.
func (j *job) ingest(final bool) jobstore.Ingest {
	cp := j.commit()
	handed := j.base.Published + j.handed.Load()
	// While rows are in flight, acknowledgements of republished rows are
	// not told apart from new ones; the figure is for progress only.
	published := min(handed, j.base.Published+max(0, j.pub.Stats().Published-j.republished.Load()))
	in := jobstore.Ingest{
		Received:   j.base.Row + j.received.Load(),
		Published:  published,
		Rejected:   j.base.Rejected + j.rejected.Load(),
		Stream:     j.stream,
		Checkpoint: &cp,
	}
	if final {
		in.Published = handed
		in.CanaryPublished = j.base.CanaryPublished + j.canary.Load()
		in.Checkpoint = nil
		in.Actual = &spoolv1.ControlTotals{RowCount: proto.Int64(in.Received)}
		if j.rows.HasAmount() {
			in.Actual.AmountSum = j.sum.String()
		}
		if j.hash != nil {
			in.Actual.Sha256 = hex.EncodeToString(j.hash.Sum(nil))
		}
	}
	return in
}
