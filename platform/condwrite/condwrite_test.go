package condwrite_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/condwrite"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/provision"
	"github.com/spoolhq/spool/platform/tablelayout"
)

func TestFailed(t *testing.T) {
	ccf := &types.ConditionalCheckFailedException{Message: aws.String("The conditional request failed")}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{name: "no error", err: nil, want: false},
		{name: "failed condition", err: ccf, want: true},
		{name: "wrapped failed condition", err: fmt.Errorf("seal job j1: %w", ccf), want: true},
		{name: "another service error", err: &types.ProvisionedThroughputExceededException{}, want: false},
		{name: "a plain error", err: errors.New("connection reset"), want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, condwrite.Failed(tt.err))
		})
	}
}

// TestPutNew runs against a real emulator: what a failed condition looks
// like on the wire is the SDK's and the endpoint's business, not ours.
func TestPutNew(t *testing.T) {
	ctx := context.Background()
	db := dynamodb.NewFromConfig(emutest.Config(emutest.Start(t, emulator.DynamoDB)))
	require.NoError(t, provision.EnsureTable(ctx, db, "jobs"))
	item := func(v string) map[string]types.AttributeValue {
		it := tablelayout.Job("j1").Item()
		it["v"] = &types.AttributeValueMemberS{Value: v}
		return it
	}

	exists, err := condwrite.PutNew(ctx, db, "jobs", item("first"))
	require.NoError(t, err)
	require.False(t, exists, "nothing was stored under the key")

	exists, err = condwrite.PutNew(ctx, db, "jobs", item("second"))
	require.NoError(t, err, "a failed condition is an answer")
	require.True(t, exists)
	out, err := db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String("jobs"), Key: tablelayout.Job("j1").Item(), ConsistentRead: aws.Bool(true),
	})
	require.NoError(t, err)
	require.Equal(t, &types.AttributeValueMemberS{Value: "first"}, out.Item["v"], "the stored item was kept")

	_, err = condwrite.PutNew(ctx, db, "no-such-table", item("third"))
	require.Error(t, err, "any other error is one")
	require.False(t, condwrite.Failed(err))
}
