// Package ledger is the sink's memory of what it applied: one small entry
// per distinct transaction (job, row), with how many times it was applied
// and the idempotency key it first came with, plus per-job counters of
// accepted, failed, rejected, deduplicated, hung and reset requests. When
// the sink honours idempotency keys, the ledger also remembers every key it
// applied, so a key seen again is answered without applying it twice.
//
// Tests read the ledger to prove that every row arrived exactly once, so it
// must stay exact under concurrency and small enough for million-row jobs.
package ledger

import (
	"cmp"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"maps"
	"slices"
	"sync"
)

// Stats are the counters of the whole sink or of one job.
type Stats struct {
	// Requests counts accepted requests, duplicates included.
	Requests int64 `json:"requests"`
	// Distinct counts distinct transactions (job, row) accepted at least once.
	Distinct int64 `json:"distinct"`
	// Duplicates counts accepted requests for a transaction that had already
	// been accepted: Requests - Distinct.
	Duplicates int64 `json:"duplicates"`
	// Failed counts requests answered with an injected failure.
	Failed int64 `json:"failed"`
	// Rejected counts malformed requests (400).
	Rejected int64 `json:"rejected"`
	// Deduplicated counts requests whose idempotency key had already been
	// applied, answered without applying again (only when keys are
	// honoured; otherwise such a request is applied and is a duplicate).
	Deduplicated int64 `json:"deduplicated"`
	// Hung counts applied requests held past the client's timeout on
	// purpose.
	Hung int64 `json:"hung"`
	// Resets counts applied requests whose connection was reset on purpose
	// instead of answered.
	Resets int64 `json:"resets"`
	// Refused counts requests answered 422 for their row, and RefusedRows
	// the distinct rows refused: equal when no refused row was sent twice.
	Refused     int64 `json:"refused"`
	RefusedRows int64 `json:"refused_rows"`
	// Throttled counts requests answered 429 above the rate limit, and
	// Down those answered 503 while the sink played down.
	Throttled int64 `json:"throttled"`
	Down      int64 `json:"down"`
}

func (s *Stats) add(o Stats) {
	s.Requests += o.Requests
	s.Distinct += o.Distinct
	s.Duplicates += o.Duplicates
	s.Failed += o.Failed
	s.Rejected += o.Rejected
	s.Deduplicated += o.Deduplicated
	s.Hung += o.Hung
	s.Resets += o.Resets
	s.Refused += o.Refused
	s.RefusedRows += o.RefusedRows
	s.Throttled += o.Throttled
	s.Down += o.Down
}

// Transaction is what the ledger knows of one transaction.
type Transaction struct {
	Job string `json:"job"`
	Row int64  `json:"row"`
	// Applied is how many times the transaction was applied.
	Applied int64 `json:"applied"`
	// Key is the idempotency header of the first request that applied it.
	Key string `json:"key"`
	// Deduplicated is how many requests for it were answered without
	// applying, because their idempotency key had been applied already.
	Deduplicated int64 `json:"deduplicated,omitempty"`
	// Traceparent is the W3C traceparent header of the last request for it
	// that was applied or deduplicated, empty when it carried none: the
	// tests check by it that a row's request joins its caller's trace.
	Traceparent string `json:"traceparent,omitempty"`
	// Reference is the sink's own id for the transaction, as its answer
	// to the last request that applied it said (in the body's id and the
	// Location header); a deduplicated request is answered with the same.
	// Keyed by a secret of this sink process, so a test cannot guess it
	// from the row: a client must have read it from the answer.
	Reference string `json:"reference,omitempty"`
}

// entry is kept per distinct transaction, by value in the job's map; it is
// deliberately small (two counters and a string header) because a job can
// have millions of rows.
type entry struct {
	applied uint32
	dedup   uint32
	key     string
}

// job is the ledger of one job. Each job has its own lock so that jobs
// delivered side by side do not contend.
type job struct {
	mu    sync.Mutex
	stats Stats
	rows  map[int64]entry
	// refused counts the requests of each row answered 422; only refused
	// rows are in it, a small share of a job.
	refused map[int64]int64
	// traces holds the traceparent of each row whose requests carried
	// one, apart from rows, so that untraced rows cost nothing more.
	traces map[int64]string
	// failed counts the requests of each row answered with an injected
	// failure, which applied nothing: the row reached the destination all
	// the same, which is what a test of a sender's UNKNOWN rows asks.
	failed map[int64]int64
}

// Ledger records transactions. The zero value is not usable; call New.
type Ledger struct {
	mu   sync.RWMutex
	jobs map[string]*job
	// unattributed counts rejected requests that named no job.
	unattributed Stats

	// keys holds every idempotency key ApplyOnce applied. Keys are global,
	// not per job, as at a real destination: the same business key sent
	// in another file is the same transaction.
	keysMu sync.Mutex
	keys   map[string]struct{}

	// refKey keys the references the sink issues. A reference is derived
	// from the application it names rather than stored, so the entry of
	// a row stays as small as it was (a million-row job is the point).
	refKey [16]byte
}

// New returns an empty ledger.
func New() *Ledger {
	l := &Ledger{jobs: map[string]*job{}, keys: map[string]struct{}{}}
	_, _ = rand.Read(l.refKey[:]) // crypto/rand.Read never fails (Go 1.24+)
	return l
}

// reference is the sink's id for the nth application of (jobID, row):
// the same for that application whenever it is asked (a deduplicated
// request is answered with it), another for the next application, and
// not derivable without the process's key.
func (l *Ledger) reference(jobID string, row int64, n uint32) string {
	m := hmac.New(sha256.New, l.refKey[:])
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], uint64(row))
	binary.BigEndian.PutUint32(b[8:], n)
	m.Write([]byte(jobID))
	m.Write(b[:])
	return "pay_" + hex.EncodeToString(m.Sum(nil)[:10])
}

// job returns the ledger of id, creating it when create is set; nil when it
// does not exist and create is not set.
func (l *Ledger) job(id string, create bool) *job {
	l.mu.RLock()
	j := l.jobs[id]
	l.mu.RUnlock()
	if j != nil || !create {
		return j
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if j = l.jobs[id]; j == nil {
		j = &job{rows: map[int64]entry{}, refused: map[int64]int64{}, traces: map[int64]string{}, failed: map[int64]int64{}}
		l.jobs[id] = j
	}
	return j
}

// Apply records one accepted request for transaction (jobID, row) carrying
// the idempotency key, and returns how many times the transaction has now
// been applied and the reference issued for this application.
func (l *Ledger) Apply(jobID string, row int64, key string) (applied int64, ref string) {
	j := l.job(jobID, true)
	j.mu.Lock()
	defer j.mu.Unlock()
	j.stats.Requests++
	e, seen := j.rows[row]
	if seen {
		j.stats.Duplicates++
	} else {
		e.key = key
		j.stats.Distinct++
	}
	e.applied++
	j.rows[row] = e
	return int64(e.applied), l.reference(jobID, row, e.applied)
}

// ApplyOnce is Apply for a destination that honours idempotency keys: when
// key was applied before (by any job), it applies nothing, counts the
// request as deduplicated and returns false with the transaction's apply
// count and the reference issued before (empty when that was under another
// job). An empty key cannot be honoured, so it is applied like Apply does.
// Two concurrent requests with one key apply it once.
func (l *Ledger) ApplyOnce(jobID string, row int64, key string) (applied int64, ref string, ok bool) {
	if key == "" {
		applied, ref = l.Apply(jobID, row, key)
		return applied, ref, true
	}
	l.keysMu.Lock()
	_, seen := l.keys[key]
	if !seen {
		l.keys[key] = struct{}{}
	}
	l.keysMu.Unlock()
	if !seen {
		applied, ref = l.Apply(jobID, row, key)
		return applied, ref, true
	}
	j := l.job(jobID, true)
	j.mu.Lock()
	defer j.mu.Unlock()
	j.stats.Deduplicated++
	// The key may have been applied under another job (a business key
	// repeated across files); then this job has no entry for the row and
	// none is made, since nothing of it was applied.
	e, ok := j.rows[row]
	if !ok {
		return 0, "", false
	}
	e.dedup++
	j.rows[row] = e
	return int64(e.applied), l.reference(jobID, row, e.applied), false
}

// Hung records an applied request of jobID held past the client's timeout.
func (l *Ledger) Hung(jobID string) {
	l.count(jobID, func(s *Stats) { s.Hung++ })
}

// ConnReset records an applied request of jobID answered by resetting the
// connection.
func (l *Ledger) ConnReset(jobID string) {
	l.count(jobID, func(s *Stats) { s.Resets++ })
}

func (l *Ledger) count(jobID string, inc func(*Stats)) {
	j := l.job(jobID, true)
	j.mu.Lock()
	inc(&j.stats)
	j.mu.Unlock()
}

// Lookup returns what the ledger knows of (jobID, row), and false when the
// transaction was never applied.
func (l *Ledger) Lookup(jobID string, row int64) (Transaction, bool) {
	j := l.job(jobID, false)
	if j == nil {
		return Transaction{}, false
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	e, ok := j.rows[row]
	if !ok {
		return Transaction{}, false
	}
	return l.transaction(j, jobID, row, e), true
}

// transaction is what j knows of row, whose entry is e; j.mu is held.
func (l *Ledger) transaction(j *job, jobID string, row int64, e entry) Transaction {
	t := Transaction{Job: jobID, Row: row, Applied: int64(e.applied), Key: e.key, Deduplicated: int64(e.dedup), Traceparent: j.traces[row]}
	if e.applied > 0 {
		t.Reference = l.reference(jobID, row, e.applied)
	}
	return t
}

// Traced records the traceparent of a request for (jobID, row) that was
// applied or deduplicated. A row the ledger has no entry for (a key
// deduplicated under another job) is left alone.
func (l *Ledger) Traced(jobID string, row int64, traceparent string) {
	j := l.job(jobID, false)
	if j == nil {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, ok := j.rows[row]; ok {
		j.traces[row] = traceparent
	}
}

// Refused records a request of (jobID, row) answered 422, and returns how
// many requests of the row were refused so far.
func (l *Ledger) Refused(jobID string, row int64) int64 {
	j := l.job(jobID, true)
	j.mu.Lock()
	defer j.mu.Unlock()
	j.stats.Refused++
	if j.refused[row] == 0 {
		j.stats.RefusedRows++
	}
	j.refused[row]++
	return j.refused[row]
}

// RefusedRows returns the job's refused rows with their request counts.
func (l *Ledger) RefusedRows(jobID string) map[int64]int64 {
	return l.rowCounts(jobID, func(j *job) map[int64]int64 { return j.refused })
}

// FailedRows returns the job's rows answered with an injected failure,
// with their request counts.
func (l *Ledger) FailedRows(jobID string) map[int64]int64 {
	return l.rowCounts(jobID, func(j *job) map[int64]int64 { return j.failed })
}

// rowCounts copies one of the job's per-row counts under its lock.
func (l *Ledger) rowCounts(jobID string, of func(*job) map[int64]int64) map[int64]int64 {
	j := l.job(jobID, false)
	if j == nil {
		return map[int64]int64{}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return maps.Clone(of(j))
}

// Throttled records a request of jobID answered 429.
func (l *Ledger) Throttled(jobID string) {
	l.count(jobID, func(s *Stats) { s.Throttled++ })
}

// Down records a request of jobID answered 503 while the sink played down.
func (l *Ledger) Down(jobID string) {
	l.count(jobID, func(s *Stats) { s.Down++ })
}

// Failed records an injected failure of a request for (jobID, row).
func (l *Ledger) Failed(jobID string, row int64) {
	j := l.job(jobID, true)
	j.mu.Lock()
	defer j.mu.Unlock()
	j.stats.Failed++
	j.failed[row]++
}

// Rejected records a malformed request; jobID is empty when the request
// named no job.
func (l *Ledger) Rejected(jobID string) {
	if jobID == "" {
		l.mu.Lock()
		l.unattributed.Rejected++
		l.mu.Unlock()
		return
	}
	l.count(jobID, func(s *Stats) { s.Rejected++ })
}

// Stats returns the counters of the whole sink.
func (l *Ledger) Stats() Stats {
	l.mu.RLock()
	defer l.mu.RUnlock()
	total := l.unattributed
	for _, j := range l.jobs {
		j.mu.Lock()
		total.add(j.stats)
		j.mu.Unlock()
	}
	return total
}

// JobStats returns the counters of one job; zero when the sink never heard
// of it.
func (l *Ledger) JobStats(jobID string) Stats {
	j := l.job(jobID, false)
	if j == nil {
		return Stats{}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.stats
}

// Jobs returns the ids of every job the ledger knows, sorted.
func (l *Ledger) Jobs() []string {
	l.mu.RLock()
	defer l.mu.RUnlock()
	ids := make([]string, 0, len(l.jobs))
	for id := range l.jobs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// lookupBatch is how many transactions Each reads per lock acquisition, so
// a long listing never holds a job's lock for long.
const lookupBatch = 1024

// Each calls fn for every transaction of jobID in row order, until fn
// returns an error, which Each returns. It copies only the row numbers up
// front, so listing a big job costs 8 bytes per row, and requests applied
// meanwhile are not blocked for the whole listing.
func (l *Ledger) Each(jobID string, fn func(Transaction) error) error {
	j := l.job(jobID, false)
	if j == nil {
		return nil
	}
	j.mu.Lock()
	rows := make([]int64, 0, len(j.rows))
	for r := range j.rows {
		rows = append(rows, r)
	}
	j.mu.Unlock()
	slices.SortFunc(rows, cmp.Compare[int64])

	batch := make([]Transaction, 0, lookupBatch)
	for start := 0; start < len(rows); start += lookupBatch {
		batch = batch[:0]
		j.mu.Lock()
		for _, r := range rows[start:min(start+lookupBatch, len(rows))] {
			// A reset may have emptied the job since the rows were copied.
			if e, ok := j.rows[r]; ok {
				batch = append(batch, l.transaction(j, jobID, r, e))
			}
		}
		j.mu.Unlock()
		for _, t := range batch {
			if err := fn(t); err != nil {
				return err
			}
		}
	}
	return nil
}

// Reset forgets everything.
func (l *Ledger) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, j := range l.jobs {
		// Requests still holding a job keep writing to it, but it is no
		// longer reachable, so they vanish with it.
		j.mu.Lock()
		j.rows = map[int64]entry{}
		j.refused = map[int64]int64{}
		j.traces = map[int64]string{}
		j.failed = map[int64]int64{}
		j.stats = Stats{}
		j.mu.Unlock()
	}
	l.jobs = map[string]*job{}
	l.unattributed = Stats{}
	l.keysMu.Lock()
	l.keys = map[string]struct{}{}
	l.keysMu.Unlock()
}
