package jobstore

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/condwrite"
	"github.com/spoolhq/spool/platform/jobevent"
	"github.com/spoolhq/spool/platform/tablelayout"
)

// Create writes a new job in state RECEIVING that no stream owns; see
// Start.
func (s *Store) Create(ctx context.Context, j *spoolv1.Job) (*spoolv1.Job, error) {
	return s.Start(ctx, j, "")
}

// Start writes a new job in state RECEIVING, owned by stream, with a lease
// of the store's abort timeout. It fails with ErrExists when the id is
// taken.
//
// When the job has a key, the key is claimed after the job item is
// written, with a conditional put, so that of two concurrent submissions
// of one key exactly one gets the key. The loser's fresh job item is
// deleted and Start fails with a *KeyTakenError naming the winner's job.
// A key whose job ended ABORTED, REJECTED or CANCELLED (or whose RECEIVING
// job's lease expired) is re-pointed to the new job, conditional on the old
// job id, so a file that failed can be submitted again under its key.
func (s *Store) Start(ctx context.Context, j *spoolv1.Job, stream string) (*spoolv1.Job, error) {
	now := s.now()
	r := record{
		PK: tablelayout.Job(j.GetJobId()).PK, SK: tablelayout.Job(j.GetJobId()).SK,
		JobID: j.GetJobId(), JobKey: j.GetJobKey(), FileName: j.GetFileName(), SubmittedBy: j.GetSubmittedBy(),
		State: stateName(spoolv1.JobState_JOB_STATE_RECEIVING), Columns: j.GetColumns(),
		CreatedAt: millis(now), UpdatedAt: millis(now),
		BusinessKeyColumns: j.GetBusinessKeyColumns(), AmountColumn: j.GetAmountColumn(),
		Control: toTotals(j.GetControl()), StreamID: stream,
		LeaseExpiresAt: millis(now.Add(s.abortAfter)), AbortAfterMS: s.abortAfter.Milliseconds(),
		Threshold: toThreshold(j.GetFailureThreshold()),
		ListState: stateName(spoolv1.JobState_JOB_STATE_RECEIVING), ListCreated: tablelayout.JobsIndexCreated(millis(now), j.GetJobId()),
		CanaryRows: j.GetCanary().GetRows(), CanaryContinue: j.GetCanary().GetContinueWhenClean(),
	}
	if d := j.GetDeliverAfter(); d != nil {
		r.DeliverAfter = millis(d.AsTime())
	}
	item, err := attributevalue.MarshalMap(r)
	if err != nil {
		return nil, fmt.Errorf("marshal job %s: %w", j.GetJobId(), err)
	}
	exists, err := condwrite.PutNew(ctx, s.db, s.table, item)
	if err != nil {
		return nil, fmt.Errorf("create job %s: %w", j.GetJobId(), err)
	}
	if exists {
		// The id is taken: by this very write, applied before its answer
		// was lost (the SDK retried it), or by another.
		cur, gerr := s.getRecord(ctx, j.GetJobId())
		if gerr != nil || cur.StreamID != stream || cur.CreatedAt != r.CreatedAt || cur.JobKey != r.JobKey {
			return nil, fmt.Errorf("create job %s: %w", j.GetJobId(), ErrExists)
		}
	}
	if key := j.GetJobKey(); key != "" {
		if err := s.claimKey(ctx, key, j.GetJobId()); err != nil {
			// A claim whose answer was lost may have been applied: a key
			// must never name a job that is gone.
			owner, kerr := s.keyJobID(ctx, key)
			if kerr == nil && owner == j.GetJobId() {
				return r.job(), nil
			}
			if kerr != nil && !errors.Is(kerr, ErrNotFound) {
				// Unknown: the job stays, and ends ABORTED when its lease
				// runs out, which frees the key.
				return nil, errors.Join(err, kerr)
			}
			// Nothing was published for the job yet, so it can go.
			if _, derr := s.db.DeleteItem(context.WithoutCancel(ctx), &dynamodb.DeleteItemInput{
				TableName: aws.String(s.table),
				Key:       tablelayout.Job(j.GetJobId()).Item(),
			}); derr != nil {
				return nil, errors.Join(err, fmt.Errorf("delete unclaimed job %s: %w", j.GetJobId(), derr))
			}
			return nil, err
		}
	}
	return r.job(), nil
}

// Takeover gives a RECEIVING job whose lease is still running to a new
// stream (a resumed one) with a fresh lease, and returns the job and its
// checkpoint. From then on the old stream's writes fail with ErrState. It
// fails with ErrState when the job is over or its lease expired.
func (s *Store) Takeover(ctx context.Context, id, stream string) (*spoolv1.Job, Checkpoint, error) {
	now := s.now()
	w, err := s.updateJob(ctx, id, "take over job "+id, jobUpdate{
		update: "SET stream_id = :stream, lease_expires_at = :lease, abort_after_ms = :after, updated_at = :now",
		cond:   "#state = :receiving AND (attribute_not_exists(lease_expires_at) OR lease_expires_at > :now)",
		values: map[string]types.AttributeValue{
			":stream":    str(stream),
			":lease":     num(millis(now.Add(s.abortAfter))),
			":after":     num(s.abortAfter.Milliseconds()),
			":now":       num(millis(now)),
			":receiving": str(stateName(spoolv1.JobState_JOB_STATE_RECEIVING)),
		},
		returnNew: true,
		// Taken over already by this very write, whose answer was lost?
		mine: func(r *record) bool {
			return r.State == stateName(spoolv1.JobState_JOB_STATE_RECEIVING) && r.StreamID == stream && r.UpdatedAt >= millis(now)
		},
	})
	if err != nil {
		return nil, Checkpoint{}, err
	}
	if !w.held {
		return nil, Checkpoint{}, fmt.Errorf("take over job %s: %w", id, ErrState)
	}
	return w.rec.job(), w.rec.checkpoint(), nil
}

// Ingest is what the ingestor knows about a job's stream.
type Ingest struct {
	Received, Published, Rejected int64
	// Stream is the id of the stream writing; it must still own the job.
	// Empty for a job created without one.
	Stream string
	// Checkpoint, when set, replaces the stored resume point.
	Checkpoint *Checkpoint
	// Actual are the totals the stream had; Seal compares them with the
	// declared ones.
	Actual *spoolv1.ControlTotals
	// CanaryPublished counts the published rows in the job's canary; Seal
	// stores it as the canary's size.
	CanaryPublished int64
}

// fence adds the condition that stream still owns the job.
func fence(cond string, values map[string]types.AttributeValue, stream string) string {
	if stream == "" {
		return cond + " AND attribute_not_exists(stream_id)"
	}
	values[":stream"] = str(stream)
	return cond + " AND stream_id = :stream"
}

// RecordIngest stores the ingest counters and the resume checkpoint of a
// job that is still RECEIVING, and renews the stream's lease. The ingestor
// calls it as publishing goes, so GetJob shows progress and a broken stream
// can be resumed. It fails with ErrState when the job is over or another
// stream took it over.
func (s *Store) RecordIngest(ctx context.Context, id string, in Ingest) error {
	now := s.now()
	set := []string{"rows_received = :rcv", "rows_published = :pub", "rows_rejected = :rej", "updated_at = :now",
		"lease_expires_at = :lease", "abort_after_ms = :after"}
	var remove []string
	values := map[string]types.AttributeValue{
		":rcv":       num(in.Received),
		":pub":       num(in.Published),
		":rej":       num(in.Rejected),
		":now":       num(millis(now)),
		":lease":     num(millis(now.Add(s.abortAfter))),
		":after":     num(s.abortAfter.Milliseconds()),
		":receiving": str(stateName(spoolv1.JobState_JOB_STATE_RECEIVING)),
	}
	if c := in.Checkpoint; c != nil {
		set = append(set, "resume_row = :rrow", "resume_offset = :roff", "resume_published = :rpub", "resume_rejected = :rrej",
			"resume_canary_published = :rcan")
		values[":rrow"], values[":roff"], values[":rcan"] = num(c.Row), num(c.Offset), num(c.CanaryPublished)
		values[":rpub"], values[":rrej"] = num(c.Published), num(c.Rejected)
		// Empty values are removed rather than stored, so the item looks
		// the same whatever the store's support for empty attributes.
		if len(c.HashState) > 0 {
			set = append(set, "resume_hash = :rhash")
			values[":rhash"] = &types.AttributeValueMemberB{Value: c.HashState}
		} else {
			remove = append(remove, "resume_hash")
		}
		if c.AmountSum != "" {
			set = append(set, "resume_amount_sum = :rsum")
			values[":rsum"] = str(c.AmountSum)
		} else {
			remove = append(remove, "resume_amount_sum")
		}
	}
	expr := "SET " + strings.Join(set, ", ")
	if len(remove) > 0 {
		expr += " REMOVE " + strings.Join(remove, ", ")
	}
	w, err := s.updateJob(ctx, id, "record ingest of job "+id, jobUpdate{
		update: expr, cond: fence("#state = :receiving", values, in.Stream), values: values,
		// Stored already by this very write, whose answer was lost, and
		// the job moved on since?
		mine: func(r *record) bool {
			return r.StreamID == in.Stream && r.RowsReceived == in.Received && r.RowsPublished == in.Published &&
				r.RowsRejected == in.Rejected && r.LeaseExpiresAt == millis(now.Add(s.abortAfter))
		},
	})
	if err != nil {
		return err
	}
	if !w.held {
		return fmt.Errorf("record ingest of job %s: %w", id, ErrState)
	}
	return nil
}

// Seal ends the stream of a RECEIVING job. When the actual totals match
// every control total the job declared, the job becomes SEALED: the whole
// stream was read and every row published, so the total is final, and when
// the job has no rows at all it is completed on the spot (dispatchers
// deliver nothing of a job before it is sealed, so no other job can have
// every row settled yet; they complete it). When a total does not match, the job ends REJECTED with a reason
// naming the total, declared and actual, and dispatchers deliver none of
// it; Seal returns that job without an error.
func (s *Store) Seal(ctx context.Context, id string, in Ingest) (*spoolv1.Job, error) {
	r, err := s.getRecord(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("seal job %s: %w", id, err)
	}
	if r.State != stateName(spoolv1.JobState_JOB_STATE_RECEIVING) || r.StreamID != in.Stream {
		if sealedBy(r, in) {
			return s.completeEmpty(ctx, r)
		}
		return nil, fmt.Errorf("seal job %s: %w", id, ErrState)
	}
	now := millis(s.now())
	values := map[string]types.AttributeValue{
		":rcv":       num(in.Received),
		":pub":       num(in.Published),
		":rej":       num(in.Rejected),
		":now":       num(now),
		":receiving": str(stateName(spoolv1.JobState_JOB_STATE_RECEIVING)),
	}
	set := "rows_received = :rcv, rows_published = :pub, rows_rejected = :rej, updated_at = :now"
	if a := toTotals(in.Actual); a != nil {
		av, err := attributevalue.Marshal(a)
		if err != nil {
			return nil, fmt.Errorf("marshal actual totals of job %s: %w", id, err)
		}
		values[":actual"] = av
		set += ", actual = :actual"
	}
	names := map[string]string{"#state": "state"}
	mismatch := CompareTotals(r.Control.proto(), in.Actual)
	if mismatch != "" {
		values[":rejected"] = str(stateName(spoolv1.JobState_JOB_STATE_REJECTED))
		values[":reason"] = str(mismatch)
		set += ", #state = :rejected, list_state = :rejected, state_reason = :reason, completed_at = :now"
	} else {
		values[":sealed"] = str(stateName(spoolv1.JobState_JOB_STATE_SEALED))
		names["#total"] = "total"
		set += ", #state = :sealed, list_state = :sealed, #total = :pub, sealed_at = :now"
		if r.CanaryRows > 0 {
			values[":canary"] = num(in.CanaryPublished)
			set += ", canary_size = :canary"
		}
	}
	seal := jobUpdate{
		update: "SET " + set, cond: fence("#state = :receiving", values, in.Stream),
		names: names, values: values, returnNew: true,
		// Sealed already by this very write, whose answer was lost?
		mine: func(cur *record) bool { return sealedBy(cur, in) },
	}
	if mismatch != "" {
		j := r.job()
		j.RowsReceived, j.RowsPublished, j.RowsRejected = in.Received, in.Published, in.Rejected
		e := event(j, jobevent.Rejected, 0, spoolv1.JobState_JOB_STATE_REJECTED, time.UnixMilli(now))
		e.Reason = mismatch
		seal.event = &e
	}
	w, err := s.updateJob(ctx, id, "seal job "+id, seal)
	if err != nil {
		return nil, err
	}
	if !w.held {
		return nil, fmt.Errorf("seal job %s: %w", id, ErrState)
	}
	return s.completeEmpty(ctx, w.rec)
}

// sealedBy reports whether r holds the seal of in's stream with in's
// figures: a seal that was applied, whether or not its answer arrived.
func sealedBy(r *record, in Ingest) bool {
	if r.StreamID != in.Stream || r.RowsReceived != in.Received || r.RowsPublished != in.Published || r.RowsRejected != in.Rejected {
		return false
	}
	switch r.State {
	case stateName(spoolv1.JobState_JOB_STATE_SEALED), stateName(spoolv1.JobState_JOB_STATE_COMPLETED):
		return r.SealedAt != 0 && r.Total == in.Published
	case stateName(spoolv1.JobState_JOB_STATE_REJECTED):
		mismatch := CompareTotals(r.Control.proto(), in.Actual)
		return mismatch != "" && r.StateReason == mismatch
	}
	return false
}

// completeEmpty completes a sealed job without rows, which has nothing to
// confirm in a ledger, and returns r's job otherwise.
func (s *Store) completeEmpty(ctx context.Context, r *record) (*spoolv1.Job, error) {
	if r.State != stateName(spoolv1.JobState_JOB_STATE_SEALED) || r.Total != 0 {
		return r.job(), nil
	}
	return s.Complete(ctx, r.JobID, Settled{})
}

// CompareTotals returns why actual does not match the declared control
// totals, naming each total that differs with both figures, or "" when
// every declared total matches. Amounts compare as exact decimals, so
// "10.50" matches "10.5".
func CompareTotals(declared, actual *spoolv1.ControlTotals) string {
	if declared == nil {
		return ""
	}
	if actual == nil {
		actual = &spoolv1.ControlTotals{}
	}
	var diffs []string
	if declared.RowCount != nil && (actual.RowCount == nil || declared.GetRowCount() != actual.GetRowCount()) {
		got := "not counted"
		if actual.RowCount != nil {
			got = fmt.Sprint(actual.GetRowCount())
		}
		diffs = append(diffs, fmt.Sprintf("row_count declared %d, actual %s", declared.GetRowCount(), got))
	}
	if d := declared.GetAmountSum(); d != "" {
		want, ok1 := new(big.Rat).SetString(d)
		got, ok2 := new(big.Rat).SetString(actual.GetAmountSum())
		if !ok1 || !ok2 || want.Cmp(got) != 0 {
			a := actual.GetAmountSum()
			if a == "" {
				a = "not summed"
			}
			diffs = append(diffs, fmt.Sprintf("amount_sum declared %s, actual %s", d, a))
		}
	}
	if d := declared.GetSha256(); d != "" && !strings.EqualFold(d, actual.GetSha256()) {
		a := actual.GetSha256()
		if a == "" {
			a = "not computed (rows were sent, not raw chunks)"
		}
		diffs = append(diffs, fmt.Sprintf("sha256 declared %s, actual %s", d, a))
	}
	if len(diffs) == 0 {
		return ""
	}
	return "control totals do not match: " + strings.Join(diffs, "; ")
}
