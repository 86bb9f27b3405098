package dispatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/consume"
	"github.com/spoolhq/spool/dispatcher/internal/dispatch"
	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	"github.com/spoolhq/spool/platform/envelope"
	"github.com/spoolhq/spool/platform/jobstore"
)

// TestNamespacedLedger: two fleets on one table, each with its own
// destination or tenant, deliver the same business key each; one fleet
// delivers it once, as before. Records written before namespaces still
// suppress their transaction while legacy keys are looked for.
func TestNamespacedLedger(t *testing.T) {
	const txKey = "bk:e1-2026-11"
	payA := envelope.Namespace{Destination: "pay-a.example.com"}
	tests := []struct {
		name string
		// first and second are the two fleets' options; the first
		// delivers row 1, the second then receives row 2 with the same key.
		first, second dispatch.Options
		wantSecond    int // sends by the second fleet
	}{
		{name: "two destinations: both delivered", first: dispatch.Options{Namespace: payA},
			second: dispatch.Options{Namespace: envelope.Namespace{Destination: "pay-b.example.com"}}, wantSecond: 1},
		{name: "two tenants: both delivered", first: dispatch.Options{Namespace: envelope.Namespace{Tenant: "t1", Destination: "pay-a.example.com"}},
			second: dispatch.Options{Namespace: envelope.Namespace{Tenant: "t2", Destination: "pay-a.example.com"}}, wantSecond: 1},
		{name: "one destination: duplicate as today", first: dispatch.Options{Namespace: payA}, second: dispatch.Options{Namespace: payA}, wantSecond: 0},
		{name: "written before namespaces, legacy keys looked for: duplicate", first: dispatch.Options{},
			second: dispatch.Options{Namespace: payA, LegacyKeys: true}, wantSecond: 0},
		{name: "written before namespaces, legacy keys not looked for: sent again", first: dispatch.Options{},
			second: dispatch.Options{Namespace: payA}, wantSecond: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixtureWith(t, sealed, ledger.Hold, tt.first)
			first := message(1)
			first.Envelope.TransactionKey = txKey
			require.Equal(t, consume.Delete, f.h.Handle(context.Background(), first))
			require.Equal(t, 1, f.send.calls)

			// The second fleet: its own dispatcher on the same table.
			other := &sender{}
			now := func() time.Time { return t0 }
			l := ledger.New(f.ledger, ledger.Options{Owner: "other", Lease: 25 * time.Second, Policy: ledger.Hold, Now: now})
			o := tt.second
			o.Now, o.Rand = now, func() float64 { return 0.5 }
			h := dispatch.New(other, f.counts, l, f.jobs, o)
			second := message(2)
			second.Envelope.TransactionKey = txKey
			require.Equal(t, consume.Delete, h.Handle(context.Background(), second))
			require.Equal(t, tt.wantSecond, other.calls)
			if tt.wantSecond == 0 {
				require.Equal(t, jobstore.Counts{Delivered: 1, Duplicates: 1}, f.counts.of("job"), "row 2 is recorded DUPLICATE of row 1")
			} else {
				require.Equal(t, jobstore.Counts{Delivered: 2}, f.counts.of("job"))
			}
		})
	}
}
