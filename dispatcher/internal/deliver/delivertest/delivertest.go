// Package delivertest is an HTTP destination for tests of what the
// dispatcher sends: it records every request whole and answers as the test
// tells it, so a test compares what was sent with what it expected.
package delivertest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// Request is what the destination saw of one request.
type Request struct {
	Method string
	Path   string
	Header http.Header
	Body   string
}

// Destination is a test HTTP server that records each request.
type Destination struct {
	// URL is the server's base URL.
	URL string

	t    testing.TB
	mu   sync.Mutex
	seen []Request
}

// New starts a destination, closed when the test ends. Each request is
// recorded, then answered by reply; a nil reply answers 200 with no body.
func New(t testing.TB, reply func(w http.ResponseWriter)) *Destination {
	t.Helper()
	d := &Destination{t: t}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("destination: read the body: %v", err)
		}
		d.mu.Lock()
		d.seen = append(d.seen, Request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: string(b)})
		d.mu.Unlock()
		if reply != nil {
			reply(w)
		}
	}))
	t.Cleanup(srv.Close)
	d.URL = srv.URL
	return d
}

// Only returns the one request the destination saw, and fails the test
// unless it saw exactly one.
func (d *Destination) Only() Request {
	d.t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.seen) != 1 {
		d.t.Fatalf("destination saw %d requests, want 1", len(d.seen))
	}
	return d.seen[0]
}
