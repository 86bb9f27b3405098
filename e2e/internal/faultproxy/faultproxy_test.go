package faultproxy

import (
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/require"
)

// upstream is a fake emulator: it answers every request with an empty
// JSON object and counts the requests per X-Amz-Target.
type upstream struct {
	mu   sync.Mutex
	seen map[string]int
	body []string
}

func startUpstream(t testing.TB) (*upstream, string) {
	t.Helper()
	u := &upstream{seen: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.seen[r.Header.Get("X-Amz-Target")]++
		u.body = append(u.body, string(b))
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		_, _ = io.WriteString(w, "{}")
	}))
	t.Cleanup(srv.Close)
	return u, srv.URL
}

func (u *upstream) count(target string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[target]
}

func startProxy(t testing.TB, c Config) *Proxy {
	t.Helper()
	p, err := Start(c)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// clients returns SDK clients of both services pointed at url, with the
// standard retryer limited to attempts.
func clients(url string, attempts int) (*dynamodb.Client, *sqs.Client) {
	cfg := aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("local", "local", ""),
		Retryer: func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = attempts
				o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return time.Millisecond, nil })
			})
		},
	}
	db := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(url) })
	q := sqs.NewFromConfig(cfg, func(o *sqs.Options) { o.BaseEndpoint = aws.String(url) })
	return db, q
}

func putItem(ctx context.Context, db *dynamodb.Client) error {
	_, err := db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: aws.String("t"),
		Item:      map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: "a"}},
	})
	return err
}

func sendMessage(ctx context.Context, q *sqs.Client) error {
	_, err := q.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String("http://elsewhere:1/000000000000/q"), MessageBody: aws.String("x")})
	return err
}

const (
	putItemTarget     = "DynamoDB_20120810.PutItem"
	sendMessageTarget = "AmazonSQS.SendMessage"
)

// TestFaultsAsTheSDKSeesThem drives the real SDK through the proxy: each
// fault must look to it like the failure it stands for on AWS.
func TestFaultsAsTheSDKSeesThem(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		fault Fault
		// forwarded is how many of the SDK's 3 attempts reach the emulator.
		forwarded int
		check     func(t *testing.T, err error)
	}{
		{
			name: "a dropped answer is retried although the write happened", fault: Fault{Drop: 1}, forwarded: 3,
			check: func(t *testing.T, err error) {
				require.Error(t, err)
				require.Equal(t, aws.TrueTernary, retry.RetryableConnectionError{}.IsErrorRetryable(err), "the SDK retries it: %v", err)
			},
		},
		{
			name: "a throttled request is never forwarded and the SDK sees a throttle", fault: Fault{Throttle: 1}, forwarded: 0,
			check: func(t *testing.T, err error) {
				require.Error(t, err)
				require.Equal(t, aws.TrueTernary, retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err), "%v", err)
			},
		},
		{
			name: "a delayed request arrives", fault: Fault{Delay: 1, DelayFor: 30 * time.Millisecond}, forwarded: 1,
			check: func(t *testing.T, err error) { require.NoError(t, err) },
		},
		{
			name: "no fault", fault: Fault{}, forwarded: 1,
			check: func(t *testing.T, err error) { require.NoError(t, err) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up, target := startUpstream(t)
			p := startProxy(t, Config{Target: target, Seed: 1, Faults: map[string]Fault{"PutItem": tt.fault, "SendMessage": tt.fault}})
			db, q := clients(p.URL(), 3)

			start := time.Now()
			tt.check(t, putItem(ctx, db))
			tt.check(t, sendMessage(ctx, q))
			if tt.fault.DelayFor > 0 {
				require.GreaterOrEqual(t, time.Since(start), 2*tt.fault.DelayFor)
			}
			require.Equal(t, tt.forwarded, up.count(putItemTarget), "PutItem requests the emulator saw")
			require.Equal(t, tt.forwarded, up.count(sendMessageTarget),
				"SendMessage requests the emulator saw (through the endpoint, not the queue URL's host)")
		})
	}
}

// TestUnlistedOperationsPass checks that operations without a fault are
// forwarded untouched, body included, and counted as passed.
func TestUnlistedOperationsPass(t *testing.T) {
	up, target := startUpstream(t)
	p := startProxy(t, Config{Target: target, Faults: map[string]Fault{"UpdateItem": {Drop: 1}}})
	db, _ := clients(p.URL(), 1)
	require.NoError(t, putItem(context.Background(), db))
	require.Equal(t, 1, up.count(putItemTarget))
	require.Contains(t, up.body[0], `"TableName":"t"`)
	require.Equal(t, []Count{{Operation: "PutItem", Kind: Passed, N: 1}}, p.Counts())
}

// TestSharesAndSeed: over many requests each fault meets about its share,
// the counts add up, and the same seed gives the same fates.
func TestSharesAndSeed(t *testing.T) {
	fault := Fault{Drop: 0.05, Throttle: 0.03, Delay: 0.02}
	fates := func(seed uint64) ([]Kind, *Proxy) {
		p := startProxy(t, Config{Target: "http://127.0.0.1:1", Seed: seed, Faults: map[string]Fault{"PutItem": fault}})
		var out []Kind
		for range 20000 {
			k, _ := p.decide("PutItem")
			out = append(out, k)
		}
		return out, p
	}
	a, p := fates(7)
	b, _ := fates(7)
	c, _ := fates(8)
	require.Equal(t, a, b, "same seed, same fates")
	require.NotEqual(t, a, c, "another seed, other fates")

	for kind, share := range map[Kind]float64{Dropped: fault.Drop, Throttled: fault.Throttle, Delayed: fault.Delay, Passed: 0.90} {
		got := float64(p.Total(kind)) / 20000
		require.InDelta(t, share, got, 4*math.Sqrt(share*(1-share)/20000), "share of %s", kind)
	}
	var sum int64
	for _, c := range p.Counts() {
		sum += c.N
	}
	require.EqualValues(t, 20000, sum)
}

func TestConfigRejectsBadShares(t *testing.T) {
	tests := []struct {
		name string
		c    Config
	}{
		{"no target", Config{}},
		{"sum above one", Config{Target: "http://127.0.0.1:1", Faults: map[string]Fault{"PutItem": {Drop: 0.6, Throttle: 0.6}}}},
		{"negative", Config{Target: "http://127.0.0.1:1", Faults: map[string]Fault{"PutItem": {Delay: -0.1}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Start(tt.c)
			require.Error(t, err)
		})
	}
}

// TestDroppedUnderConcurrency: concurrent callers each get their own
// fate; every request is counted once and reaches the emulator unless
// throttled.
func TestDroppedUnderConcurrency(t *testing.T) {
	up, target := startUpstream(t)
	p := startProxy(t, Config{Target: target, Seed: 3, Faults: map[string]Fault{"PutItem": {Drop: 0.3, Throttle: 0.2}}})
	db, _ := clients(p.URL(), 1)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 200 {
		wg.Go(func() {
			if putItem(context.Background(), db) != nil {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	require.EqualValues(t, 200, p.Total(Passed)+p.Total(Dropped)+p.Total(Throttled))
	require.EqualValues(t, p.Total(Passed)+p.Total(Dropped), up.count(putItemTarget))
	require.EqualValues(t, p.Total(Dropped)+p.Total(Throttled), failed.Load())
	require.Positive(t, p.Total(Dropped))
	require.Positive(t, p.Total(Throttled))
}

func TestReport(t *testing.T) {
	p := startProxy(t, Config{Target: "http://127.0.0.1:1", Seed: 1, Faults: map[string]Fault{"PutItem": {Throttle: 1}}})
	p.decide("PutItem")
	p.decide("PutItem")
	p.decide("GetItem")
	require.Equal(t, "GetItem: passed 1\nPutItem: throttled 2", p.Report())
}
