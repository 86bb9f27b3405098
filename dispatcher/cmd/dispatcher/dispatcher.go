package main

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/spoolhq/spool/dispatcher/dispatchmetrics"
	"github.com/spoolhq/spool/dispatcher/internal/audit"
	"github.com/spoolhq/spool/dispatcher/internal/consume"
	"github.com/spoolhq/spool/dispatcher/internal/deadletter"
	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/dispatcher/internal/dispatch"
	"github.com/spoolhq/spool/dispatcher/internal/dispatchrpc"
	"github.com/spoolhq/spool/dispatcher/internal/flow"
	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	"github.com/spoolhq/spool/dispatcher/internal/notify"
	"github.com/spoolhq/spool/dispatcher/internal/openjobs"
	"github.com/spoolhq/spool/dispatcher/internal/recount"
	"github.com/spoolhq/spool/dispatcher/internal/tally"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/grpcserve"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/metrics"
	"github.com/spoolhq/spool/platform/tracing"
)

// dispatcher is one dispatcher process, built from its configuration by
// newDispatcher: the receive loop and its delivery handler, the job
// counters, the counter repair, and the gRPC API.
type dispatcher struct {
	cfg config
	log *slog.Logger
	// owner names this process in ledger claims and dead letters: a
	// restarted dispatcher is a new owner, and its predecessor's claims
	// are taken over once their leases end.
	owner         string
	deadLetterURL string
	// legacyKeys is what -ledger-legacy-keys came to: auto resolved
	// against the table at start.
	legacyKeys bool

	consumer *consume.Consumer
	counts   *tally.Tally
	repairer *recount.Repairer
	// notifier sends job events; nil without a sink.
	notifier *notify.Notifier
	flow     *flow.Control
	srv      *grpcserve.Server
	metrics  *metrics.Registry
	// shutdown is closed when the dispatcher stops, ending every watch.
	shutdown chan struct{}
}

// newDispatcher builds a dispatcher on the table and the queue. It looks up
// the dead-letter queue when the configuration names none, and reads the
// table's layout when -ledger-legacy-keys is auto; it fails only when that
// read does.
func newDispatcher(ctx context.Context, cfg config, sec grpcserve.Security, db *dynamodb.Client, queue *sqs.Client, log *slog.Logger) (*dispatcher, error) {
	d := &dispatcher{cfg: cfg, log: log, owner: uuid.NewString(), deadLetterURL: cfg.deadLetterURL, shutdown: make(chan struct{})}
	legacy, err := legacyKeys(ctx, db, cfg.table, cfg.legacyKeys, log)
	if err != nil {
		return nil, err
	}
	d.legacyKeys = legacy
	if d.deadLetterURL == "" {
		d.deadLetterURL = deadLetterQueue(ctx, queue, cfg.queueURL, log)
	}
	// Job events are stored by the writes that make their transitions,
	// when a sink is configured; this process then sends those it stored
	// at once and sweeps for those others left.
	sinks := cfg.events.sinks(queue)
	storeOpts := []jobstore.Option{jobstore.WithRowsEvery(cfg.events.rowsEvery)}
	if len(sinks) > 0 {
		storeOpts = append(storeOpts, jobstore.WithEventHook(func(job, event string) { d.notifier.Kick(job, event) }))
	}
	store := jobstore.New(db, cfg.table, storeOpts...)
	if len(sinks) > 0 {
		d.notifier = notify.New(store, sinks, notify.Options{
			SweepEvery: cfg.events.sweep, SweepAfter: cfg.events.sweepAfter, RetryFor: cfg.events.retryFor, Log: log,
		})
	}
	// Flow control toward the destination: the breaker holds receiving
	// while it is down; the concurrency and rate limits pace the sends.
	d.flow = newFlow(cfg, db, log)
	// Metrics are taken from decorators around what the delivery path
	// uses, and from the flow control at each scrape; they are collected
	// whether or not a listener serves them.
	d.metrics = metrics.New()
	dm := dispatchmetrics.New(d.metrics, d.flow)
	d.flow.RateWaited = dm.RateWaited
	book := ledger.New(ledger.NewDynamo(db, cfg.table), ledger.Options{
		Owner: d.owner, Lease: cfg.claimLease, Policy: cfg.unknownPolicy, Retention: cfg.ledgerRetention,
		OutcomeRetry: cfg.outcomeRetry, Log: log,
	})
	// The owner id names this process's counter items too; jobs complete
	// on a count of the ledger.
	d.counts = tally.New(dm.Flushes(store), book, d.owner, log)
	// Deltas a killed dispatcher held are lost; the repairer sets the
	// counters of the jobs this one works on or is watched for from the
	// ledger once they stall. The register of open jobs outlives every
	// process, so a job whose dispatchers were all killed is still
	// repaired by those started after.
	open := openjobs.New(db, cfg.table, nil)
	d.repairer = recount.New(store, book, recount.Options{
		Interval: cfg.repairInterval, After: cfg.repairAfter, Log: log,
		Open: open, KeepUnknown: cfg.unknownPolicy == ledger.RetryWithKey,
		Retention: cfg.ledgerRetention,
	})
	sender := deliver.New(cfg.dest.options(deliver.Options{
		URL:               cfg.destinationURL,
		IdempotencyHeader: cfg.idempotencyHeader,
		Header:            cfg.headers.h,
		Timeout:           cfg.destTimeout,
		MaxConns:          cfg.concurrency,
		ReferenceFrom:     cfg.referenceFrom.from,
	}))
	handler := dispatch.New(dm.Sender(sender), dm.Counter(d.counts, log), dm.Ledger(book), store, dispatch.Options{
		JobCacheTTL: cfg.jobCacheTTL, ReceivingDelay: cfg.receivingDelay, Log: log, Seen: d.repairer.Note,
		SendTimeout: cfg.destTimeout, AlreadyApplied: cfg.alreadyApplied, MaxAttempts: cfg.maxAttempts, MaxAge: cfg.maxAge,
		BackoffBase: cfg.backoffBase, BackoffMax: cfg.backoffMax, RetryAfterMax: cfg.retryAfterMax,
		PausedDelay: cfg.pausedDelay,
		Pacer:       d.flow,
		Guard:       store,
		Namespace:   cfg.namespace(),
		LegacyKeys:  d.legacyKeys,
		Announce:    store,
	})
	d.consumer = consume.New(dm.Queue(queue), handler, consume.Options{
		QueueURL:          cfg.queueURL,
		Concurrency:       cfg.messagesHeld,
		Pollers:           cfg.pollers,
		WaitTime:          cfg.receiveWait,
		Drain:             cfg.shutdownGrace - 2*cfg.shutdownReserve(),
		FlushTimeout:      cfg.shutdownReserve(),
		VisibilityTimeout: cfg.visibilityTimeout,
		Heartbeat:         cfg.heartbeat,
		DeadLetterURL:     d.deadLetterURL,
		DispatcherID:      d.owner,
		Admit:             d.flow.Receive,
		ProbeEmpty:        d.flow.ReceivedNothing,
		Log:               log,
	})

	var deadLetters dispatchrpc.DeadLetters
	if d.deadLetterURL != "" {
		deadLetters = deadletter.NewScanner(queue, deadletter.Options{
			DeadLetterURL: d.deadLetterURL, QueueURL: cfg.queueURL, MaxScan: cfg.deadLetterScan, Hold: cfg.deadLetterHold, Log: log,
		})
	}
	// The audit trail and four-eyes requests live in the job table.
	trail := audit.New(db, cfg.table, nil)
	srvOpts := append(d.metrics.ServerOptions(), tracing.ServerOption())
	d.srv = grpcserve.New(log, sec, append(srvOpts, cfg.grpc.ServerOptions()...)...)
	spoolv1.RegisterDispatchServiceServer(d.srv, dispatchrpc.New(store, dispatchrpc.Options{
		Interval: cfg.watchInterval,
		Shutdown: d.shutdown,
		Log:      log,
		Ledger:   book,
		Counter:  d.counts,
		Requeue:  func(ctx context.Context, e *spoolv1.Envelope) error { return requeue(ctx, queue, cfg.queueURL, e) },
		Watched:  d.repairer.Note,

		DeadLetters:  deadLetters,
		MaxScanLimit: cfg.deadLetterScanMax,
		Control:      store,
		DispatcherID: d.owner,
		Flow:         d.flow,
		OpenJobs:     open,
		JobList:      store,
		Renderer:     sender,

		Audit:     trail,
		Approvals: trail,
		FourEyes:  dispatchrpc.FourEyes(cfg.fourEyes),
	}))
	d.metrics.InitializeRPC(d.srv.Server)
	return d, nil
}

// shutdownReserve is the part of the shutdown grace kept for each of the
// delete flush and the counter flush; the rest is for deliveries in
// flight, so that the whole shutdown fits in the grace.
func (c config) shutdownReserve() time.Duration {
	return min(5*time.Second, c.shutdownGrace/5)
}

// run serves on lis until ctx is done, then shuts down within the
// shutdown grace: polling stops, messages received but not yet started
// are released for other dispatchers (visibility 0), in-flight deliveries
// finish (or are cut off and left for redelivery), settled messages are
// deleted and counters written; it then returns nil.
func (d *dispatcher) run(ctx context.Context, lis, metricsLis net.Listener) error {
	g, gctx := errgroup.WithContext(ctx)
	stop := context.AfterFunc(gctx, func() { close(d.shutdown) })
	defer stop()
	// Counters are flushed one last time only after the consumer stopped,
	// so the final flush carries every delivery.
	tallyCtx, stopTally := context.WithCancel(context.WithoutCancel(ctx))
	defer stopTally()
	g.Go(func() error {
		defer stopTally()
		return d.consumer.Run(gctx)
	})
	g.Go(func() error {
		d.counts.Run(tallyCtx, d.cfg.counterFlush, d.cfg.shutdownReserve())
		return nil
	})
	g.Go(func() error { return d.srv.Run(gctx, lis, d.cfg.shutdownGrace) })
	if metricsLis != nil {
		// The page stays up until the end of the shutdown: a last scrape
		// may catch the final counts.
		g.Go(func() error { return d.metrics.Serve(gctx, metricsLis, d.cfg.shutdownReserve(), d.log) })
	}
	g.Go(func() error {
		d.repairer.Run(gctx)
		return nil
	})
	if d.notifier != nil {
		g.Go(func() error {
			d.notifier.Run(gctx)
			return nil
		})
	}

	cfg := d.cfg
	pollers := cfg.pollers
	if pollers == 0 {
		pollers = consume.Pollers(cfg.messagesHeld)
	}
	// Header values stay out of the log, and the destination URL's query
	// and password: any may carry a credential.
	metricsAddr := ""
	if metricsLis != nil {
		metricsAddr = metricsLis.Addr().String()
	}
	d.log.InfoContext(ctx, "dispatcher started", "listen", lis.Addr().String(), "metrics_listen", metricsAddr, "queue_url", cfg.queueURL, "table", cfg.table,
		"concurrency", cfg.concurrency, "messages_held", cfg.messagesHeld, "pollers", pollers,
		"destination", deliver.RedactURL(cfg.destinationURL), "destination_headers", (&headerList{h: cfg.dest.header(cfg.headers.h)}).String(),
		"destination_auth", cfg.dest.describe(), "destination_tls_min_version", cfg.dest.minTLS,
		"owner", d.owner, "unknown_policy", cfg.unknownPolicy.String(), "claim_lease", cfg.claimLease,
		"destination_timeout", cfg.destTimeout, "already_applied", cfg.alreadyApplied.String(),
		"repair_interval", cfg.repairInterval, "repair_after", cfg.repairAfter,
		"ledger_namespace", cfg.namespace().LedgerKey(""), "ledger_legacy_keys", d.legacyKeys, "ledger_legacy_keys_mode", cfg.legacyKeys.String(),
		"dead_letter_queue_url", d.deadLetterURL, "max_attempts", cfg.maxAttempts, "visibility_timeout", cfg.visibilityTimeout,
		"concurrency_min", cfg.concurrencyMin, "rate_limit", cfg.rateLimit, "rate_key", rateKey(cfg),
		"breaker_failures", cfg.breakerFailures, "breaker_cooldown", cfg.breakerCooldown,
		"events_webhook", cfg.events.webhookURL != "", "events_signed", cfg.events.signer != nil, "events_queue_url", cfg.events.queueURL)
	// main reports an error; it is not logged here too.
	if err := g.Wait(); err != nil {
		return err
	}
	d.log.InfoContext(ctx, "dispatcher stopped")
	return nil
}
