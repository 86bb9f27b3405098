package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spoolhq/spool/dispatcher/internal/breaker"
	"github.com/spoolhq/spool/dispatcher/internal/deadletter"
	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/dispatcher/internal/dispatch"
	"github.com/spoolhq/spool/dispatcher/internal/dispatchrpc"
	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	"github.com/spoolhq/spool/dispatcher/internal/limit"
	"github.com/spoolhq/spool/dispatcher/internal/rate"
	"github.com/spoolhq/spool/dispatcher/internal/recount"
	"github.com/spoolhq/spool/platform/envcfg"
	"github.com/spoolhq/spool/platform/envelope"
	"github.com/spoolhq/spool/platform/grpcserve"
	"github.com/spoolhq/spool/platform/reference"
)

// config is everything the dispatcher is told at start.
type config struct {
	listen            string
	security          grpcserve.SecurityFlags
	metricsListen     string
	queueURL          string
	table             string
	destinationURL    string
	headers           headerList
	destTimeout       time.Duration
	idempotencyHeader string
	tenant            string
	destinationName   string
	legacyKeys        legacyKeysMode
	referenceFrom     referenceFlag
	concurrency       int
	// messagesHeld is the most messages held at once, as configured, or
	// heldMessages(concurrency) for 0.
	messagesHeld   int
	pollers        int
	receiveWait    time.Duration
	counterFlush   time.Duration
	watchInterval  time.Duration
	shutdownGrace  time.Duration
	logLevel       slog.Level
	jobCacheTTL    time.Duration
	receivingDelay time.Duration
	unknownPolicy  ledger.Policy
	// claimLease is the lease as configured, or deliveryBound for 0.
	claimLease      time.Duration
	ledgerRetention time.Duration
	outcomeRetry    time.Duration
	repairInterval  time.Duration
	repairAfter     time.Duration

	// Job events (package notify).
	events eventsConfig

	// Delivery failure handling.
	deadLetterURL     string
	alreadyApplied    statusList
	maxAttempts       int
	maxAge            time.Duration
	backoffBase       time.Duration
	backoffMax        time.Duration
	retryAfterMax     time.Duration
	visibilityTimeout time.Duration
	heartbeat         time.Duration
	pausedDelay       time.Duration
	deadLetterScan    int
	deadLetterScanMax int
	deadLetterHold    time.Duration

	// Operator actions that wait for a second principal, and how long.
	fourEyes fourEyesFlag

	// Limits of the gRPC server.
	grpc grpcserve.Limits

	// Flow control toward the destination.
	concurrencyMin     int
	concurrencyInitial int
	everyLossCuts      bool
	rateLimit          float64
	rateBurst          int
	rateKey            string
	breakerFailures    int
	breakerFailureRate float64
	breakerCooldown    time.Duration
	breakerMaxCooldown time.Duration

	// How the dispatcher authenticates to the destination.
	dest destAuth
}

// defaultDeadLetterScanMax is ten default scans: a scan holds every
// message it reads invisible until it ends, so a caller must not hold the
// whole dead-letter queue from everyone else.
const defaultDeadLetterScanMax = 10 * deadletter.DefaultMaxScan

// Ledger retention: how long a settled record suppresses duplicates.
const (
	defaultLedgerRetention = 90 * 24 * time.Hour
	minLedgerRetention     = 15 * 24 * time.Hour
)

// namespace is the delivery ledger's namespace of this fleet. Without a
// -destination-name, the destination URL names the third party: its host
// (and port), and a digest of its path, so that two third parties behind
// one host differ. The path itself is not written: webhook URLs often
// carry a secret there, and the namespace is in every ledger key and in
// the start-up log. The query is left out for the same reason.
func (c config) namespace() envelope.Namespace {
	ns := envelope.Namespace{Tenant: c.tenant, Destination: c.destinationName}
	if ns.Destination == "" {
		if u, err := url.Parse(c.destinationURL); err == nil {
			ns.Destination = strings.ToLower(u.Host)
			if p := strings.TrimSuffix(u.EscapedPath(), "/"); p != "" {
				sum := sha256.Sum256([]byte(p))
				ns.Destination += "/" + hex.EncodeToString(sum[:8])
			}
		}
	}
	return ns
}

// deliveryBound is long enough for one delivery with its timeout to finish
// twice over: whatever it was, it has answered or timed out by then.
func (c config) deliveryBound() time.Duration {
	return 2*c.destTimeout + 5*time.Second
}

// parseConfig reads flags, with SPOOL_* environment fallbacks through
// lookup (os.LookupEnv when nil).
func parseConfig(args []string, lookup func(string) (string, bool), out io.Writer) (config, error) {
	c := config{grpc: grpcserve.DefaultLimits()}
	fs := flag.NewFlagSet("dispatcher", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.listen, "listen", ":50052", "gRPC listen address")
	c.security.Register(fs)
	fs.StringVar(&c.metricsListen, "metrics-listen", "", "address of the Prometheus metrics page (/metrics); off when empty")
	fs.StringVar(&c.queueURL, "queue-url", "", "URL of the SQS queue to consume (required)")
	fs.StringVar(&c.table, "table", "", "DynamoDB table of the job records (required)")
	fs.StringVar(&c.destinationURL, "destination-url", "", "URL every transaction is POSTed to (required)")
	fs.Var(&c.headers, "destination-header", `header added to every POST, "Name: value"; repeatable, or one per line in the environment`)
	fs.DurationVar(&c.destTimeout, "destination-timeout", 10*time.Second, "timeout of one POST, response included")
	fs.StringVar(&c.tenant, "tenant", "", "name of this fleet when fleets share one table: its delivery ledger is its own (set the same on its ingestors); empty = none")
	fs.StringVar(&c.destinationName, "destination-name", "", "name of the third party in the delivery ledger's keys: the same business key for another destination is another transaction; empty = the destination URL's host and a digest of its path (set it to keep the ledger when the URL changes)")
	fs.Var(&c.legacyKeys, "ledger-legacy-keys", "auto, on or off: also look for each transaction's ledger record under its key from before keys were namespaced, so rows settled then are not sent again; one more read per row; auto = on unless the table's layout item says its keys were namespaced from the start (read at start; a failed read stops the start); turn off once -ledger-retention has passed since the upgrade and no UNKNOWN row of that time is left")
	fs.StringVar(&c.idempotencyHeader, "idempotency-header", deliver.DefaultIdempotencyHeader, "header carrying the transaction key")
	fs.Var(&c.referenceFrom, "reference-from", `where the destination's accepting answer carries its reference for a transaction, kept in the delivery ledger: "body:/json/pointer" or "header:Name" (a file's profile may name its own); none when empty`)
	fs.IntVar(&c.concurrency, "concurrency", 16, "most deliveries in flight at once: the adaptive concurrency limit's ceiling")
	fs.IntVar(&c.messagesHeld, "messages-held", 0, "most messages held at once: those in flight to the destination, and those being received, written to the ledger or settled around them; at least -concurrency; 0 = twice -concurrency")
	fs.IntVar(&c.concurrencyMin, "concurrency-min", limit.DefaultMin, "floor of the adaptive concurrency limit")
	fs.IntVar(&c.concurrencyInitial, "concurrency-initial", limit.DefaultInitial, "adaptive concurrency limit before the first latency samples (capped by -concurrency)")
	fs.BoolVar(&c.everyLossCuts, "concurrency-every-loss-cuts", false, "for comparison only: every 5xx and timeout cuts the adaptive concurrency limit, as plain AIMD does, instead of losses beyond the destination's usual rate (random failures then hold the limit near its floor)")
	fs.Float64Var(&c.rateLimit, "rate-limit", 0, "requests per second to the destination for the whole fleet of dispatchers, shared through the table; 0 = no limit")
	fs.IntVar(&c.rateBurst, "rate-burst", rate.DefaultBurst, "requests let through at once after an idle spell, under -rate-limit")
	fs.StringVar(&c.rateKey, "rate-key", "", "name of the shared rate limit: dispatchers with the same key share one; empty = the destination URL's host")
	fs.IntVar(&c.breakerFailures, "breaker-failures", breaker.DefaultFailures, "destination failures in a row (5xx, 408, timeouts, refused connections, lost answers; not 429) that open the circuit breaker and stop receiving")
	fs.Float64Var(&c.breakerFailureRate, "breaker-failure-rate", 0, "share of failed requests over 10s (at least 20 requests) that also opens the breaker; 0 = off")
	fs.DurationVar(&c.breakerCooldown, "breaker-cooldown", breaker.DefaultCooldown, "how long the breaker stays open before one probe delivery; doubles per failed probe")
	fs.DurationVar(&c.breakerMaxCooldown, "breaker-max-cooldown", breaker.DefaultMaxCooldown, "cap on the breaker's doubling cool-down")
	fs.IntVar(&c.pollers, "pollers", 0, "parallel receive calls; 0 = ceil(messages-held/10)+1")
	fs.DurationVar(&c.receiveWait, "receive-wait", 5*time.Second, "long-poll wait of one receive, whole seconds, at most 20s")
	fs.DurationVar(&c.counterFlush, "counter-flush", time.Second, "how often job counters are written")
	fs.DurationVar(&c.watchInterval, "watch-interval", dispatchrpc.DefaultInterval, "how often a watched job is read; its watchers share each read")
	fs.DurationVar(&c.shutdownGrace, "shutdown-grace", 25*time.Second, "bound on shutdown: finish in-flight deliveries, flush deletes and counters")
	fs.DurationVar(&c.jobCacheTTL, "job-cache-ttl", dispatch.DefaultJobCacheTTL, "how long a job record read is trusted when gating deliveries")
	fs.DurationVar(&c.receivingDelay, "receiving-delay", dispatch.DefaultReceivingDelay, "longest wait before a message of a job still receiving comes back (the first is 1s, doubling per receive)")
	fs.Var((*policyFlag)(&c.unknownPolicy), "unknown-policy", "what to do with a row whose delivery outcome is unknown: hold (never resend) or retry-with-key")
	fs.DurationVar(&c.claimLease, "claim-lease", 0, "how long a dispatcher owns a transaction it claimed; at least -destination-timeout + 3s; 0 = 2 × destination-timeout + 5s")
	fs.DurationVar(&c.ledgerRetention, "ledger-retention", defaultLedgerRetention, "how long a settled ledger record is kept, suppressing the same transaction in redeliveries and later files (DynamoDB time to live); at least 15 days")
	fs.DurationVar(&c.repairInterval, "repair-interval", recount.DefaultInterval, "how often job counters are checked against the delivery ledger")
	fs.DurationVar(&c.outcomeRetry, "outcome-retry", ledger.DefaultOutcomeRetry, "how long a delivery's outcome is written again while the table fails or throttles, before the row is left to become UNKNOWN")
	fs.DurationVar(&c.repairAfter, "repair-after", recount.DefaultAfter, "how long a sealed job's record and ledger must go unchanged before its counters are repaired from the ledger")
	fs.StringVar(&c.deadLetterURL, "dead-letter-queue-url", "", "URL of the dead-letter queue; empty = the one the queue's redrive policy names")
	fs.Var(&c.alreadyApplied, "already-applied", "HTTP statuses meaning the destination has the transaction already, comma-separated; they count as delivered (default none: a 409 is retried, as it may mean the same key is still in progress)")
	fs.IntVar(&c.maxAttempts, "max-attempts", dispatch.DefaultMaxAttempts, "delivery attempts of a row before a retryable failure dead-letters it")
	fs.DurationVar(&c.maxAge, "max-age", dispatch.DefaultMaxAge, "age of a message (since it was queued) after which a retryable failure dead-letters it")
	fs.DurationVar(&c.backoffBase, "backoff-base", dispatch.DefaultBackoffBase, "first retry backoff ceiling; it doubles per attempt, with full jitter")
	fs.DurationVar(&c.backoffMax, "backoff-max", dispatch.DefaultBackoffMax, "largest retry backoff ceiling")
	fs.DurationVar(&c.retryAfterMax, "retry-after-max", dispatch.DefaultRetryAfterMax, "longest wait a destination's Retry-After is honoured for")
	fs.DurationVar(&c.visibilityTimeout, "visibility-timeout", 30*time.Second, "visibility timeout asked for on every receive, whole seconds; deliveries are extended by it while they run")
	fs.DurationVar(&c.heartbeat, "heartbeat", 0, "how often a message being delivered is extended; 0 = a third of -visibility-timeout")
	fs.DurationVar(&c.pausedDelay, "paused-delay", dispatch.DefaultPausedDelay, "longest wait before a message of a paused job comes back (the first is 10s, doubling per receive)")
	fs.IntVar(&c.deadLetterScan, "dead-letter-scan", deadletter.DefaultMaxScan, "most dead-letter queue messages one listing or redrive reads")
	fs.IntVar(&c.deadLetterScanMax, "dead-letter-scan-max", defaultDeadLetterScanMax, "largest max_scan a ListDeadLetters or RedriveDeadLetters caller may ask for; larger requests are refused")
	fs.DurationVar(&c.deadLetterHold, "dead-letter-hold", deadletter.DefaultHold, "visibility of dead letters while a listing or redrive reads them (it reads for half of it)")
	c.fourEyes = fourEyesFlag{Resolve: true, Redrive: true}
	fs.Var(&c.fourEyes, "four-eyes", `operator actions that wait for a second, different principal's approval (ApproveRequest): "resolve", "redrive", both comma-separated, or "none"; without authentication every caller is the same "anonymous", so such a server needs "none" to resolve at all`)
	fs.DurationVar(&c.fourEyes.TTL, "four-eyes-ttl", dispatchrpc.DefaultRequestTTL, "how long a four-eyes request waits for its approval before it expires")
	c.events.flags(fs)
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "debug, info, warn or error")
	c.dest.flags(fs)
	c.grpc.RegisterFlags(fs)
	if err := envcfg.Parse(fs, args, lookup); err != nil {
		return config{}, err
	}
	err := c.validate()
	if c.destinationURL != "" {
		err = errors.Join(err, c.dest.load(c.destinationURL, c.headers.h, lookup))
	}
	err = errors.Join(err, c.events.load(&c.dest, lookup))
	if err != nil {
		return config{}, err
	}
	if c.claimLease == 0 {
		c.claimLease = c.deliveryBound()
	}
	if c.messagesHeld == 0 {
		c.messagesHeld = heldMessages(c.concurrency)
	}
	return c, nil
}

func (c config) validate() error {
	var errs []error
	if err := c.security.Check(); err != nil {
		errs = append(errs, err)
	}
	for _, f := range []struct{ name, value string }{
		{"queue-url", c.queueURL}, {"table", c.table}, {"destination-url", c.destinationURL},
	} {
		if f.value == "" {
			errs = append(errs, fmt.Errorf("-%s (or $%s) is required", f.name, envcfg.EnvName(f.name)))
		}
	}
	if c.tenant != "" {
		if err := envelope.CheckName(c.tenant); err != nil {
			errs = append(errs, fmt.Errorf("-tenant: %w", err))
		}
	}
	if c.destinationName != "" {
		if err := envelope.CheckName(c.destinationName); err != nil {
			errs = append(errs, fmt.Errorf("-destination-name: %w", err))
		}
	}
	if c.concurrency < 1 {
		errs = append(errs, fmt.Errorf("-concurrency %d: want at least 1", c.concurrency))
	}
	if c.concurrencyMin < 1 || c.concurrencyMin > max(c.concurrency, 1) {
		errs = append(errs, fmt.Errorf("-concurrency-min %d: want 1 to -concurrency (%d)", c.concurrencyMin, c.concurrency))
	}
	if c.messagesHeld != 0 && c.messagesHeld < c.concurrency {
		errs = append(errs, fmt.Errorf("-messages-held %d: want 0 (twice -concurrency) or at least -concurrency (%d)", c.messagesHeld, c.concurrency))
	}
	if c.concurrencyInitial < 1 {
		errs = append(errs, fmt.Errorf("-concurrency-initial %d: want at least 1", c.concurrencyInitial))
	}
	if c.rateLimit < 0 {
		errs = append(errs, fmt.Errorf("-rate-limit %v: want 0 (off) or more", c.rateLimit))
	}
	if c.rateBurst < 1 {
		errs = append(errs, fmt.Errorf("-rate-burst %d: want at least 1", c.rateBurst))
	}
	if c.breakerFailures < 1 {
		errs = append(errs, fmt.Errorf("-breaker-failures %d: want at least 1", c.breakerFailures))
	}
	if c.breakerFailureRate < 0 || c.breakerFailureRate > 1 {
		errs = append(errs, fmt.Errorf("-breaker-failure-rate %v: want 0 (off) to 1", c.breakerFailureRate))
	}
	if c.breakerCooldown <= 0 || c.breakerMaxCooldown < c.breakerCooldown {
		errs = append(errs, fmt.Errorf("-breaker-cooldown %s, -breaker-max-cooldown %s: want 0 < cooldown <= max", c.breakerCooldown, c.breakerMaxCooldown))
	}
	if c.pollers < 0 {
		errs = append(errs, fmt.Errorf("-pollers %d: want 0 or more", c.pollers))
	}
	if c.receiveWait < 0 || c.receiveWait > 20*time.Second || c.receiveWait%time.Second != 0 {
		errs = append(errs, fmt.Errorf("-receive-wait %s: want whole seconds from 0s to 20s", c.receiveWait))
	}
	for _, f := range []struct {
		name  string
		value time.Duration
	}{
		{"destination-timeout", c.destTimeout}, {"counter-flush", c.counterFlush},
		{"watch-interval", c.watchInterval}, {"shutdown-grace", c.shutdownGrace},
		{"job-cache-ttl", c.jobCacheTTL}, {"receiving-delay", c.receivingDelay},
		{"repair-interval", c.repairInterval}, {"repair-after", c.repairAfter},
		{"max-age", c.maxAge}, {"backoff-base", c.backoffBase}, {"backoff-max", c.backoffMax},
		{"retry-after-max", c.retryAfterMax}, {"paused-delay", c.pausedDelay},
		{"outcome-retry", c.outcomeRetry},
	} {
		if f.value <= 0 {
			errs = append(errs, fmt.Errorf("-%s %s: want more than 0", f.name, f.value))
		}
	}
	if c.ledgerRetention < minLedgerRetention {
		// A record must outlive every message of its row: SQS keeps a
		// message up to 14 days, and a redelivery after its record expired
		// would be sent again.
		errs = append(errs, fmt.Errorf("-ledger-retention %s: want at least %s, longer than SQS keeps a message", c.ledgerRetention, minLedgerRetention))
	}
	if c.maxAttempts < 1 {
		errs = append(errs, fmt.Errorf("-max-attempts %d: want at least 1", c.maxAttempts))
	}
	if c.visibilityTimeout < 3*time.Second || c.visibilityTimeout > 12*time.Hour || c.visibilityTimeout%time.Second != 0 {
		errs = append(errs, fmt.Errorf("-visibility-timeout %s: want whole seconds from 3s to 12h", c.visibilityTimeout))
	}
	if c.heartbeat < 0 || (c.heartbeat > 0 && c.heartbeat >= c.visibilityTimeout) {
		errs = append(errs, fmt.Errorf("-heartbeat %s: want 0, or less than -visibility-timeout", c.heartbeat))
	}
	if c.deadLetterScan < 1 {
		errs = append(errs, fmt.Errorf("-dead-letter-scan %d: want at least 1", c.deadLetterScan))
	}
	if c.deadLetterScanMax < c.deadLetterScan {
		errs = append(errs, fmt.Errorf("-dead-letter-scan-max %d: want at least -dead-letter-scan (%d)", c.deadLetterScanMax, c.deadLetterScan))
	}
	errs = append(errs, c.grpc.Validate())
	if c.deadLetterHold < 2*time.Second || c.deadLetterHold > 12*time.Hour {
		errs = append(errs, fmt.Errorf("-dead-letter-hold %s: want 2s to 12h", c.deadLetterHold))
	}
	switch minLease := dispatch.MinLease(c.destTimeout); {
	case c.claimLease < 0:
		errs = append(errs, fmt.Errorf("-claim-lease %s: want 0 (the default) or more", c.claimLease))
	case c.claimLease > 0 && c.claimLease < minLease:
		// A lease that ends while the request may still be out lets
		// another dispatcher take the row over and find its outcome
		// unknown; the dispatcher would release every row unsent instead.
		errs = append(errs, fmt.Errorf("-claim-lease %s cannot cover a delivery with -destination-timeout %s: want at least %s (the timeout, and %s to claim and record the outcome), or 0 for the default",
			c.claimLease, c.destTimeout, minLease, minLease-c.destTimeout))
	}
	if c.fourEyes.TTL <= 0 {
		errs = append(errs, fmt.Errorf("-four-eyes-ttl %s: want more than 0", c.fourEyes.TTL))
	}
	if c.idempotencyHeader == "" {
		errs = append(errs, errors.New("-idempotency-header: must not be empty"))
	}
	return errors.Join(errs...)
}

// referenceFlag is the -reference-from flag, parsed into a reference.From.
type referenceFlag struct{ from reference.From }

func (r *referenceFlag) String() string { return r.from.String() }

func (r *referenceFlag) Set(v string) error {
	f, err := reference.Parse(v)
	if err != nil {
		return err
	}
	r.from = f
	return nil
}

// policyFlag is the -unknown-policy flag, parsed into a ledger.Policy.
type policyFlag ledger.Policy

func (p *policyFlag) String() string { return ledger.Policy(*p).String() }

func (p *policyFlag) Set(v string) error {
	policy, err := ledger.ParsePolicy(v)
	if err != nil {
		return err
	}
	*p = policyFlag(policy)
	return nil
}

// statusList is a comma-separated list of HTTP statuses.
type statusList []int

func (l *statusList) String() string {
	if l == nil {
		return ""
	}
	s := make([]string, len(*l))
	for i, v := range *l {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, ",")
}

// Set replaces the list: the default is not added to.
func (l *statusList) Set(v string) error {
	var out statusList
	for f := range strings.SplitSeq(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 100 || n > 599 {
			return fmt.Errorf("status %q: want an HTTP status from 100 to 599", f)
		}
		out = append(out, n)
	}
	*l = out
	return nil
}

// headerList is a repeatable "Name: value" flag. Each value may hold several
// headers, one per line, which is how the environment variable lists them:
// commas cannot separate headers, because header values contain commas.
type headerList struct {
	h http.Header
}

// String lists the names only: values are often credentials.
func (l *headerList) String() string {
	if l == nil || len(l.h) == 0 {
		return ""
	}
	return strings.Join(slices.Sorted(maps.Keys(l.h)), ",")
}

func (l *headerList) Set(v string) error {
	for line := range strings.Lines(v) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			// The value is not echoed: it may be a credential.
			return fmt.Errorf("header %q: want \"Name: value\"", name)
		}
		if l.h == nil {
			l.h = http.Header{}
		}
		l.h.Add(textproto.CanonicalMIMEHeaderKey(name), strings.TrimSpace(value))
	}
	return nil
}
