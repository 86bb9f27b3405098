// Package faultproxy is an HTTP reverse proxy, on loopback, that puts in
// front of a local AWS emulator the failures real AWS has and the emulators
// never show: an answer lost after the write was applied, a throttling
// error, a slow answer.
//
// It understands the AWS JSON protocols (DynamoDB, and SQS since the SDK
// speaks JSON to it): the operation is the part of the X-Amz-Target header
// after the dot ("DynamoDB_20120810.PutItem", "AmazonSQS.SendMessageBatch").
// For each request of an operation that has a Fault, one seeded draw picks
// what happens:
//
//   - Dropped: the request is forwarded, the emulator's whole answer is read
//     (so the write happened), and then the caller's connection is reset
//     before a byte of the answer reaches it. The caller cannot know whether
//     its write was applied; the SDK retries it.
//   - Throttled: the request is not forwarded; the caller gets the
//     service's throttling error (DynamoDB's
//     ProvisionedThroughputExceededException, SQS's RequestThrottled), which
//     the SDK retries with backoff.
//   - Delayed: the request waits DelayFor, then is forwarded.
//
// TCP-level tools (toxiproxy) cannot do the first: they do not know where
// one HTTP request ends and which operation it is.
package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Kind is what the proxy did with a request.
type Kind string

// The fates of a request.
const (
	Passed    Kind = "passed"
	Dropped   Kind = "dropped"
	Throttled Kind = "throttled"
	Delayed   Kind = "delayed"
)

// Kinds lists every Kind, faults first, in report order.
var Kinds = []Kind{Dropped, Throttled, Delayed, Passed}

// Fault is the share of an operation's requests that meets each failure.
// The shares are exclusive: their sum must not exceed 1.
type Fault struct {
	Drop     float64
	Throttle float64
	Delay    float64
	DelayFor time.Duration
}

// Config configures a proxy.
type Config struct {
	// Target is the emulator's URL, e.g. http://127.0.0.1:4566.
	Target string
	// Seed makes the draws reproducible (for one order of requests).
	Seed uint64
	// Faults by operation name ("PutItem", "SendMessageBatch"). Operations
	// not listed are forwarded untouched.
	Faults map[string]Fault
}

// Proxy is a running proxy.
type Proxy struct {
	url    string
	srv    *http.Server
	ln     net.Listener
	faults map[string]Fault

	mu     sync.Mutex
	rng    *rand.Rand
	counts map[string]map[Kind]int64
}

// errDrop marks an answer that must not reach the caller.
var errDrop = errors.New("answer dropped by the fault proxy")

// Start listens on a free loopback port and serves until Close.
func Start(c Config) (*Proxy, error) {
	target, err := url.Parse(c.Target)
	if err != nil || target.Host == "" {
		return nil, fmt.Errorf("fault proxy target %q: want a URL", c.Target)
	}
	for op, f := range c.Faults {
		if f.Drop < 0 || f.Throttle < 0 || f.Delay < 0 || f.Drop+f.Throttle+f.Delay > 1 {
			return nil, fmt.Errorf("fault of %s: shares must be in [0, 1] and sum to at most 1: %+v", op, f)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fault proxy listen: %w", err)
	}
	p := &Proxy{
		url:    "http://" + ln.Addr().String(),
		ln:     ln,
		faults: c.Faults,
		rng:    rand.New(rand.NewPCG(c.Seed, c.Seed^0x5eed)),
		counts: map[string]map[Kind]int64{},
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			// The SDK signed the request for the host it was given; the
			// emulators do not check signatures, so the host may change.
			r.Out.Host = target.Host
		},
		ModifyResponse: func(resp *http.Response) error {
			if fateOf(resp.Request) != Dropped {
				return nil
			}
			// Read the whole answer: the emulator has applied the request
			// once it has answered.
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return errDrop
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, errDrop) {
				reset(w)
				return
			}
			http.Error(w, "fault proxy: "+err.Error(), http.StatusBadGateway)
		},
	}
	p.srv = &http.Server{Handler: p.handler(rp), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// URL is where the proxy listens: the endpoint to give the services.
func (p *Proxy) URL() string { return p.url }

// Close stops the proxy and ends its connections.
func (p *Proxy) Close() error { return p.srv.Close() }

type fateKey struct{}

func contextWithFate(ctx context.Context, k Kind) context.Context {
	return context.WithValue(ctx, fateKey{}, k)
}

func fateOf(r *http.Request) Kind {
	k, _ := r.Context().Value(fateKey{}).(Kind)
	return k
}

func (p *Proxy) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target := r.Header.Get("X-Amz-Target")
		op := Operation(target)
		fate, delay := p.decide(op)
		switch fate {
		case Throttled:
			_, _ = io.Copy(io.Discard, r.Body)
			writeThrottle(w, target)
			return
		case Delayed:
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		ctx := r.Context()
		if fate == Dropped {
			ctx = contextWithFate(ctx, Dropped)
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// decide draws the fate of one request of op and counts it.
func (p *Proxy) decide(op string) (Kind, time.Duration) {
	f, ok := p.faults[op]
	p.mu.Lock()
	defer p.mu.Unlock()
	fate := Passed
	if ok {
		switch u := p.rng.Float64(); {
		case u < f.Drop:
			fate = Dropped
		case u < f.Drop+f.Throttle:
			fate = Throttled
		case u < f.Drop+f.Throttle+f.Delay:
			fate = Delayed
		}
	}
	if p.counts[op] == nil {
		p.counts[op] = map[Kind]int64{}
	}
	p.counts[op][fate]++
	return fate, f.DelayFor
}

// Operation is the operation named by an X-Amz-Target header, or "" when
// the request carries none.
func Operation(target string) string {
	if i := strings.LastIndexByte(target, '.'); i >= 0 {
		return target[i+1:]
	}
	return target
}

// writeThrottle answers with the throttling error of the service the
// target names, as AWS does: HTTP 400 and the JSON protocol's error body.
func writeThrottle(w http.ResponseWriter, target string) {
	errType, msg := "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
		"The level of configured provisioned throughput for the table was exceeded."
	if strings.HasPrefix(target, "AmazonSQS.") {
		// SQS is query-compatible: the SDK takes the error code from this
		// header when it is there.
		errType, msg = "com.amazonaws.sqs#RequestThrottled", "Request is throttled."
		w.Header().Set("X-Amzn-Query-Error", "RequestThrottled;Sender")
	}
	body := fmt.Sprintf(`{"__type":%q,"message":%q}`, errType, msg)
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	// DynamoDB signs every answer's body with a CRC32, which its SDK checks.
	w.Header().Set("X-Amz-Crc32", strconv.FormatUint(uint64(crc32.ChecksumIEEE([]byte(body))), 10))
	w.WriteHeader(http.StatusBadRequest)
	_, _ = io.WriteString(w, body)
}

// reset ends the caller's connection with a TCP reset, before any byte of
// the answer: what a caller sees when a load balancer or the network loses
// the answer.
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("fault proxy: the response writer cannot be hijacked")
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// Count is how many requests of one operation met one fate.
type Count struct {
	Operation string
	Kind      Kind
	N         int64
}

// Counts returns every non-zero count, by operation and then in Kinds
// order.
func (p *Proxy) Counts() []Count {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Count
	for op, m := range p.counts {
		for _, k := range Kinds {
			if n := m[k]; n > 0 {
				out = append(out, Count{Operation: op, Kind: k, N: n})
			}
		}
	}
	slices.SortStableFunc(out, func(a, b Count) int { return strings.Compare(a.Operation, b.Operation) })
	return out
}

// Total is the number of requests, of every operation, that met kind.
func (p *Proxy) Total(kind Kind) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var n int64
	for _, m := range p.counts {
		n += m[kind]
	}
	return n
}

// Report formats the counts as one line per operation, for a test's log:
// "PutItem: dropped 12, throttled 7, passed 230".
func (p *Proxy) Report() string {
	var b strings.Builder
	last := ""
	for _, c := range p.Counts() {
		if c.Operation != last {
			if last != "" {
				b.WriteString("\n")
			}
			fmt.Fprintf(&b, "%s:", c.Operation)
			last = c.Operation
		} else {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, " %s %d", c.Kind, c.N)
	}
	return b.String()
}
