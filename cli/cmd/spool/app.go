package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"golang.org/x/term"
	"google.golang.org/grpc"

	"github.com/spoolhq/spool/cli/internal/follow"
	"github.com/spoolhq/spool/cli/internal/progress"
	"github.com/spoolhq/spool/cli/internal/stackenv"
	"github.com/spoolhq/spool/cli/internal/top"
	"github.com/spoolhq/spool/platform/awsconf"
	"github.com/spoolhq/spool/platform/clientauth"
	"github.com/spoolhq/spool/platform/envcfg"
	"github.com/spoolhq/spool/platform/tracing"
)

// app holds everything a command touches outside itself, so tests can
// replace the environment, the network and the clock.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	lookup         func(string) (string, bool)
	setenv         func(key, value string) error
	// dialOpts are the options every gRPC client is made with, after the
	// credentials the environment names (platform/clientauth).
	dialOpts []grpc.DialOption
	// tty is whether stderr is a terminal, where progress is animated.
	tty bool
	now func() time.Time
	// progressEvery is how often a plain progress line is printed.
	progressEvery time.Duration
	// watchBackoff is the pause after every dispatcher failed in a row.
	watchBackoff time.Duration
	// resumeBackoff is the first pause before resuming a broken upload.
	resumeBackoff time.Duration
	awsConfig     func(context.Context) (aws.Config, error)
	// stdoutSize is the size of the terminal stdout is, for spool top.
	stdoutSize top.Size
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *app {
	tty := false
	if f, ok := stderr.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return &app{
		stdin:         stdin,
		stdout:        stdout,
		stderr:        stderr,
		lookup:        os.LookupEnv,
		setenv:        os.Setenv,
		dialOpts:      []grpc.DialOption{tracing.DialOption()},
		tty:           tty,
		now:           time.Now,
		progressEvery: 5 * time.Second,
		watchBackoff:  follow.DefaultBackoff,
		resumeBackoff: 500 * time.Millisecond,
		awsConfig: func(ctx context.Context) (aws.Config, error) {
			// The SDK's warnings, as lines a person reads.
			return awsconf.Load(ctx, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
		},
		stdoutSize: terminalSize(stdout),
	}
}

// usageError is a command line that could not be understood.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{msg: fmt.Sprintf(format, args...)} }

// command is one subcommand: its flags and what it does with them and its
// positional arguments.
type command struct {
	name    string
	args    string // e.g. "[flags] FILE.csv"
	summary string
	fs      *flag.FlagSet
	run     func(ctx context.Context, args []string) error
	// perCall names flags that describe one call (one file), which take
	// no environment fallback: exported once, they would apply to every
	// later file.
	perCall []string
}

func (a *app) commands() []*command {
	return []*command{a.sendCommand(), a.watchCommand(), a.statusCommand(), a.jobsCommand(), a.reportCommand(), a.resultsCommand(), a.resolveCommand(),
		a.deadLettersCommand(), a.redriveCommand(), a.pauseCommand(), a.resumeCommand(), a.cancelCommand(), a.updateCommand(),
		a.approveCommand(), a.pendingCommand(), a.auditCommand(), a.initCommand(), a.profilesCommand(), a.validateCommand(), a.topCommand()}
}

func (a *app) run(ctx context.Context, args []string) error {
	// The real environment wins over the file, and flags over both.
	if err := stackenv.Load(stackenv.Path, a.lookup, a.setenv); err != nil {
		return err
	}
	// A script or CI job that traces itself hands its span over in
	// TRACEPARENT (OpenTelemetry's environment carrier): the calls made
	// here, and every row they send, join its trace.
	if tp, ok := a.lookup("TRACEPARENT"); ok {
		ts, _ := a.lookup("TRACESTATE")
		ctx = tracing.WithRemoteParent(ctx, tp, ts)
	}
	if len(args) == 0 {
		a.usage(a.stderr)
		return usagef("no command given")
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		return a.help(args[1:])
	}
	for _, c := range a.commands() {
		if c.name != args[0] {
			continue
		}
		pos, err := a.parse(c, args[1:])
		if err != nil {
			return err
		}
		return c.run(ctx, pos)
	}
	return usagef("unknown command %q", args[0])
}

// parse parses a command's flags, which may come before or after its
// positional arguments, then fills unset flags from the environment.
func (a *app) parse(c *command, args []string) ([]string, error) {
	c.fs.SetOutput(a.stderr)
	var pos []string
	for {
		if err := c.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &usageError{msg: fmt.Sprintf("%s: %v", c.name, err)}
		}
		args = c.fs.Args()
		if len(args) == 0 {
			break
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	if err := envcfg.Parse(c.fs, nil, a.lookup, envcfg.Except(c.perCall...)); err != nil {
		return nil, &usageError{msg: fmt.Sprintf("%s: %v", c.name, err)}
	}
	return pos, nil
}

// newCommand makes a command whose flag usage names each flag's
// environment variable, as envcfg would.
func newCommand(name, args, summary string) *command {
	c := &command{name: name, args: args, summary: summary, fs: flag.NewFlagSet("spool "+name, flag.ContinueOnError)}
	c.fs.Usage = func() { c.printUsage(c.fs.Output()) }
	return c
}

func (c *command) printUsage(w io.Writer) {
	fmt.Fprintf(w, "usage: spool %s %s\n\n%s\n", c.name, c.args, c.summary)
	n := 0
	c.fs.VisitAll(func(f *flag.Flag) {
		if !slices.Contains(c.perCall, f.Name) && !strings.Contains(f.Usage, "$"+envcfg.EnvName(f.Name)) {
			f.Usage = fmt.Sprintf("%s ($%s)", f.Usage, envcfg.EnvName(f.Name))
		}
		n++
	})
	if n > 0 {
		fmt.Fprintln(w, "\nflags (those naming a variable fall back to it):")
		out := c.fs.Output()
		c.fs.SetOutput(w)
		c.fs.PrintDefaults()
		c.fs.SetOutput(out)
	}
}

const intro = `spool sends CSV files of transactions through Spool and follows their delivery.

usage: spool COMMAND [flags] [arguments]

commands:`

const outro = `Settings come from flags, then SPOOL_* environment variables, then
.spool/stack.env in the working directory (written by 'make up'), which
fills only variables that are not already set.
Credentials: SPOOL_CA_FILE (the CA that signed the servers' certificates),
SPOOL_TOKEN or SPOOL_TOKEN_FILE (a bearer token sent with every call),
SPOOL_CLIENT_CERT_FILE and SPOOL_CLIENT_KEY_FILE (mutual TLS). With none of
them set, spool speaks plaintext.
Exit status: 0 when the command (and, for send and watch, the job) succeeded,
1 when it failed or the job did not complete with every row delivered
(no failed, UNKNOWN or rejected row), 2 for a
command line that could not be understood.`

func (a *app) usage(w io.Writer) {
	fmt.Fprintln(w, intro)
	for _, c := range a.commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nrun 'spool help COMMAND' for a command's flags\n\n"+outro)
}

// help prints the usage of every command, or of the one named, on stdout.
func (a *app) help(args []string) error {
	if len(args) == 0 {
		a.usage(a.stdout)
		for _, c := range a.commands() {
			fmt.Fprintln(a.stdout)
			c.printUsage(a.stdout)
		}
		return nil
	}
	for _, c := range a.commands() {
		if c.name == args[0] {
			c.printUsage(a.stdout)
			return nil
		}
	}
	return usagef("help: unknown command %q", args[0])
}

// dial returns a client connection to addr; it connects lazily, on the
// first call. It speaks TLS and sends a bearer token with every call when
// the environment (or .spool/stack.env) names a CA, a token or a client
// certificate, and plaintext only when it names none of them.
func (a *app) dial(addr string) (*grpc.ClientConn, error) {
	creds, err := clientauth.FromEnv(a.lookup).DialOptions()
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", addr, err)
	}
	cc, err := grpc.NewClient(addr, append(creds, a.dialOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return cc, nil
}

// jobDisplay shows a job's progress on stderr.
func (a *app) jobDisplay(ctx context.Context, jobID string) progress.Job {
	if a.tty {
		return progress.NewBar(ctx, a.stderr, jobID)
	}
	return progress.NewLines(a.stderr, a.progressEvery, a.now)
}

// uploadDisplay shows an upload's progress on stderr.
func (a *app) uploadDisplay(ctx context.Context, name string, size int64) progress.Upload {
	if a.tty {
		return progress.NewUploadBar(ctx, a.stderr, name, size)
	}
	return progress.NewUploadLines(a.stderr, size, a.progressEvery, a.now)
}
