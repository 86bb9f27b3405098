package provision_test

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/provision"
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
	require.Contains(t, attrs.Attributes["RedrivePolicy"], `"maxReceiveCount":"100"`)
	require.Contains(t, attrs.Attributes["RedrivePolicy"], "spool-test-dlq")
}
