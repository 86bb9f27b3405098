package deploy_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"

	"github.com/spoolhq/spool/dispatcher/dispatchmetrics"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/ingestor/ingestmetrics"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/metrics"
)

// series is what a service exports: each metric name a query may use (a
// histogram's _bucket, _sum and _count), with the values of each label.
type series map[string]map[string]map[string]bool

// exported builds each service's registry the way its main does and lists
// what it exports: the names come from the metric definitions, never from
// a list kept by hand.
func exported(t *testing.T) series {
	t.Helper()
	out := series{}
	add := func(r *metrics.Registry) {
		families, err := r.Gather()
		require.NoError(t, err)
		for _, f := range families {
			names := []string{f.GetName()}
			switch f.GetType().String() {
			case "HISTOGRAM":
				names = append(names, f.GetName()+"_bucket", f.GetName()+"_sum", f.GetName()+"_count")
			case "SUMMARY":
				names = append(names, f.GetName()+"_sum", f.GetName()+"_count")
			}
			for _, n := range names {
				if out[n] == nil {
					out[n] = map[string]map[string]bool{}
				}
				for _, m := range f.GetMetric() {
					for _, l := range m.GetLabel() {
						if out[n][l.GetName()] == nil {
							out[n][l.GetName()] = map[string]bool{}
						}
						out[n][l.GetName()][l.GetValue()] = true
					}
				}
				if strings.HasSuffix(n, "_bucket") {
					out[n]["le"] = map[string]bool{}
				}
			}
		}
	}

	ing := metrics.New()
	ingestmetrics.New(ing)
	srv := grpc.NewServer(ing.ServerOptions()...)
	spoolv1.RegisterIngestServiceServer(srv, spoolv1.UnimplementedIngestServiceServer{})
	ing.InitializeRPC(srv)
	add(ing)

	disp := metrics.New()
	dispatchmetrics.New(disp, fixedFlow{})
	srv = grpc.NewServer(disp.ServerOptions()...)
	spoolv1.RegisterDispatchServiceServer(srv, spoolv1.UnimplementedDispatchServiceServer{})
	disp.InitializeRPC(srv)
	add(disp)
	return out
}

type fixedFlow struct{}

func (fixedFlow) Status() *spoolv1.FlowControl {
	return &spoolv1.FlowControl{BreakerState: spoolv1.BreakerState_BREAKER_STATE_CLOSED}
}

// selector is one metric a PromQL expression names, with its label
// matchers.
type selector struct {
	name     string
	matchers []matcher
}

type matcher struct{ label, op, value string }

var (
	identRE   = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*`)
	matcherRE = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?`)
	// Words of PromQL that are neither metrics nor followed by "(".
	promKeywords = []string{"and", "or", "unless", "bool", "offset", "inf", "nan"}
	// Aggregations, whose "(" may come after a by or without list.
	aggregations = []string{"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
	// Modifiers whose parentheses hold label names, not expressions.
	labelLists = []string{"by", "without", "on", "ignoring", "group_left", "group_right"}
)

// selectors finds the metrics a PromQL expression names: every identifier
// that is not a function, a keyword or a label (in a matcher or a by/on
// list), with the matchers in braces after it.
func selectors(t *testing.T, expr string) []selector {
	t.Helper()
	var out []selector
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"':
			j := strings.IndexByte(expr[i+1:], '"')
			require.GreaterOrEqual(t, j, 0, "unterminated string in %q", expr)
			i += j + 2
		case c == '[':
			j := strings.IndexByte(expr[i:], ']')
			require.Positive(t, j, "unterminated range in %q", expr)
			i += j + 1
		case c == '{':
			require.NotEmpty(t, out, "matchers without a metric in %q", expr)
			i++
			for i < len(expr) && expr[i] != '}' {
				m := matcherRE.FindStringSubmatch(expr[i:])
				require.NotNil(t, m, "bad matcher at %q", expr[i:])
				out[len(out)-1].matchers = append(out[len(out)-1].matchers, matcher{m[1], m[2], m[3]})
				i += len(m[0])
			}
			i++
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (expr[i] >= '0' && expr[i] <= '9' || expr[i] == '.' || expr[i] == 'e') {
				i++
			}
		case identRE.MatchString(expr[i:]):
			id := identRE.FindString(expr[i:])
			i += len(id)
			rest := strings.TrimLeft(expr[i:], " \t\n")
			switch {
			case slices.Contains(labelLists, id):
				if strings.HasPrefix(rest, "(") {
					i = len(expr) - len(rest) + strings.IndexByte(rest, ')') + 1
				}
			case strings.HasPrefix(rest, "("), slices.Contains(promKeywords, strings.ToLower(id)), slices.Contains(aggregations, id):
				// A function or an operator.
			default:
				out = append(out, selector{name: id})
			}
		default:
			i++
		}
	}
	return out
}

// requireExported checks each metric of expr against what the services
// export: the name, each label matched, and each value matched exactly.
func requireExported(t *testing.T, have series, where, expr string) {
	t.Helper()
	sels := selectors(t, expr)
	require.NotEmpty(t, sels, "%s: %q names no metric", where, expr)
	for _, s := range sels {
		labels, ok := have[s.name]
		require.True(t, ok, "%s: %s is not a metric the services export (query %q)", where, s.name, expr)
		for _, m := range s.matchers {
			values, ok := labels[m.label]
			require.True(t, ok, "%s: %s has no label %s", where, s.name, m.label)
			if m.op == "=" || m.op == "!=" {
				require.True(t, values[m.value], "%s: %s{%s} is never %q (exported: %v)", where, s.name, m.label, m.value, values)
			}
		}
	}
}

func TestSelectors(t *testing.T) {
	got := selectors(t, `histogram_quantile(0.95, sum by (le, op) (rate(a_bucket{op="x", b=~"y|z"}[$__rate_interval]))) / on(instance) b > 0.2 and c`)
	require.Equal(t, []selector{
		{name: "a_bucket", matchers: []matcher{{"op", "=", "x"}, {"b", "=~", "y|z"}}},
		{name: "b"}, {name: "c"},
	}, got)
}

// dashboard is the part of a Grafana dashboard the test reads.
type dashboard struct {
	Panels []struct {
		Title      string
		Type       string
		Datasource struct{ Type string }
		Targets    []struct {
			Expr       string
			Datasource struct{ Type string }
			Namespace  string
			MetricName string
			Dimensions map[string]string
		}
	}
}

// sqsMetrics are the CloudWatch metrics of an SQS queue.
var sqsMetrics = []string{
	"ApproximateAgeOfOldestMessage", "ApproximateNumberOfMessagesDelayed", "ApproximateNumberOfMessagesNotVisible",
	"ApproximateNumberOfMessagesVisible", "NumberOfEmptyReceives", "NumberOfMessagesDeleted",
	"NumberOfMessagesReceived", "NumberOfMessagesSent", "SentMessageSize",
}

// queueNames are the queue the ECS example consumes and its dead-letter
// queue, named as `spool init` names it.
func queueNames(t *testing.T) []string {
	t.Helper()
	var td taskDefinition
	readJSON(t, "dispatcher-task.json", &td)
	for _, e := range td.ContainerDefinitions[0].Environment {
		if e.Name == "SPOOL_QUEUE_URL" {
			name := e.Value[strings.LastIndexByte(e.Value, '/')+1:]
			return []string{name, name + "-dlq"}
		}
	}
	t.Fatal("the dispatcher task sets no SPOOL_QUEUE_URL")
	return nil
}

func readFileJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, v), path)
}

func TestDashboardNamesExportedMetrics(t *testing.T) {
	have := exported(t)
	var d dashboard
	readFileJSON(t, filepath.Join(repoRoot, "deploy", "grafana", "spool-dashboard.json"), &d)
	queries := 0
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		require.NotEmpty(t, p.Targets, "panel %q has no query", p.Title)
		for _, q := range p.Targets {
			switch q.Datasource.Type {
			case "prometheus":
				requireExported(t, have, "panel "+p.Title, q.Expr)
			case "cloudwatch":
				require.Equal(t, "AWS/SQS", q.Namespace, p.Title)
				require.Contains(t, sqsMetrics, q.MetricName, p.Title)
				require.Contains(t, queueNames(t), q.Dimensions["QueueName"], p.Title)
			default:
				t.Fatalf("panel %q: unexpected data source %q", p.Title, q.Datasource.Type)
			}
			queries++
		}
	}
	// The panels the dashboard is for: each of these metrics is on it.
	all := strings.Builder{}
	for _, p := range d.Panels {
		for _, q := range p.Targets {
			all.WriteString(q.Expr + " " + q.MetricName + "\n")
		}
	}
	for _, want := range []string{
		"spool_ingest_rows_total", "spool_deliveries_total", "spool_destination_request_duration_seconds_bucket",
		"spool_concurrency_limit", "spool_in_flight", "spool_breaker_state", "spool_breaker_opens_total",
		"ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage",
	} {
		require.Contains(t, all.String(), want)
	}
	t.Logf("%d panels, %d queries", len(d.Panels), queries)
}

func TestPrometheusAlertsNameExportedMetrics(t *testing.T) {
	have := exported(t)
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "prometheus", "spool-alerts.yml"))
	require.NoError(t, err)
	var rules struct {
		Groups []struct {
			Rules []struct{ Alert, Expr string }
		}
	}
	require.NoError(t, yaml.Unmarshal(b, &rules))
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			require.NotEmpty(t, r.Alert)
			requireExported(t, have, "alert "+r.Alert, r.Expr)
			n++
		}
	}
	require.Positive(t, n)
}

// alarm is the part of a CloudWatch alarm (put-metric-alarm input) the
// test reads.
type alarm struct {
	AlarmName, Namespace, MetricName string
	Dimensions                       []struct{ Name, Value string }
	Threshold                        float64
	ComparisonOperator               string
}

// TestCloudWatchAlarms checks the ECS example's alarms: the queue alarms
// name real SQS metrics of the example's queues, and the UNKNOWN alarm
// reads the metric its filter makes from the dispatchers' log group, out
// of the very line a dispatcher writes.
func TestCloudWatchAlarms(t *testing.T) {
	var filter struct {
		LogGroupName          string
		FilterPattern         string
		MetricTransformations []struct{ MetricName, MetricNamespace, MetricValue string }
	}
	readJSON(t, "alarms/unknown-rows-filter.json", &filter)
	require.Len(t, filter.MetricTransformations, 1)
	made := filter.MetricTransformations[0]

	byName := map[string]alarm{}
	for _, f := range []string{"queue-oldest-message.json", "dead-letters.json", "unknown-rows.json"} {
		var a alarm
		readJSON(t, "alarms/"+f, &a)
		byName[a.AlarmName] = a
		switch a.Namespace {
		case "AWS/SQS":
			require.Contains(t, sqsMetrics, a.MetricName, f)
			require.Len(t, a.Dimensions, 1, f)
			require.Equal(t, "QueueName", a.Dimensions[0].Name, f)
			require.Contains(t, queueNames(t), a.Dimensions[0].Value, f)
		case made.MetricNamespace:
			require.Equal(t, made.MetricName, a.MetricName, "%s reads the metric its filter makes", f)
		default:
			t.Fatalf("%s: namespace %q is neither SQS's nor the metric filter's", f, a.Namespace)
		}
	}
	require.Equal(t, "ApproximateAgeOfOldestMessage", byName["spool-queue-oldest-message"].MetricName)
	dlq := byName["spool-dead-letters"]
	require.Equal(t, queueNames(t)[1], dlq.Dimensions[0].Value)
	require.Equal(t, "GreaterThanThreshold", dlq.ComparisonOperator)
	require.Zero(t, dlq.Threshold, "one dead letter is one too many")

	// The filter reads the dispatchers' log group...
	var raw struct {
		ContainerDefinitions []struct {
			LogConfiguration struct{ Options map[string]string }
		}
	}
	readJSON(t, "dispatcher-task.json", &raw)
	require.Equal(t, raw.ContainerDefinitions[0].LogConfiguration.Options["awslogs-group"], filter.LogGroupName)

	// ...and matches the line a dispatcher writes for rows recorded
	// UNKNOWN, taking the count from it.
	var logged bytes.Buffer
	counter := dispatchmetrics.New(metrics.New(), nil).Counter(discard{}, slog.New(slog.NewJSONHandler(&logged, nil)))
	counter.Add("job-1", jobstore.Counts{Unknown: 3})
	var line map[string]any
	require.NoError(t, json.Unmarshal(logged.Bytes(), &line))
	pattern := regexp.MustCompile(`^\{ \$\.(\w+) = "([^"]*)" \}$`).FindStringSubmatch(filter.FilterPattern)
	require.NotNil(t, pattern, "filter pattern %q", filter.FilterPattern)
	require.Equal(t, pattern[2], line[pattern[1]], "the filter matches the dispatcher's line %s", logged.String())
	field := strings.TrimPrefix(made.MetricValue, "$.")
	require.EqualValues(t, 3, line[field], "the metric's value is the line's %s", field)
}

type discard struct{}

func (discard) Add(string, jobstore.Counts) {}
