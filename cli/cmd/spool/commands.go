package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/spoolhq/spool/cli/internal/follow"
	"github.com/spoolhq/spool/cli/internal/report"
	"github.com/spoolhq/spool/cli/internal/rpcerr"
	"github.com/spoolhq/spool/cli/internal/upload"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/provision"
)

// Defaults match the services' default listen ports.
const (
	defaultIngestorAddr    = "127.0.0.1:50051"
	defaultDispatcherAddrs = "127.0.0.1:50052"
)

// rpcTimeout bounds the unary calls; streams are bounded by the job.
const rpcTimeout = 30 * time.Second

func (a *app) sendCommand() *command {
	c := newCommand("send", "[flags] FILE.csv", "Send a CSV file (- or nothing: standard input) to the ingestor, then follow its delivery.")
	ingestor := c.fs.String("ingestor-addr", defaultIngestorAddr, "ingestor gRPC address (host:port)")
	dispatchers := c.fs.String("dispatcher-addrs", defaultDispatcherAddrs, "dispatcher gRPC addresses, comma-separated; the watch moves to the next when one is unavailable")
	jobKey := c.fs.String("job-key", "", "your identifier for the file, e.g. payroll-2026-11")
	columns := c.fs.String("columns", "", "column names, comma-separated, when the file has no header row")
	delimiter := c.fs.String("delimiter", ",", "field delimiter, one character")
	chunkSize := c.fs.Int("chunk-size", upload.DefaultChunkSize, fmt.Sprintf("bytes per message sent (1 to %d)", upload.MaxChunkSize))
	noWatch := c.fs.Bool("no-watch", false, "exit once the file is sent, without following its delivery")
	c.run = func(ctx context.Context, args []string) error {
		if len(args) > 1 {
			return usagef("send: one file at a time, got %d", len(args))
		}
		if utf8.RuneCountInString(*delimiter) != 1 {
			return usagef("send: -delimiter %q: want one character", *delimiter)
		}
		if *chunkSize < 1 || *chunkSize > upload.MaxChunkSize {
			return usagef("send: -chunk-size %d: want 1 to %d", *chunkSize, upload.MaxChunkSize)
		}
		addrs, err := splitAddrs(*dispatchers)
		if err != nil && !*noWatch {
			return err
		}
		path := "-"
		if len(args) == 1 {
			path = args[0]
		}
		header := &spoolv1.FileHeader{
			JobKey:  *jobKey,
			Columns: splitList(*columns),
			Csv:     &spoolv1.CsvOptions{Delimiter: *delimiter},
		}
		start := a.now()
		resp, err := a.send(ctx, *ingestor, path, header, *chunkSize)
		if err != nil {
			return err
		}
		report.Answer(a.stdout, resp)
		if st := resp.GetJob().GetState(); st == spoolv1.JobState_JOB_STATE_REJECTED || st == spoolv1.JobState_JOB_STATE_ABORTED {
			return report.Outcome(resp.GetJob())
		}
		if *noWatch {
			fmt.Fprintf(a.stdout, "follow it with: spool watch %s\n", resp.GetJobId())
			return nil
		}
		return a.watch(ctx, addrs, resp.GetJobId(), start)
	}
	return c
}

// send streams the file at path ("-": stdin) to the ingestor.
func (a *app) send(ctx context.Context, addr, path string, header *spoolv1.FileHeader, chunkSize int) (*spoolv1.StreamFileResponse, error) {
	in, name, size := a.stdin, "stdin", int64(0)
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if info, err := f.Stat(); err == nil && info.Mode().IsRegular() {
			size = info.Size()
		}
		in, name = f, filepath.Base(path)
	}
	header.FileName = name
	cc, err := a.dial(addr)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	display := a.uploadDisplay(ctx, name, size)
	resp, err := upload.Send(ctx, spoolv1.NewIngestServiceClient(cc), header, in, chunkSize, display.Sent)
	display.Stop(err == nil)
	if err != nil {
		return nil, fmt.Errorf("send %s to the ingestor at %s: %w%s", name, addr, err, hint(err, "ingestor", "SPOOL_INGESTOR_ADDR"))
	}
	return resp, nil
}

func (a *app) watchCommand() *command {
	c := newCommand("watch", "[flags] JOB_ID", "Follow a job's delivery until it ends, then summarise it.")
	dispatchers := c.fs.String("dispatcher-addrs", defaultDispatcherAddrs, "dispatcher gRPC addresses, comma-separated; the watch moves to the next when one is unavailable")
	c.run = func(ctx context.Context, args []string) error {
		if len(args) != 1 {
			return usagef("watch: want one JOB_ID")
		}
		addrs, err := splitAddrs(*dispatchers)
		if err != nil {
			return err
		}
		return a.watch(ctx, addrs, args[0], a.now())
	}
	return c
}

// watch follows jobID on the dispatchers at addrs, shows its progress on
// stderr, and prints the summary on stdout. It returns nil only when the
// job completed with no failed row.
func (a *app) watch(ctx context.Context, addrs []string, jobID string, start time.Time) error {
	f := &follow.Follower{Rounds: follow.DefaultRounds, Backoff: a.watchBackoff}
	for _, addr := range addrs {
		cc, err := a.dial(addr)
		if err != nil {
			return err
		}
		defer cc.Close()
		f.Targets = append(f.Targets, follow.Target{Addr: addr, Client: spoolv1.NewDispatchServiceClient(cc)})
	}
	display := a.jobDisplay(ctx, jobID)
	f.OnSwitch = func(from, to string, err error) {
		display.Note(fmt.Sprintf("dispatcher %s: %v; watching on %s", from, err, to))
	}
	final, err := f.Follow(ctx, jobID, display.Update)
	display.Stop(err == nil && final.GetJob().GetState() == spoolv1.JobState_JOB_STATE_COMPLETED)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("stopped watching; job %s goes on (spool watch %s)", jobID, jobID)
		}
		return fmt.Errorf("%w%s", err, hint(err, "dispatcher", "SPOOL_DISPATCHER_ADDRS"))
	}
	job := final.GetJob()
	report.Summary(a.stdout, job, report.Wall(job, a.now(), a.now().Sub(start)))
	return report.Outcome(job)
}

func (a *app) statusCommand() *command {
	c := newCommand("status", "[flags] JOB_ID", "Show a job's record, as the ingestor has it.")
	ingestor := c.fs.String("ingestor-addr", defaultIngestorAddr, "ingestor gRPC address (host:port)")
	asJSON := c.fs.Bool("json", false, "print the job as protobuf JSON")
	c.run = func(ctx context.Context, args []string) error {
		if len(args) != 1 {
			return usagef("status: want one JOB_ID")
		}
		cc, err := a.dial(*ingestor)
		if err != nil {
			return err
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		defer cancel()
		resp, err := spoolv1.NewIngestServiceClient(cc).GetJob(ctx, &spoolv1.GetJobRequest{JobId: args[0]})
		if err != nil {
			return fmt.Errorf("get job %s from %s: %w%s", args[0], *ingestor, rpcerr.Readable(err), hint(err, "ingestor", "SPOOL_INGESTOR_ADDR"))
		}
		if *asJSON {
			b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(resp.GetJob())
			if err != nil {
				return fmt.Errorf("encode job %s: %w", args[0], err)
			}
			_, err = fmt.Fprintln(a.stdout, string(b))
			return err
		}
		return report.Job(a.stdout, resp.GetJob())
	}
	return c
}

func (a *app) initCommand() *command {
	c := newCommand("init", "-queue NAME -table NAME", "Create the queue (with its dead-letter queue) and the table, unless they exist, and print their settings as KEY=value lines.")
	queue := c.fs.String("queue", "", "queue name; its dead-letter queue is NAME-dlq")
	table := c.fs.String("table", "", "job table name")
	c.run = func(ctx context.Context, args []string) error {
		if len(args) > 0 {
			return usagef("init: unexpected arguments %q", args)
		}
		if *queue == "" || *table == "" {
			return usagef("init: -queue and -table are required")
		}
		cfg, err := a.awsConfig(ctx)
		if err != nil {
			return err
		}
		q, err := provision.EnsureQueue(ctx, sqs.NewFromConfig(cfg), *queue, provision.DefaultQueueOptions)
		if err != nil {
			return err
		}
		if err := provision.EnsureTable(ctx, dynamodb.NewFromConfig(cfg), *table); err != nil {
			return err
		}
		// Only KEY=value lines on stdout, so scripts can append them to
		// an env file.
		_, err = fmt.Fprintf(a.stdout, "SPOOL_QUEUE_URL=%s\nSPOOL_DLQ_URL=%s\nSPOOL_TABLE=%s\n", q.URL, q.DLQURL, *table)
		return err
	}
	return c
}

// splitList splits a comma-separated list, trimming blanks and dropping
// empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func splitAddrs(s string) ([]string, error) {
	addrs := splitList(s)
	if len(addrs) == 0 {
		return nil, usagef("no dispatcher address: set -dispatcher-addrs or SPOOL_DISPATCHER_ADDRS")
	}
	return addrs, nil
}

// hint adds a next step to an unreachable service's error.
func hint(err error, service, env string) string {
	if status.Code(err) != codes.Unavailable {
		return ""
	}
	return fmt.Sprintf("\nis the %s running? set its address with %s or the flag (after 'make up', .spool/stack.env has it)", service, env)
}
