package main

import (
	"context"
	"os"
	"time"

	"golang.org/x/term"

	"github.com/spoolhq/spool/cli/internal/top"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

func (a *app) topCommand() *command {
	c := newCommand("top", "[flags]", "Show the dispatchers' flow control (concurrency limit, in flight, rate limit, breaker) and the jobs in progress, refreshed in place on a terminal; plain lines, one snapshot per interval, elsewhere.")
	dispatchers := c.fs.String("dispatcher-addrs", defaultDispatcherAddrs, "dispatcher gRPC addresses, comma-separated; each is asked for its status, and one that answers for the jobs")
	interval := c.fs.Duration("interval", time.Second, "time between snapshots")
	timeout := c.fs.Duration("timeout", 2*time.Second, "how long to wait for each dispatcher's answer before showing it unreachable")
	jobs := c.fs.Int("jobs", 20, "most jobs to show (1 to 500)")
	once := c.fs.Bool("once", false, "show one snapshot and exit")
	c.run = func(ctx context.Context, args []string) error {
		if len(args) > 0 {
			return usagef("top: takes no arguments, got %q", args[0])
		}
		if *interval <= 0 || *timeout <= 0 {
			return usagef("top: -interval and -timeout must be positive")
		}
		if *jobs < 1 || *jobs > 500 {
			return usagef("top: -jobs %d: want 1 to 500", *jobs)
		}
		addrs, err := splitAddrs(*dispatchers)
		if err != nil {
			return err
		}
		clients := make([]spoolv1.DispatchServiceClient, len(addrs))
		for i, addr := range addrs {
			cc, err := a.dial(addr)
			if err != nil {
				return err
			}
			defer cc.Close()
			clients[i] = spoolv1.NewDispatchServiceClient(cc)
		}
		collector := top.NewCollector(addrs, clients, *timeout, *jobs, a.now)
		return top.Run(ctx, collector, top.NewScreen(a.stdout, a.stdoutSize), *interval, *once)
	}
	return c
}

// terminalSize is top.Size for w: the terminal's size when w is one.
func terminalSize(w any) top.Size {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return func() (int, int, bool) { return 0, 0, false }
	}
	return func() (int, int, bool) {
		width, height, err := term.GetSize(int(f.Fd()))
		return width, height, err == nil
	}
}
