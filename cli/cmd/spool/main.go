// Command spool is what people run to use Spool: it sends CSV files to the
// ingestor, follows their delivery on the dispatchers, shows a job's
// record, and provisions the queue and table.
//
//	spool send [flags] FILE.csv    send a file and follow its delivery
//	spool watch [flags] JOB_ID     follow a job's delivery
//	spool status [flags] JOB_ID    show a job's record
//	spool init -queue Q -table T   create the queue and table
//	spool top [flags]              watch the dispatchers and the jobs in progress
//	spool help [COMMAND]           explain the commands and their settings
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spoolhq/spool/cli/internal/report"
	"github.com/spoolhq/spool/platform/tracing"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// run is the whole program but its exit.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	shutdown, err := tracing.Setup(ctx, "spool-cli")
	if err != nil {
		return err
	}
	defer tracing.Flush(ctx, shutdown, slog.New(slog.NewTextHandler(stderr, nil)))
	return newApp(stdin, stdout, stderr).run(ctx, args)
}

// Exit statuses: 1 for a job that did not end well or an error, 2 for a
// command line that could not be understood.
func exitCode(err error, stderr io.Writer) int {
	var usage *usageError
	var outcome *report.OutcomeError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "spool: %v\nrun 'spool help' for usage\n", err)
		return 2
	case errors.As(err, &outcome):
		fmt.Fprintf(stderr, "spool: %v\n", err)
		return 1
	default:
		fmt.Fprintf(stderr, "spool: %v\n", err)
		return 1
	}
}
