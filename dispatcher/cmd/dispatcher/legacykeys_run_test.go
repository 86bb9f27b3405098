package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go/middleware"
	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/awsconf"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/grpcserve"
	"github.com/spoolhq/spool/platform/tablelayout"
)

// ledgerReads counts the GetItem calls of one client on ledger records,
// by the key read: what each claim pays for looking under former keys.
type ledgerReads struct {
	mu   sync.Mutex
	keys map[string]int // ledger key (pk without "TX#") → reads
}

func (r *ledgerReads) middleware(s *middleware.Stack) error {
	return s.Initialize.Add(middleware.InitializeMiddlewareFunc("test.ledgerReads",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			if get, ok := in.Parameters.(*dynamodb.GetItemInput); ok {
				if pk, _ := get.Key[tablelayout.PK].(*ddbtypes.AttributeValueMemberS); pk != nil {
					if key, ok := strings.CutPrefix(pk.Value, "TX#"); ok {
						r.mu.Lock()
						r.keys[key]++
						r.mu.Unlock()
					}
				}
			}
			return next.HandleInitialize(ctx, in)
		}), middleware.After)
}

func (r *ledgerReads) count(fn func(key string) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for k, v := range r.keys {
		if fn(k) {
			n += v
		}
	}
	return n
}

// TestLedgerLegacyKeysAuto runs a whole dispatcher on a table provisioned
// now and on one from before the layout item, where some rows of the job
// were delivered under their former, un-namespaced keys and their messages
// came back (deletes lost in the upgrade). With auto, the new table costs
// no ledger read per row, and the old one is read under the former keys,
// so no row delivered before is sent again. Off on the old table shows
// what the reads are for.
func TestLedgerLegacyKeysAuto(t *testing.T) {
	const rows, before = 40, 8 // rows 1..before were delivered under former keys
	tests := []struct {
		name        string
		oldTable    bool
		mode        string
		wantLegacy  bool
		wantResends bool
	}{
		{name: "auto, a table provisioned now", mode: "auto"},
		{name: "auto, a table from before the layout item", oldTable: true, mode: "auto", wantLegacy: true},
		{name: "off, a table from before the layout item", oldTable: true, mode: "off", wantResends: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			s := newStack(t, 60*time.Second)
			if tt.oldTable {
				// A table from before: no layout item, and ledger
				// records under the keys of that time.
				_, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(s.table), Key: tablelayout.Layout().Item()})
				require.NoError(t, err)
				s.deliverAs(t, "before", "job-1", before)
			}
			dest, destURL := newDestination(t, func(int64) bool { return false })
			s.publish(t, "job-1", rows)

			reads := &ledgerReads{keys: map[string]int{}}
			stop := startCounted(t, s, reads, "-destination-url", destURL, "-ledger-legacy-keys", tt.mode)
			wantSent := rows
			if tt.oldTable && !tt.wantResends {
				wantSent = rows - before
			}
			require.Eventually(t, func() bool {
				dest.mu.Lock()
				defer dest.mu.Unlock()
				return len(dest.accepted) == wantSent && queueDrained(t, s)
			}, 30*time.Second, 50*time.Millisecond)
			require.NoError(t, stop())

			dest.mu.Lock()
			defer dest.mu.Unlock()
			require.Empty(t, dest.problems)
			for row := int64(1); row <= rows; row++ {
				want := 1
				if tt.oldTable && !tt.wantResends && row <= before {
					want = 0
				}
				require.Equal(t, want, dest.accepted[fmt.Sprintf("job-1/%d", row)], "row %d", row)
			}
			formerKeyReads := reads.count(func(k string) bool { return !strings.HasPrefix(k, "ns:") })
			if tt.wantLegacy {
				require.GreaterOrEqual(t, formerKeyReads, rows, "every claim looked under the former key")
			} else {
				require.Zero(t, formerKeyReads, "no claim looked under a former key")
			}
			if !tt.oldTable {
				require.Zero(t, reads.count(func(string) bool { return true }), "a first delivery reads no ledger record")
			}
		})
	}
}

// startCounted runs a dispatcher in-process on s, as run would, with its
// DynamoDB client's ledger reads counted, and returns a function that stops
// it and returns its error.
func startCounted(t *testing.T, s *stack, reads *ledgerReads, args ...string) func() error {
	t.Helper()
	cfg, err := parseConfig(append([]string{
		"-insecure", "-queue-url", s.queueURL, "-table", s.table, "-allow-insecure-destination",
		"-receive-wait", "1s", "-counter-flush", "100ms", "-shutdown-grace", "10s",
	}, args...), func(string) (string, bool) { return "", false }, io.Discard)
	require.NoError(t, err)
	log := slog.New(slog.NewJSONHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	awsCfg, err := awsconf.Load(t.Context(), log)
	require.NoError(t, err)
	db := dynamodb.NewFromConfig(awsCfg, func(o *dynamodb.Options) { o.APIOptions = append(o.APIOptions, reads.middleware) })
	d, err := newDispatcher(t.Context(), cfg, grpcserve.Security{}, db, sqs.NewFromConfig(awsCfg), log)
	require.NoError(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return runInBackground(t, func(ctx context.Context) error { return d.run(ctx, lis, nil) })
}

// queueDrained says whether no message is left, visible or in flight.
func queueDrained(t *testing.T, s *stack) bool {
	visible, inFlight, err := emutest.QueueCounts(t.Context(), s.sqs, s.queueURL)
	return err == nil && visible == "0" && inFlight == "0"
}
