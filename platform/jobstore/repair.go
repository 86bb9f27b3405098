package jobstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/condwrite"
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

// RepairCounts makes a SEALED or COMPLETED job's delivered, failed,
// unknown, duplicate-row and dead-lettered counters read c, the figures of
// its delivery ledger, and completes a SEALED job when c settles every
// row. A COMPLETED job is repaired too: under the retry-with-key policy an
// UNKNOWN row may be resent after the job completed, and the count that
// moves it from unknown to delivered can be lost like any other.
//
// Dispatchers write their counts every flush interval; one killed in
// between loses what it counted since its last write, and the job would
// never complete. The ledger is the truth, and a repairer counts it. The
// repair is the job's repair item: the correction that makes the sum of
// the record's and every writer's counts read c, as read now. It is an
// absolute write, conditional on the repair item's version being the one
// read, so applying it twice, or once more after its answer was lost,
// changes nothing, and of two repairers one wins. It lowers counters as
// readily as it raises them.
//
// seen is the job's updated_at as the repairer read it before counting:
// when any of its items changed since, a dispatcher is still writing and
// the repair fails with ErrChanged. The caller makes sure no live
// dispatcher still holds counts of rows it counted (see the dispatcher's
// recount package).
func (s *Store) RepairCounts(ctx context.Context, id string, seen time.Time, c Settled) (*spoolv1.Job, error) {
	p, err := s.readPartition(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("repair counts: %w", errors.Join(ErrChanged, err))
	}
	switch p.rec.State {
	case stateName(spoolv1.JobState_JOB_STATE_SEALED), stateName(spoolv1.JobState_JOB_STATE_COMPLETED):
	default:
		return nil, fmt.Errorf("repair counts of job %s, which is %s: %w", id, p.rec.State, ErrChanged)
	}
	if p.updatedAt != millis(seen) {
		return nil, fmt.Errorf("repair counts of job %s: %w", id, ErrChanged)
	}
	have := p.base().settled()
	key := tablelayout.JobRepair(id)
	var prev int64
	if p.repair != nil {
		prev = p.repair.Version
	}
	next := counterItem{
		PK: key.PK, SK: key.SK, Version: prev + 1, UpdatedAt: millis(s.now()),
		storedCounts: storedCounts{
			Delivered: c.Delivered - have.Delivered, Failed: c.Failed - have.Failed, Unknown: c.Unknown - have.Unknown,
			Duplicates: c.Duplicates - have.Duplicates, DeadLettered: c.DeadLettered - have.DeadLettered,
		},
	}
	av, err := attributevalue.MarshalMap(next)
	if err != nil {
		return nil, fmt.Errorf("marshal repair of job %s: %w", id, err)
	}
	_, err = s.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                 aws.String(s.table),
		Item:                      av,
		ConditionExpression:       aws.String("attribute_not_exists(pk) OR #version = :prev"),
		ExpressionAttributeNames:  map[string]string{"#version": "version"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":prev": num(prev)},
	})
	if condwrite.Failed(err) {
		// This very write, applied before its answer was lost, or
		// another repairer's.
		cur, gerr := s.getCounter(ctx, key)
		if gerr != nil {
			return nil, fmt.Errorf("repair counts of job %s: %w", id, gerr)
		}
		if cur == nil || cur.Version != next.Version || cur.storedCounts != next.storedCounts {
			return nil, fmt.Errorf("repair counts of job %s: %w", id, ErrChanged)
		}
		err = nil
	}
	if err != nil {
		return nil, fmt.Errorf("repair counts of job %s: %w", id, err)
	}
	if p.rec.State == stateName(spoolv1.JobState_JOB_STATE_SEALED) && c.Sum() >= p.rec.Total {
		// The ledger's count is the confirmation completing needs.
		j, err := s.Complete(ctx, id, c)
		if err != nil && !errors.Is(err, ErrState) {
			return nil, err
		}
		if j != nil {
			return j, nil
		}
	}
	return s.Get(ctx, id)
}
