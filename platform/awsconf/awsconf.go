// Package awsconf loads the AWS configuration both services use.
//
// It is the SDK's default chain and nothing else: credentials, region and
// the standard service endpoint variables (AWS_ENDPOINT_URL_SQS,
// AWS_ENDPOINT_URL_DYNAMODB). Pointing a binary at the local emulators or at
// real AWS is therefore only a matter of environment.
package awsconf

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
)

// maxAttempts is generous because a throttled SendMessageBatch or
// UpdateItem is normal under load, and giving up means failing a stream.
const maxAttempts = 8

// Load returns the default AWS configuration, or an error that says what
// is missing.
func Load(ctx context.Context) (aws.Config, error) {
	cfg, err := config.LoadDefaultConfig(ctx,
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = maxAttempts })
		}),
	)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load AWS config: %w", err)
	}
	if cfg.Region == "" {
		return aws.Config{}, fmt.Errorf("load AWS config: no region; set AWS_REGION")
	}
	return cfg, nil
}
