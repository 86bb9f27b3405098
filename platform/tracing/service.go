package tracing

import (
	"context"
	"io"
	"log/slog"
)

// StartService starts what every long-running Spool service starts with,
// so that their logs and traces look alike: a logger writing JSON lines to
// w at level, each carrying the trace and span of its context (LogHandler),
// and tracing (Setup). The returned flush (Flush, bound to ctx and the
// logger) is never nil; run it on the way out.
func StartService(ctx context.Context, service string, w io.Writer, level slog.Leveler) (log *slog.Logger, flush func(), err error) {
	log = slog.New(LogHandler(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})))
	shutdown, err := Setup(ctx, service)
	if err != nil {
		return log, func() {}, err
	}
	return log, func() { Flush(ctx, shutdown, log) }, nil
}
