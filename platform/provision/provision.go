// Package provision creates, idempotently, the queue (with its dead-letter
// queue and redrive policy) and the table Spool runs on. The local stack and
// `spool init` use it; on AWS the same resources usually come from
// infrastructure code, and these calls are then no-ops.
package provision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/spoolhq/spool/platform/condwrite"
	"github.com/spoolhq/spool/platform/tablelayout"
)

// QueueAPI is the part of the SQS client provisioning uses.
type QueueAPI interface {
	CreateQueue(ctx context.Context, in *sqs.CreateQueueInput, opts ...func(*sqs.Options)) (*sqs.CreateQueueOutput, error)
	GetQueueUrl(ctx context.Context, in *sqs.GetQueueUrlInput, opts ...func(*sqs.Options)) (*sqs.GetQueueUrlOutput, error)
	GetQueueAttributes(ctx context.Context, in *sqs.GetQueueAttributesInput, opts ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
}

// QueueOptions shape the main queue.
type QueueOptions struct {
	// VisibilityTimeout is how long a received message stays hidden.
	VisibilityTimeout time.Duration
	// MaxReceiveCount is the redrive policy's safety net. It is SQS's
	// highest on purpose: Spool counts delivery attempts itself, and holds,
	// backoffs, paused jobs and visibility heartbeats (which some SQS
	// implementations count as receives) must never exhaust it.
	MaxReceiveCount int
	// Retention is how long an undelivered message is kept (max 14 days).
	Retention time.Duration
}

// DefaultQueueOptions are the values `spool init` and the local stack use.
var DefaultQueueOptions = QueueOptions{
	VisibilityTimeout: 60 * time.Second,
	MaxReceiveCount:   1000,
	Retention:         14 * 24 * time.Hour,
}

// Queues are the URLs of a provisioned queue pair.
type Queues struct {
	URL, DLQURL string
}

// EnsureQueue creates the queue name and its dead-letter queue name+"-dlq"
// unless they exist, and returns their URLs.
func EnsureQueue(ctx context.Context, c QueueAPI, name string, o QueueOptions) (Queues, error) {
	dlq, err := ensureOne(ctx, c, name+"-dlq", map[string]string{
		string(sqstypes.QueueAttributeNameMessageRetentionPeriod): secs(o.Retention),
	})
	if err != nil {
		return Queues{}, err
	}
	attrs, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       aws.String(dlq),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn},
	})
	if err != nil {
		return Queues{}, fmt.Errorf("read ARN of queue %s-dlq: %w", name, err)
	}
	policy, err := json.Marshal(map[string]string{
		"deadLetterTargetArn": attrs.Attributes[string(sqstypes.QueueAttributeNameQueueArn)],
		"maxReceiveCount":     strconv.Itoa(o.MaxReceiveCount),
	})
	if err != nil {
		return Queues{}, fmt.Errorf("encode redrive policy: %w", err)
	}
	main, err := ensureOne(ctx, c, name, map[string]string{
		string(sqstypes.QueueAttributeNameVisibilityTimeout):      secs(o.VisibilityTimeout),
		string(sqstypes.QueueAttributeNameMessageRetentionPeriod): secs(o.Retention),
		string(sqstypes.QueueAttributeNameRedrivePolicy):          string(policy),
	})
	if err != nil {
		return Queues{}, err
	}
	return Queues{URL: main, DLQURL: dlq}, nil
}

func ensureOne(ctx context.Context, c QueueAPI, name string, attrs map[string]string) (string, error) {
	out, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: attrs})
	if err == nil {
		return aws.ToString(out.QueueUrl), nil
	}
	// An existing queue with other attributes is left as its owner set it.
	var exists *sqstypes.QueueNameExists
	if !errors.As(err, &exists) {
		return "", fmt.Errorf("create queue %s: %w", name, err)
	}
	got, err := c.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
	if err != nil {
		return "", fmt.Errorf("look up existing queue %s: %w", name, err)
	}
	return aws.ToString(got.QueueUrl), nil
}

func secs(d time.Duration) string { return strconv.Itoa(int(d / time.Second)) }

// TableAPI is the part of the DynamoDB client provisioning uses.
type TableAPI interface {
	CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	UpdateTable(ctx context.Context, in *dynamodb.UpdateTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateTableOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
}

// EnsureTable creates the table, with its indexes (tablelayout.Indexes),
// unless it exists, and waits until it is active. A table created before
// an index existed gets it added, one at a time as DynamoDB requires, and
// the call waits until each is active too. The layout (key, indexes, item
// types) is tablelayout's.
//
// A table this call creates gets its layout item (tablelayout.Layout),
// which tells dispatchers that its ledger keys were namespaced from the
// start. A table that existed is never given one: this call cannot know
// what it holds, and a table without the item is treated as one that may
// hold records from before, which is the safe side.
func EnsureTable(ctx context.Context, c TableAPI, name string) error {
	_, err := c.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:              aws.String(name),
		AttributeDefinitions:   tablelayout.AttributeDefinitions(),
		KeySchema:              tablelayout.KeySchema(),
		GlobalSecondaryIndexes: tablelayout.Indexes(),
		BillingMode:            ddbtypes.BillingModePayPerRequest,
	})
	var inUse *ddbtypes.ResourceInUseException
	if err != nil && !errors.As(err, &inUse) {
		return fmt.Errorf("create table %s: %w", name, err)
	}
	created := err == nil
	if err := waitActive(ctx, c, name); err != nil {
		return err
	}
	if created {
		if err := putLayout(ctx, c, name, time.Now()); err != nil {
			return err
		}
	}
	for _, idx := range tablelayout.Indexes() {
		if err := ensureIndex(ctx, c, name, idx); err != nil {
			return err
		}
	}
	return nil
}

// putLayout writes the layout item of a table just created, unless the
// table has one: a put sent twice (a lost answer the SDK retried) or a
// concurrent provisioning never overwrites it.
func putLayout(ctx context.Context, c TableAPI, name string, now time.Time) error {
	// An item there already is one a concurrent provisioning wrote, or
	// this one, whose answer was lost: either way the table has its layout.
	if _, err := condwrite.PutNew(ctx, c, name, tablelayout.LayoutItem(now)); err != nil {
		// The table stays without the item, so dispatchers also look for
		// records under the former keys: slower, never unsafe.
		return fmt.Errorf("write layout item of table %s (put it by hand as the README says, or dispatchers keep looking for former ledger keys): %w", name, err)
	}
	return nil
}

func waitActive(ctx context.Context, c TableAPI, name string) error {
	w := dynamodb.NewTableExistsWaiter(c, func(o *dynamodb.TableExistsWaiterOptions) {
		o.MinDelay = 200 * time.Millisecond
		o.MaxDelay = 2 * time.Second
	})
	if err := w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(name)}, 2*time.Minute); err != nil {
		return fmt.Errorf("wait for table %s: %w", name, err)
	}
	return nil
}

// ensureIndex adds index def to a table that lacks it, and waits until the
// index is active: the dispatchers' reports and job lists query them.
func ensureIndex(ctx context.Context, c TableAPI, name string, def ddbtypes.GlobalSecondaryIndex) error {
	const poll = 200 * time.Millisecond
	deadline := time.Now().Add(5 * time.Minute)
	created := false
	indexName := aws.ToString(def.IndexName)
	for {
		out, err := c.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(name)})
		if err != nil {
			return fmt.Errorf("describe table %s: %w", name, err)
		}
		var idx *ddbtypes.GlobalSecondaryIndexDescription
		for i, g := range out.Table.GlobalSecondaryIndexes {
			if aws.ToString(g.IndexName) == indexName {
				idx = &out.Table.GlobalSecondaryIndexes[i]
			}
		}
		switch {
		case idx == nil && created:
			return fmt.Errorf("add index %s to table %s: the table does not list it", indexName, name)
		case idx == nil:
			create := &ddbtypes.CreateGlobalSecondaryIndexAction{
				IndexName:  def.IndexName,
				KeySchema:  def.KeySchema,
				Projection: def.Projection,
			}
			// An on-demand table's index takes no throughput; a provisioned
			// table's index must have some, and the table's own is the
			// only figure known to fit.
			if bm := out.Table.BillingModeSummary; bm == nil || bm.BillingMode != ddbtypes.BillingModePayPerRequest {
				if pt := out.Table.ProvisionedThroughput; pt != nil {
					create.ProvisionedThroughput = &ddbtypes.ProvisionedThroughput{
						ReadCapacityUnits:  aws.Int64(max(1, aws.ToInt64(pt.ReadCapacityUnits))),
						WriteCapacityUnits: aws.Int64(max(1, aws.ToInt64(pt.WriteCapacityUnits))),
					}
				}
			}
			_, err := c.UpdateTable(ctx, &dynamodb.UpdateTableInput{
				TableName:                   aws.String(name),
				AttributeDefinitions:        tablelayout.AttributeDefinitions(),
				GlobalSecondaryIndexUpdates: []ddbtypes.GlobalSecondaryIndexUpdate{{Create: create}},
			})
			if err != nil {
				return fmt.Errorf("table %s lacks index %s and it could not be added; add it by hand: %w", name, indexName, err)
			}
			created = true
		case idx.IndexStatus == ddbtypes.IndexStatusActive || idx.IndexStatus == "":
			// Some emulators report no status for an index they serve.
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for index %s of table %s: still %s", indexName, name, idx.IndexStatus)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for index %s of table %s: %w", indexName, name, ctx.Err())
		case <-time.After(poll):
		}
	}
}

// ErrExpiryUnsupported means the endpoint does not implement time to live
// (some emulators); items then stay until deleted.
var ErrExpiryUnsupported = errors.New("the DynamoDB endpoint does not support time to live")

// ExpiryAPI is the part of the DynamoDB client EnsureExpiry uses.
type ExpiryAPI interface {
	DescribeTimeToLive(ctx context.Context, in *dynamodb.DescribeTimeToLiveInput, opts ...func(*dynamodb.Options)) (*dynamodb.DescribeTimeToLiveOutput, error)
	UpdateTimeToLive(ctx context.Context, in *dynamodb.UpdateTimeToLiveInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateTimeToLiveOutput, error)
}

// EnsureExpiry turns on the table's time to live on tablelayout.ExpiresAt,
// unless it is on already. A table whose time to live is on for another
// attribute is left as its owner set it, with an error saying so. It
// returns ErrExpiryUnsupported when the endpoint lacks the operation.
func EnsureExpiry(ctx context.Context, c ExpiryAPI, table string) error {
	out, err := c.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: aws.String(table)})
	if err != nil {
		return fmt.Errorf("describe time to live of table %s: %w", table, unsupported(err))
	}
	if d := out.TimeToLiveDescription; d != nil {
		switch d.TimeToLiveStatus {
		case ddbtypes.TimeToLiveStatusEnabled, ddbtypes.TimeToLiveStatusEnabling:
			if attr := aws.ToString(d.AttributeName); attr != tablelayout.ExpiresAt {
				return fmt.Errorf("table %s expires items by %q, not %q: ledger records will not expire", table, attr, tablelayout.ExpiresAt)
			}
			return nil
		}
	}
	_, err = c.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{
		TableName: aws.String(table),
		TimeToLiveSpecification: &ddbtypes.TimeToLiveSpecification{
			AttributeName: aws.String(tablelayout.ExpiresAt), Enabled: aws.Bool(true),
		},
	})
	if err != nil {
		return fmt.Errorf("turn on time to live of table %s: %w", table, unsupported(err))
	}
	return nil
}

// unsupported marks an unknown-operation answer as ErrExpiryUnsupported.
func unsupported(err error) error {
	var api smithy.APIError
	if errors.As(err, &api) && api.ErrorCode() == "UnknownOperationException" {
		return errors.Join(ErrExpiryUnsupported, err)
	}
	return err
}
