package deploy_test

import (
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var ecsDir = filepath.Join(repoRoot, "deploy", "ecs")

// The parts of the ECS and IAM documents the tests check. Other fields are
// read by AWS, not here.
type (
	taskDefinition struct {
		Family                  string
		NetworkMode             string
		RequiresCompatibilities []string
		CPU                     string
		Memory                  string
		ExecutionRoleArn        string
		TaskRoleArn             string
		Volumes                 []struct{ Name string }
		// The service's container comes first; the task's others follow.
		ContainerDefinitions []containerDefinition
	}
	containerDefinition struct {
		Name         string
		Image        string
		Essential    *bool
		PortMappings []struct {
			ContainerPort int
			Protocol      string
		}
		Environment []struct{ Name, Value string }
		Secrets     []struct{ Name, ValueFrom string }
		HealthCheck *struct{ Command []string }
		StopTimeout *int
		EntryPoint  []string
		Command     []string
		DependsOn   []struct{ ContainerName, Condition string }
		MountPoints []struct {
			SourceVolume, ContainerPath string
			ReadOnly                    bool
		}
	}
	serviceDefinition struct {
		Cluster              string
		ServiceName          string
		TaskDefinition       string
		DesiredCount         int
		LaunchType           string
		NetworkConfiguration struct {
			AwsvpcConfiguration struct {
				Subnets        []string
				SecurityGroups []string
				AssignPublicIP string `json:"assignPublicIp"`
			}
		}
		LoadBalancers []struct {
			ContainerName string
			ContainerPort int
		}
		DeploymentConfiguration struct {
			MinimumHealthyPercent int
		}
	}
	scalingPolicy struct {
		TargetValue                   float64
		CustomizedMetricSpecification struct {
			Metrics []struct {
				ID         string `json:"Id"`
				Expression string
				MetricStat *struct {
					Metric struct {
						Namespace  string
						MetricName string
						Dimensions []struct{ Name, Value string }
					}
				}
				ReturnData bool
			}
		}
	}
)

// readJSON decodes an ECS file into v.
func readJSON(tb testing.TB, name string, v any) {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(ecsDir, filepath.FromSlash(name)))
	require.NoError(tb, err)
	require.NoError(tb, json.Unmarshal(b, v), name)
}

func (c containerDefinition) env() map[string]string {
	m := map[string]string{}
	for _, e := range c.Environment {
		m[e.Name] = e.Value
	}
	return m
}

// queueURLPattern is the URL of a queue on real SQS.
var queueURLPattern = regexp.MustCompile(`^https://sqs\.([a-z0-9-]+)\.amazonaws\.com/(\d{12})/([A-Za-z0-9_-]+)$`)

func TestECSFilesAreJSON(t *testing.T) {
	var files []string
	require.NoError(t, filepath.WalkDir(ecsDir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Ext(path) == ".json" {
			files = append(files, path)
		}
		return err
	}))
	require.NotEmpty(t, files)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			require.NoError(t, err)
			require.True(t, json.Valid(b), "%s is not valid JSON", f)
		})
	}
}

func TestECSTaskDefinitions(t *testing.T) {
	tests := []struct {
		file      string
		family    string
		container string
		port      int
		env       []string // variables the binary needs
		secrets   []string
	}{
		{
			file: "ingestor-task.json", family: "spool-ingestor", container: "ingestor", port: 50051,
			env: []string{"AWS_REGION", "SPOOL_QUEUE_URL", "SPOOL_TABLE", "SPOOL_LISTEN"},
		},
		{
			file: "dispatcher-task.json", family: "spool-dispatcher", container: "dispatcher", port: 50052,
			env:     []string{"AWS_REGION", "SPOOL_QUEUE_URL", "SPOOL_TABLE", "SPOOL_LISTEN", "SPOOL_DESTINATION_URL", "SPOOL_CONCURRENCY"},
			secrets: []string{"SPOOL_DESTINATION_HEADER"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			var td taskDefinition
			readJSON(t, tt.file, &td)
			require.Equal(t, tt.family, td.Family)
			require.Equal(t, "awsvpc", td.NetworkMode)
			require.Contains(t, td.RequiresCompatibilities, "FARGATE")
			for _, v := range []string{td.CPU, td.Memory} {
				n, err := strconv.Atoi(v)
				require.NoError(t, err, "cpu and memory are strings of numbers")
				require.Positive(t, n)
			}
			require.NotEmpty(t, td.ExecutionRoleArn, "pulling from ECR and logging need the execution role")
			require.NotEmpty(t, td.TaskRoleArn, "the SDK's credentials come from the task role")

			// The service and the container that writes its secrets' files.
			require.Len(t, td.ContainerDefinitions, 2)
			c := td.ContainerDefinitions[0]
			require.Equal(t, tt.container, c.Name)
			require.NotEmpty(t, c.Image)
			require.False(t, strings.HasSuffix(c.Image, ":latest"), "pin the image")
			require.NotNil(t, c.Essential)
			require.True(t, *c.Essential)
			require.Len(t, c.PortMappings, 1)
			require.Equal(t, tt.port, c.PortMappings[0].ContainerPort)

			env := c.env()
			for _, key := range tt.env {
				require.NotEmpty(t, env[key], "%s is not set", key)
			}
			for key := range env {
				// Real AWS: no endpoint overrides, no static credentials.
				require.False(t, strings.HasPrefix(key, "AWS_ENDPOINT_URL"), key)
				require.NotContains(t, []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}, key)
			}
			require.Equal(t, ":"+strconv.Itoa(tt.port), env["SPOOL_LISTEN"])
			m := queueURLPattern.FindStringSubmatch(env["SPOOL_QUEUE_URL"])
			require.NotNil(t, m, "SPOOL_QUEUE_URL %q is not an SQS queue URL", env["SPOOL_QUEUE_URL"])
			require.Equal(t, env["AWS_REGION"], m[1], "the queue lives in the task's region")
			if u, ok := env["SPOOL_DESTINATION_URL"]; ok {
				dest, err := url.Parse(u)
				require.NoError(t, err)
				require.Equal(t, "https", dest.Scheme, "payroll data leaves the VPC: TLS only")
			}

			var secrets []string
			for _, s := range c.Secrets {
				require.NotEmpty(t, s.ValueFrom)
				require.NotContains(t, env, s.Name, "%s is both a variable and a secret", s.Name)
				secrets = append(secrets, s.Name)
			}
			require.ElementsMatch(t, tt.secrets, secrets)

			require.NotNil(t, c.HealthCheck)
			require.Equal(t, []string{"CMD", "/probe", "-grpc", "127.0.0.1:" + strconv.Itoa(tt.port)}, c.HealthCheck.Command)

			// ECS sends SIGKILL stopTimeout seconds after SIGTERM; the drain
			// (SPOOL_SHUTDOWN_GRACE) must end before that. Fargate allows
			// up to 120 s.
			require.NotNil(t, c.StopTimeout, "stopTimeout must be set")
			stop := time.Duration(*c.StopTimeout) * time.Second
			require.Equal(t, 30*time.Second, stop)
			grace, err := time.ParseDuration(env["SPOOL_SHUTDOWN_GRACE"])
			require.NoError(t, err, "SPOOL_SHUTDOWN_GRACE")
			require.Less(t, grace, stop)
		})
	}
}

func TestECSServices(t *testing.T) {
	tests := []struct {
		file     string
		taskFile string
	}{
		{file: "ingestor-service.json", taskFile: "ingestor-task.json"},
		{file: "dispatcher-service.json", taskFile: "dispatcher-task.json"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			var sd serviceDefinition
			var td taskDefinition
			readJSON(t, tt.file, &sd)
			readJSON(t, tt.taskFile, &td)
			require.NotEmpty(t, sd.Cluster)
			require.Equal(t, td.Family, sd.TaskDefinition)
			require.Equal(t, "FARGATE", sd.LaunchType)
			require.Positive(t, sd.DesiredCount)
			vpc := sd.NetworkConfiguration.AwsvpcConfiguration
			require.NotEmpty(t, vpc.Subnets)
			require.NotEmpty(t, vpc.SecurityGroups)
			require.Equal(t, "DISABLED", vpc.AssignPublicIP)
			// A replacement task must run before an old one drains.
			require.Equal(t, 100, sd.DeploymentConfiguration.MinimumHealthyPercent)
			c := td.ContainerDefinitions[0]
			for _, lb := range sd.LoadBalancers {
				require.Equal(t, c.Name, lb.ContainerName)
				require.Equal(t, c.PortMappings[0].ContainerPort, lb.ContainerPort)
			}
		})
	}
}

func TestECSDispatcherScaling(t *testing.T) {
	var policy scalingPolicy
	var sd serviceDefinition
	var td taskDefinition
	readJSON(t, "dispatcher-scaling.json", &policy)
	readJSON(t, "dispatcher-service.json", &sd)
	readJSON(t, "dispatcher-task.json", &td)
	queue := queueURLPattern.FindStringSubmatch(td.ContainerDefinitions[0].env()["SPOOL_QUEUE_URL"])
	require.NotNil(t, queue)

	require.Positive(t, policy.TargetValue)
	ids := map[string]bool{}
	var returned []string
	dims := map[string]string{}
	for _, m := range policy.CustomizedMetricSpecification.Metrics {
		ids[m.ID] = true
		if m.ReturnData {
			returned = append(returned, m.ID)
			for _, ref := range regexp.MustCompile(`[a-z][a-zA-Z0-9_]*`).FindAllString(m.Expression, -1) {
				require.True(t, ids[ref], "expression %q refers to %s, which is not defined before it", m.Expression, ref)
			}
		}
		if m.MetricStat != nil {
			for _, d := range m.MetricStat.Metric.Dimensions {
				dims[m.MetricStat.Metric.Namespace+" "+d.Name] = d.Value
			}
		}
	}
	require.Len(t, returned, 1, "target tracking follows exactly one series")
	require.Equal(t, queue[3], dims["AWS/SQS QueueName"], "the backlog is the dispatchers' queue")
	require.Equal(t, sd.Cluster, dims["ECS/ContainerInsights ClusterName"])
	require.Equal(t, sd.ServiceName, dims["ECS/ContainerInsights ServiceName"])
}
