package deploy_test

import (
	"context"
	"fmt"
	"go/parser"
	"go/token"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/provision"
)

// repoRoot is the repository root seen from this package's folder, where
// `go test` runs.
const repoRoot = ".."

// spoolServices run a Spool binary built from deploy/docker/Dockerfile.
var spoolServices = []string{"pki", "init", "ingestor", "dispatcher", "sink", "spool"}

// loadCompose loads the repository's docker-compose.yml the way `docker
// compose` does (schema validation, interpolation, normalization, paths
// resolved against the repository root), with env as the whole environment
// so the result does not depend on the shell running the test.
func loadCompose(tb testing.TB, profiles []string, env ...string) *types.Project {
	tb.Helper()
	root := absRoot(tb)
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root),
		cli.WithEnv(env),
		cli.WithInterpolation(true),
		cli.WithProfiles(profiles),
	)
	require.NoError(tb, err)
	p, err := opts.LoadProject(context.Background())
	require.NoError(tb, err)
	return p
}

// loadAll loads the compose file with every profile active.
func loadAll(tb testing.TB, env ...string) *types.Project {
	tb.Helper()
	return loadCompose(tb, []string{"*"}, env...)
}

func absRoot(tb testing.TB) string {
	tb.Helper()
	root, err := filepath.Abs(repoRoot)
	require.NoError(tb, err)
	return root
}

func service(tb testing.TB, p *types.Project, name string) types.ServiceConfig {
	tb.Helper()
	s, err := p.GetService(name)
	require.NoError(tb, err)
	return s
}

// envOf returns the value of a service's environment variable, failing the
// test when it is unset.
func envOf(tb testing.TB, s types.ServiceConfig, key string) string {
	tb.Helper()
	v, ok := s.Environment[key]
	require.Truef(tb, ok && v != nil, "service %s: %s is not set", s.Name, key)
	return *v
}

// listenPort is the port a Spool service listens on, from SPOOL_LISTEN.
func listenPort(tb testing.TB, s types.ServiceConfig) uint32 {
	tb.Helper()
	_, port := splitHostPort(tb, envOf(tb, s, "SPOOL_LISTEN"))
	return port
}

func splitHostPort(tb testing.TB, addr string) (string, uint32) {
	tb.Helper()
	host, p, err := net.SplitHostPort(addr)
	require.NoError(tb, err, addr)
	port, err := strconv.ParseUint(p, 10, 16)
	require.NoError(tb, err, addr)
	return host, uint32(port)
}

// servicePort is the port other containers reach a service on: its
// SPOOL_LISTEN port when it is a Spool service, else a port it declares.
func servicePorts(tb testing.TB, s types.ServiceConfig) []uint32 {
	tb.Helper()
	if _, ok := s.Environment["SPOOL_LISTEN"]; ok {
		return []uint32{listenPort(tb, s)}
	}
	var ports []uint32
	for _, p := range s.Ports {
		ports = append(ports, p.Target)
	}
	require.NotEmptyf(tb, ports, "service %s declares no port", s.Name)
	return ports
}

// requireServiceAddr checks that host:port names the compose service want
// on a port it serves on.
func requireServiceAddr(tb testing.TB, p *types.Project, host string, port uint32, want string) {
	tb.Helper()
	require.Equal(tb, want, host)
	require.Contains(tb, servicePorts(tb, service(tb, p, want)), port, "port of %s", want)
}

// requireServiceURL parses raw and checks that it points at the compose
// service want over plain HTTP.
func requireServiceURL(tb testing.TB, p *types.Project, raw, want string) *url.URL {
	tb.Helper()
	u, err := url.Parse(raw)
	require.NoError(tb, err)
	require.Equal(tb, "http", u.Scheme, raw)
	port, err := strconv.ParseUint(u.Port(), 10, 16)
	require.NoError(tb, err, "%s has no port", raw)
	requireServiceAddr(tb, p, u.Hostname(), uint32(port), want)
	return u
}

// initArgs returns the value of each flag of the init service's command.
func initArgs(tb testing.TB, p *types.Project) map[string]string {
	tb.Helper()
	cmd := service(tb, p, "init").Command
	require.NotEmpty(tb, cmd)
	require.Equal(tb, "init", cmd[0])
	args := map[string]string{}
	for i := 1; i < len(cmd); i += 2 {
		require.Less(tb, i+1, len(cmd), "flag %s has no value", cmd[i])
		args[strings.TrimLeft(cmd[i], "-")] = cmd[i+1]
	}
	return args
}

func TestComposeServices(t *testing.T) {
	all := loadAll(t)
	require.ElementsMatch(t, []string{"pki", "elasticmq", "dynamodb", "init", "ingestor", "dispatcher", "sink", "spool"}, all.ServiceNames())

	// `docker compose up` starts everything but the CLI tool service.
	up := loadCompose(t, nil)
	require.ElementsMatch(t, []string{"pki", "elasticmq", "dynamodb", "init", "ingestor", "dispatcher", "sink"}, up.ServiceNames())
	require.Contains(t, up.DisabledServices, "spool")
}

func TestComposeImages(t *testing.T) {
	p := loadAll(t)
	tests := []struct {
		service string
		repo    string
		// minimum is the oldest release that works with Spool's SDK.
		minimum [2]int
	}{
		// ElasticMQ speaks the SQS JSON protocol (aws-sdk-go-v2's) from 1.4
		// and returns system attributes asked for by
		// MessageSystemAttributeNames from 1.6.2.
		{service: "elasticmq", repo: "softwaremill/elasticmq-native", minimum: [2]int{1, 6}},
		// DynamoDB Local takes -disableTelemetry from 2.1.
		{service: "dynamodb", repo: "amazon/dynamodb-local", minimum: [2]int{2, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			s := service(t, p, tt.service)
			require.Nil(t, s.Build, "an emulator is pulled, not built")
			repo, tag, ok := strings.Cut(s.Image, ":")
			require.True(t, ok, "image %s is not pinned to a tag", s.Image)
			require.Equal(t, tt.repo, repo)
			m := regexp.MustCompile(`^(\d+)\.(\d+)\.\d+$`).FindStringSubmatch(tag)
			require.NotNil(t, m, "tag %s is not a release version", tag)
			major, _ := strconv.Atoi(m[1])
			minor, _ := strconv.Atoi(m[2])
			require.GreaterOrEqual(t, major*1000+minor, tt.minimum[0]*1000+tt.minimum[1], "tag %s is too old", tag)
		})
	}
}

func TestComposeBuilds(t *testing.T) {
	p := loadAll(t)
	root := absRoot(t)
	tests := []struct {
		service string
		cmd     string // the command the image runs, relative to the repository root
	}{
		{service: "pki", cmd: "local/cmd/spool-stack"},
		{service: "init", cmd: "cli/cmd/spool"},
		{service: "ingestor", cmd: "ingestor/cmd/ingestor"},
		{service: "dispatcher", cmd: "dispatcher/cmd/dispatcher"},
		{service: "sink", cmd: "sink/cmd/sink"},
		{service: "spool", cmd: "cli/cmd/spool"},
	}
	require.Len(t, tests, len(spoolServices))
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			b := service(t, p, tt.service).Build
			require.NotNil(t, b, "service %s has no build section", tt.service)
			// Every module replaces gen/ and platform/ with ../ paths, so
			// only the repository root holds all a build needs.
			require.Equal(t, root, b.Context)

			dockerfile := b.Dockerfile
			if !filepath.IsAbs(dockerfile) {
				dockerfile = filepath.Join(b.Context, dockerfile)
			}
			text, err := os.ReadFile(dockerfile)
			require.NoError(t, err, "the Dockerfile must exist")

			var cmd []string
			for _, arg := range []string{"MODULE", "COMMAND"} {
				require.Regexp(t, `(?m)^ARG `+arg+`$`, string(text), "the Dockerfile must take build arg %s", arg)
				v, ok := b.Args[arg]
				require.Truef(t, ok && v != nil && *v != "", "build arg %s is not set", arg)
				cmd = append(cmd, *v)
			}
			require.Equal(t, tt.cmd, cmd[0]+"/cmd/"+cmd[1], "the Dockerfile builds MODULE/cmd/COMMAND")
			requireMainPackage(t, filepath.Join(root, filepath.FromSlash(tt.cmd)))
		})
	}
}

// requireMainPackage checks that dir holds a Go command.
func requireMainPackage(tb testing.TB, dir string) {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	require.NoError(tb, err)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		ast, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.PackageClauseOnly)
		require.NoError(tb, err)
		if ast.Name.Name == "main" {
			return
		}
	}
	tb.Fatalf("%s holds no package main", dir)
}

func TestComposePorts(t *testing.T) {
	p := loadAll(t)
	tests := []struct {
		service   string
		target    uint32
		published string // a single port; empty when the service must scale
		minRange  int    // for a scaling service: host ports its range offers at least
	}{
		{service: "elasticmq", target: 9324, published: "9324"},
		{service: "dynamodb", target: 8000, published: "8000"},
		{service: "ingestor", target: 50051, published: "50051"},
		{service: "sink", target: 8080, published: "8080"},
		// `docker compose up --scale dispatcher=3` needs a host port per
		// replica, or none.
		{service: "dispatcher", target: 50052, minRange: 3},
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			s := service(t, p, tt.service)
			require.Len(t, s.Ports, 1)
			port := s.Ports[0]
			require.Equal(t, tt.target, port.Target)
			require.Equal(t, "127.0.0.1", port.HostIP, "the stack's PKI and credentials are throwaway ones")
			if _, ok := s.Environment["SPOOL_LISTEN"]; ok {
				require.Equal(t, tt.target, listenPort(t, s), "SPOOL_LISTEN must match the container port")
			}
			if tt.published != "" {
				require.Equal(t, tt.published, port.Published)
				return
			}
			require.Empty(t, s.ContainerName, "a fixed container name prevents scaling")
			if port.Published == "" {
				return
			}
			lo, hi := portRange(t, port.Published)
			require.GreaterOrEqual(t, hi-lo+1, tt.minRange, "range %s", port.Published)
		})
	}

	t.Run("no two services publish the same host port", func(t *testing.T) {
		seen := map[int]string{}
		for _, s := range p.Services {
			for _, port := range s.Ports {
				if port.Published == "" {
					continue
				}
				lo, hi := portRange(t, port.Published)
				for n := lo; n <= hi; n++ {
					require.NotContainsf(t, seen, n, "host port %d is published by %s and %s", n, seen[n], s.Name)
					seen[n] = s.Name
				}
			}
		}
	})
}

// portRange parses a published port, "8080" or "50052-50060".
func portRange(tb testing.TB, published string) (int, int) {
	tb.Helper()
	a, b, isRange := strings.Cut(published, "-")
	lo, err := strconv.Atoi(a)
	require.NoError(tb, err, published)
	if !isRange {
		return lo, lo
	}
	hi, err := strconv.Atoi(b)
	require.NoError(tb, err, published)
	require.LessOrEqual(tb, lo, hi, published)
	return lo, hi
}

func TestComposeEnvironment(t *testing.T) {
	p := loadAll(t)
	provisioned := initArgs(t, p)
	conf := loadElasticMQConfig(t, p)

	tests := []struct {
		service string
		// aws: the service talks to the emulators.
		aws bool
		// resources: the service reads SPOOL_QUEUE_URL and SPOOL_TABLE.
		resources bool
		// urls maps a variable to the service its URL must point at.
		urls map[string]string
		// addrs maps a variable to the service each of its comma-separated
		// host:port entries must point at.
		addrs map[string]string
		// exact values (the defaults the brief of the stack asks for).
		exact map[string]string
	}{
		{service: "pki"},
		{service: "init", aws: true},
		{service: "ingestor", aws: true, resources: true, exact: map[string]string{"SPOOL_LISTEN": ":50051"}},
		{
			service: "dispatcher", aws: true, resources: true,
			urls:  map[string]string{"SPOOL_DESTINATION_URL": "sink"},
			exact: map[string]string{"SPOOL_LISTEN": ":50052", "SPOOL_CONCURRENCY": "16"},
		},
		{service: "sink", exact: map[string]string{"SPOOL_LISTEN": ":8080"}},
		{
			service: "spool", aws: true,
			addrs: map[string]string{"SPOOL_INGESTOR_ADDR": "ingestor", "SPOOL_DISPATCHER_ADDRS": "dispatcher"},
		},
	}
	require.Len(t, tests, len(spoolServices))
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			s := service(t, p, tt.service)
			if tt.aws {
				require.NotEmpty(t, envOf(t, s, "AWS_REGION"))
				// DynamoDB Local rejects access key ids with anything but
				// letters and digits.
				require.Regexp(t, `^[A-Za-z0-9]+$`, envOf(t, s, "AWS_ACCESS_KEY_ID"))
				require.NotEmpty(t, envOf(t, s, "AWS_SECRET_ACCESS_KEY"))
				requireServiceURL(t, p, envOf(t, s, "AWS_ENDPOINT_URL_SQS"), "elasticmq")
				requireServiceURL(t, p, envOf(t, s, "AWS_ENDPOINT_URL_DYNAMODB"), "dynamodb")
				// ARNs name the region: ElasticMQ's must agree with the
				// clients'.
				require.Equal(t, lookup(t, conf, "aws", "region"), envOf(t, s, "AWS_REGION"))
			} else {
				for key := range s.Environment {
					require.False(t, strings.HasPrefix(key, "AWS_"), "service %s needs no AWS settings, has %s", s.Name, key)
				}
			}
			if tt.resources {
				u := requireServiceURL(t, p, envOf(t, s, "SPOOL_QUEUE_URL"), "elasticmq")
				// The URL ElasticMQ hands out: node-address, account id, name.
				require.Equal(t, lookup(t, conf, "node-address", "host"), u.Hostname())
				require.Equal(t, lookup(t, conf, "node-address", "port"), u.Port())
				require.Equal(t, "/"+lookup(t, conf, "aws", "accountId").(string)+"/"+provisioned["queue"], u.Path,
					"SPOOL_QUEUE_URL must name the queue init provisions")
				require.Equal(t, provisioned["table"], envOf(t, s, "SPOOL_TABLE"), "SPOOL_TABLE must name the table init provisions")
			}
			for key, target := range tt.urls {
				requireServiceURL(t, p, envOf(t, s, key), target)
			}
			for key, target := range tt.addrs {
				for _, addr := range strings.Split(envOf(t, s, key), ",") {
					host, port := splitHostPort(t, addr)
					requireServiceAddr(t, p, host, port, target)
				}
			}
			for key, want := range tt.exact {
				require.Equal(t, want, envOf(t, s, key), key)
			}
		})
	}

	t.Run("the ingestor's message limit fits ElasticMQ", func(t *testing.T) {
		n, err := strconv.Atoi(envOf(t, service(t, p, "ingestor"), "SPOOL_MAX_MESSAGE_BYTES"))
		require.NoError(t, err)
		require.Positive(t, n)
		require.LessOrEqual(t, n, 256<<10)
	})
}

func TestComposeInterpolation(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		want map[string]map[string]string // service → variable → value
	}{
		{
			name: "defaults",
			want: map[string]map[string]string{
				"dispatcher": {"SPOOL_CONCURRENCY": "16", "SPOOL_LOG_LEVEL": "info"},
				"ingestor":   {"SPOOL_LOG_LEVEL": "info"},
				"sink":       {"SPOOL_LOG_LEVEL": "info"},
			},
		},
		{
			name: "tuning from the shell",
			env:  []string{"SPOOL_CONCURRENCY=64", "SPOOL_LOG_LEVEL=debug"},
			want: map[string]map[string]string{
				"dispatcher": {"SPOOL_CONCURRENCY": "64", "SPOOL_LOG_LEVEL": "debug"},
				"ingestor":   {"SPOOL_LOG_LEVEL": "debug"},
				"sink":       {"SPOOL_LOG_LEVEL": "debug"},
			},
		},
		{
			// Real credentials in the shell, or a sourced .spool/stack.env
			// of the local stack, must not reach the containers.
			name: "the shell's AWS and stack settings stay out",
			env: []string{
				"AWS_ACCESS_KEY_ID=AKIAREALKEY", "AWS_SECRET_ACCESS_KEY=real", "AWS_REGION=eu-west-1",
				"AWS_ENDPOINT_URL_SQS=http://127.0.0.1:4100", "SPOOL_QUEUE_URL=http://127.0.0.1:4100/q", "SPOOL_TABLE=other",
			},
			want: map[string]map[string]string{
				"ingestor": {
					"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_REGION": "us-east-1",
					"AWS_ENDPOINT_URL_SQS": "http://elasticmq:9324",
					"SPOOL_QUEUE_URL":      "http://elasticmq:9324/000000000000/spool", "SPOOL_TABLE": "spool",
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := loadAll(t, tt.env...)
			for name, vars := range tt.want {
				s := service(t, p, name)
				for key, want := range vars {
					require.Equal(t, want, envOf(t, s, key), "%s %s", name, key)
				}
			}
		})
	}
}

func TestComposeDependencies(t *testing.T) {
	p := loadAll(t)
	tests := []struct {
		service, dependency, condition string
	}{
		{"init", "elasticmq", types.ServiceConditionHealthy},
		{"init", "dynamodb", types.ServiceConditionHealthy},
		{"ingestor", "init", types.ServiceConditionCompletedSuccessfully},
		{"dispatcher", "init", types.ServiceConditionCompletedSuccessfully},
		{"dispatcher", "sink", types.ServiceConditionHealthy},
		{"ingestor", "pki", types.ServiceConditionCompletedSuccessfully},
		{"dispatcher", "pki", types.ServiceConditionCompletedSuccessfully},
		{"spool", "ingestor", types.ServiceConditionHealthy},
		{"spool", "dispatcher", types.ServiceConditionHealthy},
	}
	for _, tt := range tests {
		t.Run(tt.service+" on "+tt.dependency, func(t *testing.T) {
			dep, ok := service(t, p, tt.service).DependsOn[tt.dependency]
			require.True(t, ok, "%s does not depend on %s", tt.service, tt.dependency)
			require.Equal(t, tt.condition, dep.Condition)
		})
	}

	t.Run("every awaited condition can be met", func(t *testing.T) {
		for _, s := range p.Services {
			for name, dep := range s.DependsOn {
				target := service(t, p, name)
				switch dep.Condition {
				case types.ServiceConditionHealthy:
					require.NotNil(t, target.HealthCheck, "%s waits for %s to be healthy, which has no healthcheck", s.Name, name)
					require.False(t, target.HealthCheck.Disable)
					require.NotEmpty(t, target.HealthCheck.Test)
				case types.ServiceConditionCompletedSuccessfully:
					require.Contains(t, []string{"", "no", "on-failure"}, target.Restart,
						"%s waits for %s to exit, which restarts", s.Name, name)
				}
			}
		}
	})
}

func TestComposeHealthchecks(t *testing.T) {
	p := loadAll(t)
	dockerfile, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "docker", "Dockerfile"))
	require.NoError(t, err)
	tests := []struct {
		service string
		flag    string // -grpc or -http
	}{
		{service: "ingestor", flag: "-grpc"},
		{service: "dispatcher", flag: "-grpc"},
		{service: "sink", flag: "-http"},
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			s := service(t, p, tt.service)
			require.NotNil(t, s.HealthCheck)
			test := s.HealthCheck.Test
			// Exec form: the distroless image has no shell for CMD-SHELL.
			require.Len(t, test, 4)
			require.Equal(t, []string{"CMD", "/probe", tt.flag}, []string(test[:3]))
			require.Contains(t, string(dockerfile), "COPY --from=build /out/probe /probe", "the image must carry the probe")
			target := test[3]
			if tt.flag == "-http" {
				u, err := url.Parse(target)
				require.NoError(t, err)
				target = u.Host
			}
			host, port := splitHostPort(t, target)
			require.Equal(t, "127.0.0.1", host)
			require.Equal(t, listenPort(t, s), port, "the probe must ask the port the service listens on")
		})
	}
}

func TestComposeShutdown(t *testing.T) {
	p := loadAll(t)
	// The services' default SPOOL_SHUTDOWN_GRACE; Docker's SIGKILL must not
	// cut a drain short.
	const grace = 25 * time.Second
	for _, name := range []string{"ingestor", "dispatcher"} {
		t.Run(name, func(t *testing.T) {
			s := service(t, p, name)
			require.NotNil(t, s.StopGracePeriod)
			require.Greater(t, time.Duration(*s.StopGracePeriod), grace)
		})
	}
}

// loadElasticMQConfig checks how the elasticmq service mounts its
// configuration file and returns the file, parsed.
func loadElasticMQConfig(tb testing.TB, p *types.Project) map[string]any {
	tb.Helper()
	s := service(tb, p, "elasticmq")
	for _, v := range s.Volumes {
		if v.Target != "/opt/elasticmq.conf" {
			continue
		}
		require.Equal(tb, types.VolumeTypeBind, v.Type)
		require.True(tb, v.ReadOnly)
		text, err := os.ReadFile(v.Source)
		require.NoError(tb, err, "the mounted configuration must exist")
		conf, err := parseHOCON(string(text))
		require.NoError(tb, err, v.Source)
		return conf
	}
	tb.Fatal("elasticmq mounts no /opt/elasticmq.conf, the file softwaremill/elasticmq-native reads")
	return nil
}

func TestElasticMQConfig(t *testing.T) {
	p := loadAll(t)
	conf := loadElasticMQConfig(t, p)
	queue := initArgs(t, p)["queue"]
	dlq := queue + "-dlq" // provision.EnsureQueue's naming
	o := provision.DefaultQueueOptions

	// `spool init` asks CreateQueue for these attributes; ElasticMQ answers
	// QueueAlreadyExists when a pre-created queue differs in any of them.
	tests := []struct {
		path []string
		want string
	}{
		{path: []string{"queues", queue, "defaultVisibilityTimeout"}, want: fmt.Sprintf("%d seconds", int(o.VisibilityTimeout/time.Second))},
		{path: []string{"queues", queue, "deadLettersQueue", "name"}, want: dlq},
		{path: []string{"queues", queue, "deadLettersQueue", "maxReceiveCount"}, want: strconv.Itoa(o.MaxReceiveCount)},
		{path: []string{"queues", queue, "delay"}, want: "0 seconds"},
		{path: []string{"queues", queue, "fifo"}, want: "false"},
		{path: []string{"node-address", "protocol"}, want: "http"},
		{path: []string{"node-address", "host"}, want: "elasticmq"},
		{path: []string{"node-address", "context-path"}, want: ""},
		{path: []string{"rest-sqs", "bind-hostname"}, want: "0.0.0.0"},
		{path: []string{"generate-node-address"}, want: "false"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.path, "."), func(t *testing.T) {
			require.Equal(t, tt.want, lookup(t, conf, tt.path...))
		})
	}

	t.Run("the dead-letter queue is declared", func(t *testing.T) {
		require.IsType(t, map[string]any{}, lookup(t, conf, "queues", dlq))
	})
	t.Run("ElasticMQ serves on the port the stack uses", func(t *testing.T) {
		port := strconv.Itoa(int(service(t, p, "elasticmq").Ports[0].Target))
		require.Equal(t, port, lookup(t, conf, "rest-sqs", "bind-port"))
		require.Equal(t, port, lookup(t, conf, "node-address", "port"))
	})
}
