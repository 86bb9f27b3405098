package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	"github.com/spoolhq/spool/platform/envelope"
	"github.com/spoolhq/spool/platform/grpcserve"
)

// parseEnv parses args with env as the whole environment. Unless env says
// otherwise, the server runs plaintext: few cases are about its security.
func parseEnv(args []string, env map[string]string) (config, error) {
	lookup := func(k string) (string, bool) {
		v, ok := env[k]
		if !ok && k == "SPOOL_INSECURE" {
			return "true", true
		}
		return v, ok
	}
	return parseConfig(args, lookup, io.Discard)
}

func TestParseConfig(t *testing.T) {
	required := []string{"-insecure", "-queue-url", "http://q", "-table", "jobs", "-destination-url", "https://dest/pay"}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, c config)
		wantErr string
	}{
		{
			name: "defaults",
			args: required,
			check: func(t *testing.T, c config) {
				require.Equal(t, ":50052", c.listen)
				require.Equal(t, 10*time.Second, c.destTimeout)
				require.Equal(t, "Idempotency-Key", c.idempotencyHeader)
				require.Equal(t, 16, c.concurrency)
				require.Equal(t, 32, c.messagesHeld, "twice the concurrency")
				require.Zero(t, c.pollers)
				require.Equal(t, 5*time.Second, c.receiveWait)
				require.Equal(t, time.Second, c.counterFlush)
				require.Equal(t, 500*time.Millisecond, c.watchInterval)
				require.Equal(t, 25*time.Second, c.shutdownGrace)
				require.Empty(t, c.headers.h)
				require.Equal(t, time.Second, c.jobCacheTTL)
				require.Equal(t, 2*time.Minute, c.receivingDelay)
				require.Equal(t, ledger.Hold, c.unknownPolicy)
				require.Equal(t, 25*time.Second, c.claimLease, "2 × the destination timeout + 5s")
				require.Equal(t, 5*time.Second, c.repairInterval)
				require.Equal(t, 10*time.Second, c.repairAfter)
				require.Equal(t, 90*24*time.Hour, c.ledgerRetention)
				require.Equal(t, 2*time.Minute, c.outcomeRetry)
				require.Empty(t, c.deadLetterURL)
				require.Empty(t, c.alreadyApplied, "no status is already applied unless configured")
				require.Equal(t, 20, c.maxAttempts)
				require.Equal(t, 12*time.Hour, c.maxAge)
				require.Equal(t, time.Second, c.backoffBase)
				require.Equal(t, 5*time.Minute, c.backoffMax)
				require.Equal(t, 10*time.Minute, c.retryAfterMax)
				require.Equal(t, 30*time.Second, c.visibilityTimeout)
				require.Zero(t, c.heartbeat)
				require.Equal(t, 5*time.Minute, c.pausedDelay)
				require.Equal(t, 10000, c.deadLetterScan)
				require.Equal(t, 100000, c.deadLetterScanMax)
				require.Equal(t, time.Minute, c.deadLetterHold)
				require.Equal(t, fourEyesFlag{Resolve: true, Redrive: true, TTL: 24 * time.Hour}, c.fourEyes)
				require.Equal(t, grpcserve.DefaultLimits(), c.grpc)
			},
		},
		{
			name: "four-eyes from the environment",
			env: map[string]string{
				"SPOOL_QUEUE_URL": "http://q", "SPOOL_TABLE": "jobs", "SPOOL_DESTINATION_URL": "https://dest/pay", "SPOOL_INSECURE": "true",
				"SPOOL_FOUR_EYES": "Redrive", "SPOOL_FOUR_EYES_TTL": "2h",
			},
			check: func(t *testing.T, c config) {
				require.Equal(t, fourEyesFlag{Redrive: true, TTL: 2 * time.Hour}, c.fourEyes)
				require.Equal(t, "redrive", c.fourEyes.String())
			},
		},
		{
			name:  "four-eyes off",
			args:  append([]string{"-four-eyes", "none"}, required...),
			check: func(t *testing.T, c config) { require.Equal(t, "none", c.fourEyes.String()) },
		},
		{name: "four-eyes on an unknown action", args: append([]string{"-four-eyes", "resolve,cancel"}, required...), wantErr: `action "cancel"`},
		{name: "four-eyes requests that never wait", args: append([]string{"-four-eyes-ttl", "0s"}, required...), wantErr: "-four-eyes-ttl"},
		{
			name: "server limits from the environment",
			env: map[string]string{
				"SPOOL_QUEUE_URL": "http://q", "SPOOL_TABLE": "jobs", "SPOOL_DESTINATION_URL": "https://dest/pay",
				"SPOOL_DEAD_LETTER_SCAN_MAX": "20000", "SPOOL_GRPC_MAX_CONNECTION_AGE": "1h", "SPOOL_GRPC_MAX_CONCURRENT_STREAMS": "50",
			},
			check: func(t *testing.T, c config) {
				require.Equal(t, 20000, c.deadLetterScanMax)
				require.Equal(t, time.Hour, c.grpc.MaxConnectionAge)
				require.Equal(t, 50, c.grpc.MaxConcurrentStreams)
			},
		},
		{
			name: "ledger namespace from the destination URL",
			args: []string{"-queue-url", "http://q", "-table", "jobs", "-destination-url", "https://Pay.Example.com:8443/v1/payments/?token=secret"},
			check: func(t *testing.T, c config) {
				sum := sha256.Sum256([]byte("/v1/payments"))
				want := envelope.Namespace{Destination: "pay.example.com:8443/" + hex.EncodeToString(sum[:8])}
				require.Equal(t, want, c.namespace(), "host and a digest of the path; never the query")
				require.Equal(t, legacyKeysAuto, c.legacyKeys, "the table says by default whether records from before namespaces are looked for")
			},
		},
		{
			name: "ledger namespace named",
			env:  map[string]string{"SPOOL_TENANT": "acme", "SPOOL_DESTINATION_NAME": "payroll-api", "SPOOL_LEDGER_LEGACY_KEYS": "false"},
			args: required,
			check: func(t *testing.T, c config) {
				require.Equal(t, envelope.Namespace{Tenant: "acme", Destination: "payroll-api"}, c.namespace())
				require.Equal(t, legacyKeysOff, c.legacyKeys)
			},
		},
		{
			name: "ledger namespace of a URL without a path",
			args: []string{"-queue-url", "http://q", "-table", "jobs", "-destination-url", "https://pay.example.com/"},
			check: func(t *testing.T, c config) {
				require.Equal(t, envelope.Namespace{Destination: "pay.example.com"}, c.namespace())
			},
		},
		{name: "bad tenant", args: append([]string{"-tenant", "a|b"}, required...), wantErr: "-tenant"},
		{name: "scan cap under the default scan", args: append([]string{"-dead-letter-scan-max", "10"}, required...), wantErr: "-dead-letter-scan-max 10: want at least -dead-letter-scan (10000)"},
		{name: "bad server limit", args: append([]string{"-grpc-max-concurrent-streams", "0"}, required...), wantErr: "-grpc-max-concurrent-streams 0"},
		{
			name: "failure handling from the environment",
			env: map[string]string{
				"SPOOL_QUEUE_URL": "http://q", "SPOOL_TABLE": "jobs", "SPOOL_DESTINATION_URL": "https://dest/pay", "SPOOL_INSECURE": "true",
				"SPOOL_DEAD_LETTER_QUEUE_URL": "http://q-dlq", "SPOOL_ALREADY_APPLIED": "409, 208",
				"SPOOL_MAX_ATTEMPTS": "5", "SPOOL_MAX_AGE": "1h", "SPOOL_BACKOFF_BASE": "2s", "SPOOL_BACKOFF_MAX": "1m",
				"SPOOL_RETRY_AFTER_MAX": "30s", "SPOOL_VISIBILITY_TIMEOUT": "60s", "SPOOL_HEARTBEAT": "15s",
				"SPOOL_PAUSED_DELAY": "30s", "SPOOL_DEAD_LETTER_SCAN": "500", "SPOOL_DEAD_LETTER_HOLD": "2m",
			},
			check: func(t *testing.T, c config) {
				require.Equal(t, "http://q-dlq", c.deadLetterURL)
				require.Equal(t, statusList{409, 208}, c.alreadyApplied)
				require.Equal(t, 5, c.maxAttempts)
				require.Equal(t, time.Hour, c.maxAge)
				require.Equal(t, 2*time.Second, c.backoffBase)
				require.Equal(t, time.Minute, c.backoffMax)
				require.Equal(t, 30*time.Second, c.retryAfterMax)
				require.Equal(t, time.Minute, c.visibilityTimeout)
				require.Equal(t, 15*time.Second, c.heartbeat)
				require.Equal(t, 30*time.Second, c.pausedDelay)
				require.Equal(t, 500, c.deadLetterScan)
				require.Equal(t, 2*time.Minute, c.deadLetterHold)
			},
		},
		{
			name:  "no already-applied status",
			args:  append([]string{"-already-applied", ""}, required...),
			check: func(t *testing.T, c config) { require.Empty(t, c.alreadyApplied) },
		},
		{
			name: "everything from the environment",
			env: map[string]string{
				"SPOOL_QUEUE_URL": "http://q", "SPOOL_TABLE": "jobs", "SPOOL_DESTINATION_URL": "https://dest/pay", "SPOOL_INSECURE": "true",
				"SPOOL_DESTINATION_HEADER": "Authorization: Bearer a,b\nx-tenant: acme\n",
				"SPOOL_CONCURRENCY":        "64", "SPOOL_LOG_LEVEL": "debug", "SPOOL_RECEIVE_WAIT": "20s",
				"SPOOL_UNKNOWN_POLICY": "retry-with-key", "SPOOL_CLAIM_LEASE": "90s",
				"SPOOL_REPAIR_INTERVAL": "1s", "SPOOL_REPAIR_AFTER": "30s", "SPOOL_LEDGER_RETENTION": "8760h",
				"SPOOL_OUTCOME_RETRY": "10m",
			},
			check: func(t *testing.T, c config) {
				require.Equal(t, http.Header{"Authorization": {"Bearer a,b"}, "X-Tenant": {"acme"}}, c.headers.h)
				require.Equal(t, 64, c.concurrency)
				require.Equal(t, "DEBUG", c.logLevel.String())
				require.Equal(t, 20*time.Second, c.receiveWait)
				require.Equal(t, "Authorization,X-Tenant", c.headers.String())
				require.Equal(t, ledger.RetryWithKey, c.unknownPolicy)
				require.Equal(t, 90*time.Second, c.claimLease)
				require.Equal(t, time.Second, c.repairInterval)
				require.Equal(t, 30*time.Second, c.repairAfter)
				require.Equal(t, 365*24*time.Hour, c.ledgerRetention)
				require.Equal(t, 10*time.Minute, c.outcomeRetry)
			},
		},
		{
			name: "repeated header flags",
			args: append([]string{"-destination-header", "X-A: 1", "-destination-header", "X-A: 2"}, required...),
			check: func(t *testing.T, c config) {
				require.Equal(t, []string{"1", "2"}, c.headers.h.Values("X-A"))
			},
		},
		{name: "required missing", wantErr: "-queue-url (or $SPOOL_QUEUE_URL) is required"},
		{name: "no security settings", args: required[1:], env: map[string]string{"SPOOL_INSECURE": "false"}, wantErr: "set SPOOL_TLS_CERT_FILE and SPOOL_TLS_KEY_FILE"},
		{name: "insecure and TLS", args: append([]string{"-tls-cert-file", "c.pem"}, required...), wantErr: "SPOOL_INSECURE=true serves plaintext"},
		{name: "bad header", args: append([]string{"-destination-header", "no colon here"}, required...), wantErr: "want \"Name: value\""},
		{name: "bad url", args: []string{"-queue-url", "q", "-table", "t", "-destination-url", "dest"}, wantErr: "http(s) URL"},
		{name: "receive wait too long", args: append([]string{"-receive-wait", "30s"}, required...), wantErr: "-receive-wait"},
		{name: "receive wait fraction", args: append([]string{"-receive-wait", "1500ms"}, required...), wantErr: "-receive-wait"},
		{name: "no concurrency", args: append([]string{"-concurrency", "0"}, required...), wantErr: "-concurrency"},
		{name: "fewer messages held than requests", args: append([]string{"-concurrency", "8", "-messages-held", "7"}, required...), wantErr: "-messages-held"},
		{
			name: "messages held as configured", args: append([]string{"-concurrency", "8", "-messages-held", "8"}, required...),
			check: func(t *testing.T, c config) { require.Equal(t, 8, c.messagesHeld) },
		},
		{
			name: "messages held follow the concurrency", args: append([]string{"-concurrency", "5"}, required...),
			check: func(t *testing.T, c config) { require.Equal(t, 10, c.messagesHeld) },
		},
		{name: "bad policy", args: append([]string{"-unknown-policy", "resend"}, required...), wantErr: "-unknown-policy"},
		{name: "negative lease", args: append([]string{"-claim-lease", "-1s"}, required...), wantErr: "-claim-lease"},
		{
			name: "lease shorter than a delivery", args: append([]string{"-claim-lease", "12s", "-destination-timeout", "10s"}, required...),
			wantErr: "-claim-lease 12s cannot cover a delivery with -destination-timeout 10s: want at least 13s",
		},
		{
			name: "lease that just covers a delivery", args: append([]string{"-claim-lease", "5s", "-destination-timeout", "2s"}, required...),
			check: func(t *testing.T, c config) { require.Equal(t, 5*time.Second, c.claimLease) },
		},
		{
			name: "default lease follows the destination timeout", args: append([]string{"-destination-timeout", "500ms"}, required...),
			check: func(t *testing.T, c config) { require.Equal(t, 6*time.Second, c.claimLease) },
		},
		{name: "retention shorter than the queue's", args: append([]string{"-ledger-retention", "336h"}, required...), wantErr: "-ledger-retention 336h0m0s: want at least 360h0m0s"},
		{name: "no repair delay", args: append([]string{"-repair-after", "0s"}, required...), wantErr: "-repair-after"},
		{name: "bad already-applied", args: append([]string{"-already-applied", "409,abc"}, required...), wantErr: `status "abc"`},
		{name: "no attempts", args: append([]string{"-max-attempts", "0"}, required...), wantErr: "-max-attempts"},
		{name: "visibility fraction", args: append([]string{"-visibility-timeout", "2500ms"}, required...), wantErr: "-visibility-timeout"},
		{name: "heartbeat slower than visibility", args: append([]string{"-heartbeat", "30s"}, required...), wantErr: "-heartbeat"},
		{name: "no backoff", args: append([]string{"-backoff-max", "0s"}, required...), wantErr: "-backoff-max"},
		{name: "bad log level", args: append([]string{"-log-level", "loud"}, required...), wantErr: "log-level"},
		{name: "bad reference spec", args: append([]string{"-reference-from", "/id"}, required...), wantErr: "want body:/json/pointer or header:NAME"},
		{
			name: "reference from the environment",
			env: map[string]string{
				"SPOOL_QUEUE_URL": "http://q", "SPOOL_TABLE": "jobs", "SPOOL_DESTINATION_URL": "https://dest/pay",
				"SPOOL_REFERENCE_FROM": "header:location",
			},
			check: func(t *testing.T, c config) { require.Equal(t, "header:Location", c.referenceFrom.String()) },
		},
		{
			name: "job events off by default", args: required,
			check: func(t *testing.T, c config) {
				require.Empty(t, c.events.sinks(nil))
				require.Equal(t, 5*time.Second, c.events.sweep)
				require.Equal(t, 30*time.Second, c.events.sweepAfter)
				require.Equal(t, 20*time.Second, c.events.retryFor)
				require.Equal(t, time.Minute, c.events.rowsEvery)
			},
		},
		{
			name: "job events to a signed webhook and a queue",
			args: append([]string{"-events-webhook-url", "https://hooks.example/spool?token=s3cret", "-events-queue-url", "http://q/events"}, required...),
			env:  map[string]string{"SPOOL_EVENTS_SIGNING_SECRETS": "whsec_c2VjcmV0"},
			check: func(t *testing.T, c config) {
				require.Len(t, c.events.sinks(nil), 2)
				require.NotNil(t, c.events.signer)
			},
		},
		{
			name: "plaintext events webhook", args: append([]string{"-events-webhook-url", "http://hooks.example/spool?token=s3cret"}, required...),
			wantErr: "-events-webhook-url http://hooks.example/spool?REDACTED: plaintext http",
		},
		{
			name:  "plaintext events webhook allowed for a local stand-in",
			args:  append([]string{"-events-webhook-url", "http://127.0.0.1:8080/events", "-allow-insecure-destination"}, required...),
			check: func(t *testing.T, c config) { require.Len(t, c.events.sinks(nil), 1) },
		},
		{
			name: "signing secrets without an events webhook", args: required,
			env: map[string]string{"SPOOL_EVENTS_SIGNING_SECRETS": "whsec_c2VjcmV0"}, wantErr: "without -events-webhook-url",
		},
		{
			name: "a sweep that would race the sender", args: append([]string{"-events-sweep-after", "10s", "-events-retry-for", "20s"}, required...),
			wantErr: "-events-sweep-after 10s: want more than -events-retry-for (20s)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseEnv(tt.args, tt.env)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			tt.check(t, c)
		})
	}
}

func TestDeadLetterName(t *testing.T) {
	tests := []struct {
		name, policy, want, wantErr string
	}{
		{name: "arn", policy: `{"deadLetterTargetArn":"arn:aws:sqs:eu-west-1:123456789012:spool-dlq","maxReceiveCount":"100"}`, want: "spool-dlq"},
		{name: "none", policy: "", wantErr: "no redrive policy"},
		{name: "not json", policy: "{", wantErr: "parse redrive policy"},
		{name: "not an arn", policy: `{"deadLetterTargetArn":"spool-dlq"}`, wantErr: "want a queue ARN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := deadLetterName(tt.policy)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}
