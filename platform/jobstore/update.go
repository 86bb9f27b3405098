package jobstore

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/spoolhq/spool/platform/condwrite"
	"github.com/spoolhq/spool/platform/jobevent"
	"github.com/spoolhq/spool/platform/tablelayout"
)

// jobUpdate is one conditional write of a job's record. Every change of a
// record after its creation is one, made by updateJob, so each is sent,
// stores its event and recognises itself after a lost answer the same way.
type jobUpdate struct {
	// update and cond are the update and condition expressions.
	update, cond string
	// names are the expressions' attribute names; nil means "#state" only,
	// for the state attribute.
	names  map[string]string
	values map[string]types.AttributeValue
	// returnNew asks for the record as the write left it (jobUpdated.rec).
	returnNew bool
	// event, when set, is stored by the write itself (see evented).
	event *jobevent.Event
	// mine, when set, is asked, after the condition failed, whether the
	// record as it now stands holds this very write: applied before its
	// answer was lost, so that the SDK's retry of it failed the condition.
	// Without it a failed condition is not looked into.
	mine func(r *record) bool
}

// jobUpdated is what became of a jobUpdate whose write did not fail.
type jobUpdated struct {
	// held says the record holds the write: it landed now, or mine
	// recognised it after the condition failed. False means the condition
	// failed and the record does not hold it (or could not be read).
	held bool
	// rec is the record as the write left it (with returnNew), or as read
	// after the condition failed; nil otherwise.
	rec *record
	// readErr is why the record could not be read after the condition
	// failed, wrapped in what the write was doing; held is then false.
	readErr error
}

// updateJob makes u on job id's record. It fails only when the write
// failed otherwise than on its condition, with the error wrapped in what
// ("seal job j1"); a failed condition is told by the result, so each
// caller decides what it means for its change.
func (s *Store) updateJob(ctx context.Context, id, what string, u jobUpdate) (jobUpdated, error) {
	names := u.names
	if names == nil {
		names = map[string]string{"#state": "state"}
	}
	in := &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.table),
		Key:                       tablelayout.Job(id).Item(),
		UpdateExpression:          aws.String(u.update),
		ConditionExpression:       aws.String(u.cond),
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: u.values,
	}
	if u.returnNew {
		in.ReturnValues = types.ReturnValueAllNew
	}
	var out *dynamodb.UpdateItemOutput
	var err error
	if u.event != nil {
		out, err = s.evented(ctx, in, id, *u.event)
	} else {
		out, err = s.db.UpdateItem(ctx, in)
	}
	switch {
	case err == nil && u.returnNew:
		var r record
		if err := attributevalue.UnmarshalMap(out.Attributes, &r); err != nil {
			return jobUpdated{}, fmt.Errorf("unmarshal job %s: %w", id, err)
		}
		return jobUpdated{held: true, rec: &r}, nil
	case err == nil:
		return jobUpdated{held: true}, nil
	case !condwrite.Failed(err):
		return jobUpdated{}, fmt.Errorf("%s: %w", what, err)
	case u.mine == nil:
		return jobUpdated{}, nil
	}
	cur, err := s.getRecord(ctx, id)
	if err != nil {
		return jobUpdated{readErr: fmt.Errorf("%s: %w", what, err)}, nil
	}
	if !u.mine(cur) {
		return jobUpdated{rec: cur}, nil
	}
	if u.event != nil {
		s.eventStored(id, u.event.ID)
	}
	return jobUpdated{held: true, rec: cur}, nil
}
