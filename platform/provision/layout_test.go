package provision_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/provision"
	"github.com/spoolhq/spool/platform/tablelayout"
)

// TestEnsureTableWritesTheLayoutOnce: a table EnsureTable creates gets its
// layout item, once; a table that existed before (made by infrastructure
// code, or by a Spool from before the item) gets none, since nothing says
// what it holds.
func TestEnsureTableWritesTheLayoutOnce(t *testing.T) {
	ctx := context.Background()
	db := dynamodb.NewFromConfig(emutest.Config(emutest.Start(t, emulator.DynamoDB)))
	layout := func(t *testing.T, table string) map[string]ddbtypes.AttributeValue {
		t.Helper()
		out, err := db.GetItem(ctx, &dynamodb.GetItemInput{
			TableName: aws.String(table), Key: tablelayout.Layout().Item(), ConsistentRead: aws.Bool(true),
		})
		require.NoError(t, err)
		return out.Item
	}

	t.Run("created here", func(t *testing.T) {
		require.NoError(t, provision.EnsureTable(ctx, db, "fresh"))
		first := layout(t, "fresh")
		require.NotNil(t, first, "a table created here has its layout item")
		require.Equal(t, &ddbtypes.AttributeValueMemberS{Value: tablelayout.LedgerKeysNamespaced}, first[tablelayout.LayoutLedgerKeys])
		created, err := time.Parse(time.RFC3339, first[tablelayout.LayoutCreatedAt].(*ddbtypes.AttributeValueMemberS).Value)
		require.NoError(t, err)
		require.WithinDuration(t, time.Now(), created, time.Minute)

		require.NoError(t, provision.EnsureTable(ctx, db, "fresh"), "a second call is a no-op")
		require.Equal(t, first, layout(t, "fresh"))
		// The put itself, sent again later (a retry, a concurrent
		// provisioning), keeps the first item.
		require.NoError(t, provision.PutLayout(ctx, db, "fresh", time.Now().Add(time.Hour)))
		require.Equal(t, first, layout(t, "fresh"))
	})

	t.Run("made elsewhere", func(t *testing.T) {
		_, err := db.CreateTable(ctx, &dynamodb.CreateTableInput{
			TableName:              aws.String("theirs"),
			AttributeDefinitions:   tablelayout.AttributeDefinitions(),
			KeySchema:              tablelayout.KeySchema(),
			GlobalSecondaryIndexes: tablelayout.Indexes(),
			BillingMode:            ddbtypes.BillingModePayPerRequest,
		})
		require.NoError(t, err)
		require.NoError(t, provision.EnsureTable(ctx, db, "theirs"))
		require.Nil(t, layout(t, "theirs"), "a table that existed is not said to be new")
	})
}
