package ledger_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/envelope"
)

// TestNamespacedKeys: the same business key in files for two destinations,
// or two tenants, is two transactions; within one namespace it is one, as
// before namespaces.
func TestNamespacedKeys(t *testing.T) {
	const business = "bk:e1-2026-11"
	payA := envelope.Namespace{Destination: "pay-a.example.com/v1"}
	tests := []struct {
		name        string
		first, then envelope.Namespace
		wantSecond  ledger.Verdict
	}{
		{name: "two destinations: both delivered", first: payA, then: envelope.Namespace{Destination: "pay-b.example.com/v1"}, wantSecond: ledger.Send},
		{name: "two tenants, one destination: both delivered", first: envelope.Namespace{Tenant: "t1", Destination: "pay-a.example.com/v1"},
			then: envelope.Namespace{Tenant: "t2", Destination: "pay-a.example.com/v1"}, wantSecond: ledger.Send},
		{name: "one destination: duplicate as before", first: payA, then: payA, wantSecond: ledger.Settled},
		{name: "no namespace: duplicate as before", wantSecond: ledger.Settled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eachBackend(t, func(t *testing.T, w *world) {
				ctx := context.Background()
				a, b := w.dispatcher("a", ledger.Hold), w.dispatcher("b", ledger.Hold)
				first := tx(1)
				first.Key = tt.first.LedgerKey(business)
				send(t, a, first, delivered)

				second := tx(5)
				second.JobID, second.Key = "job-2", tt.then.LedgerKey(business)
				c, err := b.Claim(ctx, second)
				require.NoError(t, err)
				require.Equal(t, tt.wantSecond, c.Verdict)
				if tt.wantSecond == ledger.Settled {
					require.Equal(t, spoolv1.TransactionState_TRANSACTION_STATE_DUPLICATE, c.Record.State)
				}
			})
		})
	}
}

// TestLegacyKeys: a record written before keys were namespaced is found
// under its former key while LegacyKey is given, so a row delivered then
// is not sent again now.
func TestLegacyKeys(t *testing.T) {
	const business = "bk:e1-2026-11"
	ns := envelope.Namespace{Destination: "pay-a.example.com/v1"}
	tests := []struct {
		name      string
		before    bool // a record under the former key exists
		legacy    bool // the claim names the former key
		want      ledger.Verdict
		wantKey   string
		wantState spoolv1.TransactionState
	}{
		{name: "former record found: duplicate", before: true, legacy: true, want: ledger.Settled, wantState: spoolv1.TransactionState_TRANSACTION_STATE_DUPLICATE},
		{name: "no former record: claimed under the new key", legacy: true, want: ledger.Send, wantKey: ns.LedgerKey(business)},
		{name: "former record not looked for: claimed under the new key", before: true, want: ledger.Send, wantKey: ns.LedgerKey(business)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eachBackend(t, func(t *testing.T, w *world) {
				ctx := context.Background()
				a := w.dispatcher("a", ledger.Hold)
				if tt.before {
					old := tx(1)
					old.Key = business
					send(t, a, old, delivered)
				}
				next := tx(5)
				next.JobID, next.Key = "job-2", ns.LedgerKey(business)
				if tt.legacy {
					next.LegacyKey = business
				}
				c, err := a.Claim(ctx, next)
				require.NoError(t, err)
				require.Equal(t, tt.want, c.Verdict)
				if tt.wantKey != "" {
					require.Equal(t, tt.wantKey, c.Record.Key)
					require.Equal(t, business, c.Record.Entry().GetTransactionKey(), "a report shows the key the destination receives")
				}
				if tt.wantState != 0 {
					require.Equal(t, tt.wantState, c.Record.State)
				}
			})
		})
	}
}
