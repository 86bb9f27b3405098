package jobstore

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobevent"
	"github.com/spoolhq/spool/platform/threshold"
)

// Pausing is a flag on the record rather than a state, because a paused
// job is still in its lifecycle: it keeps receiving, or stays sealed with
// its total, and its counters still move as deliveries under way finish.
// The flag carries its cause, which says what may lift it:
//
//   - a person's pause (SetPaused) only a person's resume;
//   - a threshold's pause (Pause, decided by a dispatcher's gate) a
//     person's resume, which also removes the threshold (the person chose
//     to go on), or a raised threshold no longer crossed (UpdateThreshold);
//   - a canary's pause a person's resume, which releases the canary.
//
// Every automatic pause is one conditional write on "not paused" (and on
// the threshold version or the canary not yet released it was decided
// on), so of any number of dispatchers that see a job cross its threshold
// at once exactly one pauses it, and a job a person resumed is not paused
// again by the same decision.

const (
	causeOperator  = "OPERATOR"
	causeThreshold = "THRESHOLD"
	causeCanary    = "CANARY"
)

// SetPaused pauses (for a person) or resumes a RECEIVING or SEALED job and
// returns it. Resuming lifts a pause of any cause: a threshold's removes
// the threshold, and a canary is released. It fails with ErrNotFound, or
// ErrState when the job is over. Setting the flag it already has is not an
// error.
func (s *Store) SetPaused(ctx context.Context, id string, paused bool) (*spoolv1.Job, error) {
	verb := "resume"
	if paused {
		verb = "pause"
	}
	r, err := s.getRecord(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("%s job %s: %w", verb, id, err)
	}
	now := millis(s.now())
	values := map[string]types.AttributeValue{
		":paused":    &types.AttributeValueMemberBOOL{Value: paused},
		":now":       num(now),
		":receiving": str(stateName(spoolv1.JobState_JOB_STATE_RECEIVING)),
		":sealed":    str(stateName(spoolv1.JobState_JOB_STATE_SEALED)),
	}
	cond := "#state IN (:receiving, :sealed)"
	var update string
	if paused {
		values[":cause"] = str(causeOperator)
		values[":reason"] = str("paused by an operator")
		update = "SET paused = :paused, pause_cause = :cause, pause_reason = :reason, updated_at = :now"
	} else {
		update = "SET paused = :paused, updated_at = :now"
		if r.CanaryRows > 0 {
			values[":true"] = &types.AttributeValueMemberBOOL{Value: true}
			update += ", canary_released = :true"
		}
		update += " REMOVE pause_cause, pause_reason"
		if r.PauseCause == causeThreshold {
			// Only over the threshold pause that was read: a resume must
			// not remove a threshold a person set since.
			update += ", failure_threshold"
			values[":cause"] = str(causeThreshold)
			cond += " AND pause_cause = :cause"
		}
	}
	w, err := s.updateJob(ctx, id, verb+" job "+id, jobUpdate{
		update: update, cond: cond, values: values,
		// This very write, applied before its answer was lost and the job
		// ended or changed since?
		mine: func(r *record) bool { return r.Paused == paused && r.UpdatedAt == now },
	})
	if err != nil {
		return nil, err
	}
	if w.readErr != nil {
		return nil, w.readErr
	}
	if !w.held {
		// The job is over, or was paused meanwhile: tell which.
		r := w.rec
		if r.State == stateName(spoolv1.JobState_JOB_STATE_RECEIVING) || r.State == stateName(spoolv1.JobState_JOB_STATE_SEALED) {
			return r.job(), fmt.Errorf("%s job %s: paused by %s meanwhile, try again: %w", verb, id, strings.ToLower(r.PauseCause), ErrState)
		}
		return r.job(), fmt.Errorf("%s job %s, which is %s: %w", verb, id, r.State, ErrState)
	}
	return s.Get(ctx, id)
}

// PauseOnThreshold pauses a SEALED job that is not paused when its
// failure threshold is crossed, with the reason, deciding on a fresh read
// of the job (its record and summed counters) whatever the caller saw. The
// write is conditional on the threshold version read and on the job not
// being paused, so a decision made on a threshold a person has since
// changed does not land, and of dispatchers deciding at once one wins. It
// returns the job and whether this call paused it.
func (s *Store) PauseOnThreshold(ctx context.Context, id string) (*spoolv1.Job, bool, error) {
	p, err := s.readPartition(ctx, id)
	if err != nil {
		return nil, false, fmt.Errorf("pause job %s on its threshold: %w", id, err)
	}
	j := p.job()
	reason, crossed := threshold.Check(j.GetFailureThreshold(), threshold.Of(j))
	if !crossed || j.GetPaused() || j.GetState() != spoolv1.JobState_JOB_STATE_SEALED {
		return j, false, nil
	}
	values := map[string]types.AttributeValue{}
	return s.pause(ctx, p, spoolv1.PauseCause_PAUSE_CAUSE_THRESHOLD, reason, versionIs(values, p.rec.ThresholdVersion), values)
}

// PauseCanary pauses a SEALED job whose canary is over, unless the canary
// was released or the job paused meanwhile. It returns the job and whether
// this call paused it.
func (s *Store) PauseCanary(ctx context.Context, id, reason string) (*spoolv1.Job, bool, error) {
	p, err := s.readPartition(ctx, id)
	if err != nil {
		return nil, false, fmt.Errorf("pause job %s after its canary: %w", id, err)
	}
	values := map[string]types.AttributeValue{}
	return s.pause(ctx, p, spoolv1.PauseCause_PAUSE_CAUSE_CANARY, reason,
		"(attribute_not_exists(canary_released) OR canary_released = :false)", values)
}

// pause writes an automatic pause of the job p holds, with its event. The
// pause's sequence number (how many automatic pauses the job had) is in
// the condition, so the event's id, which carries it, names this pause
// and no other: a job a person resumed and that pauses again announces a
// new event.
func (s *Store) pause(ctx context.Context, p *partition, cause spoolv1.PauseCause, reason, cond string, values map[string]types.AttributeValue) (*spoolv1.Job, bool, error) {
	id := p.rec.JobID
	at := s.now()
	now := millis(at)
	seq := p.rec.PauseSeq + 1
	e := event(p.job(), jobevent.Paused, seq, spoolv1.JobState_JOB_STATE_SEALED, at)
	e.Cause, e.Reason = pauseCauseName(cause), reason
	// A write id tells this very write, whose answer was lost, from a
	// racing writer's pause with the same cause, reason and millisecond.
	token := rand.Text()
	values[":write"] = str(token)
	values[":seq"] = num(seq)
	if seq == 1 {
		cond += " AND attribute_not_exists(pause_seq)"
	} else {
		values[":prevseq"] = num(p.rec.PauseSeq)
		cond += " AND pause_seq = :prevseq"
	}
	values[":true"] = &types.AttributeValueMemberBOOL{Value: true}
	values[":false"] = &types.AttributeValueMemberBOOL{Value: false}
	values[":cause"] = str(pauseCauseName(cause))
	values[":reason"] = str(reason)
	values[":now"] = num(now)
	values[":sealed"] = str(stateName(spoolv1.JobState_JOB_STATE_SEALED))
	w, err := s.updateJob(ctx, id, "pause job "+id, jobUpdate{
		update: "SET paused = :true, pause_cause = :cause, pause_reason = :reason, updated_at = :now, pause_seq = :seq, pause_write = :write",
		cond:   "#state = :sealed AND (attribute_not_exists(paused) OR paused = :false) AND " + cond,
		values: values,
		event:  &e,
		// This very write, whose answer was lost?
		mine: func(r *record) bool { return r.Paused && r.PauseWrite == token },
	})
	if err != nil {
		return nil, false, err
	}
	if w.readErr != nil {
		return nil, false, w.readErr
	}
	j, err := s.Get(ctx, id)
	return j, w.held && err == nil, err
}

// ReleaseCanary lets every row of a SEALED job be delivered without a
// pause: its canary settled clean and was configured to go on by itself.
// Releasing a released canary changes nothing.
func (s *Store) ReleaseCanary(ctx context.Context, id string) (*spoolv1.Job, error) {
	// A failed condition is a canary released already, or a job that is
	// no longer SEALED: nothing to do either way.
	if _, err := s.updateJob(ctx, id, "release canary of job "+id, jobUpdate{
		update: "SET canary_released = :true, updated_at = :now",
		cond:   "#state = :sealed AND (attribute_not_exists(canary_released) OR canary_released = :false)",
		values: map[string]types.AttributeValue{
			":true":   &types.AttributeValueMemberBOOL{Value: true},
			":false":  &types.AttributeValueMemberBOOL{Value: false},
			":now":    num(millis(s.now())),
			":sealed": str(stateName(spoolv1.JobState_JOB_STATE_SEALED)),
		},
	}); err != nil {
		return nil, err
	}
	return s.Get(ctx, id)
}

// ThresholdChange is what UpdateThreshold changes; nil fields stay (see
// threshold.Update).
type ThresholdChange struct {
	MaxFailures    *int64
	MaxFailureRate *float64
	MinSettled     *int64
}

// UpdateThreshold changes a RECEIVING or SEALED job's failure threshold
// and returns the job. A job its threshold paused is resumed in the same
// write when the new threshold is not crossed by the job's figures as read
// (summed counters), and keeps its pause with the reason brought up to
// date when it is; a job paused by a person or a canary stays paused. The
// write is conditional on the threshold version and the pause cause read,
// and is tried again on a fresh read when another change came first.
func (s *Store) UpdateThreshold(ctx context.Context, id string, ch ThresholdChange) (*spoolv1.Job, error) {
	for try := 0; ; try++ {
		j, done, err := s.updateThreshold(ctx, id, ch)
		if done || err != nil || try == 4 {
			if err == nil && !done {
				err = fmt.Errorf("update threshold of job %s: changed by others five times in a row: %w", id, ErrState)
			}
			return j, err
		}
	}
}

func (s *Store) updateThreshold(ctx context.Context, id string, ch ThresholdChange) (*spoolv1.Job, bool, error) {
	p, err := s.readPartition(ctx, id)
	if err != nil {
		return nil, false, fmt.Errorf("update threshold of job %s: %w", id, err)
	}
	r, j := p.rec, p.job()
	if r.State != stateName(spoolv1.JobState_JOB_STATE_RECEIVING) && r.State != stateName(spoolv1.JobState_JOB_STATE_SEALED) {
		return j, false, fmt.Errorf("update threshold of job %s, which is %s: %w", id, r.State, ErrState)
	}
	t := threshold.Update(j.GetFailureThreshold(), ch.MaxFailures, ch.MaxFailureRate, ch.MinSettled)
	if err := threshold.Validate(t); err != nil {
		return j, false, fmt.Errorf("update threshold of job %s: %w", id, err)
	}
	now := millis(s.now())
	values := map[string]types.AttributeValue{
		":next":      num(r.ThresholdVersion + 1),
		":now":       num(now),
		":receiving": str(stateName(spoolv1.JobState_JOB_STATE_RECEIVING)),
		":sealed":    str(stateName(spoolv1.JobState_JOB_STATE_SEALED)),
	}
	set := []string{"threshold_version = :next", "updated_at = :now"}
	var remove []string
	if st := toThreshold(t); st != nil {
		av, err := attributevalue.Marshal(st)
		if err != nil {
			return nil, false, fmt.Errorf("marshal threshold of job %s: %w", id, err)
		}
		values[":t"] = av
		set = append(set, "failure_threshold = :t")
	} else {
		remove = append(remove, "failure_threshold")
	}
	cond := "#state IN (:receiving, :sealed) AND " + versionIs(values, r.ThresholdVersion)
	if r.Paused && r.PauseCause == causeThreshold {
		values[":cause"] = str(causeThreshold)
		cond += " AND pause_cause = :cause"
		if reason, crossed := threshold.Check(t, threshold.Of(j)); crossed {
			values[":reason"] = str(reason)
			set = append(set, "pause_reason = :reason")
		} else {
			values[":false"] = &types.AttributeValueMemberBOOL{Value: false}
			set = append(set, "paused = :false")
			remove = append(remove, "pause_cause", "pause_reason")
		}
	} else if c := r.PauseCause; c != "" {
		values[":cause"] = str(c)
		cond += " AND pause_cause = :cause"
	} else {
		cond += " AND attribute_not_exists(pause_cause)"
	}
	update := "SET " + strings.Join(set, ", ")
	if len(remove) > 0 {
		update += " REMOVE " + strings.Join(remove, ", ")
	}
	w, err := s.updateJob(ctx, id, "update threshold of job "+id, jobUpdate{
		update: update, cond: cond, values: values,
		// This very write, whose answer was lost?
		mine: func(cur *record) bool { return cur.ThresholdVersion == r.ThresholdVersion+1 && cur.UpdatedAt == now },
	})
	if err != nil {
		return nil, false, err
	}
	if !w.held {
		// Another change came first: read again and decide again.
		return nil, false, nil
	}
	j, err = s.Get(ctx, id)
	return j, err == nil, err
}

// versionIs is the condition that the stored threshold version is v.
func versionIs(values map[string]types.AttributeValue, v int64) string {
	values[":version"] = num(v)
	if v == 0 {
		return "(attribute_not_exists(threshold_version) OR threshold_version = :version)"
	}
	return "threshold_version = :version"
}
