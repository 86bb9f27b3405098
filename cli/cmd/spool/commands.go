package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/spoolhq/spool/cli/internal/follow"
	"github.com/spoolhq/spool/cli/internal/progress"
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
	c := newCommand("send", "[flags] FILE.csv", "Send a CSV file (- or nothing: standard input) to the ingestor, resuming by itself when the stream breaks, then follow its delivery.")
	ingestor := c.fs.String("ingestor-addr", defaultIngestorAddr, "ingestor gRPC address (host:port)")
	dispatchers := c.fs.String("dispatcher-addrs", defaultDispatcherAddrs, "dispatcher gRPC addresses, comma-separated; the watch moves to the next when one is unavailable")
	jobKey := c.fs.String("job-key", "", "your identifier for the file, e.g. payroll-2026-11; default sha256:<hex of the file>")
	columns := c.fs.String("columns", "", "column names, comma-separated, when the file has no header row")
	delimiter := c.fs.String("delimiter", ",", "field delimiter, one character")
	chunkSize := c.fs.Int("chunk-size", upload.DefaultChunkSize, fmt.Sprintf("bytes per message sent (1 to %d)", upload.MaxChunkSize))
	noWatch := c.fs.Bool("no-watch", false, "exit once the file is sent, without following its delivery")
	rows := c.fs.Int64("rows", -1, "control total: the number of data rows the file must have (header excluded)")
	amountColumn := c.fs.String("amount-column", "", "column holding the amount, for the control sum and reports")
	amountSum := c.fs.String("amount-sum", "", "control total: the exact sum the amount column must have, e.g. 1234.50")
	businessKey := c.fs.String("business-key", "", "columns identifying a transaction across files, comma-separated")
	profile := c.fs.String("profile", "", "profile on the ingestor that checks the file and maps its rows (see spool profiles)")
	resumeFor := c.fs.Duration("resume-for", 2*time.Minute, "how long to keep resuming a broken stream")
	var guards guardFlags
	guards.register(c.fs)
	dryRun := c.fs.Bool("dry-run", false, "check and map the file on the ingestor without creating a job or publishing anything; print the totals and the requests of the first rows as a dispatcher would send them (configured headers redacted)")
	preview := c.fs.Int("preview", 3, "with -dry-run: how many rows' requests to print (0 to 20)")
	c.perCall = append([]string{"job-key", "columns", "rows", "amount-column", "amount-sum", "business-key", "profile", "dry-run", "preview"}, guardFlagNames...)
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
			JobKey:             *jobKey,
			Columns:            splitList(*columns),
			Csv:                &spoolv1.CsvOptions{Delimiter: *delimiter},
			AmountColumn:       *amountColumn,
			BusinessKeyColumns: splitList(*businessKey),
			Profile:            *profile,
		}
		if err := guards.apply(header); err != nil {
			return err
		}
		if *rows >= 0 || *amountSum != "" {
			header.Control = &spoolv1.ControlTotals{AmountSum: *amountSum}
			if *rows >= 0 {
				header.Control.RowCount = rows
			}
		}
		if *dryRun {
			if *preview < 0 || *preview > 20 {
				return usagef("send: -preview %d: want 0 to 20", *preview)
			}
			if *preview > 0 && err != nil {
				return err
			}
			return a.dryRun(ctx, *ingestor, addrs, path, header, *chunkSize, *preview)
		}
		start := a.now()
		resp, err := a.send(ctx, *ingestor, path, header, *chunkSize, *resumeFor)
		if err != nil {
			return err
		}
		if resp.GetExisting() {
			fmt.Fprintf(a.stdout, "already submitted as job %s (%s); nothing sent\n", resp.GetJobId(), progress.State(resp.GetJob().GetState()))
		} else {
			report.Answer(a.stdout, resp)
		}
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

// send streams the file at path ("-": stdin) to the ingestor. A regular
// file is hashed first, so the ingestor can check it arrived whole and
// the hash can key the job; then a broken stream is resumed for up to
// resumeFor. Standard input cannot be read twice, so it is not resumed.
func (a *app) send(ctx context.Context, addr, path string, header *spoolv1.FileHeader, chunkSize int, resumeFor time.Duration) (*spoolv1.StreamFileResponse, error) {
	cc, err := a.dial(addr)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	client := spoolv1.NewIngestServiceClient(cc)
	if path == "-" {
		header.FileName = "stdin"
		display := a.uploadDisplay(ctx, "stdin", 0)
		resp, err := upload.Send(ctx, client, header, a.stdin, chunkSize, display.Sent)
		display.Stop(err == nil)
		if err != nil {
			if upload.Resumable(ctx, err) {
				err = fmt.Errorf("%w\nstandard input cannot be resumed; send a file to have a broken stream resumed", err)
			}
			return nil, fmt.Errorf("send stdin to the ingestor at %s: %w%s", addr, err, hint(err, "ingestor", "SPOOL_INGESTOR_ADDR"))
		}
		return resp, nil
	}
	f, size, err := openToSend(path, header)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	name := header.GetFileName()
	key := header.GetJobKey()
	if key == "" {
		key = "sha256:" + header.GetControl().GetSha256()
	}
	display := a.uploadDisplay(ctx, name, size)
	resp, err := upload.SendResumable(ctx, client, header, f, chunkSize, display.Sent, upload.Resume{
		Jobs: client, Key: key, For: resumeFor,
		MinBackoff: a.resumeBackoff, MaxBackoff: 20 * a.resumeBackoff,
		OnBreak: func(afterRow int64, attempt int, cause error) {
			display.Note(fmt.Sprintf("stream broke after row %d; resuming (attempt %d): %v", afterRow, attempt, cause))
		},
	})
	display.Stop(err == nil)
	if err != nil {
		return nil, fmt.Errorf("send %s to the ingestor at %s: %w%s", name, addr, err, hint(err, "ingestor", "SPOOL_INGESTOR_ADDR"))
	}
	return resp, nil
}

// openToSend opens the file at path for StreamFile and names it in
// header: its base name, and its SHA-256 in the control totals, so that
// the ingestor checks the bytes it got against the file's. The file is
// read back from its start.
func openToSend(path string, header *spoolv1.FileHeader) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !info.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%s is not a regular file; pipe it to spool send - instead (without resuming)", path)
	}
	header.FileName = filepath.Base(path)
	digest, err := fileSHA256(f)
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("hash %s: %w", header.FileName, err)
	}
	if header.Control == nil {
		header.Control = &spoolv1.ControlTotals{}
	}
	header.Control.Sha256 = digest
	return f, info.Size(), nil
}

// fileSHA256 returns the hex SHA-256 of f's bytes, streamed, and leaves f
// at its start.
func fileSHA256(f io.ReadSeeker) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func (a *app) watchCommand() *command {
	c := newCommand("watch", "[flags] JOB_ID", "Follow a job's delivery until it ends, then summarise it.")
	dispatchers := c.fs.String("dispatcher-addrs", defaultDispatcherAddrs, "dispatcher gRPC addresses, comma-separated; the watch moves to the next when one is unavailable")
	c.run = func(ctx context.Context, args []string) error {
		jobID, addrs, err := argAndDispatchers("watch", "JOB_ID", args, *dispatchers)
		if err != nil {
			return err
		}
		return a.watch(ctx, addrs, jobID, a.now())
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
	c := newCommand("init", "-queue NAME -table NAME", "Create the queue (with its dead-letter queue) and the table, unless they exist, and print their settings as KEY=value lines. A table it creates gets its layout item (its ledger keys are namespaced from the start); one that existed is left without.")
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
		db := dynamodb.NewFromConfig(cfg)
		if err := provision.EnsureTable(ctx, db, *table); err != nil {
			return err
		}
		// Without time to live the ledger keeps every record: nothing is
		// lost or sent twice, the table only grows.
		if err := provision.EnsureExpiry(ctx, db, *table); err != nil {
			if !errors.Is(err, provision.ErrExpiryUnsupported) {
				return err
			}
			fmt.Fprintf(a.stderr, "warning: %v; settled ledger records will not expire\n", err)
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

// argAndDispatchers checks that the command cmd got its one argument,
// named what in its usage, and splits its -dispatcher-addrs.
func argAndDispatchers(cmd, what string, args []string, dispatchers string) (arg string, addrs []string, err error) {
	if len(args) != 1 {
		return "", nil, usagef("%s: want one %s", cmd, what)
	}
	addrs, err = splitAddrs(dispatchers)
	if err != nil {
		return "", nil, err
	}
	return args[0], addrs, nil
}

// hint adds a next step to an unreachable service's error.
func hint(err error, service, env string) string {
	// A failed TLS handshake is Unavailable too, and rpcerr already said
	// what to change.
	if st := status.Convert(err); st.Code() != codes.Unavailable || rpcerr.Advice(st) != "" {
		return ""
	}
	return fmt.Sprintf("\nis the %s running? set its address with %s or the flag (after 'make up', .spool/stack.env has it)", service, env)
}

func (a *app) reportCommand() *command {
	c := newCommand("report", "[flags] JOB_ID", "Print a job's reconciliation report from the delivery ledger: UNKNOWN rows first, then every row by state, then per-state totals with amount sums.")
	asJSON := c.fs.Bool("json", false, "print JSON lines: {\"entry\": ...} per row, then {\"summary\": ...}")
	a.runOnDispatchers(c, func(ctx context.Context, client spoolv1.DispatchServiceClient, jobID string) (bool, error) {
		stream, err := client.ReportJob(ctx, &spoolv1.ReportJobRequest{JobId: jobID})
		if err != nil {
			return false, err
		}
		out := report.NewLedger(a.stdout, *asJSON)
		wrote := false
		for {
			msg, err := stream.Recv()
			if err != nil {
				// A dispatcher that fails before the first line may be
				// replaced by the next; after it, the report is cut.
				return wrote, fmt.Errorf("report job %s: %w", jobID, rpcerr.Readable(err))
			}
			wrote = true
			if e := msg.GetEntry(); e != nil {
				if err := out.Entry(e); err != nil {
					return true, err
				}
				continue
			}
			return true, out.Summary(msg.GetSummary())
		}
	})
	return c
}

func (a *app) resolveCommand() *command {
	c := newCommand("resolve", "[flags] JOB_ID ROW --delivered|--resend", "Settle an UNKNOWN row after checking the third party: it has the transaction (--delivered), or it must be sent again with the same idempotency key (--resend). Under four-eyes this records a request that another person approves (spool approve).")
	dispatchers := dispatcherAddrsFlag(c.fs)
	delivered := c.fs.Bool("delivered", false, "the third party has the transaction: record it DELIVERED")
	resend := c.fs.Bool("resend", false, "the third party does not have it: send it again")
	reason := c.fs.String("reason", "", "what you found at the third party, for the audit trail")
	c.perCall = []string{"delivered", "resend", "reason"}
	c.run = func(ctx context.Context, args []string) error {
		if len(args) != 2 {
			return usagef("resolve: want JOB_ID ROW")
		}
		row, err := strconv.ParseInt(args[1], 10, 64)
		if err != nil || row < 1 {
			return usagef("resolve: ROW %q: want a row number from 1", args[1])
		}
		if *delivered == *resend {
			return usagef("resolve: give exactly one of --delivered and --resend")
		}
		res := spoolv1.Resolution_RESOLUTION_DELIVERED
		if *resend {
			res = spoolv1.Resolution_RESOLUTION_RESEND
		}
		return a.onDispatcherAddrs(*dispatchers, func(client spoolv1.DispatchServiceClient) (bool, error) {
			ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
			defer cancel()
			resp, err := client.ResolveTransaction(ctx, &spoolv1.ResolveTransactionRequest{JobId: args[0], Row: row, Resolution: res, Reason: *reason})
			if err != nil {
				return false, fmt.Errorf("resolve row %d of job %s: %w", row, args[0], rpcerr.Readable(err))
			}
			if p := resp.GetPendingApproval(); p != nil {
				return true, a.pendingApproval(p)
			}
			e := resp.GetEntry()
			_, err = fmt.Fprintf(a.stdout, "row %d of job %s is now %s\n", e.GetRow(), e.GetJobId(), report.TxState(e.GetState()))
			return true, err
		})
	}
	return c
}

// runOnDispatchers makes c take one JOB_ID and a -dispatcher-addrs flag,
// and run call on those dispatchers as onDispatcher does: any of them
// serves, since the job record and the ledger are shared.
func (a *app) runOnDispatchers(c *command, call func(ctx context.Context, client spoolv1.DispatchServiceClient, jobID string) (done bool, err error)) {
	dispatchers := dispatcherAddrsFlag(c.fs)
	c.run = func(ctx context.Context, args []string) error {
		jobID, addrs, err := argAndDispatchers(c.name, "JOB_ID", args, *dispatchers)
		if err != nil {
			return err
		}
		return a.onDispatcher(addrs, func(client spoolv1.DispatchServiceClient) (bool, error) {
			return call(ctx, client, jobID)
		})
	}
}

// dispatcherAddrsFlag adds -dispatcher-addrs to fs, for a command that
// needs any one dispatcher to answer.
func dispatcherAddrsFlag(fs *flag.FlagSet) *string {
	return fs.String("dispatcher-addrs", defaultDispatcherAddrs, "dispatcher gRPC addresses, comma-separated; the next is tried when one is unavailable")
}

// onDispatcherAddrs runs call as onDispatcher does, on the dispatchers a
// -dispatcher-addrs value names.
func (a *app) onDispatcherAddrs(dispatchers string, call func(spoolv1.DispatchServiceClient) (done bool, err error)) error {
	addrs, err := splitAddrs(dispatchers)
	if err != nil {
		return err
	}
	return a.onDispatcher(addrs, call)
}

// onDispatcher runs call on each dispatcher in turn until one answers:
// call returns done when it got an answer (or wrote output), and the
// next dispatcher is tried only when this one was unavailable.
func (a *app) onDispatcher(addrs []string, call func(spoolv1.DispatchServiceClient) (done bool, err error)) error {
	var err error
	for _, addr := range addrs {
		cc, derr := a.dial(addr)
		if derr != nil {
			return derr
		}
		var done bool
		done, err = call(spoolv1.NewDispatchServiceClient(cc))
		cc.Close()
		if done || status.Code(err) != codes.Unavailable {
			return err
		}
	}
	return fmt.Errorf("%w%s", err, hint(err, "dispatcher", "SPOOL_DISPATCHER_ADDRS"))
}
