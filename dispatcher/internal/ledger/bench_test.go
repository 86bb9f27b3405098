package ledger_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/envelope"
	"github.com/spoolhq/spool/platform/provision"
)

// BenchmarkLedgerWrites measures what the delivery ledger costs per row on
// a real DynamoDB (dynalite here), against a baseline measured in the same
// run: one unconditional PutItem of a record of the same size per row, the
// least any durable per-row record can cost. Three paths, interleaved in
// rounds so machine noise hits them alike, each with the concurrency of a
// dispatcher's workers:
//
//   - put: the baseline.
//   - ledger: Claim (written SENDING) and Finish DELIVERED — two
//     conditional writes, what a dispatcher does per row.
//   - ledger-legacy-keys: the same, with namespaced keys and the read of
//     the former key each claim makes while -ledger-legacy-keys is on (as
//     auto is on a table without its layout item); ledger is what auto
//     costs on a table that began with namespaced keys.
//   - three-writes: the same states with the claim written CLAIMED and
//     SENDING written separately, as before the claim wrote SENDING.
//
// Reported: rows/s of each and the ratio of each time per row to the
// baseline's (lower is better; the floor for two writes is about 2).
//
//	cd dispatcher && go test -run '^$' -bench LedgerWrites -benchtime 3x ./internal/ledger/
func BenchmarkLedgerWrites(b *testing.B) {
	const rows, workers = 2000, 16
	db := dynamodb.NewFromConfig(emutest.Config(emutest.Start(b, emulator.DynamoDB)))
	ctx := context.Background()
	if err := provision.EnsureTable(ctx, db, "spool"); err != nil {
		b.Fatal(err)
	}
	backend := ledger.NewDynamo(db, "spool")
	l := ledger.New(backend, ledger.Options{Owner: "bench", Lease: time.Minute})
	// deliver takes tx through the ledger as a dispatcher does: claimed
	// (written SENDING), then finished DELIVERED.
	deliver := func(tx ledger.Tx) error {
		c, err := l.Claim(ctx, tx)
		if err != nil {
			return err
		}
		r, err := l.Sending(ctx, c.Record)
		if err != nil {
			return err
		}
		_, _, err = l.Finish(ctx, r, ledger.Outcome{State: delivered, Status: 200})
		return err
	}

	paths := []struct {
		name string
		row  func(job string, row int64) error
	}{
		{"put", func(job string, row int64) error {
			item, err := attributevalue.MarshalMap(map[string]any{
				"pk": "TX#" + job + ":" + fmt.Sprint(row), "sk": "TX", "job_id": job, "row": row,
				"tx_key": job + ":" + fmt.Sprint(row), "state": "DELIVERED", "owner": "bench", "lease_until": 0,
				"fence": 1, "version": 2, "attempts": 1, "last_status": 200, "business_key": benchBK(row),
				"amount": "1234.56", "updated_at": time.Now().UnixMilli(),
			})
			if err != nil {
				return err
			}
			_, err = db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String("spool"), Item: item})
			return err
		}},
		{"ledger", func(job string, row int64) error {
			return deliver(benchTx(job, row))
		}},
		{"ledger-legacy-keys", func(job string, row int64) error {
			// As ledger, with a namespaced key and the former key looked
			// for first (-ledger-legacy-keys), which finds nothing.
			tx := benchTx(job, row)
			tx.Key, tx.LegacyKey = envelope.Namespace{Destination: "pay.example.com"}.LedgerKey(tx.Key), tx.Key
			return deliver(tx)
		}},
		{"three-writes", func(job string, row int64) error {
			tx := benchTx(job, row)
			now := time.Now().UnixMilli()
			r := ledger.Record{
				Key: tx.Key, JobID: job, Row: row, State: claimed, Owner: "bench", LeaseUntil: now + 60_000,
				Fence: 1, Version: 1, BusinessKey: tx.BusinessKey, Amount: tx.Amount, UpdatedAt: now,
			}
			if err := backend.Create(ctx, r); err != nil {
				return err
			}
			for _, s := range []spoolv1.TransactionState{sending, delivered} {
				next := r
				next.State, next.Version = s, r.Version+1
				if err := backend.Replace(ctx, r.Version, next); err != nil {
					return err
				}
				r = next
			}
			return nil
		}},
	}

	spent := make([]time.Duration, len(paths))
	b.ResetTimer()
	for round := range b.N {
		for i, p := range paths {
			job := fmt.Sprintf("%s-%d", p.name, round)
			start := time.Now()
			if err := runRows(rows, workers, func(row int64) error { return p.row(job, row) }); err != nil {
				b.Fatalf("%s: %v", p.name, err)
			}
			spent[i] += time.Since(start)
		}
	}
	b.StopTimer()
	total := float64(rows * b.N)
	for i, p := range paths {
		b.ReportMetric(total/spent[i].Seconds(), p.name+"-rows/s")
		if i > 0 {
			b.ReportMetric(float64(spent[i])/float64(spent[0]), p.name+"/put")
		}
	}
}

func benchBK(row int64) string { return fmt.Sprintf("E%07d|2026-11-30", row) }

func benchTx(job string, row int64) ledger.Tx {
	return ledger.Tx{Key: job + ":" + fmt.Sprint(row), JobID: job, Row: row, BusinessKey: benchBK(row), Amount: "1234.56"}
}

// runRows calls fn for rows 1..n from workers goroutines and returns the
// first error.
func runRows(n, workers int, fn func(row int64) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				row := next.Add(1)
				if row > int64(n) {
					return
				}
				if err := fn(row); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}
