package main

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseConfig(t *testing.T) {
	required := []string{"-queue-url", "http://q", "-table", "jobs", "-destination-url", "http://dest/pay"}
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
				require.Zero(t, c.pollers)
				require.Equal(t, 5*time.Second, c.receiveWait)
				require.Equal(t, time.Second, c.counterFlush)
				require.Equal(t, 500*time.Millisecond, c.watchInterval)
				require.Equal(t, 25*time.Second, c.shutdownGrace)
				require.Empty(t, c.headers.h)
				require.Equal(t, time.Second, c.jobCacheTTL)
				require.Equal(t, 2*time.Minute, c.receivingDelay)
				require.Equal(t, "hold", c.unknownPolicy)
				require.Equal(t, 25*time.Second, c.lease())
				require.Equal(t, 5*time.Second, c.repairInterval)
				require.Equal(t, 10*time.Second, c.repairAfter)
				require.Equal(t, 90*24*time.Hour, c.ledgerRetention)
			},
		},
		{
			name: "everything from the environment",
			env: map[string]string{
				"SPOOL_QUEUE_URL": "http://q", "SPOOL_TABLE": "jobs", "SPOOL_DESTINATION_URL": "https://dest/pay",
				"SPOOL_DESTINATION_HEADER": "Authorization: Bearer a,b\nx-tenant: acme\n",
				"SPOOL_CONCURRENCY":        "64", "SPOOL_LOG_LEVEL": "debug", "SPOOL_RECEIVE_WAIT": "20s",
				"SPOOL_UNKNOWN_POLICY": "retry-with-key", "SPOOL_CLAIM_LEASE": "90s",
				"SPOOL_REPAIR_INTERVAL": "1s", "SPOOL_REPAIR_AFTER": "30s", "SPOOL_LEDGER_RETENTION": "8760h",
			},
			check: func(t *testing.T, c config) {
				require.Equal(t, http.Header{"Authorization": {"Bearer a,b"}, "X-Tenant": {"acme"}}, c.headers.h)
				require.Equal(t, 64, c.concurrency)
				require.Equal(t, "DEBUG", c.logLevel.String())
				require.Equal(t, 20*time.Second, c.receiveWait)
				require.Equal(t, "Authorization,X-Tenant", c.headers.String())
				require.Equal(t, "retry-with-key", c.unknownPolicy)
				require.Equal(t, 90*time.Second, c.lease())
				require.Equal(t, time.Second, c.repairInterval)
				require.Equal(t, 30*time.Second, c.repairAfter)
				require.Equal(t, 365*24*time.Hour, c.ledgerRetention)
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
		{name: "bad header", args: append([]string{"-destination-header", "no colon here"}, required...), wantErr: "want \"Name: value\""},
		{name: "bad url", args: []string{"-queue-url", "q", "-table", "t", "-destination-url", "dest"}, wantErr: "http(s) URL"},
		{name: "receive wait too long", args: append([]string{"-receive-wait", "30s"}, required...), wantErr: "-receive-wait"},
		{name: "receive wait fraction", args: append([]string{"-receive-wait", "1500ms"}, required...), wantErr: "-receive-wait"},
		{name: "no concurrency", args: append([]string{"-concurrency", "0"}, required...), wantErr: "-concurrency"},
		{name: "bad policy", args: append([]string{"-unknown-policy", "resend"}, required...), wantErr: "-unknown-policy"},
		{name: "negative lease", args: append([]string{"-claim-lease", "-1s"}, required...), wantErr: "-claim-lease"},
		{name: "retention shorter than the queue's", args: append([]string{"-ledger-retention", "336h"}, required...), wantErr: "-ledger-retention 336h0m0s: want at least 360h0m0s"},
		{name: "no repair delay", args: append([]string{"-repair-after", "0s"}, required...), wantErr: "-repair-after"},
		{name: "bad log level", args: append([]string{"-log-level", "loud"}, required...), wantErr: "log-level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }, io.Discard)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			tt.check(t, c)
		})
	}
}
