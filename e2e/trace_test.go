package e2e

import (
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/spoolhq/spool/local/stack"
)

// span is what the test keeps of an exported span.
type span struct {
	service, name, trace, id, parent string
}

// collector is an OTLP/HTTP trace receiver, enough for the services'
// exporters: it decodes each export request and keeps its spans.
type collector struct {
	mu    sync.Mutex
	spans []span
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "want a protobuf POST to /v1/traces", http.StatusBadRequest)
		return
	}
	b, err := io.ReadAll(r.Body)
	var req collectortrace.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(b, &req)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans = append(c.spans, span{service: service, name: s.GetName(),
					trace: hex.EncodeToString(s.GetTraceId()), id: hex.EncodeToString(s.GetSpanId()), parent: hex.EncodeToString(s.GetParentSpanId())})
			}
		}
	}
	c.mu.Unlock()
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (c *collector) byID(trace string) map[string]span {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[string]span{}
	for _, s := range c.spans {
		if s.trace == trace {
			m[s.id] = s
		}
	}
	return m
}

// TestTraceFollowsEachRowToTheDestination sends a file under a caller's
// span (TRACEPARENT, as a traced script hands it to the CLI) with every
// service exporting spans over OTLP to an in-test collector: each row's
// request at the sink carries a traceparent of the caller's trace, and
// the spans of the call, the ingest, each delivery and its outbound
// request form one tree under the caller's span.
func TestTraceFollowsEachRowToTheDestination(t *testing.T) {
	const (
		rows     = 20
		traceID  = "4bf92f3577b34da6a3ce929d0e0e4736"
		callerID = "00f067aa0ba902b7"
	)
	col := &collector{}
	srv := httptest.NewServer(col)
	t.Cleanup(srv.Close)
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
	var stateDir string
	s := startStack(t, 2, func(o *stack.Options) { stateDir = o.StateDir })

	cmd := exec.Command(filepath.Join(binDir, "spool"), "send", writeSample(t, rows))
	cmd.Env = append(envOf(s), "TRACEPARENT=00-"+traceID+"-"+callerID+"-01")
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "spool send:\n%s", out)
	jobID := jobIDFrom(t, string(out))

	// The ingestor's lines of the call carry its trace.
	logged, err := os.ReadFile(filepath.Join(stateDir, "logs", "ingestor.log"))
	require.NoError(t, err)
	var traced []string
	for line := range strings.Lines(string(logged)) {
		var l struct {
			Msg     string `json:"msg"`
			TraceID string `json:"trace_id"`
			SpanID  string `json:"span_id"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.TraceID == traceID && len(l.SpanID) == 16 {
			traced = append(traced, l.Msg)
		}
	}
	require.Subset(t, traced, []string{"job created", "job sealed", "finished call"}, "ingestor log:\n%s", logged)

	// Every row's request carried the caller's trace, each from a span
	// of its own.
	ledger := sinkLedger(t, s, jobID)
	require.Len(t, ledger, rows)
	requestSpans := map[string]int64{}
	for r, tx := range ledger {
		parts := strings.Split(tx.Traceparent, "-")
		require.Len(t, parts, 4, "row %d: traceparent %q", r, tx.Traceparent)
		require.Equal(t, traceID, parts[1], "row %d left the caller's trace", r)
		requestSpans[parts[2]] = r
	}
	require.Len(t, requestSpans, rows, "rows shared a request span")

	// The tree: each request span is an HTTP client span of a dispatcher,
	// whose parent is the delivery span, whose parent is the ingestor's
	// StreamFile span, whose parent is the CLI's call, whose parent is the
	// caller. Spans are exported in batches: wait until all are in.
	var spans map[string]span
	require.Eventually(t, func() bool {
		spans = col.byID(traceID)
		for id := range requestSpans {
			if _, ok := spans[id]; !ok {
				return false
			}
		}
		return true
	}, 30*time.Second, 200*time.Millisecond, "request spans never exported")
	var streamFile string
	for id, row := range requestSpans {
		req := spans[id]
		require.Equal(t, "spool-dispatcher", req.service, "row %d request span %+v", row, req)
		deliver, ok := spans[req.parent]
		require.True(t, ok, "row %d: request span's parent %s not exported", row, req.parent)
		require.Equal(t, "deliver", deliver.name)
		require.Equal(t, "spool-dispatcher", deliver.service)
		ingest, ok := spans[deliver.parent]
		require.True(t, ok, "row %d: delivery span's parent %s not exported", row, deliver.parent)
		require.Equal(t, "spool.v1.IngestService/StreamFile", ingest.name)
		require.Equal(t, "spool-ingestor", ingest.service)
		if streamFile == "" {
			streamFile = ingest.id
		}
		require.Equal(t, streamFile, ingest.id, "rows of one call under different ingest spans")
		call, ok := spans[ingest.parent]
		require.True(t, ok, "ingest span's parent %s not exported", ingest.parent)
		require.Equal(t, "spool-cli", call.service)
		require.Equal(t, "spool.v1.IngestService/StreamFile", call.name)
		require.Equal(t, callerID, call.parent, "the CLI's call is not the caller's child")
	}
}

// TestGrpcurlTraceparentReachesTheSink is the same promise for a caller
// that speaks gRPC itself: a StreamFile call with a traceparent header,
// tracing exported nowhere, still hands the caller's trace to every row's
// request.
func TestGrpcurlTraceparentReachesTheSink(t *testing.T) {
	const traceID = "0af7651916cd43dd8448eb211c80319c"
	s := startStack(t, 1, nil)
	in := `{"header": {"fileName": "traced.csv", "columns": ["employee_id", "name", "amount"]}}
{"rows": {"rows": [{"fields": ["E1", "Ada", "10.00"]}, {"fields": ["E2", "Grace", "20.00"]}, {"fields": ["E3", "Alan", "30.00"]}]}}`
	var resp struct {
		JobID string `json:"jobId"`
	}
	out := runGrpcurl(t, in, "-H", "traceparent: 00-"+traceID+"-b7ad6b7169203331-01", "-d", "@", s.Ingestor.Addr, "spool.v1.IngestService/StreamFile")
	require.NoError(t, json.Unmarshal([]byte(out), &resp))
	watchToEnd(t, s.Dispatchers[0].Addr, resp.JobID, time.Minute)

	ledger := sinkLedger(t, s, resp.JobID)
	require.Len(t, ledger, 3)
	for r, tx := range ledger {
		require.Regexp(t, `^00-`+traceID+`-[0-9a-f]{16}-01$`, tx.Traceparent, "row %d", r)
	}
}
