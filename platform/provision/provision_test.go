package provision_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/provision"
	"github.com/spoolhq/spool/platform/tablelayout"
)

func TestEnsureQueueIsIdempotent(t *testing.T) {
	ctx := context.Background()
	c := sqs.NewFromConfig(emutest.Config(emutest.Start(t, emulator.SQS)))
	q1, err := provision.EnsureQueue(ctx, c, "spool-test", provision.DefaultQueueOptions)
	require.NoError(t, err)
	q2, err := provision.EnsureQueue(ctx, c, "spool-test", provision.DefaultQueueOptions)
	require.NoError(t, err)
	require.Equal(t, q1, q2)
	require.NotEqual(t, q1.URL, q1.DLQURL)

	attrs, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       aws.String(q1.URL),
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameAll},
	})
	require.NoError(t, err)
	require.Equal(t, "60", attrs.Attributes["VisibilityTimeout"])
	require.Contains(t, attrs.Attributes["RedrivePolicy"], `"maxReceiveCount":"1000"`)
	require.Contains(t, attrs.Attributes["RedrivePolicy"], "spool-test-dlq")
}

func TestEnsureTableHasTheLedgerIndex(t *testing.T) {
	ctx := context.Background()
	db := dynamodb.NewFromConfig(emutest.Config(emutest.Start(t, emulator.DynamoDB)))

	// A table from before the index: EnsureTable adds it.
	_, err := db.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName: aws.String("old"),
		AttributeDefinitions: []ddbtypes.AttributeDefinition{
			{AttributeName: aws.String("pk"), AttributeType: ddbtypes.ScalarAttributeTypeS},
			{AttributeName: aws.String("sk"), AttributeType: ddbtypes.ScalarAttributeTypeS},
		},
		KeySchema: []ddbtypes.KeySchemaElement{
			{AttributeName: aws.String("pk"), KeyType: ddbtypes.KeyTypeHash},
			{AttributeName: aws.String("sk"), KeyType: ddbtypes.KeyTypeRange},
		},
		BillingMode: ddbtypes.BillingModePayPerRequest,
	})
	require.NoError(t, err)

	// dynalite 4 refuses UpdateTable's index creation on an on-demand table
	// (it wants a throughput AWS forbids there), so on it the old table must
	// at least fail with an error that says what to do; on DynamoDB the
	// index is added and the old table then passes the new table's checks.
	err = provision.EnsureTable(ctx, db, "old")
	tables := []string{"new"}
	if err == nil {
		tables = append(tables, "old")
	} else {
		require.ErrorContains(t, err, "table old lacks index ledger-by-job and it could not be added")
	}
	for _, table := range tables {
		t.Run(table, func(t *testing.T) {
			require.NoError(t, provision.EnsureTable(ctx, db, table))
			require.NoError(t, provision.EnsureTable(ctx, db, table), "a second call is a no-op")
			put := func(pk string, row int64, withRow bool) {
				item := map[string]ddbtypes.AttributeValue{
					"pk": &ddbtypes.AttributeValueMemberS{Value: pk}, "sk": &ddbtypes.AttributeValueMemberS{Value: "X"},
					"job_id": &ddbtypes.AttributeValueMemberS{Value: "j1"},
				}
				if withRow {
					item["row"] = &ddbtypes.AttributeValueMemberN{Value: strconv.FormatInt(row, 10)}
				}
				_, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: item})
				require.NoError(t, err)
			}
			put("TX#b", 10, true)
			put("TX#a", 2, true)
			put("JOB#j1", 0, false) // a job record: not in the sparse index
			out, err := db.Query(ctx, &dynamodb.QueryInput{
				TableName:                 aws.String(table),
				IndexName:                 aws.String(tablelayout.LedgerIndex),
				KeyConditionExpression:    aws.String("job_id = :j"),
				ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":j": &ddbtypes.AttributeValueMemberS{Value: "j1"}},
			})
			require.NoError(t, err)
			var pks []string
			for _, it := range out.Items {
				pks = append(pks, it["pk"].(*ddbtypes.AttributeValueMemberS).Value)
			}
			require.Equal(t, []string{"TX#a", "TX#b"}, pks, "rows ascending, job records left out")

			desc, err := db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)})
			require.NoError(t, err)
			var names []string
			for _, g := range desc.Table.GlobalSecondaryIndexes {
				names = append(names, aws.ToString(g.IndexName))
			}
			require.ElementsMatch(t, []string{tablelayout.LedgerIndex, tablelayout.JobsIndex}, names)
		})
	}
}
