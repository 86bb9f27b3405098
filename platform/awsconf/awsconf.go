// Package awsconf loads the AWS configuration both services use.
//
// It is the SDK's default chain and nothing else: credentials, region and
// the standard service endpoint variables (AWS_ENDPOINT_URL_SQS,
// AWS_ENDPOINT_URL_DYNAMODB). Pointing a binary at the local emulators or at
// real AWS is therefore only a matter of environment. Two things are added
// for every client: the SDK's own log lines go to the service's slog
// logger, and DynamoDB response checksums are checked when the response
// carries one (see checksum.go).
package awsconf

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/smithy-go/middleware"
)

// maxAttempts is generous because a throttled SendMessageBatch or
// UpdateItem is normal under load, and giving up means failing a stream.
const maxAttempts = 8

// Load returns the default AWS configuration, with the SDK logging to log,
// or an error that says what is missing.
func Load(ctx context.Context, log *slog.Logger) (aws.Config, error) {
	cfg, err := config.LoadDefaultConfig(ctx,
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = maxAttempts })
		}),
		config.WithLogger(sdkLogger{log: log}),
		config.WithAPIOptions([]func(*middleware.Stack) error{CRC32WhenPresent}),
	)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load AWS config: %w", err)
	}
	if cfg.Region == "" {
		return aws.Config{}, fmt.Errorf("load AWS config: no region; set AWS_REGION")
	}
	if path := os.Getenv(CallLogEnv); path != "" {
		l, err := openCallLog(path)
		if err != nil {
			return aws.Config{}, err
		}
		cfg.APIOptions = append(cfg.APIOptions, l.register)
	}
	return cfg, nil
}
