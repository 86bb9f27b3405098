// Package stack runs Spool's whole local stack on loopback: the SQS and
// DynamoDB emulators, the queue and table, a sink that plays the third
// party, one ingestor and N dispatchers, each a real process on a free
// port. `make up`/`make down` use it detached; end-to-end tests use it
// attached and stop it at cleanup.
//
// Given a PKI (platform/devpki), the services run as on ECS: TLS, bearer
// tokens and a role policy; stack.env then carries the CA and a token per
// role for clients, and the settings a service process needs to join the
// stack. Without one they serve plaintext (SPOOL_INSECURE=true).
package stack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go/middleware"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/spoolhq/spool/platform/awsconf"
	"github.com/spoolhq/spool/platform/devpki"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/provision"
)

// Options configure a stack.
type Options struct {
	// StateDir receives logs/, the pid file and stack.env.
	StateDir string
	// BinDir holds the ingestor, dispatcher and sink binaries.
	BinDir string
	// LocalDir holds the emulators; empty means emulator.FindLocalDir.
	LocalDir string
	// Dispatchers is how many dispatcher processes run (default 2).
	Dispatchers int
	// Queue and Table name the resources (default "spool").
	Queue, Table string
	// QueueOptions shape the queue (default provision.DefaultQueueOptions).
	QueueOptions *provision.QueueOptions
	// Extra command-line flags per service.
	IngestorArgs, DispatcherArgs, SinkArgs []string
	// AWSEndpoint, when set, is asked for the endpoint the services use to
	// reach each emulator, given the emulator's own URL: a test puts a
	// proxy in between this way. Provisioning still talks to the emulator.
	AWSEndpoint func(kind emulator.Kind, emulatorURL string) (string, error)
	// Detach lets the processes outlive the caller (for `make up`).
	Detach bool
	// PKI, when set, runs the services with TLS and authentication: its
	// server settings go to every service, and stack.env names its CA and
	// holds a token per role. Without it the services run with
	// SPOOL_INSECURE=true: plaintext, no authentication.
	PKI *devpki.PKI
	// Log receives one line per step; nil discards.
	Log io.Writer
}

// Stack is a running stack.
type Stack struct {
	opts Options
	// Env is what stack.env holds: the endpoints of everything, as the
	// variables the binaries and the CLI read.
	Env         []string
	SQS, Dynamo *Proc
	Sink        *Proc
	Ingestor    *Proc
	Dispatchers []*Proc
	// Tokens holds a token per role of the PKI's policy ("admin",
	// "submitter", "viewer", "operator", "approver"), valid for TokenTTL;
	// empty without a PKI.
	Tokens  map[string]string
	procs   []*Proc
	baseEnv []string
	// serviceEnv is what every Spool service gets besides baseEnv: TLS and
	// token settings, reflection, the sink's http:// allowance.
	serviceEnv []string
	// dialOpts are how the stack itself asks its services for their health.
	dialOpts []grpc.DialOption
}

// EnvFile and PIDFile are the names of the files Up writes in StateDir.
const (
	EnvFile = "stack.env"
	PIDFile = "pids"
)

// Up starts the stack and returns once every part is ready. On error it
// stops whatever it had started.
func Up(ctx context.Context, o Options) (s *Stack, err error) {
	if o.Dispatchers <= 0 {
		o.Dispatchers = 2
	}
	if o.Queue == "" {
		o.Queue = "spool"
	}
	if o.Table == "" {
		o.Table = "spool"
	}
	if o.QueueOptions == nil {
		o.QueueOptions = &provision.DefaultQueueOptions
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.LocalDir == "" {
		if o.LocalDir, err = emulator.FindLocalDir(); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Join(o.StateDir, "logs"), 0o755); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	s = &Stack{opts: o}
	var clientEnv []string
	if o.PKI == nil {
		s.serviceEnv = insecureServiceEnv
	} else if s.serviceEnv, clientEnv, s.Tokens, err = authEnv(o.PKI); err != nil {
		return nil, err
	}
	// Health is exempt from authentication: the transport is enough.
	if s.dialOpts, err = s.DialOptions(""); err != nil {
		return nil, err
	}
	// Every failed return below sets s to nil: stop what was started
	// through a copy.
	started := s
	defer func() {
		if err != nil {
			_ = started.Down()
		}
	}()

	// Emulators first; everything else needs them.
	if s.SQS, err = s.startEmulator(ctx, emulator.SQS); err != nil {
		return nil, err
	}
	if s.Dynamo, err = s.startEmulator(ctx, emulator.DynamoDB); err != nil {
		return nil, err
	}
	impl, _ := emulator.ChosenDynamoDB() // started, so valid
	fmt.Fprintf(o.Log, "DynamoDB emulator: %s (%s)\n", impl, emulator.DynamoDBEnv)
	sqsEndpoint, ddbEndpoint := s.SQS.Addr, s.Dynamo.Addr
	if o.AWSEndpoint != nil {
		if sqsEndpoint, err = o.AWSEndpoint(emulator.SQS, s.SQS.Addr); err != nil {
			return nil, fmt.Errorf("endpoint of %s: %w", emulator.SQS, err)
		}
		if ddbEndpoint, err = o.AWSEndpoint(emulator.DynamoDB, s.Dynamo.Addr); err != nil {
			return nil, fmt.Errorf("endpoint of %s: %w", emulator.DynamoDB, err)
		}
	}
	s.baseEnv = []string{
		"AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=local",
		"AWS_SECRET_ACCESS_KEY=local",
		"AWS_EC2_METADATA_DISABLED=true",
		emulator.SQS.EnvEndpoint() + "=" + sqsEndpoint,
		emulator.DynamoDB.EnvEndpoint() + "=" + ddbEndpoint,
	}
	queues, err := provisionAll(ctx, s.SQS.Addr, s.Dynamo.Addr, o)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Log, "queue %s (dead letters: %s), table %s\n", queues.URL, queues.DLQURL, o.Table)
	s.baseEnv = append(s.baseEnv, "SPOOL_QUEUE_URL="+queues.URL, "SPOOL_DLQ_URL="+queues.DLQURL, "SPOOL_TABLE="+o.Table)

	if s.Sink, err = s.startService(ctx, "sink", "sink", o.SinkArgs, nil, httpReady("/healthz")); err != nil {
		return nil, err
	}
	// The dispatchers send job events to the sink; the ingestor keeps
	// those of its own transitions for them.
	if s.Ingestor, err = s.startService(ctx, "ingestor", "ingestor", o.IngestorArgs, []string{"SPOOL_JOB_EVENTS=true"}, s.grpcReady); err != nil {
		return nil, err
	}
	// stack.env carries these too, so a dispatcher started by hand with it
	// delivers where the stack's own do.
	dispatcherEnv := []string{
		"SPOOL_DESTINATION_URL=" + s.Sink.Addr + "/",
		// The sink is a local stand-in served over plain HTTP,
		// which a dispatcher refuses unless allowed.
		"SPOOL_ALLOW_INSECURE_DESTINATION=true",
		// The sink records job events too (GET /events).
		"SPOOL_EVENTS_WEBHOOK_URL=" + s.Sink.Addr + "/events",
		// local-aws-sqs answers a long poll only once it holds
		// MaxNumberOfMessages or the wait is over (AWS answers as soon
		// as any message is there), so the last few messages of a job
		// wait out the poll. A short wait keeps the demo's tail short;
		// on AWS the default is right.
		"SPOOL_RECEIVE_WAIT=1s",
	}
	for i := 1; i <= o.Dispatchers; i++ {
		d, err := s.startService(ctx, "dispatcher-"+strconv.Itoa(i), "dispatcher", o.DispatcherArgs, dispatcherEnv, s.grpcReady)
		if err != nil {
			return nil, err
		}
		s.Dispatchers = append(s.Dispatchers, d)
	}

	addrs := make([]string, len(s.Dispatchers))
	metricsURLs := make([]string, len(s.Dispatchers))
	for i, d := range s.Dispatchers {
		addrs[i] = d.Addr
		metricsURLs[i] = d.MetricsURL
	}
	// The services' settings and the clients' credentials, so that a
	// process started by hand with this environment joins the stack.
	s.Env = slices.Concat(s.baseEnv, s.serviceEnv, dispatcherEnv, clientEnv, []string{
		"SPOOL_INGESTOR_ADDR=" + s.Ingestor.Addr,
		"SPOOL_DISPATCHER_ADDRS=" + strings.Join(addrs, ","),
		"SPOOL_SINK_URL=" + s.Sink.Addr,
		"SPOOL_INGESTOR_METRICS_URL=" + s.Ingestor.MetricsURL,
		"SPOOL_DISPATCHER_METRICS_URLS=" + strings.Join(metricsURLs, ","),
	})
	if err := s.writeFiles(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Stack) startEmulator(ctx context.Context, kind emulator.Kind) (*Proc, error) {
	port, err := emulator.FreePort()
	if err != nil {
		return nil, err
	}
	cmd, err := emulator.Command(kind, s.opts.LocalDir, port)
	if err != nil {
		return nil, err
	}
	p := newProc(string(kind), emulator.Endpoint(port), s.opts.StateDir, cmd.Path, cmd.Args[1:], os.Environ(), cmd.Dir, s.opts.Detach)
	if err := s.launch(ctx, p, func(ctx context.Context, p *Proc) error { return emulator.WaitReady(ctx, p.Addr) }); err != nil {
		return nil, err
	}
	return p, nil
}

// startService starts one of Spool's binaries, configured through the
// environment exactly as on ECS.
func (s *Stack) startService(ctx context.Context, name, bin string, args, env []string, ready func(context.Context, *Proc) error) (*Proc, error) {
	port, err := emulator.FreePort()
	if err != nil {
		return nil, err
	}
	listen := "127.0.0.1:" + strconv.Itoa(port)
	addr := listen
	if bin == "sink" {
		addr = "http://" + listen
	}
	full := append(append(append(os.Environ(), s.baseEnv...), env...), "SPOOL_LISTEN="+listen)
	metricsURL := ""
	if bin != "sink" {
		full = append(full, s.serviceEnv...)
		// The metrics page listens on a port of its own, as on ECS.
		mport, err := emulator.FreePort()
		if err != nil {
			return nil, err
		}
		mlisten := "127.0.0.1:" + strconv.Itoa(mport)
		full = append(full, "SPOOL_METRICS_LISTEN="+mlisten)
		metricsURL = "http://" + mlisten + "/metrics"
	}
	p := newProc(name, addr, s.opts.StateDir, filepath.Join(s.opts.BinDir, bin), args, full, s.opts.StateDir, s.opts.Detach)
	p.MetricsURL = metricsURL
	if err := s.launch(ctx, p, ready); err != nil {
		return nil, err
	}
	return p, nil
}

func (s *Stack) launch(ctx context.Context, p *Proc, ready func(context.Context, *Proc) error) error {
	if err := p.start(); err != nil {
		return err
	}
	s.procs = append(s.procs, p)
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := waitReady(ctx, p, ready); err != nil {
		return err
	}
	fmt.Fprintf(s.opts.Log, "%-13s pid %-7d %s\n", p.Name, p.Pid(), p.Addr)
	return nil
}

// waitReady runs ready until it succeeds, the process exits, or ctx ends.
func waitReady(ctx context.Context, p *Proc, ready func(context.Context, *Proc) error) error {
	errc := make(chan error, 1)
	go func() { errc <- ready(ctx, p) }()
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("%s not ready: %w (log: %s)", p.Name, err, p.LogPath)
		}
		return nil
	case <-p.done:
		return fmt.Errorf("%s exited during start-up: %v (log: %s)", p.Name, p.err, p.LogPath)
	}
}

// Ready is the readiness check of a service process, for Proc.Restart.
func (s *Stack) Ready(p *Proc) func(context.Context, *Proc) error {
	if p == s.Sink {
		return httpReady("/healthz")
	}
	return s.grpcReady
}

// grpcReady polls the standard gRPC health service until it says SERVING.
func (s *Stack) grpcReady(ctx context.Context, p *Proc) error {
	conn, err := grpc.NewClient(p.Addr, s.dialOpts...)
	if err != nil {
		return err
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func httpReady(path string) func(context.Context, *Proc) error {
	return func(ctx context.Context, p *Proc) error {
		for {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.Addr+path, nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
			}
			select {
			case <-ctx.Done():
				return errors.Join(ctx.Err(), err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

func provisionAll(ctx context.Context, sqsURL, ddbURL string, o Options) (provision.Queues, error) {
	cfg := aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("local", "local", ""),
		APIOptions:  []func(*middleware.Stack) error{awsconf.CRC32WhenPresent},
	}
	sq := sqs.NewFromConfig(cfg, func(opt *sqs.Options) { opt.BaseEndpoint = aws.String(sqsURL) })
	db := dynamodb.NewFromConfig(cfg, func(opt *dynamodb.Options) { opt.BaseEndpoint = aws.String(ddbURL) })
	q, err := provision.EnsureQueue(ctx, sq, o.Queue, *o.QueueOptions)
	if err != nil {
		return provision.Queues{}, err
	}
	if err := provision.EnsureTable(ctx, db, o.Table); err != nil {
		return provision.Queues{}, err
	}
	// dynalite has no UpdateTimeToLive: there, settled ledger records
	// simply stay. DynamoDB Local turns it on (and never expires items).
	if err := provision.EnsureExpiry(ctx, db, o.Table); err != nil && !errors.Is(err, provision.ErrExpiryUnsupported) {
		return provision.Queues{}, err
	}
	return q, nil
}

// writeFiles writes stack.env and the pid file. stack.env holds tokens,
// so only its owner may read it.
func (s *Stack) writeFiles() error {
	env := strings.Join(s.Env, "\n") + "\n"
	path := filepath.Join(s.opts.StateDir, EnvFile)
	// WriteFile keeps the mode of a file that exists: an older stack.env
	// may have been readable by all.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("replace %s: %w", EnvFile, err)
	}
	if err := os.WriteFile(path, []byte(env), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", EnvFile, err)
	}
	var b strings.Builder
	for _, p := range s.procs {
		fmt.Fprintf(&b, "%s %d %s\n", p.Name, p.Pid(), p.path)
	}
	if err := os.WriteFile(filepath.Join(s.opts.StateDir, PIDFile), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", PIDFile, err)
	}
	return nil
}

// Down stops every process the stack started, services before emulators,
// and returns the errors of those that did not exit cleanly.
func (s *Stack) Down() error {
	var errs []error
	for i := len(s.procs) - 1; i >= 0; i-- {
		if err := s.procs[i].Stop(30 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	_ = os.Remove(filepath.Join(s.opts.StateDir, PIDFile))
	return errors.Join(errs...)
}

// DownDetached stops the processes a detached Up recorded in stateDir's
// pid file. It signals a pid only while /proc says it still runs the same
// program, so a recycled pid is never hit.
func DownDetached(stateDir string, log io.Writer) error {
	path := filepath.Join(stateDir, PIDFile)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintln(log, "stack is not up (no pid file)")
		return nil
	}
	if err != nil {
		return fmt.Errorf("open pid file: %w", err)
	}
	type entry struct {
		name, exe string
		pid       int
	}
	var entries []entry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			continue
		}
		pid, err := strconv.Atoi(fields[1])
		if err != nil {
			continue
		}
		entries = append(entries, entry{name: fields[0], pid: pid, exe: fields[2]})
	}
	f.Close()
	var errs []error
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if !runs(e.pid, e.exe) {
			continue
		}
		_ = syscall.Kill(e.pid, syscall.SIGTERM)
		deadline := time.Now().Add(30 * time.Second)
		for runs(e.pid, e.exe) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if runs(e.pid, e.exe) {
			_ = syscall.Kill(e.pid, syscall.SIGKILL)
			errs = append(errs, fmt.Errorf("%s (pid %d) ignored SIGTERM for 30s; killed", e.name, e.pid))
		}
		fmt.Fprintf(log, "stopped %s (pid %d)\n", e.name, e.pid)
	}
	if err := os.Remove(path); err != nil {
		errs = append(errs, fmt.Errorf("remove pid file: %w", err))
	}
	return errors.Join(errs...)
}

// runs reports whether pid is alive (not a zombie) and runs exe.
func runs(pid int, exe string) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(cmdline) == 0 {
		return false
	}
	argv0 := strings.SplitN(string(cmdline), "\x00", 2)[0]
	return argv0 == exe || filepath.Base(argv0) == filepath.Base(exe)
}
