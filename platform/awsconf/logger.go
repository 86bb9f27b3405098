package awsconf

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/aws/smithy-go/logging"
)

// sdkLogger passes the SDK's own log lines to a service's slog logger, so
// that they are as structured as the rest of its log (without it the SDK
// prints plain text to stderr, in the middle of JSON lines).
type sdkLogger struct {
	log *slog.Logger
	ctx context.Context
}

// Logf logs one SDK line at the matching level. The SDK has two: Warn,
// and Debug for the request and response dumps of ClientLogMode.
func (l sdkLogger) Logf(c logging.Classification, format string, v ...any) {
	level := slog.LevelDebug
	if c == logging.Warn {
		level = slog.LevelWarn
	}
	ctx := l.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	if !l.log.Enabled(ctx, level) {
		return
	}
	l.log.Log(ctx, level, "aws sdk", "detail", fmt.Sprintf(format, v...))
}

// WithContext keeps the context of the call the line is about, for
// handlers that read it.
func (l sdkLogger) WithContext(ctx context.Context) logging.Logger {
	return sdkLogger{log: l.log, ctx: ctx}
}
