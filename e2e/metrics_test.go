package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// TestMetricsAgreeWithTheJob sends a file through two dispatchers and
// reads every metrics page the stack lists in stack.env: each parses as
// Prometheus text, the dispatchers' delivered rows sum to the file's rows
// and to the job record's figure, and the ingestor's published rows are
// the file's rows too. SPOOL_METRICS_ROWS sets the size (5 000).
func TestMetricsAgreeWithTheJob(t *testing.T) {
	rows := envInt(t, "SPOOL_METRICS_ROWS", 5000)
	s := startStack(t, 2, nil)
	env := stackEnv(s.Env)
	dispatcherURLs := strings.Split(env["SPOOL_DISPATCHER_METRICS_URLS"], ",")
	require.Len(t, dispatcherURLs, 2, "stack.env lists each dispatcher's metrics page")
	ingestorURL := env["SPOOL_INGESTOR_METRICS_URL"]
	require.NotEmpty(t, ingestorURL)

	out, err := runCLI(t, s, "send", writeSample(t, rows))
	require.NoError(t, err, "spool send:\n%s", out)
	jobID := jobIDFrom(t, out)
	job := watchToEnd(t, s.Dispatchers[0].Addr, jobID, time.Minute).GetJob()
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, job.GetState())
	require.EqualValues(t, rows, job.GetDelivered())

	var delivered, requests float64
	var perDispatcher []float64
	for i, u := range dispatcherURLs {
		m := scrape(t, u)
		d := metric(t, m, "spool_deliveries_total", "outcome", "delivered")
		perDispatcher = append(perDispatcher, d)
		delivered += d
		requests += histogramCount(m, "spool_destination_request_duration_seconds", "status_class", "2xx")
		for _, o := range []string{"rejected", "unknown", "dead_lettered", "dropped"} {
			require.Zero(t, metric(t, m, "spool_deliveries_total", "outcome", o), "%s: %s rows", u, o)
		}
		require.Positive(t, metric(t, m, "spool_counter_flushes_total", "", ""), "%s flushed counters", u)
		require.Positive(t, metric(t, m, "spool_queue_calls_total", "op", "receive"), u)
		require.Positive(t, histogramCount(m, "spool_ledger_write_duration_seconds", "op", "finish"), u)
		require.Positive(t, metric(t, m, "spool_concurrency_limit", "", ""), u)
		require.Equal(t, 1.0, metric(t, m, "spool_breaker_state", "state", "closed"), u)
		if i == 0 {
			require.Positive(t, metric(t, m, "grpc_server_handled_total", "grpc_method", "WatchJob"), "%s: RPC metrics", u)
		}
	}
	require.EqualValues(t, rows, delivered, "dispatchers' delivered rows %v", perDispatcher)
	require.EqualValues(t, job.GetDelivered(), delivered, "the job record and the metrics agree")
	require.GreaterOrEqual(t, requests, delivered, "every delivered row had an answered request")

	in := scrape(t, ingestorURL)
	require.EqualValues(t, rows, metric(t, in, "spool_ingest_rows_total", "result", "published"))
	require.Zero(t, metric(t, in, "spool_ingest_rows_total", "result", "rejected"))
	require.Zero(t, metric(t, in, "spool_ingest_active_streams", "", ""), "the stream has ended")
	require.Positive(t, histogramCount(in, "spool_publish_batch_duration_seconds", "result", "ok"))
	require.Positive(t, metric(t, in, "grpc_server_handled_total", "grpc_method", "StreamFile"))
	t.Logf("%d rows: delivered per dispatcher %v, %v answered requests", rows, perDispatcher, requests)
}

// stackEnv reads KEY=value lines, as stack.env holds them.
func stackEnv(lines []string) map[string]string {
	out := map[string]string{}
	for _, l := range lines {
		if k, v, ok := strings.Cut(l, "="); ok {
			out[k] = v
		}
	}
	return out
}

// scrape reads a metrics page and parses it as Prometheus text.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err, "%s is Prometheus text", url)
	return families
}

// metric sums the counter or gauge name over the series whose label has
// the value (all series when label is empty). A family missing from the
// page fails the test: every metric is exported from the start.
func metric(t *testing.T, families map[string]*dto.MetricFamily, name, label, value string) float64 {
	t.Helper()
	f, ok := families[name]
	require.True(t, ok, "metric %s exported", name)
	var sum float64
	for _, m := range f.GetMetric() {
		if label != "" && !hasLabel(m, label, value) {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		case m.GetUntyped() != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum
}

// histogramCount sums the observations of histogram name whose label has
// the value.
func histogramCount(families map[string]*dto.MetricFamily, name, label, value string) float64 {
	var n float64
	for _, m := range families[name].GetMetric() {
		if hasLabel(m, label, value) {
			n += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return n
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue() == value
		}
	}
	return false
}
