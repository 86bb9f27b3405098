package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"golang.org/x/sync/errgroup"

	"github.com/spoolhq/spool/dispatcher/internal/consume"
	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/dispatcher/internal/dispatch"
	"github.com/spoolhq/spool/dispatcher/internal/status"
	"github.com/spoolhq/spool/dispatcher/internal/tally"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/awsconf"
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
	store := jobstore.New(dynamodb.NewFromConfig(awsCfg), cfg.table)
	counts := tally.New(store, log)
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
	consumer := consume.New(sqs.NewFromConfig(awsCfg), dispatch.New(sender, counts, log), consume.Options{
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

	pollers := cfg.pollers
	if pollers == 0 {
		pollers = consume.Pollers(cfg.concurrency)
	}
	// The destination URL and header values stay out of the log: either
	// may carry a credential.
	log.Info("dispatcher started", "listen", lis.Addr().String(), "queue_url", cfg.queueURL, "table", cfg.table,
		"concurrency", cfg.concurrency, "pollers", pollers, "destination_headers", cfg.headers.String())
	// main reports an error; it is not logged here too.
	if err := g.Wait(); err != nil {
		return err
	}
	log.Info("dispatcher stopped")
	return nil
}
