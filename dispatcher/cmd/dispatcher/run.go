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
	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/spoolhq/spool/dispatcher/internal/consume"
	"github.com/spoolhq/spool/dispatcher/internal/deadletter"
	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/dispatcher/internal/dispatch"
	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	"github.com/spoolhq/spool/dispatcher/internal/openjobs"
	"github.com/spoolhq/spool/dispatcher/internal/recount"
	"github.com/spoolhq/spool/dispatcher/internal/status"
	"github.com/spoolhq/spool/dispatcher/internal/tally"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/awsconf"
	"github.com/spoolhq/spool/platform/envelope"
	"github.com/spoolhq/spool/platform/grpcserve"
	"github.com/spoolhq/spool/platform/jobstore"
)

// run serves until ctx is done, then shuts down within the shutdown grace:
// polling stops, messages received but not yet started are released for
// other dispatchers (visibility 0), in-flight deliveries finish (or are cut
// off and left for redelivery), settled messages are deleted and counters
// written; it then returns nil, so SIGTERM exits 0.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := parseConfig(args, nil, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))

	awsCfg, err := awsconf.Load(ctx)
	if err != nil {
		return err
	}
	db := dynamodb.NewFromConfig(awsCfg)
	queue := sqs.NewFromConfig(awsCfg)
	store := jobstore.New(db, cfg.table)
	counts := tally.New(store, log)
	policy, _ := ledger.ParsePolicy(cfg.unknownPolicy) // validated with the config
	// One owner id per process: a restarted dispatcher is a new owner, and
	// its predecessor's claims are taken over once their leases end.
	owner := uuid.NewString()
	book := ledger.New(ledger.NewDynamo(db, cfg.table), ledger.Options{Owner: owner, Lease: cfg.lease(), Policy: policy, Retention: cfg.ledgerRetention})
	dlq := cfg.deadLetterURL
	if dlq == "" {
		dlq = deadLetterQueue(ctx, queue, cfg.queueURL, log)
	}
	sender := deliver.New(deliver.Options{
		URL:               cfg.destinationURL,
		IdempotencyHeader: cfg.idempotencyHeader,
		Header:            cfg.headers.h,
		Timeout:           cfg.destTimeout,
		MaxConns:          cfg.concurrency,
	})

	// The grace is shared out so that the whole shutdown fits in it: most
	// of it for deliveries in flight, then a reserve each for the delete
	// flush and the counter flush.
	reserve := min(5*time.Second, cfg.shutdownGrace/5)
	// Deltas a killed dispatcher held are lost; the repairer sets the
	// counters of the jobs this one works on or is watched for from the
	// ledger once they stall.
	// The register of open jobs outlives every process, so a job whose
	// dispatchers were all killed is still repaired by those started after.
	repairer := recount.New(store, book, recount.Options{
		Interval: cfg.repairInterval, After: cfg.repairAfter, Log: log,
		Open: openjobs.New(db, cfg.table, nil), KeepUnknown: policy == ledger.RetryWithKey,
	})
	// Flow control toward the destination: the breaker holds receiving
	// while it is down; the concurrency and rate limits pace the sends.
	paced := newFlow(cfg, db, log)
	handler := dispatch.New(sender, counts, book, store, dispatch.Options{
		JobCacheTTL: cfg.jobCacheTTL, ReceivingDelay: cfg.receivingDelay, Log: log, Seen: repairer.Note,
		SendTimeout: cfg.destTimeout, AlreadyApplied: cfg.alreadyApplied, MaxAttempts: cfg.maxAttempts, MaxAge: cfg.maxAge,
		BackoffBase: cfg.backoffBase, BackoffMax: cfg.backoffMax, RetryAfterMax: cfg.retryAfterMax,
		PausedDelay: cfg.pausedDelay,
		Pacer:       paced,
	})
	consumer := consume.New(queue, handler, consume.Options{
		QueueURL:          cfg.queueURL,
		Concurrency:       cfg.concurrency,
		Pollers:           cfg.pollers,
		WaitTime:          cfg.receiveWait,
		Drain:             cfg.shutdownGrace - 2*reserve,
		FlushTimeout:      reserve,
		VisibilityTimeout: cfg.visibilityTimeout,
		Heartbeat:         cfg.heartbeat,
		DeadLetterURL:     dlq,
		DispatcherID:      owner,
		Admit:             paced.Receive,
		ProbeEmpty:        paced.ReceivedNothing,
		Log:               log,
	})
	var deadLetters status.DeadLetters
	if dlq != "" {
		deadLetters = deadletter.NewScanner(queue, deadletter.Options{
			DeadLetterURL: dlq, QueueURL: cfg.queueURL, MaxScan: cfg.deadLetterScan, Hold: cfg.deadLetterHold, Log: log,
		})
	}

	lis, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.listen, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	srv := grpcserve.New(log)
	spoolv1.RegisterDispatchServiceServer(srv, status.New(store, status.Options{
		Interval: cfg.watchInterval,
		Shutdown: gctx.Done(),
		Log:      log,
		Ledger:   book,
		Counter:  counts,
		Requeue:  func(ctx context.Context, e *spoolv1.Envelope) error { return requeue(ctx, queue, cfg.queueURL, e) },
		Watched:  repairer.Note,

		DeadLetters:  deadLetters,
		Control:      store,
		DispatcherID: owner,
		Flow:         paced,
	}))

	// Counters are flushed one last time only after the consumer stopped,
	// so the final flush carries every delivery.
	tallyCtx, stopTally := context.WithCancel(context.WithoutCancel(ctx))
	defer stopTally()
	g.Go(func() error {
		defer stopTally()
		return consumer.Run(gctx)
	})
	g.Go(func() error {
		counts.Run(tallyCtx, cfg.counterFlush, reserve)
		return nil
	})
	g.Go(func() error { return srv.Run(gctx, lis, cfg.shutdownGrace) })
	g.Go(func() error {
		repairer.Run(gctx)
		return nil
	})

	pollers := cfg.pollers
	if pollers == 0 {
		pollers = consume.Pollers(cfg.concurrency)
	}
	// The destination URL and header values stay out of the log: either
	// may carry a credential.
	log.Info("dispatcher started", "listen", lis.Addr().String(), "queue_url", cfg.queueURL, "table", cfg.table,
		"concurrency", cfg.concurrency, "pollers", pollers, "destination_headers", cfg.headers.String(),
		"owner", owner, "unknown_policy", policy.String(), "claim_lease", cfg.lease(),
		"repair_interval", cfg.repairInterval, "repair_after", cfg.repairAfter,
		"dead_letter_queue_url", dlq, "max_attempts", cfg.maxAttempts, "visibility_timeout", cfg.visibilityTimeout,
		"concurrency_min", cfg.concurrencyMin, "rate_limit", cfg.rateLimit, "rate_key", rateKey(cfg),
		"breaker_failures", cfg.breakerFailures, "breaker_cooldown", cfg.breakerCooldown)
	// main reports an error; it is not logged here too.
	if err := g.Wait(); err != nil {
		return err
	}
	log.Info("dispatcher stopped")
	return nil
}

// deadLetterQueue finds the dead-letter queue the queue's redrive policy
// names, or returns "" (with a warning) when there is none: poison
// messages and exhausted retries are then left for the redrive policy, and
// dead letters cannot be listed or redriven.
func deadLetterQueue(ctx context.Context, q *sqs.Client, queueURL string, log *slog.Logger) string {
	out, err := q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       aws.String(queueURL),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameRedrivePolicy},
	})
	if err != nil {
		log.Warn("read queue redrive policy; no dead-letter queue", "error", err)
		return ""
	}
	name, err := deadLetterName(out.Attributes[string(sqstypes.QueueAttributeNameRedrivePolicy)])
	if err != nil {
		log.Warn("queue has no usable redrive policy; no dead-letter queue", "error", err)
		return ""
	}
	u, err := q.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
	if err != nil {
		log.Warn("look up dead-letter queue; none used", "name", name, "error", err)
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
	_, err = q.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: aws.String(body), MessageAttributes: attrs})
	if err != nil {
		return fmt.Errorf("requeue row %d of job %s: %w", e.GetRow(), e.GetJobId(), err)
	}
	return nil
}
