package jobstore

import (
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// record is the item as stored. Times are Unix milliseconds.
type record struct {
	PK            string   `dynamodbav:"pk"`
	SK            string   `dynamodbav:"sk"`
	JobID         string   `dynamodbav:"job_id"`
	JobKey        string   `dynamodbav:"job_key,omitempty"`
	FileName      string   `dynamodbav:"file_name,omitempty"`
	SubmittedBy   string   `dynamodbav:"submitted_by,omitempty"`
	State         string   `dynamodbav:"state"`
	StateReason   string   `dynamodbav:"state_reason,omitempty"`
	Columns       []string `dynamodbav:"columns,omitempty"`
	RowsReceived  int64    `dynamodbav:"rows_received"`
	RowsPublished int64    `dynamodbav:"rows_published"`
	RowsRejected  int64    `dynamodbav:"rows_rejected"`
	Total         int64    `dynamodbav:"total"`
	// Counters on the record itself: dispatchers of earlier versions
	// added to them; they count, with the job's counter items, on read.
	storedCounts
	Paused      bool  `dynamodbav:"paused,omitempty"`
	CreatedAt   int64 `dynamodbav:"created_at"`
	UpdatedAt   int64 `dynamodbav:"updated_at"`
	SealedAt    int64 `dynamodbav:"sealed_at,omitempty"`
	CompletedAt int64 `dynamodbav:"completed_at,omitempty"`

	BusinessKeyColumns []string `dynamodbav:"business_key_columns,omitempty"`
	AmountColumn       string   `dynamodbav:"amount_column,omitempty"`
	Control            *totals  `dynamodbav:"control,omitempty"`
	Actual             *totals  `dynamodbav:"actual,omitempty"`

	// The stream that owns a RECEIVING job, and its lease. Every write of
	// the ingest side is conditional on the stream id, so a stream that
	// lost the job to a resumed one cannot change it any more.
	StreamID       string `dynamodbav:"stream_id,omitempty"`
	LeaseExpiresAt int64  `dynamodbav:"lease_expires_at,omitempty"`
	AbortAfterMS   int64  `dynamodbav:"abort_after_ms,omitempty"`

	// The resume checkpoint (see Checkpoint).
	ResumeRow       int64  `dynamodbav:"resume_row,omitempty"`
	ResumeOffset    int64  `dynamodbav:"resume_offset,omitempty"`
	ResumeHash      []byte `dynamodbav:"resume_hash,omitempty"`
	ResumePublished int64  `dynamodbav:"resume_published,omitempty"`
	ResumeRejected  int64  `dynamodbav:"resume_rejected,omitempty"`
	ResumeAmountSum string `dynamodbav:"resume_amount_sum,omitempty"`
	ResumeCanary    int64  `dynamodbav:"resume_canary_published,omitempty"`

	// How the job guards itself (see guard.go). The threshold's version
	// grows with each change, so a pause decided on an older threshold
	// does not land after a person changed it.
	Threshold        *storedThreshold `dynamodbav:"failure_threshold,omitempty"`
	ThresholdVersion int64            `dynamodbav:"threshold_version,omitempty"`
	CanaryRows       int64            `dynamodbav:"canary_rows,omitempty"`
	CanaryContinue   bool             `dynamodbav:"canary_continue,omitempty"`
	CanaryReleased   bool             `dynamodbav:"canary_released,omitempty"`
	CanarySize       int64            `dynamodbav:"canary_size,omitempty"`
	DeliverAfter     int64            `dynamodbav:"deliver_after,omitempty"`
	PauseReason      string           `dynamodbav:"pause_reason,omitempty"`
	PauseCause       string           `dynamodbav:"pause_cause,omitempty"`

	// The keys of the jobs-by-state index (tablelayout.JobsIndex): the
	// state, written with every change of state, and the creation time.
	ListState   string `dynamodbav:"list_state,omitempty"`
	ListCreated string `dynamodbav:"list_created,omitempty"`
	// PauseSeq counts the job's automatic pauses; a pause's event id
	// carries it.
	PauseSeq int64 `dynamodbav:"pause_seq,omitempty"`
	// PauseWrite is the write id of the last automatic pause.
	PauseWrite string `dynamodbav:"pause_write,omitempty"`
}

// storedThreshold is the stored form of spoolv1.FailureThreshold.
type storedThreshold struct {
	MaxFailures    *int64  `dynamodbav:"max_failures,omitempty"`
	MaxFailureRate float64 `dynamodbav:"max_failure_rate,omitempty"`
	MinSettled     int64   `dynamodbav:"min_settled,omitempty"`
}

func toThreshold(t *spoolv1.FailureThreshold) *storedThreshold {
	if t == nil || (t.MaxFailures == nil && t.GetMaxFailureRate() == 0 && t.GetMinSettled() == 0) {
		return nil
	}
	return &storedThreshold{MaxFailures: t.MaxFailures, MaxFailureRate: t.GetMaxFailureRate(), MinSettled: t.GetMinSettled()}
}

func (t *storedThreshold) proto() *spoolv1.FailureThreshold {
	if t == nil {
		return nil
	}
	return &spoolv1.FailureThreshold{MaxFailures: t.MaxFailures, MaxFailureRate: t.MaxFailureRate, MinSettled: t.MinSettled}
}

// pauseCauseName is the stored form of a pause cause, as stateName.
func pauseCauseName(c spoolv1.PauseCause) string {
	return strings.TrimPrefix(c.String(), "PAUSE_CAUSE_")
}

func parsePauseCause(s string) spoolv1.PauseCause {
	return spoolv1.PauseCause(spoolv1.PauseCause_value["PAUSE_CAUSE_"+s])
}

func (r *record) canary() *spoolv1.Canary {
	if r.CanaryRows <= 0 {
		return nil
	}
	return &spoolv1.Canary{Rows: r.CanaryRows, ContinueWhenClean: r.CanaryContinue, Released: r.CanaryReleased, Size: r.CanarySize}
}

// totals is the stored form of spoolv1.ControlTotals.
type totals struct {
	RowCount  *int64 `dynamodbav:"row_count,omitempty"`
	AmountSum string `dynamodbav:"amount_sum,omitempty"`
	SHA256    string `dynamodbav:"sha256,omitempty"`
}

func toTotals(c *spoolv1.ControlTotals) *totals {
	if c == nil || (c.RowCount == nil && c.GetAmountSum() == "" && c.GetSha256() == "") {
		return nil
	}
	return &totals{RowCount: c.RowCount, AmountSum: c.GetAmountSum(), SHA256: c.GetSha256()}
}

func (t *totals) proto() *spoolv1.ControlTotals {
	if t == nil {
		return nil
	}
	return &spoolv1.ControlTotals{RowCount: t.RowCount, AmountSum: t.AmountSum, Sha256: t.SHA256}
}

// Checkpoint is where a broken stream resumes: every data row up to Row
// was durably published or rejected, and the figures are those of rows 1 to
// Row. In chunk mode Offset is the byte offset just after row Row in the raw
// file, and HashState the marshalled SHA-256 digest of the bytes before it
// (crypto/sha256 digests implement encoding.BinaryMarshaler), so a resumed
// stream can finish the file's hash.
type Checkpoint struct {
	Row       int64
	Offset    int64
	HashState []byte
	Published int64
	Rejected  int64
	// AmountSum is the exact decimal sum of the amount column over the
	// published rows up to Row; empty when the job has no amount column.
	AmountSum string
	// CanaryPublished counts the published rows up to Row that are in
	// the job's canary (numbered up to its rows).
	CanaryPublished int64
}

// stateName is the stored form of a state: the enum name without prefix.
func stateName(s spoolv1.JobState) string {
	return strings.TrimPrefix(s.String(), "JOB_STATE_")
}

func parseState(s string) spoolv1.JobState {
	return spoolv1.JobState(spoolv1.JobState_value["JOB_STATE_"+s])
}

func millis(t time.Time) int64 { return t.UnixMilli() }

func ts(ms int64) *timestamppb.Timestamp {
	if ms == 0 {
		return nil
	}
	return timestamppb.New(time.UnixMilli(ms))
}

func (r *record) job() *spoolv1.Job {
	return &spoolv1.Job{
		JobId:                r.JobID,
		JobKey:               r.JobKey,
		FileName:             r.FileName,
		SubmittedBy:          r.SubmittedBy,
		State:                parseState(r.State),
		StateReason:          r.StateReason,
		Columns:              r.Columns,
		RowsReceived:         r.RowsReceived,
		RowsPublished:        r.RowsPublished,
		RowsRejected:         r.RowsRejected,
		Total:                r.Total,
		Delivered:            r.Delivered,
		Failed:               r.Failed,
		Retries:              r.Retries,
		Unknown:              r.Unknown,
		DuplicatesSuppressed: r.Suppressed,
		DuplicateRows:        r.Duplicates,
		DeadLettered:         r.DeadLettered,
		Paused:               r.Paused,
		Dropped:              r.Dropped,
		CreatedAt:            ts(r.CreatedAt),
		UpdatedAt:            ts(r.UpdatedAt),
		SealedAt:             ts(r.SealedAt),
		CompletedAt:          ts(r.CompletedAt),
		ResumeRow:            r.ResumeRow,
		ResumeOffset:         r.ResumeOffset,
		Control:              r.Control.proto(),
		Actual:               r.Actual.proto(),
		LeaseExpiresAt:       ts(r.LeaseExpiresAt),
		BusinessKeyColumns:   r.BusinessKeyColumns,
		AmountColumn:         r.AmountColumn,
		FailureThreshold:     r.Threshold.proto(),
		Canary:               r.canary(),
		DeliverAfter:         ts(r.DeliverAfter),
		PauseReason:          r.PauseReason,
		PauseCause:           r.pauseCause(),
	}
}

// pauseCause is the record's; a job paused before causes were recorded
// was paused by a person.
func (r *record) pauseCause() spoolv1.PauseCause {
	if !r.Paused {
		return spoolv1.PauseCause_PAUSE_CAUSE_UNSPECIFIED
	}
	if c := parsePauseCause(r.PauseCause); c != spoolv1.PauseCause_PAUSE_CAUSE_UNSPECIFIED {
		return c
	}
	return spoolv1.PauseCause_PAUSE_CAUSE_OPERATOR
}

func (r *record) checkpoint() Checkpoint {
	return Checkpoint{
		Row: r.ResumeRow, Offset: r.ResumeOffset, HashState: r.ResumeHash,
		Published: r.ResumePublished, Rejected: r.ResumeRejected, AmountSum: r.ResumeAmountSum,
		CanaryPublished: r.ResumeCanary,
	}
}
