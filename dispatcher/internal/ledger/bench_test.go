package ledger_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/envelope"
	"github.com/spoolhq/spool/platform/provision"
	"github.com/spoolhq/spool/platform/tablelayout"
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

// BenchmarkLedgerCount measures Count, which completes every job, on a
// real DynamoDB (dynalite here) against two baselines read from the same
// job in the same run: one pass over the job's whole index entries (what
// Count read before it projected its Marks) and Report's pass per state
// (what it read before that). Reported: each one's time per count, the
// response bytes it read per row, and the ratio of Count's time to each
// (lower is better).
//
//	cd dispatcher && go test -run '^$' -bench LedgerCount -benchtime 5x ./internal/ledger/
func BenchmarkLedgerCount(b *testing.B) {
	const rows, workers, job = 20_000, 16, "count-job"
	cfg := emutest.Config(emutest.Start(b, emulator.DynamoDB))
	read := &countingTransport{}
	cfg.HTTPClient = &http.Client{Transport: read}
	db := dynamodb.NewFromConfig(cfg)
	ctx := context.Background()
	if err := provision.EnsureTable(ctx, db, "spool"); err != nil {
		b.Fatal(err)
	}
	// The job's records, delivered, as the ledger writes them (the
	// setup is not what is measured).
	backend := ledger.NewDynamo(db, "spool")
	now := time.Now()
	err := runRows(rows, workers, func(row int64) error {
		tx := benchTx(job, row)
		return backend.Create(ctx, ledger.Record{
			Key: tx.Key, JobID: job, Row: row, State: delivered, Owner: "bench", Fence: 1, Version: 3,
			Write: uint64(row), Attempts: 1, LastStatus: 200, BusinessKey: tx.BusinessKey, Amount: tx.Amount,
			UpdatedAt: now.UnixMilli(), ExpiresAt: now.Add(30 * 24 * time.Hour).Unix(), Reference: "pay_8f3a2c91d04e",
		})
	})
	if err != nil {
		b.Fatal(err)
	}
	l := ledger.New(backend, ledger.Options{Owner: "bench", Lease: time.Minute})

	paths := []struct {
		name string
		pass func() (int64, error)
	}{
		{"count", func() (int64, error) {
			c, err := l.Count(ctx, job)
			return c.Delivered, err
		}},
		{"entries", func() (int64, error) {
			var n int64
			p := dynamodb.NewQueryPaginator(db, &dynamodb.QueryInput{
				TableName: aws.String("spool"), IndexName: aws.String(tablelayout.LedgerIndex),
				KeyConditionExpression:    aws.String("#job = :job"),
				ExpressionAttributeNames:  map[string]string{"#job": tablelayout.LedgerIndexPK},
				ExpressionAttributeValues: map[string]types.AttributeValue{":job": &types.AttributeValueMemberS{Value: job}},
			})
			for p.HasMorePages() {
				out, err := p.NextPage(ctx)
				if err != nil {
					return 0, err
				}
				for _, m := range out.Items {
					var it map[string]any
					if err := attributevalue.UnmarshalMap(m, &it); err != nil {
						return 0, err
					}
					n++
				}
			}
			return n, nil
		}},
		{"per-state", func() (int64, error) {
			var n int64
			err := l.Report(ctx, job, func(ledger.Record) error { n++; return nil })
			return n, err
		}},
	}
	spent := make([]time.Duration, len(paths))
	bytes := make([]int64, len(paths))
	b.ResetTimer()
	for range b.N {
		for i, p := range paths {
			read.n.Store(0)
			start := time.Now()
			n, err := p.pass()
			if err != nil {
				b.Fatalf("%s: %v", p.name, err)
			}
			if n != rows {
				b.Fatalf("%s read %d rows, want %d", p.name, n, rows)
			}
			spent[i] += time.Since(start)
			bytes[i] += read.n.Load()
		}
	}
	b.StopTimer()
	for i, p := range paths {
		b.ReportMetric(spent[i].Seconds()/float64(b.N), p.name+"-s/pass")
		b.ReportMetric(float64(bytes[i])/float64(rows*b.N), p.name+"-B/row")
		if i > 0 {
			b.ReportMetric(float64(spent[0])/float64(spent[i]), "count/"+p.name)
		}
	}
}

// countingTransport counts the bytes of the response bodies read through
// it.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil {
		resp.Body = &countedBody{ReadCloser: resp.Body, n: &c.n}
	}
	return resp, err
}

type countedBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}
