package jobstore

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/tablelayout"
)

// Counts are deltas of a job's delivery counters. A row is settled once
// it is Delivered, Failed (refused for good), Unknown (held for
// reconciliation) or a Duplicate (its business key is another row's
// transaction); resolving an unknown row moves one count from Unknown to
// Delivered, so deltas may be negative. A row dead-lettered after its retry
// budget is settled too (DeadLettered) until it is redriven and settles
// otherwise. Suppressed counts messages, not rows: redeliveries of rows
// already settled.
type Counts struct {
	Delivered, Failed, Retries   int64
	Unknown, Suppressed, Dropped int64
	Duplicates, DeadLettered     int64
}

// Plus returns the sum of c and d, field by field.
func (c Counts) Plus(d Counts) Counts {
	return Counts{
		Delivered: c.Delivered + d.Delivered, Failed: c.Failed + d.Failed, Retries: c.Retries + d.Retries,
		Unknown: c.Unknown + d.Unknown, Suppressed: c.Suppressed + d.Suppressed, Dropped: c.Dropped + d.Dropped,
		Duplicates: c.Duplicates + d.Duplicates, DeadLettered: c.DeadLettered + d.DeadLettered,
	}
}

// IsZero reports whether there is nothing to add.
func (c Counts) IsZero() bool { return c == Counts{} }

// Add adds c to the job's counters atomically and returns the job after the
// change. The last writer to see every row settled completes the job.
func (s *Store) Add(ctx context.Context, id string, c Counts) (*spoolv1.Job, error) {
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:           aws.String(s.table),
		Key:                 tablelayout.Job(id).Item(),
		UpdateExpression:    aws.String("ADD delivered :d, failed :f, retries :r, #unknown :u, duplicates_suppressed :s, dropped :x, duplicate_rows :dup, dead_lettered :dl SET updated_at = :now"),
		ConditionExpression: aws.String("attribute_exists(pk)"),
		// UNKNOWN is a DynamoDB reserved word.
		ExpressionAttributeNames: map[string]string{"#unknown": "unknown"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":d":   num(c.Delivered),
			":f":   num(c.Failed),
			":r":   num(c.Retries),
			":u":   num(c.Unknown),
			":s":   num(c.Suppressed),
			":x":   num(c.Dropped),
			":dup": num(c.Duplicates),
			":dl":  num(c.DeadLettered),
			":now": num(millis(s.now())),
		},
		ReturnValues: types.ReturnValueAllNew,
	})
	if isConditionFailed(err) {
		return nil, fmt.Errorf("add counts to job %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("add counts to job %s: %w", id, err)
	}
	return s.completeIfSettled(ctx, out.Attributes)
}

// completeIfSettled completes a SEALED job whose rows are all settled.
// Updates of one item are serialised, so whichever of Seal and the last Add
// comes second sees the final figures; the condition makes completing
// idempotent when both do.
func (s *Store) completeIfSettled(ctx context.Context, item map[string]types.AttributeValue) (*spoolv1.Job, error) {
	j, err := unmarshalJob(item)
	if err != nil {
		return nil, err
	}
	if j.GetState() != spoolv1.JobState_JOB_STATE_SEALED || SettledOf(j).Sum() < j.GetTotal() {
		return j, nil
	}
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                aws.String(s.table),
		Key:                      tablelayout.Job(j.GetJobId()).Item(),
		UpdateExpression:         aws.String("SET #state = :completed, completed_at = :now, updated_at = :now"),
		ConditionExpression:      aws.String("#state = :sealed"),
		ExpressionAttributeNames: map[string]string{"#state": "state"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":completed": str(stateName(spoolv1.JobState_JOB_STATE_COMPLETED)),
			":sealed":    str(stateName(spoolv1.JobState_JOB_STATE_SEALED)),
			":now":       num(millis(s.now())),
		},
		ReturnValues: types.ReturnValueAllNew,
	})
	if isConditionFailed(err) {
		// Another writer completed it first.
		return s.Get(ctx, j.GetJobId())
	}
	if err != nil {
		return nil, fmt.Errorf("complete job %s: %w", j.GetJobId(), err)
	}
	return unmarshalJob(out.Attributes)
}
