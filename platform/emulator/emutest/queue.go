package emutest

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// QueueAPI is the part of the SQS client QueueCounts uses.
type QueueAPI interface {
	GetQueueAttributes(ctx context.Context, in *sqs.GetQueueAttributesInput, opts ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
}

// QueueCounts returns the numbers, as SQS spells them, of the messages
// waiting in the queue at url and of those received and not yet deleted.
// A test that wants nothing left behind requires both to be "0".
func QueueCounts(ctx context.Context, q QueueAPI, url string) (visible, inFlight string, err error) {
	attrs, err := q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(url),
		AttributeNames: []types.QueueAttributeName{
			types.QueueAttributeNameApproximateNumberOfMessages,
			types.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
		},
	})
	if err != nil {
		return "", "", fmt.Errorf("read attributes of queue %s: %w", url, err)
	}
	return attrs.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessages)],
		attrs.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessagesNotVisible)], nil
}
