// Package condwrite is DynamoDB's conditional write as the stores of the
// job table use it. A write whose condition does not hold is an answer,
// not a failure: the item is not as the writer required, or it holds this
// very write already (the SDK sent it again after its first answer was
// lost). Each store tells that answer from other errors with Failed, and
// decides what it means for its change, most often by reading the item.
package condwrite

import (
	"context"
	"errors"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/spoolhq/spool/platform/tablelayout"
)

// Failed reports whether err is the answer of a write whose condition did
// not hold (nothing was written), wrapped or not.
func Failed(err error) bool {
	var ccf *types.ConditionalCheckFailedException
	return errors.As(err, &ccf)
}

// Putter is the part of the DynamoDB client PutNew uses.
type Putter interface {
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
}

// PutNew writes item to table unless an item with its key is stored
// already, and says whether one was. That item may be this very write,
// applied before its answer was lost; only the caller can tell, by
// reading it.
func PutNew(ctx context.Context, db Putter, table string, item map[string]types.AttributeValue) (exists bool, err error) {
	_, err = db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:           aws.String(table),
		Item:                item,
		ConditionExpression: aws.String("attribute_not_exists(" + tablelayout.PK + ")"),
	})
	if Failed(err) {
		return true, nil
	}
	return false, err
}
