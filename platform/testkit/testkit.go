// Package testkit holds the small test doubles that tests in several modules
// need alike: a buffer that goroutines write while the test reads it, and a
// clock the test sets. Only tests import it; it sits outside internal/ so
// that every module's tests can.
package testkit

import (
	"bytes"
	"sync"
	"time"
)

// Buffer is a bytes.Buffer safe for concurrent use: a server's log handler, a
// render goroutine or a child process writes it while the test reads it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Clock is a time source that moves only when the test advances it, safe
// for concurrent use. Pass its Now where code takes a func() time.Time.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock standing at t.
func NewClock(t time.Time) *Clock {
	return &Clock{t: t}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
