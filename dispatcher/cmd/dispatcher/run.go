package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/spoolhq/spool/dispatcher/internal/dispatchrpc"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/awsconf"
	"github.com/spoolhq/spool/platform/envelope"
	"github.com/spoolhq/spool/platform/metrics"
	"github.com/spoolhq/spool/platform/tracing"
)

// run parses the configuration, builds the dispatcher and serves until
// ctx is done; then it shuts down within the shutdown grace (see
// dispatcher.run) and returns nil, so SIGTERM exits 0.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := parseConfig(args, nil, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log, flushTraces, err := tracing.StartService(ctx, "spool-dispatcher", stderr, cfg.logLevel)
	if err != nil {
		return err
	}
	defer flushTraces()
	awsCfg, err := awsconf.Load(ctx, log)
	if err != nil {
		return err
	}
	sec, err := cfg.security.Load(ctx, log, dispatchrpc.Rules)
	if err != nil {
		return err
	}
	d, err := newDispatcher(ctx, cfg, sec, dynamodb.NewFromConfig(awsCfg), sqs.NewFromConfig(awsCfg), log)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.listen, err)
	}
	metricsLis, err := metrics.Listen(cfg.metricsListen)
	if err != nil {
		_ = lis.Close()
		return err
	}
	return d.run(ctx, lis, metricsLis)
}

// awsCallTimeout bounds the queue calls made outside a delivery (the
// dead-letter queue's lookup at start, a requeue asked for over the API),
// SDK retries included.
const awsCallTimeout = 10 * time.Second

// deadLetterQueue finds the dead-letter queue the queue's redrive policy
// names, or returns "" (with a warning) when there is none: poison
// messages and exhausted retries are then left for the redrive policy, and
// dead letters cannot be listed or redriven.
func deadLetterQueue(ctx context.Context, q *sqs.Client, queueURL string, log *slog.Logger) string {
	ctx, cancel := context.WithTimeout(ctx, awsCallTimeout)
	defer cancel()
	out, err := q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       aws.String(queueURL),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameRedrivePolicy},
	})
	if err != nil {
		log.WarnContext(ctx, "read queue redrive policy; no dead-letter queue", "error", err)
		return ""
	}
	name, err := deadLetterName(out.Attributes[string(sqstypes.QueueAttributeNameRedrivePolicy)])
	if err != nil {
		log.WarnContext(ctx, "queue has no usable redrive policy; no dead-letter queue", "error", err)
		return ""
	}
	u, err := q.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
	if err != nil {
		log.WarnContext(ctx, "look up dead-letter queue; none used", "name", name, "error", err)
		return ""
	}
	return aws.ToString(u.QueueUrl)
}

// deadLetterName reads the dead-letter queue's name off a redrive policy:
// the last part of its deadLetterTargetArn.
func deadLetterName(policy string) (string, error) {
	if policy == "" {
		return "", errors.New("no redrive policy")
	}
	var p struct {
		Target string `json:"deadLetterTargetArn"`
	}
	if err := json.Unmarshal([]byte(policy), &p); err != nil {
		return "", fmt.Errorf("parse redrive policy: %w", err)
	}
	parts := strings.Split(p.Target, ":")
	if len(parts) != 6 || parts[5] == "" {
		return "", fmt.Errorf("redrive policy target %q: want a queue ARN", p.Target)
	}
	return parts[5], nil
}

// requeue puts a transaction back on the queue, for a resend a person
// asked for.
func requeue(ctx context.Context, q *sqs.Client, url string, e *spoolv1.Envelope) error {
	body, attrs, err := envelope.Encode(e)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, awsCallTimeout)
	defer cancel()
	_, err = q.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: aws.String(body), MessageAttributes: attrs})
	if err != nil {
		return fmt.Errorf("requeue row %d of job %s: %w", e.GetRow(), e.GetJobId(), err)
	}
	return nil
}
