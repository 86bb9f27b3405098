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
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/ingestor/ingestmetrics"
	"github.com/spoolhq/spool/ingestor/internal/csvread"
	"github.com/spoolhq/spool/ingestor/internal/ingest"
	"github.com/spoolhq/spool/ingestor/internal/profile"
	"github.com/spoolhq/spool/ingestor/internal/publish"
	"github.com/spoolhq/spool/platform/awsconf"
	"github.com/spoolhq/spool/platform/envcfg"
	"github.com/spoolhq/spool/platform/envelope"
	"github.com/spoolhq/spool/platform/grpcserve"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/metrics"
	"github.com/spoolhq/spool/platform/tracing"
)

// config is everything the flags set.
type config struct {
	listen             string
	security           grpcserve.SecurityFlags
	metricsListen      string
	queueURL           string
	table              string
	publishConcurrency int
	publishBuffer      int
	maxMessageBytes    int
	limits             csvread.Limits
	profiles           string
	maxRecvMsgBytes    int
	maxErrors          int
	progressInterval   time.Duration
	abortAfter         time.Duration
	jobEvents          bool
	shutdownGrace      time.Duration
	awsTimeout         time.Duration
	maxDeliverAfter    time.Duration
	logLevel           slog.Level
	grpc               grpcserve.Limits
	maxStreams         int
	idleTimeout        time.Duration
	tenant             string
	envelopeVersion    string
	envelope           spoolv1.EnvelopeVersion
}

// parseConfig reads flags, then the environment (lookup), and checks the
// result.
func parseConfig(args []string, stderr io.Writer, lookup func(string) (string, bool)) (config, error) {
	c := config{grpc: grpcserve.DefaultLimits()}
	fs := flag.NewFlagSet("ingestor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.listen, "listen", ":50051", "gRPC listen address")
	c.security.Register(fs)
	fs.StringVar(&c.metricsListen, "metrics-listen", "", "address of the Prometheus metrics page (/metrics); off when empty")
	fs.StringVar(&c.queueURL, "queue-url", "", "URL of the SQS queue rows are published to (required)")
	fs.StringVar(&c.table, "table", "", "DynamoDB table of job records (required)")
	fs.IntVar(&c.publishConcurrency, "publish-concurrency", publish.DefaultConcurrency, "SendMessageBatch calls in flight per stream")
	fs.IntVar(&c.publishBuffer, "publish-buffer", publish.DefaultBuffer, "rows waiting to be sent per stream before the stream is slowed down")
	fs.IntVar(&c.maxMessageBytes, "max-message-bytes", 0, "maximum SQS message size; 0 reads the queue's MaximumMessageSize")
	fs.Int64Var(&c.limits.MaxFieldBytes, "max-field-bytes", csvread.DefaultMaxFieldBytes, "maximum bytes of one field; an unterminated quote is cut off here")
	fs.Int64Var(&c.limits.MaxRecordBytes, "max-record-bytes", csvread.DefaultMaxRecordBytes, "maximum bytes of one CSV record")
	fs.Int64Var(&c.limits.MaxHeaderBytes, "max-header-bytes", csvread.DefaultMaxHeaderBytes, "maximum bytes of the header row")
	fs.IntVar(&c.limits.MaxColumns, "max-columns", csvread.DefaultMaxColumns, "maximum fields of one record")
	fs.Int64Var(&c.limits.MaxRows, "max-rows", csvread.DefaultMaxRows, "maximum data rows of one file")
	fs.IntVar(&c.maxRecvMsgBytes, "max-recv-msg-bytes", 4<<20, "maximum size of one gRPC message received")
	fs.StringVar(&c.profiles, "profiles", "", "YAML or JSON `file` of the profiles streams may name; none when empty")
	fs.IntVar(&c.maxErrors, "max-errors", 100, "row errors returned in a StreamFile response (the count is never capped)")
	fs.DurationVar(&c.progressInterval, "progress-interval", time.Second, "how often a stream's counters are written to the job record")
	fs.DurationVar(&c.abortAfter, "abort-after", jobstore.DefaultAbortAfter, "how long a broken stream's job waits to be resumed before it is ABORTED")
	fs.BoolVar(&c.jobEvents, "job-events", false, "keep the job events of the ingestor's transitions (rejected, aborted) for the dispatchers to send; on when the dispatchers have an events sink")
	fs.DurationVar(&c.shutdownGrace, "shutdown-grace", 25*time.Second, "time streams get to finish on shutdown")
	fs.DurationVar(&c.awsTimeout, "aws-timeout", 10*time.Second, "deadline of one AWS call (SendMessageBatch, a job-table read or write), the SDK's retries included")
	fs.DurationVar(&c.maxDeliverAfter, "max-deliver-after", ingest.DefaultMaxDeliverAfter, "how far ahead a stream's deliver_after may be; keep it below the queue's message retention, or the messages expire while they wait")
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "log `level`: debug, info, warn or error")
	fs.IntVar(&c.maxStreams, "max-streams-per-principal", ingest.DefaultMaxStreamsPerPrincipal, "StreamFile calls one caller may have open at once (calls without an identity share one count); 0 = no limit")
	fs.DurationVar(&c.idleTimeout, "stream-idle-timeout", ingest.DefaultIdleTimeout, "how long a StreamFile call may send nothing before it is ended and its job handled as after a broken stream; 0 = no limit")
	fs.StringVar(&c.envelopeVersion, "envelope-version", "v2", "version of the envelopes rows are published in: v2 (values without their names), or v1 while some dispatchers of the fleet cannot read v2 (deploy those first)")
	fs.StringVar(&c.tenant, "tenant", "", "name of this fleet when fleets share one table: its job keys are its own (set the same on its dispatchers); empty = none")
	c.grpc.RegisterFlags(fs)
	if err := envcfg.Parse(fs, args, lookup); err != nil {
		return c, err
	}
	missing := []error{c.grpc.Validate(), c.security.Check()}
	if c.tenant != "" {
		if err := envelope.CheckName(c.tenant); err != nil {
			missing = append(missing, fmt.Errorf("-tenant: %w", err))
		}
	}
	var err error
	if c.envelope, err = envelope.ParseVersion(c.envelopeVersion); err != nil {
		missing = append(missing, fmt.Errorf("-envelope-version: %w", err))
	}
	if c.maxStreams < 0 || c.idleTimeout < 0 {
		missing = append(missing, errors.New("-max-streams-per-principal and -stream-idle-timeout must not be negative"))
	}
	if c.queueURL == "" {
		missing = append(missing, errors.New("-queue-url (or $SPOOL_QUEUE_URL) is required"))
	}
	if c.table == "" {
		missing = append(missing, errors.New("-table (or $SPOOL_TABLE) is required"))
	}
	for _, p := range []struct {
		name string
		v    int64
	}{
		{"publish-concurrency", int64(c.publishConcurrency)},
		{"publish-buffer", int64(c.publishBuffer)},
		{"max-field-bytes", c.limits.MaxFieldBytes},
		{"max-record-bytes", c.limits.MaxRecordBytes},
		{"max-header-bytes", c.limits.MaxHeaderBytes},
		{"max-columns", int64(c.limits.MaxColumns)},
		{"max-rows", c.limits.MaxRows},
		{"max-recv-msg-bytes", int64(c.maxRecvMsgBytes)},
		{"progress-interval", int64(c.progressInterval)},
		{"abort-after", int64(c.abortAfter)},
		{"aws-timeout", int64(c.awsTimeout)},
		{"max-deliver-after", int64(c.maxDeliverAfter)},
	} {
		if p.v <= 0 {
			missing = append(missing, fmt.Errorf("-%s must be positive", p.name))
		}
	}
	if c.maxMessageBytes < 0 || c.maxErrors < 0 {
		missing = append(missing, errors.New("-max-message-bytes and -max-errors must not be negative"))
	}
	if c.abortAfter > 0 && c.abortAfter <= 2*c.progressInterval {
		// The lease is renewed by progress writes; it must outlast a few.
		missing = append(missing, errors.New("-abort-after must be more than twice -progress-interval"))
	}
	return c, errors.Join(missing...)
}

// run serves until ctx is done. stdout is unused: the service writes only
// logs, to stderr.
func run(ctx context.Context, args []string, _, stderr io.Writer) error {
	c, err := parseConfig(args, stderr, nil)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log, flushTraces, err := tracing.StartService(ctx, "spool-ingestor", stderr, c.logLevel)
	if err != nil {
		return err
	}
	defer flushTraces()

	var profiles *profile.Set
	if c.profiles != "" {
		if profiles, err = profile.Load(c.profiles); err != nil {
			return err
		}
	}
	awsCfg, err := awsconf.Load(ctx, log)
	if err != nil {
		return err
	}
	q := sqs.NewFromConfig(awsCfg)
	if c.maxMessageBytes == 0 {
		qctx, cancel := context.WithTimeout(ctx, c.awsTimeout)
		c.maxMessageBytes, err = queueMaxMessageBytes(qctx, q, c.queueURL)
		cancel()
		if err != nil {
			return err
		}
	}
	storeOpts := []jobstore.Option{jobstore.WithAbortAfter(c.abortAfter), jobstore.WithTenant(c.tenant)}
	if c.jobEvents {
		storeOpts = append(storeOpts, jobstore.WithEvents())
	}
	jobs := jobstore.New(dynamodb.NewFromConfig(awsCfg), c.table, storeOpts...)
	// Handlers are waited for even when the grace period runs out, so a
	// stream cut off by shutdown still records its checkpoint (or ends its
	// job) before the process exits.
	reg := metrics.New()
	im := ingestmetrics.New(reg)
	batches := im.Batches(q)
	opts := append(reg.ServerOptions(), tracing.ServerOption(), grpc.MaxRecvMsgSize(c.maxRecvMsgBytes), grpc.WaitForHandlers(true))
	opts = append(opts, c.grpc.ServerOptions()...)
	sec, err := c.security.Load(ctx, log, ingest.Rules)
	if err != nil {
		return err
	}
	srv := grpcserve.New(log, sec, opts...)
	spoolv1.RegisterIngestServiceServer(srv, im.Streams(ingest.New(jobs, ingest.Config{
		NewPublisher: func() (ingest.Publisher, error) {
			return publish.New(batches, publish.Options{
				QueueURL:        c.queueURL,
				MaxMessageBytes: c.maxMessageBytes,
				Concurrency:     c.publishConcurrency,
				Buffer:          c.publishBuffer,
				CallTimeout:     c.awsTimeout,
				Log:             log,
				Waited:          im.Waited,
			})
		},
		MaxErrors:        c.maxErrors,
		ProgressInterval: c.progressInterval,
		AbortAfter:       c.abortAfter,
		StoreTimeout:     c.awsTimeout,
		CSV:              csvread.Options{Limits: c.limits},
		MaxMessageBytes:  c.maxMessageBytes,
		Profiles:         profiles,
		Log:              log,
		RowRejected:      im.RowRejected,
		MaxDeliverAfter:  c.maxDeliverAfter,
		MaxStreams:       c.maxStreams,
		IdleTimeout:      c.idleTimeout,
		EnvelopeVersion:  c.envelope,
	})))
	reg.InitializeRPC(srv.Server)

	lis, err := net.Listen("tcp", c.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.listen, err)
	}
	metricsLis, err := metrics.Listen(c.metricsListen)
	if err != nil {
		_ = lis.Close()
		return err
	}
	metricsAddr := ""
	if metricsLis != nil {
		metricsAddr = metricsLis.Addr().String()
	}
	log.InfoContext(ctx, "serving", "addr", lis.Addr().String(), "metrics_addr", metricsAddr, "queue_url", c.queueURL, "table", c.table,
		"max_message_bytes", c.maxMessageBytes, "profiles", len(profiles.List()), "publish_concurrency", c.publishConcurrency, "publish_buffer", c.publishBuffer)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(gctx, lis, c.shutdownGrace) })
	if metricsLis != nil {
		// Both listeners end with ctx; either failing ends the other.
		g.Go(func() error { return reg.Serve(gctx, metricsLis, 5*time.Second, log) })
	}
	err = g.Wait()
	log.InfoContext(ctx, "stopped")
	return err
}

// attributesAPI is the part of the SQS client startup uses.
type attributesAPI interface {
	GetQueueAttributes(ctx context.Context, in *sqs.GetQueueAttributesInput, opts ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
}

// queueMaxMessageBytes reads the queue's maximum message size once, at
// startup, so that the limit follows the queue's configuration and a
// missing queue is found before the first stream.
func queueMaxMessageBytes(ctx context.Context, q attributesAPI, url string) (int, error) {
	out, err := q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       aws.String(url),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameMaximumMessageSize},
	})
	if err != nil {
		return 0, fmt.Errorf("read attributes of queue %s: %w", url, err)
	}
	v := out.Attributes[string(sqstypes.QueueAttributeNameMaximumMessageSize)]
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("queue %s: unusable MaximumMessageSize %q; set -max-message-bytes", url, v)
	}
	return n, nil
}
