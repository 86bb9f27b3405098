package ledger_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/dbfault"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/jobstore"
)

// fault is what happens to one conditional write on its way to the table:
// on DynamoDB, dbfault injects it; on the fake, lossyBackend does the same.
type fault = dbfault.Fault

const (
	pass = dbfault.Pass
	// retried: the write is applied, its answer is lost, and the SDK sends
	// it again; the caller gets the second answer.
	retried = dbfault.LoseRetried
	// unanswered: the write is applied and the caller gets an error (the
	// SDK gave up, or the call's deadline passed).
	unanswered = dbfault.Lose
	// throttled: the write is refused, not applied.
	throttled = dbfault.Throttle
)

// faults is a script of faults for successive writes; once it runs out,
// writes pass (or, with forever, meet the last fault again).
type faults struct {
	mu      sync.Mutex
	script  []fault
	forever bool
}

func (f *faults) next() fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.script) == 0 {
		return pass
	}
	x := f.script[0]
	if len(f.script) > 1 || !f.forever {
		f.script = f.script[1:]
	}
	return x
}

func (f *faults) set(forever bool, script ...fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script, f.forever = script, forever
}

// apply runs write under fault x, as dbfault does on DynamoDB.
func apply(x fault, write func() error) error {
	switch x {
	case retried:
		if err := write(); err != nil {
			return err
		}
		return write()
	case unanswered:
		if err := write(); err != nil {
			return err
		}
		return dbfault.ErrLost
	case throttled:
		return &types.ProvisionedThroughputExceededException{Message: aws.String("throttled")}
	}
	return write()
}

// lossyBackend puts faults between the ledger and a backend.
type lossyBackend struct {
	ledger.Backend
	f *faults
}

func (b lossyBackend) Create(ctx context.Context, r ledger.Record) error {
	return apply(b.f.next(), func() error { return b.Backend.Create(ctx, r) })
}

func (b lossyBackend) Replace(ctx context.Context, prev int64, next ledger.Record) error {
	return apply(b.f.next(), func() error { return b.Backend.Replace(ctx, prev, next) })
}

// oldValues is what an endpoint does with ReturnValuesOnConditionCheckFailure.
type oldValues int

const (
	// ignored, as dynalite 4.0.0 does: the failure carries no item.
	ignored oldValues = iota
	// returned, as AWS and DynamoDB Local do.
	returned
	// refused: the request is rejected as invalid.
	refused
)

// lossyAPI stands between the DynamoDB backend and dbfault (and dynalite
// behind it), and models what the endpoint does with
// ReturnValuesOnConditionCheckFailure. It also records calls made without a
// deadline.
type lossyAPI struct {
	ledger.API
	old        oldValues
	mu         sync.Mutex
	noDeadline []string
}

func (a *lossyAPI) checkDeadline(ctx context.Context, op string) {
	if _, ok := ctx.Deadline(); !ok {
		a.mu.Lock()
		a.noDeadline = append(a.noDeadline, op)
		a.mu.Unlock()
	}
}

func (a *lossyAPI) GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	a.checkDeadline(ctx, "GetItem")
	return a.API.GetItem(ctx, in, opts...)
}

func (a *lossyAPI) Query(ctx context.Context, in *dynamodb.QueryInput, opts ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	a.checkDeadline(ctx, "Query")
	return a.API.Query(ctx, in, opts...)
}

func (a *lossyAPI) PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	a.checkDeadline(ctx, "PutItem")
	if a.old == refused && in.ReturnValuesOnConditionCheckFailure != "" {
		return nil, &smithy.GenericAPIError{Code: "ValidationException", Message: "Unexpected parameter ReturnValuesOnConditionCheckFailure"}
	}
	out, err := a.API.PutItem(ctx, in, opts...)
	var ccf *types.ConditionalCheckFailedException
	if a.old == returned && errors.As(err, &ccf) && in.ReturnValuesOnConditionCheckFailure == types.ReturnValuesOnConditionCheckFailureAllOld {
		got, gerr := a.API.GetItem(ctx, &dynamodb.GetItemInput{
			TableName: in.TableName, ConsistentRead: aws.Bool(true),
			Key: map[string]types.AttributeValue{"pk": in.Item["pk"], "sk": in.Item["sk"]},
		})
		if gerr != nil {
			return nil, gerr
		}
		ccf.Item = got.Item
	}
	return out, err
}

// faultyWorlds are the backends behind faults: the fake, and DynamoDB on
// dynalite with each way an endpoint treats ReturnValuesOnConditionCheckFailure.
func faultyWorlds(t *testing.T, fn func(t *testing.T, w *world, f *faults, api *lossyAPI)) {
	t.Helper()
	worlds := map[string]func(t *testing.T, f *faults) (ledger.Backend, *lossyAPI){
		"memory": func(_ *testing.T, f *faults) (ledger.Backend, *lossyAPI) {
			return lossyBackend{Backend: ledger.NewMemory(), f: f}, nil
		},
	}
	for name, old := range map[string]oldValues{"dynamodb-ignores-old": ignored, "dynamodb-returns-old": returned, "dynamodb-refuses-old": refused} {
		worlds[name] = func(t *testing.T, f *faults) (ledger.Backend, *lossyAPI) {
			db := emutest.Table(t, "spool")
			writes := func(c dbfault.Call) dbfault.Fault {
				if c.Op != "PutItem" {
					return dbfault.Pass
				}
				return f.next()
			}
			api := &lossyAPI{API: dbfault.New(db, writes), old: old}
			return ledger.NewDynamo(api, "spool"), api
		}
	}
	for name, mk := range worlds {
		t.Run(name, func(t *testing.T) {
			c := &clock{}
			c.ms.Store(time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC).UnixMilli())
			f := &faults{}
			b, api := mk(t, f)
			fn(t, &world{backend: b, clock: c}, f, api)
		})
	}
}

// fastDispatcher is a dispatcher whose retries wait a millisecond, with
// its log in buf.
func (w *world) fastDispatcher(owner string, p ledger.Policy, buf *bytes.Buffer, outcomeRetry time.Duration) *ledger.Ledger {
	return ledger.New(w.backend, ledger.Options{
		Owner: owner, Lease: 10 * time.Second, Policy: p, Now: w.clock.now, Retention: retention,
		RetryBackoff: time.Millisecond, OutcomeRetry: outcomeRetry,
		Log: slog.New(slog.NewTextHandler(buf, nil)),
	})
}

// stored reads the record of key as the table holds it.
func stored(t *testing.T, w *world, key string) ledger.Record {
	t.Helper()
	r, ok, err := w.backend.Get(context.Background(), key)
	require.NoError(t, err)
	require.True(t, ok)
	return r
}

// Every conditional write of the ledger, applied once with its answer lost
// and then sent again (by the SDK, or by the ledger after an error), is
// this writer's own write: the claim is sent, the outcome stands, the
// counts are earned once. Each case prepares the row without faults, then
// makes one write meet the fault (after the conditional create a claim
// always tries first, where the case says so).
func TestWriteAppliedAndAnswerLost(t *testing.T) {
	ctx := context.Background()
	finish := func(o ledger.Outcome, want jobstore.Counts, wantState spoolv1.TransactionState) func(t *testing.T, w *world, a, b *ledger.Ledger, f *faults, x fault, row int64) {
		return func(t *testing.T, w *world, a, _ *ledger.Ledger, f *faults, x fault, row int64) {
			c, err := a.Claim(ctx, tx(row))
			require.NoError(t, err)
			f.set(false, x)
			_, counts, err := a.Finish(ctx, c.Record, o)
			require.NoError(t, err, "not a lost claim")
			require.Equal(t, want, counts)
			require.Equal(t, wantState, stored(t, w, tx(row).Key).State)
		}
	}
	tests := []struct {
		name string
		run  func(t *testing.T, w *world, a, b *ledger.Ledger, f *faults, x fault, row int64)
	}{
		{"claim", func(t *testing.T, w *world, a, _ *ledger.Ledger, f *faults, x fault, row int64) {
			f.set(false, x)
			c, err := a.Claim(ctx, tx(row))
			require.NoError(t, err)
			require.Equal(t, ledger.Send, c.Verdict, "its own claim is not another's")
			require.Equal(t, c.Record.Version, stored(t, w, tx(row).Key).Version)
		}},
		{"finish delivered", finish(ledger.Outcome{State: delivered, Status: 200}, jobstore.Counts{Delivered: 1}, delivered)},
		{"finish rejected", finish(ledger.Outcome{State: rejected, Status: 422}, jobstore.Counts{Failed: 1}, rejected)},
		{"finish released", finish(ledger.Outcome{State: claimed, Status: 503}, jobstore.Counts{Retries: 1}, claimed)},
		{"finish unknown", finish(ledger.Outcome{State: unknown, Envelope: tx(1).Envelope}, jobstore.Counts{Unknown: 1}, unknown)},
		{"sending", func(t *testing.T, w *world, a, _ *ledger.Ledger, f *faults, x fault, row int64) {
			c, err := a.Claim(ctx, tx(row))
			require.NoError(t, err)
			released, _, err := a.Finish(ctx, c.Record, ledger.Outcome{State: claimed, Status: 503})
			require.NoError(t, err)
			f.set(false, x)
			_, err = a.Sending(ctx, released)
			require.NoError(t, err)
			require.Equal(t, sending, stored(t, w, tx(row).Key).State)
		}},
		{"take over", func(t *testing.T, w *world, a, b *ledger.Ledger, f *faults, x fault, row int64) {
			c, err := a.Claim(ctx, tx(row))
			require.NoError(t, err)
			_, _, err = a.Finish(ctx, c.Record, ledger.Outcome{State: claimed, Status: 503})
			require.NoError(t, err)
			f.set(false, pass, x)
			c, err = b.Claim(ctx, tx(row))
			require.NoError(t, err)
			require.Equal(t, ledger.Send, c.Verdict)
			require.Equal(t, "b", stored(t, w, tx(row).Key).Owner)
		}},
		{"expire send", func(t *testing.T, w *world, a, b *ledger.Ledger, f *faults, x fault, row int64) {
			_, err := a.Claim(ctx, tx(row))
			require.NoError(t, err)
			w.clock.advance(11 * time.Second)
			f.set(false, pass, x)
			c, err := b.Claim(ctx, tx(row))
			require.NoError(t, err)
			require.Equal(t, ledger.Held, c.Verdict)
			require.Equal(t, jobstore.Counts{Unknown: 1}, c.Counts, "the expiry was this claim's write")
		}},
		{"resolve", func(t *testing.T, w *world, a, _ *ledger.Ledger, f *faults, x fault, row int64) {
			send(t, a, tx(row), unknown)
			f.set(false, x)
			r, counts, err := a.Resolve(ctx, "job-1", row, spoolv1.Resolution_RESOLUTION_DELIVERED, ledger.Resolver{})
			require.NoError(t, err)
			require.Equal(t, delivered, r.State)
			require.Equal(t, jobstore.Counts{Unknown: -1, Delivered: 1}, counts)
		}},
		{"duplicate", func(t *testing.T, w *world, a, b *ledger.Ledger, f *faults, x fault, row int64) {
			send(t, a, tx(row), delivered)
			dup := tx(row)
			dup.JobID, dup.Row = "job-2", row
			f.set(false, pass, x)
			c, err := b.Claim(ctx, dup)
			require.NoError(t, err)
			require.Equal(t, ledger.Settled, c.Verdict)
			require.Equal(t, jobstore.Counts{Duplicates: 1}, c.Counts, "recorded by this claim, not suppressed")
		}},
	}
	for _, x := range []fault{retried, unanswered} {
		name := map[fault]string{retried: "retried by the SDK", unanswered: "unanswered"}[x]
		t.Run(name, func(t *testing.T) {
			faultyWorlds(t, func(t *testing.T, w *world, f *faults, _ *lossyAPI) {
				// The cases share the emulator: each has a row of its own.
				for i, tt := range tests {
					t.Run(tt.name, func(t *testing.T) {
						var logs bytes.Buffer
						a := w.fastDispatcher("a", ledger.Hold, &logs, time.Minute)
						b := w.fastDispatcher("b", ledger.Hold, &logs, time.Minute)
						tt.run(t, w, a, b, f, x, int64(i+1))
					})
				}
			})
		})
	}
}

// Two copies of one message in one dispatcher race for the same record:
// the write id tells them apart, so exactly one sends.
func TestOwnCopiesRaceOneSends(t *testing.T) {
	faultyWorlds(t, func(t *testing.T, w *world, f *faults, _ *lossyAPI) {
		var logs bytes.Buffer
		a := w.fastDispatcher("a", ledger.Hold, &logs, time.Minute)
		f.set(false, retried, retried)
		var wg sync.WaitGroup
		verdicts := make([]ledger.Verdict, 2)
		for i := range verdicts {
			wg.Go(func() {
				c, err := a.Claim(context.Background(), tx(3))
				if err != nil {
					t.Error(err)
				}
				verdicts[i] = c.Verdict
			})
		}
		wg.Wait()
		require.ElementsMatch(t, []ledger.Verdict{ledger.Send, ledger.Busy}, verdicts)
	})
}

// An outcome the table throttles is sent again until it is written, each
// failure logged with its reason; it is never left to become UNKNOWN.
func TestThrottledOutcomeIsRetriedUntilDurable(t *testing.T) {
	faultyWorlds(t, func(t *testing.T, w *world, f *faults, _ *lossyAPI) {
		ctx := context.Background()
		var logs bytes.Buffer
		a := w.fastDispatcher("a", ledger.Hold, &logs, time.Minute)
		c, err := a.Claim(ctx, tx(4))
		require.NoError(t, err)
		f.set(false, throttled, throttled, throttled, unanswered)
		r, counts, err := a.Finish(ctx, c.Record, ledger.Outcome{State: delivered, Status: 200})
		require.NoError(t, err)
		require.Equal(t, jobstore.Counts{Delivered: 1}, counts)
		require.Equal(t, r, stored(t, w, tx(4).Key))
		require.Equal(t, 4, strings.Count(logs.String(), "error="), logs.String())
		require.Contains(t, logs.String(), "ProvisionedThroughputExceededException")
	})
}

// A table that refuses the outcome for longer than the budget: Finish
// gives up and says so, the row stays SENDING under its lease (nothing is
// resent), and when the outcome finally lands after another dispatcher
// found the lease expired, it still replaces the UNKNOWN guess.
func TestOutcomeBudgetExhausted(t *testing.T) {
	faultyWorlds(t, func(t *testing.T, w *world, f *faults, _ *lossyAPI) {
		ctx := context.Background()
		var logs bytes.Buffer
		a := w.fastDispatcher("a", ledger.Hold, &logs, 50*time.Millisecond)
		c, err := a.Claim(ctx, tx(5))
		require.NoError(t, err)
		f.set(true, throttled)
		start := time.Now()
		_, _, err = a.Finish(ctx, c.Record, ledger.Outcome{State: delivered, Status: 200})
		require.ErrorContains(t, err, "gave up after")
		require.Less(t, time.Since(start), 5*time.Second)
		require.Equal(t, sending, stored(t, w, tx(5).Key).State)
		f.set(false)

		w.clock.advance(11 * time.Second)
		held, err := w.dispatcher("b", ledger.Hold).Claim(ctx, tx(5))
		require.NoError(t, err)
		require.Equal(t, ledger.Held, held.Verdict)
		r, counts, err := a.Finish(ctx, c.Record, ledger.Outcome{State: delivered, Status: 200})
		require.NoError(t, err)
		require.Equal(t, delivered, r.State)
		require.Equal(t, jobstore.Counts{Unknown: 1}, held.Counts)
		require.Equal(t, jobstore.Counts{Unknown: -1, Delivered: 1}, counts)
	})
}

// Every call the DynamoDB backend makes carries a deadline.
func TestEveryCallHasADeadline(t *testing.T) {
	faultyWorlds(t, func(t *testing.T, w *world, f *faults, api *lossyAPI) {
		if api == nil {
			t.Skip("no AWS calls")
		}
		ctx := context.Background()
		a := w.dispatcher("a", ledger.Hold)
		send(t, a, tx(1), unknown)
		c, err := a.Claim(ctx, tx(1))
		require.NoError(t, err)
		require.Equal(t, ledger.Held, c.Verdict)
		_, _, err = a.Resolve(ctx, "job-1", 1, spoolv1.Resolution_RESOLUTION_DELIVERED, ledger.Resolver{})
		require.NoError(t, err)
		require.NoError(t, a.Report(ctx, "job-1", func(ledger.Record) error { return nil }))
		require.Empty(t, api.noDeadline)
	})
}

// dynalite 4.0.0 accepts ReturnValuesOnConditionCheckFailure and ignores
// it: a failed condition comes back without the item, so on it the ledger
// reads the record after a failed condition (the "ignores" world above).
// DynamoDB Local returns the item, as AWS does. This pins down which of the
// two the emulator of the run does.
func TestEmulatorReturnValuesOnConditionCheckFailure(t *testing.T) {
	impl, err := emulator.ChosenDynamoDB()
	require.NoError(t, err)
	db := emutest.Table(t, "spool")
	ctx := context.Background()
	item := map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: "TX#x"}, "sk": &types.AttributeValueMemberS{Value: "TX"}}
	put := &dynamodb.PutItemInput{
		TableName: aws.String("spool"), Item: item, ConditionExpression: aws.String("attribute_not_exists(pk)"),
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}
	_, err = db.PutItem(ctx, put)
	require.NoError(t, err)
	_, err = db.PutItem(ctx, put)
	var ccf *types.ConditionalCheckFailedException
	require.ErrorAs(t, err, &ccf)
	if impl == emulator.DynamoDBLocal {
		require.Equal(t, item, ccf.Item)
		return
	}
	require.Empty(t, ccf.Item)
}

// The happy path costs what it did before the write protocol: a claim and
// an outcome, two conditional writes and no read.
func TestHappyPathIsTwoWritesNoRead(t *testing.T) {
	db := emutest.Table(t, "spool")
	api := &countingAPI{API: db}
	l := ledger.New(ledger.NewDynamo(api, "spool"), ledger.Options{Owner: "a", Lease: time.Minute})
	ctx := context.Background()
	const rows = 50
	for row := range int64(rows) {
		c, err := l.Claim(ctx, tx(row))
		require.NoError(t, err)
		r, err := l.Sending(ctx, c.Record)
		require.NoError(t, err)
		_, _, err = l.Finish(ctx, r, ledger.Outcome{State: delivered, Status: 200})
		require.NoError(t, err)
	}
	require.Equal(t, map[string]int{"PutItem": 2 * rows}, api.calls)
}

// countingAPI counts the calls made through it.
type countingAPI struct {
	ledger.API
	mu    sync.Mutex
	calls map[string]int
}

func (a *countingAPI) count(op string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.calls == nil {
		a.calls = map[string]int{}
	}
	a.calls[op]++
}

func (a *countingAPI) GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	a.count("GetItem")
	return a.API.GetItem(ctx, in, opts...)
}

func (a *countingAPI) PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	a.count("PutItem")
	return a.API.PutItem(ctx, in, opts...)
}

func (a *countingAPI) Query(ctx context.Context, in *dynamodb.QueryInput, opts ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	a.count("Query")
	return a.API.Query(ctx, in, opts...)
}

// A claim the table applied but never acknowledged, whose re-sends are
// then throttled until the claim's deadline: the dispatcher sends nothing,
// so the claim is withdrawn, and the next dispatcher sends the row rather
// than find a SENDING record whose lease ran out and hold it UNKNOWN.
func TestClaimWithUnknownFateIsWithdrawn(t *testing.T) {
	faultyWorlds(t, func(t *testing.T, w *world, f *faults, _ *lossyAPI) {
		var logs bytes.Buffer
		a := w.fastDispatcher("a", ledger.Hold, &logs, time.Minute)
		// The claim meets the lost answer and some of the throttles before
		// its deadline; the withdrawal meets the rest, then passes.
		f.set(false, unanswered, throttled, throttled, throttled, throttled, throttled, throttled, throttled, throttled)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Millisecond)
		_, err := a.Claim(ctx, tx(7))
		cancel()
		require.Error(t, err)
		if r, ok, gerr := w.backend.Get(context.Background(), tx(7).Key); gerr == nil && ok {
			require.Equal(t, claimed, r.State, "a claim whose write failed stays SENDING: %s", logs.String())
			require.Zero(t, r.LeaseUntil)
		}
		f.set(false)

		w.clock.advance(11 * time.Second)
		c, err := w.dispatcher("b", ledger.Hold).Claim(context.Background(), tx(7))
		require.NoError(t, err)
		require.Equal(t, ledger.Send, c.Verdict, "verdict %v", c.Verdict)
		require.Zero(t, c.Counts.Unknown)
		require.EqualValues(t, 1, c.Record.Attempts, "the withdrawn claim sent nothing")
	})
}
