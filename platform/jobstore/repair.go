package jobstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/tablelayout"
)

// ErrChanged means the job record changed since the caller read it (a
// counter write landed, or the job left SEALED), so figures computed from
// that read may be stale. Read the job again and retry later.
var ErrChanged = errors.New("job changed since it was read")

// Settled are the absolute figures of a job's settled rows, as counted in
// the delivery ledger.
type Settled struct {
	Delivered, Failed, Unknown, Duplicates, DeadLettered int64
}

// Sum is the number of settled rows.
func (c Settled) Sum() int64 {
	return c.Delivered + c.Failed + c.Unknown + c.Duplicates + c.DeadLettered
}

// SettledOf returns the settled figures a job record holds.
func SettledOf(j *spoolv1.Job) Settled {
	return Settled{
		Delivered: j.GetDelivered(), Failed: j.GetFailed(), Unknown: j.GetUnknown(),
		Duplicates: j.GetDuplicateRows(), DeadLettered: j.GetDeadLettered(),
	}
}

// RepairCounts sets a SEALED or COMPLETED job's delivered, failed, unknown,
// duplicate-row and dead-lettered counters to c, and completes a SEALED job
// when that settles every row. A COMPLETED job is repaired too: under the retry-with-key policy an
// UNKNOWN row may be resent after the job completed, and the delta that
// moves it from unknown to delivered can be lost like any other.
//
// Dispatchers add counter deltas they batch in memory; a dispatcher killed
// between a ledger write and its next flush loses its deltas, and the job
// would never complete. The ledger is the truth, and a repairer counts it.
// The write is conditional on the record's updated_at still being seen, the
// value the repairer read before it counted: every Add moves updated_at, so
// a delta written meanwhile makes the repair fail with ErrChanged rather
// than be overwritten. The caller makes sure no live dispatcher still holds
// deltas of rows it counted (see the dispatcher's recount package).
func (s *Store) RepairCounts(ctx context.Context, id string, seen time.Time, c Settled) (*spoolv1.Job, error) {
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:           aws.String(s.table),
		Key:                 tablelayout.Job(id).Item(),
		UpdateExpression:    aws.String("SET delivered = :d, failed = :f, #unknown = :u, duplicate_rows = :dup, dead_lettered = :dl, updated_at = :now"),
		ConditionExpression: aws.String("#state IN (:sealed, :completed) AND updated_at = :seen"),
		// UNKNOWN is a DynamoDB reserved word.
		ExpressionAttributeNames: map[string]string{"#state": "state", "#unknown": "unknown"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":d":         num(c.Delivered),
			":f":         num(c.Failed),
			":u":         num(c.Unknown),
			":dup":       num(c.Duplicates),
			":dl":        num(c.DeadLettered),
			":now":       num(millis(s.now())),
			":seen":      num(millis(seen)),
			":sealed":    str(stateName(spoolv1.JobState_JOB_STATE_SEALED)),
			":completed": str(stateName(spoolv1.JobState_JOB_STATE_COMPLETED)),
		},
		ReturnValues: types.ReturnValueAllNew,
	})
	if isConditionFailed(err) {
		// A missing item fails the condition too; ErrChanged covers it, as
		// the caller read the job before and re-reads it anyway.
		return nil, fmt.Errorf("repair counts of job %s: %w", id, ErrChanged)
	}
	if err != nil {
		return nil, fmt.Errorf("repair counts of job %s: %w", id, err)
	}
	return s.completeIfSettled(ctx, out.Attributes)
}
