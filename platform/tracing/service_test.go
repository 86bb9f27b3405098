package tracing

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func TestStartServiceLogsJSONAtItsLevelWithTheSpan(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	var buf bytes.Buffer
	log, flush, err := StartService(context.Background(), "spool-test", &buf, slog.LevelWarn)
	if err != nil {
		t.Fatal(err)
	}
	defer flush()
	withSpan := WithRemoteParent(context.Background(), parent, "")
	log.InfoContext(withSpan, "below the level")
	log.WarnContext(withSpan, "at the level")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one line (the warning), got %q", buf.String())
	}
	var line map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &line); err != nil {
		t.Fatal(err)
	}
	if line["msg"] != "at the level" || line["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("line %s: want the warning with its trace_id", lines[0])
	}
}

func TestStartServiceRefusesAnUnknownExporter(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "carrier-pigeon")
	_, flush, err := StartService(context.Background(), "spool-test", &bytes.Buffer{}, slog.LevelInfo)
	if err == nil {
		t.Fatal("want an error for OTEL_TRACES_EXPORTER=carrier-pigeon")
	}
	flush() // never nil
}
