package jobstore

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobevent"
	"github.com/spoolhq/spool/platform/tablelayout"
)

// Get returns a job, or ErrNotFound. Its counters are the sum of the
// record's, every writer's counter item and the repair's correction, read
// in one strongly consistent Query, so a watcher never sees a counter go
// backwards but for a repair.
func (s *Store) Get(ctx context.Context, id string) (*spoolv1.Job, error) {
	p, err := s.readPartition(ctx, id)
	if err != nil {
		return nil, err
	}
	return p.job(), nil
}

// job is the job as the partition has it.
func (p *partition) job() *spoolv1.Job {
	j := p.rec.job()
	c := p.counts()
	j.Delivered, j.Failed, j.Retries, j.Unknown = c.Delivered, c.Failed, c.Retries, c.Unknown
	j.DuplicatesSuppressed, j.Dropped, j.DuplicateRows, j.DeadLettered = c.Suppressed, c.Dropped, c.Duplicates, c.DeadLettered
	j.UpdatedAt = ts(p.updatedAt)
	return j
}

func (s *Store) getRecord(ctx context.Context, id string) (*record, error) {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		Key:            tablelayout.Job(id).Item(),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, err)
	}
	if len(out.Item) == 0 {
		return nil, fmt.Errorf("get job %s: %w", id, ErrNotFound)
	}
	var r record
	if err := attributevalue.UnmarshalMap(out.Item, &r); err != nil {
		return nil, fmt.Errorf("unmarshal job %s: %w", id, err)
	}
	return &r, nil
}

// ExpireIfAbandoned ends j ABORTED when it is RECEIVING and its lease has
// expired: its stream broke and was not resumed in time. It returns the
// job after the change. A job that is not RECEIVING, or whose lease (as j
// has it) is still running, is returned unchanged without a read; a job
// whose stream renewed its lease meanwhile is returned as it now is.
// Dispatchers and the ingestor call it on the job they hold, so whoever
// notices first ends the job, exactly once.
func (s *Store) ExpireIfAbandoned(ctx context.Context, j *spoolv1.Job) (*spoolv1.Job, error) {
	now := s.now()
	if j.GetState() != spoolv1.JobState_JOB_STATE_RECEIVING || j.GetLeaseExpiresAt() == nil || j.GetLeaseExpiresAt().AsTime().After(now) {
		return j, nil
	}
	// The caller's copy may be stale; the reason needs the stored timeout.
	r, err := s.getRecord(ctx, j.GetJobId())
	if err != nil {
		return nil, fmt.Errorf("expire job %s: %w", j.GetJobId(), err)
	}
	if r.State != stateName(spoolv1.JobState_JOB_STATE_RECEIVING) || r.LeaseExpiresAt == 0 || r.LeaseExpiresAt > millis(now) {
		return r.job(), nil
	}
	reason := fmt.Sprintf("stream not resumed within %s", time.Duration(r.AbortAfterMS)*time.Millisecond)
	e := event(r.job(), jobevent.Aborted, 0, spoolv1.JobState_JOB_STATE_ABORTED, now)
	e.Reason = reason
	w, err := s.updateJob(ctx, j.GetJobId(), "expire job "+j.GetJobId(), jobUpdate{
		update: "SET #state = :aborted, list_state = :aborted, state_reason = :reason, updated_at = :now, completed_at = :now",
		// Conditional on the very lease that was seen: a renewal or a
		// takeover in between wins.
		cond: "#state = :receiving AND lease_expires_at = :lease",
		values: map[string]types.AttributeValue{
			":aborted":   str(stateName(spoolv1.JobState_JOB_STATE_ABORTED)),
			":receiving": str(stateName(spoolv1.JobState_JOB_STATE_RECEIVING)),
			":reason":    str(reason),
			":now":       num(millis(now)),
			":lease":     num(r.LeaseExpiresAt),
		},
		returnNew: true,
		event:     &e,
	})
	if err != nil {
		return nil, err
	}
	if !w.held {
		return s.Get(ctx, j.GetJobId())
	}
	return w.rec.job(), nil
}

// End moves a job that is not yet final to a final state other than
// COMPLETED (ABORTED, REJECTED, CANCELLED), with the reason. Ending it
// again with the same state and reason, as a retried request does, is not
// an error.
func (s *Store) End(ctx context.Context, id string, state spoolv1.JobState, reason string) (*spoolv1.Job, error) {
	values := map[string]types.AttributeValue{":sealed": str(stateName(spoolv1.JobState_JOB_STATE_SEALED))}
	return s.end(ctx, id, state, reason, "#state IN (:receiving, :sealed)", values)
}

// EndStream ends a RECEIVING job from its stream, like End, only while
// stream still owns it: a stream that lost its job to a resumed one must
// not end it.
func (s *Store) EndStream(ctx context.Context, id, stream string, state spoolv1.JobState, reason string) (*spoolv1.Job, error) {
	values := map[string]types.AttributeValue{}
	return s.end(ctx, id, state, reason, fence("#state = :receiving", values, stream), values)
}

// endEvents are the events of the final states End stores one for; a
// cancel is a person's own act, and tells nobody anything new.
var endEvents = map[spoolv1.JobState]jobevent.Kind{
	spoolv1.JobState_JOB_STATE_ABORTED:  jobevent.Aborted,
	spoolv1.JobState_JOB_STATE_REJECTED: jobevent.Rejected,
}

func (s *Store) end(ctx context.Context, id string, state spoolv1.JobState, reason, cond string, values map[string]types.AttributeValue) (*spoolv1.Job, error) {
	what := fmt.Sprintf("end job %s as %s", id, stateName(state))
	now := millis(s.now())
	values[":state"] = str(stateName(state))
	values[":reason"] = str(reason)
	values[":now"] = num(now)
	values[":receiving"] = str(stateName(spoolv1.JobState_JOB_STATE_RECEIVING))
	u := jobUpdate{
		update: "SET #state = :state, list_state = :state, state_reason = :reason, updated_at = :now, completed_at = :now",
		cond:   cond, values: values,
		// Written already, by this very write whose answer was lost?
		mine: func(r *record) bool {
			return r.State == stateName(state) && r.StateReason == reason && r.CompletedAt == now
		},
	}
	if kind, ok := endEvents[state]; ok && s.events {
		// The figures are the record's as it stands: an ended job's
		// counters no longer move but for rows in flight.
		p, err := s.readPartition(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		e := event(p.job(), kind, 0, state, time.UnixMilli(now))
		e.Reason = reason
		u.event = &e
	}
	w, err := s.updateJob(ctx, id, what, u)
	if err != nil {
		return nil, err
	}
	if !w.held {
		return nil, fmt.Errorf("%s: %w", what, ErrState)
	}
	return s.Get(ctx, id)
}

// Complete moves a SEALED job to COMPLETED, given confirmed, the settled
// rows its delivery ledger holds: the write is conditional on those
// covering the job's total, so no job completes on counters alone. It
// returns the job; completing a job that is COMPLETED already (by another
// writer, or by this write whose answer was lost) is not an error. It
// fails with ErrState when the job is not SEALED or confirmed falls short.
func (s *Store) Complete(ctx context.Context, id string, confirmed Settled) (*spoolv1.Job, error) {
	now := s.now()
	var e *jobevent.Event
	if s.events {
		// The event's figures: the record's, and the ledger's settled
		// counts the completion is decided on, over counters that may lag.
		p, err := s.readPartition(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("complete job %s: %w", id, err)
		}
		j := p.job()
		if j.GetState() == spoolv1.JobState_JOB_STATE_COMPLETED {
			return j, nil
		}
		ev := event(j, jobevent.Completed, 0, spoolv1.JobState_JOB_STATE_COMPLETED, now)
		ev.Counts.Delivered, ev.Counts.Failed, ev.Counts.Unknown = confirmed.Delivered, confirmed.Failed, confirmed.Unknown
		ev.Counts.Duplicates, ev.Counts.DeadLettered = confirmed.Duplicates, confirmed.DeadLettered
		e = &ev
	}
	w, err := s.updateJob(ctx, id, "complete job "+id, jobUpdate{
		update: "SET #state = :completed, list_state = :completed, completed_at = :now, updated_at = :now",
		cond:   "#state = :sealed AND #total <= :settled",
		names:  map[string]string{"#state": "state", "#total": "total"},
		values: map[string]types.AttributeValue{
			":completed": str(stateName(spoolv1.JobState_JOB_STATE_COMPLETED)),
			":sealed":    str(stateName(spoolv1.JobState_JOB_STATE_SEALED)),
			":settled":   num(confirmed.Sum()),
			":now":       num(millis(now)),
		},
		event: e,
	})
	if err != nil {
		return nil, err
	}
	if !w.held {
		j, gerr := s.Get(ctx, id)
		if gerr != nil {
			return nil, fmt.Errorf("complete job %s: %w", id, gerr)
		}
		if j.GetState() == spoolv1.JobState_JOB_STATE_COMPLETED {
			// Perhaps by this very write, whose answer was lost.
			s.eventStored(id, jobevent.ID(id, jobevent.Completed, 0))
			return j, nil
		}
		return j, fmt.Errorf("complete job %s, %s with %d of %d rows settled in the ledger: %w",
			id, stateName(j.GetState()), confirmed.Sum(), j.GetTotal(), ErrState)
	}
	return s.Get(ctx, id)
}
