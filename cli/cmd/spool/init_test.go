package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/emutest"
)

// TestInitAgainstEmulators runs `spool init` the way a user does: AWS
// settings come from the standard environment variables.
func TestInitAgainstEmulators(t *testing.T) {
	sqsURL := emutest.Start(t, emulator.SQS)
	ddbURL := emutest.Start(t, emulator.DynamoDB)
	missing := filepath.Join(t.TempDir(), "none")
	for k, v := range map[string]string{
		emulator.SQS.EnvEndpoint():      sqsURL,
		emulator.DynamoDB.EnvEndpoint(): ddbURL,
		"AWS_REGION":                    "us-east-1",
		"AWS_ACCESS_KEY_ID":             "local",
		"AWS_SECRET_ACCESS_KEY":         "local",
		"AWS_EC2_METADATA_DISABLED":     "true",
		"AWS_PROFILE":                   "",
		"AWS_CONFIG_FILE":               missing,
		"AWS_SHARED_CREDENTIALS_FILE":   missing,
	} {
		t.Setenv(k, v)
	}

	var outputs, warnings []string
	for range 2 {
		h := newHarness(t)
		require.NoError(t, h.run("init", "-queue", "spool-cli-init", "-table", "spool-cli-jobs"))
		outputs = append(outputs, h.stdout.String())
		warnings = append(warnings, h.stderr.String())
	}
	require.Equal(t, outputs[0], outputs[1], "a second run finds the same resources")
	require.Equal(t, warnings[0] == "", warnings[1] == "", "a second run warns as the first: %q", warnings)

	lines := strings.Split(strings.TrimSuffix(outputs[0], "\n"), "\n")
	require.Len(t, lines, 3, "stdout: %q", outputs[0])
	values := map[string]string{}
	for _, l := range lines {
		k, v, ok := strings.Cut(l, "=")
		require.True(t, ok, "line %q", l)
		values[k] = v
	}
	require.Equal(t, []string{"SPOOL_QUEUE_URL", "SPOOL_DLQ_URL", "SPOOL_TABLE"}, []string{
		strings.Split(lines[0], "=")[0], strings.Split(lines[1], "=")[0], strings.Split(lines[2], "=")[0]})
	require.Equal(t, "spool-cli-jobs", values["SPOOL_TABLE"])
	require.True(t, strings.HasSuffix(values["SPOOL_QUEUE_URL"], "/spool-cli-init"), values["SPOOL_QUEUE_URL"])
	require.True(t, strings.HasSuffix(values["SPOOL_DLQ_URL"], "/spool-cli-init-dlq"), values["SPOOL_DLQ_URL"])

	// The resources really exist.
	ctx := context.Background()
	sq := sqs.NewFromConfig(emutest.Config(sqsURL))
	got, err := sq.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String("spool-cli-init")})
	require.NoError(t, err)
	require.Equal(t, values["SPOOL_QUEUE_URL"], aws.ToString(got.QueueUrl))
	db := dynamodb.NewFromConfig(emutest.Config(ddbURL))
	table, err := db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String("spool-cli-jobs")})
	require.NoError(t, err)
	require.Equal(t, ddbtypes.TableStatusActive, table.Table.TableStatus)

	// Time to live is on, or the endpoint said it cannot (dynalite): then
	// init warns and goes on, as the ledger only keeps records longer.
	if warnings[0] != "" {
		for _, w := range warnings {
			require.True(t, strings.HasPrefix(w,
				"warning: turn on time to live of table spool-cli-jobs: the DynamoDB endpoint does not support time to live"), w)
			require.True(t, strings.HasSuffix(w, "; settled ledger records will not expire\n"), w)
		}
		return
	}
	ttl, err := db.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: aws.String("spool-cli-jobs")})
	require.NoError(t, err)
	require.Equal(t, ddbtypes.TimeToLiveStatusEnabled, ttl.TimeToLiveDescription.TimeToLiveStatus)
	require.Equal(t, "expires_at", aws.ToString(ttl.TimeToLiveDescription.AttributeName))
}

func TestInitNeedsBothNames(t *testing.T) {
	h := newHarness(t)
	err := h.run("init", "-queue", "q")
	require.ErrorContains(t, err, "-queue and -table are required")
	require.Equal(t, 2, exitCode(err, new(strings.Builder)))
}
