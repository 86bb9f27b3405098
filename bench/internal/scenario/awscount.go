package scenario

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/spoolhq/spool/platform/emulator"
)

// callCounter counts the AWS calls Spool's processes make: a reverse proxy
// in front of each emulator, through which the services reach it (the
// stack's AWSEndpoint), counting each request by service and operation.
// Counting at the wire sees every call, SDK retries included, which is what
// AWS bills.
type callCounter struct {
	mu      sync.Mutex
	counts  map[string]int64
	servers []*http.Server
	// transport carries the proxied calls; its idle connections are closed
	// with the proxies, or an emulator would wait for them on its way out.
	transport *http.Transport
}

func newCallCounter() *callCounter {
	return &callCounter{counts: map[string]int64{}, transport: http.DefaultTransport.(*http.Transport).Clone()}
}

// endpoint starts a counting proxy to emulatorURL and returns its URL.
func (c *callCounter) endpoint(_ emulator.Kind, emulatorURL string) (string, error) {
	target, err := url.Parse(emulatorURL)
	if err != nil {
		return "", fmt.Errorf("emulator URL %q: %w", emulatorURL, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = c.transport
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c.count(operation(r))
			rp.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			c.count("proxy error: " + err.Error())
		}
	}()
	c.mu.Lock()
	c.servers = append(c.servers, srv)
	c.mu.Unlock()
	return "http://" + ln.Addr().String(), nil
}

// operation names a request's AWS call from its X-Amz-Target header
// ("DynamoDB_20120810.PutItem", "AmazonSQS.ReceiveMessage"), the JSON
// protocol both services speak to the SDK.
func operation(r *http.Request) string {
	t := r.Header.Get("X-Amz-Target")
	svc, op, ok := strings.Cut(t, ".")
	if !ok {
		return "other"
	}
	switch {
	case strings.HasPrefix(svc, "DynamoDB"):
		svc = "DynamoDB"
	case strings.HasPrefix(svc, "AmazonSQS"):
		svc = "SQS"
	}
	return svc + " " + op
}

func (c *callCounter) count(op string) {
	c.mu.Lock()
	c.counts[op]++
	c.mu.Unlock()
}

// snapshot returns the counts so far.
func (c *callCounter) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.counts)
}

// since returns the counts added after before.
func (c *callCounter) since(before map[string]int64) map[string]int64 {
	m := c.snapshot()
	for k, v := range before {
		m[k] -= v
		if m[k] == 0 {
			delete(m, k)
		}
	}
	return m
}

// close stops the proxies and closes their connections to the emulators.
func (c *callCounter) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.servers {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = s.Shutdown(ctx)
		cancel()
	}
	c.servers = nil
	c.transport.CloseIdleConnections()
}
