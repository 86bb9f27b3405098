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
	"github.com/spoolhq/spool/platform/tablelayout"
)

// Get returns a job, or ErrNotFound. Reads are strongly consistent, so a
// watcher never sees a counter go backwards.
func (s *Store) Get(ctx context.Context, id string) (*spoolv1.Job, error) {
	r, err := s.getRecord(ctx, id)
	if err != nil {
		return nil, err
	}
	return r.job(), nil
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
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:        aws.String(s.table),
		Key:              tablelayout.Job(j.GetJobId()).Item(),
		UpdateExpression: aws.String("SET #state = :aborted, state_reason = :reason, updated_at = :now, completed_at = :now"),
		// Conditional on the very lease that was seen: a renewal or a
		// takeover in between wins.
		ConditionExpression:      aws.String("#state = :receiving AND lease_expires_at = :lease"),
		ExpressionAttributeNames: map[string]string{"#state": "state"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":aborted":   str(stateName(spoolv1.JobState_JOB_STATE_ABORTED)),
			":receiving": str(stateName(spoolv1.JobState_JOB_STATE_RECEIVING)),
			":reason":    str(reason),
			":now":       num(millis(now)),
			":lease":     num(r.LeaseExpiresAt),
		},
		ReturnValues: types.ReturnValueAllNew,
	})
	if isConditionFailed(err) {
		return s.Get(ctx, j.GetJobId())
	}
	if err != nil {
		return nil, fmt.Errorf("expire job %s: %w", j.GetJobId(), err)
	}
	return unmarshalJob(out.Attributes)
}

// End moves a job that is not yet final to a final state other than
// COMPLETED (ABORTED, REJECTED, CANCELLED), with the reason.
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

func (s *Store) end(ctx context.Context, id string, state spoolv1.JobState, reason, cond string, values map[string]types.AttributeValue) (*spoolv1.Job, error) {
	values[":state"] = str(stateName(state))
	values[":reason"] = str(reason)
	values[":now"] = num(millis(s.now()))
	values[":receiving"] = str(stateName(spoolv1.JobState_JOB_STATE_RECEIVING))
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.table),
		Key:                       tablelayout.Job(id).Item(),
		UpdateExpression:          aws.String("SET #state = :state, state_reason = :reason, updated_at = :now, completed_at = :now"),
		ConditionExpression:       aws.String(cond),
		ExpressionAttributeNames:  map[string]string{"#state": "state"},
		ExpressionAttributeValues: values,
		ReturnValues:              types.ReturnValueAllNew,
	})
	if isConditionFailed(err) {
		return nil, fmt.Errorf("end job %s as %s: %w", id, stateName(state), ErrState)
	}
	if err != nil {
		return nil, fmt.Errorf("end job %s as %s: %w", id, stateName(state), err)
	}
	return unmarshalJob(out.Attributes)
}

// SetPaused pauses or resumes a RECEIVING or SEALED job and returns it.
// Pausing is a flag on the record rather than a state, because a paused
// job is still in its lifecycle: it keeps receiving, or stays sealed with
// its total, and its counters still move as deliveries under way finish.
// It fails with ErrNotFound, or ErrState when the job is over. Setting
// the flag it already has is not an error.
func (s *Store) SetPaused(ctx context.Context, id string, paused bool) (*spoolv1.Job, error) {
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                aws.String(s.table),
		Key:                      tablelayout.Job(id).Item(),
		UpdateExpression:         aws.String("SET paused = :paused, updated_at = :now"),
		ConditionExpression:      aws.String("#state IN (:receiving, :sealed)"),
		ExpressionAttributeNames: map[string]string{"#state": "state"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":paused":    &types.AttributeValueMemberBOOL{Value: paused},
			":now":       num(millis(s.now())),
			":receiving": str(stateName(spoolv1.JobState_JOB_STATE_RECEIVING)),
			":sealed":    str(stateName(spoolv1.JobState_JOB_STATE_SEALED)),
		},
		ReturnValues: types.ReturnValueAllNew,
	})
	verb := "resume"
	if paused {
		verb = "pause"
	}
	if isConditionFailed(err) {
		// Either there is no such job, or it is over: tell which.
		j, gerr := s.Get(ctx, id)
		if gerr != nil {
			return nil, fmt.Errorf("%s job %s: %w", verb, id, gerr)
		}
		return j, fmt.Errorf("%s job %s, which is %s: %w", verb, id, stateName(j.GetState()), ErrState)
	}
	if err != nil {
		return nil, fmt.Errorf("%s job %s: %w", verb, id, err)
	}
	return unmarshalJob(out.Attributes)
}
