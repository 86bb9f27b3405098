package jobstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/condwrite"
	"github.com/spoolhq/spool/platform/tablelayout"
)

// KeyTakenError is returned by Start when the job key names a job that is
// receiving, sealed or completed. Job is that job.
type KeyTakenError struct {
	Key string
	Job *spoolv1.Job
}

func (e *KeyTakenError) Error() string {
	return fmt.Sprintf("job key %q names job %s (%s)", e.Key, e.Job.GetJobId(), stateName(e.Job.GetState()))
}

// Unwrap makes errors.Is(err, ErrKeyTaken) true.
func (e *KeyTakenError) Unwrap() error { return ErrKeyTaken }

// claimAttempts bounds the retries of a key claim that lost a race to a
// re-pointing; each lost race means another submission made progress.
const claimAttempts = 5

// claimKey points key at job id, unless it names a job that is not over.
func (s *Store) claimKey(ctx context.Context, key, id string) error {
	for range claimAttempts {
		item := s.keyItem(key).Item()
		item["job_id"] = str(id)
		exists, err := condwrite.PutNew(ctx, s.db, s.table, item)
		if err != nil {
			return fmt.Errorf("claim job key %q: %w", key, err)
		}
		if !exists {
			return nil
		}
		oldID, err := s.keyJobID(ctx, key)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if oldID == id {
			// This writer's own claim (or re-pointing), applied before its
			// answer was lost: the SDK's retry then failed its condition.
			return nil
		}
		old, err := s.Get(ctx, oldID)
		if err != nil {
			return fmt.Errorf("claim job key %q: %w", key, err)
		}
		if old, err = s.ExpireIfAbandoned(ctx, old); err != nil {
			return fmt.Errorf("claim job key %q: %w", key, err)
		}
		switch old.GetState() {
		case spoolv1.JobState_JOB_STATE_ABORTED, spoolv1.JobState_JOB_STATE_REJECTED, spoolv1.JobState_JOB_STATE_CANCELLED:
		default:
			return &KeyTakenError{Key: key, Job: old}
		}
		_, err = s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName:                 aws.String(s.table),
			Key:                       s.keyItem(key).Item(),
			UpdateExpression:          aws.String("SET job_id = :new"),
			ConditionExpression:       aws.String("job_id = :old"),
			ExpressionAttributeValues: map[string]types.AttributeValue{":new": str(id), ":old": str(oldID)},
		})
		if err == nil {
			return nil
		}
		if !condwrite.Failed(err) {
			return fmt.Errorf("re-point job key %q: %w", key, err)
		}
	}
	return fmt.Errorf("claim job key %q: lost %d races in a row: %w", key, claimAttempts, ErrState)
}

// keyItem returns the table key of the item that says which job key names,
// in the store's tenant: "T#<tenant>|<key>". Tenant names exclude '|', so
// two tenants' keys never meet; a fleet without a tenant could name a key
// of that form itself, which is why every fleet sharing a table sets one.
func (s *Store) keyItem(key string) tablelayout.Key {
	if s.tenant == "" {
		return tablelayout.JobKey(key)
	}
	return tablelayout.JobKey("T#" + s.tenant + "|" + key)
}

// keyJobID returns the id of the job key names, or ErrNotFound.
func (s *Store) keyJobID(ctx context.Context, key string) (string, error) {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		Key:            s.keyItem(key).Item(),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return "", fmt.Errorf("get job key %q: %w", key, err)
	}
	v, ok := out.Item["job_id"].(*types.AttributeValueMemberS)
	if !ok {
		return "", fmt.Errorf("get job key %q: %w", key, ErrNotFound)
	}
	return v.Value, nil
}

// GetByKey returns the job a job key names, or ErrNotFound.
func (s *Store) GetByKey(ctx context.Context, key string) (*spoolv1.Job, error) {
	id, err := s.keyJobID(ctx, key)
	if err != nil {
		return nil, err
	}
	return s.Get(ctx, id)
}
