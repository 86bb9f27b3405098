package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/spoolhq/spool/dispatcher/internal/consume"
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
// polling stops, in-flight deliveries finish (or are cut off and left for
// redelivery), settled messages are deleted and counters written.
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
	warnShortVisibility(ctx, queue, cfg, log)
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
	handler := dispatch.New(sender, counts, book, store, dispatch.Options{
		JobCacheTTL: cfg.jobCacheTTL, ReceivingDelay: cfg.receivingDelay, Log: log, Seen: repairer.Note,
	})
	consumer := consume.New(queue, handler, consume.Options{
		QueueURL:     cfg.queueURL,
		Concurrency:  cfg.concurrency,
		Pollers:      cfg.pollers,
		WaitTime:     cfg.receiveWait,
		Drain:        cfg.shutdownGrace - 2*reserve,
		FlushTimeout: reserve,
		Log:          log,
	})

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
		"repair_interval", cfg.repairInterval, "repair_after", cfg.repairAfter)
	// main reports an error; it is not logged here too.
	if err := g.Wait(); err != nil {
		return err
	}
	log.Info("dispatcher stopped")
	return nil
}

// warnShortVisibility warns when a message may become visible again while
// its delivery is still owned: the redelivery then finds a live claim and
// waits another visibility timeout. Until heartbeats extend visibility
// (#4), the queue's timeout should exceed the claim lease.
func warnShortVisibility(ctx context.Context, q *sqs.Client, cfg config, log *slog.Logger) {
	out, err := q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       aws.String(cfg.queueURL),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameVisibilityTimeout},
	})
	if err != nil {
		log.Warn("read queue visibility timeout", "error", err)
		return
	}
	secs, err := strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameVisibilityTimeout)])
	if err == nil && time.Duration(secs)*time.Second < cfg.lease() {
		log.Warn("queue visibility timeout is shorter than the claim lease",
			"visibility_timeout", time.Duration(secs)*time.Second, "claim_lease", cfg.lease())
	}
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
