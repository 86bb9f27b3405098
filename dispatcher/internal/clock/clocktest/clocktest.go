// Package clocktest is a clock.Clock for tests that moves only when told to.
package clocktest

import (
	"context"
	"sync"
	"time"
)

// Clock is a fake clock. It moves only when Advance is called, or, when
// auto is set, whenever someone waits on it: then a wait returns at once,
// having moved the clock to its end, which runs a single caller in virtual
// time.
type Clock struct {
	mu     sync.Mutex
	cond   *sync.Cond // broadcast when a timer is set
	now    time.Time
	auto   bool
	timers []timer
	calls  int
}

type timer struct {
	at time.Time
	ch chan time.Time
}

// New returns a clock at a fixed instant.
func New(auto bool) *Clock {
	c := &Clock{now: time.Unix(1_700_000_000, 0), auto: auto}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After returns a channel that receives the time once the clock passed d
// from now.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if c.auto && d > 0 {
		c.now = c.now.Add(d)
	}
	ch := make(chan time.Time, 1)
	if d <= 0 || c.auto {
		ch <- c.now
		return ch
	}
	c.timers = append(c.timers, timer{at: c.now.Add(d), ch: ch})
	c.cond.Broadcast()
	return ch
}

// AwaitTimers blocks until n timers (at least one) are pending and
// returns the earliest one's time, or returns ctx's error with the number pending: a test that
// drives several goroutines in virtual time moves the clock only once all
// of them wait on it.
func (c *Clock) AwaitTimers(ctx context.Context, n int) (time.Time, int, error) {
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.cond.Broadcast()
	})
	defer stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.timers) < max(n, 1) && ctx.Err() == nil {
		c.cond.Wait()
	}
	if err := ctx.Err(); err != nil {
		return time.Time{}, len(c.timers), err
	}
	next := c.timers[0].at
	for _, t := range c.timers[1:] {
		if t.at.Before(next) {
			next = t.at
		}
	}
	return next, len(c.timers), nil
}

// Advance moves the clock and fires the timers that are due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if t.at.After(c.now) {
			kept = append(kept, t)
			continue
		}
		t.ch <- c.now
	}
	c.timers = kept
}

// Calls counts After calls: a test waits for it to grow to know a
// goroutine is about to block on the clock.
func (c *Clock) Calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}
