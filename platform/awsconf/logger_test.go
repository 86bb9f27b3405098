package awsconf

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/aws/smithy-go/logging"
	"github.com/stretchr/testify/require"
)

func TestSDKLogger(t *testing.T) {
	tests := []struct {
		name      string
		class     logging.Classification
		min       slog.Level
		wantLevel string
	}{
		{name: "warn is warn", class: logging.Warn, min: slog.LevelInfo, wantLevel: "WARN"},
		{name: "debug is debug", class: logging.Debug, min: slog.LevelDebug, wantLevel: "DEBUG"},
		{name: "debug is dropped at info", class: logging.Debug, min: slog.LevelInfo},
		{name: "warn is dropped at error", class: logging.Warn, min: slog.LevelError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			var l logging.Logger = sdkLogger{log: slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: tt.min}))}
			l = logging.WithContext(context.Background(), l)
			l.Logf(tt.class, "retrying %s after %d ms", "PutItem", 20)
			if tt.wantLevel == "" {
				require.Empty(t, out.String())
				return
			}
			var line map[string]any
			require.NoError(t, json.Unmarshal(out.Bytes(), &line), out.String())
			require.Equal(t, tt.wantLevel, line["level"])
			require.Equal(t, "aws sdk", line["msg"])
			require.Equal(t, "retrying PutItem after 20 ms", line["detail"])
		})
	}
}
