// Package rate holds the requests per second sent to a destination under a
// limit shared by every dispatcher, however many run.
//
// The destination's limit is a property of the destination, not of one
// process, so it cannot be split into per-process shares: the fleet grows
// and shrinks, and a share sized for three dispatchers is wrong for four.
// The limiters share one schedule instead, kept in one DynamoDB item per
// destination in the job table.
//
// The algorithm is GCRA (the generic cell rate algorithm, a token bucket
// seen as a schedule): at R requests per second, request slots fall every
// T = 1/R seconds, and the item holds one number, the time of the next
// unreserved slot. A dispatcher reserves a lease of k slots in one write,
// start = max(next, now) and next = start + k·T, and spends them locally,
// each request waiting until its slot's time. Because every slot is handed
// out exactly once and slots are T apart, the fleet's rate is R by
// construction, whatever the number of dispatchers and however they
// interleave; the only error is clock skew between machines, which shifts
// a dispatcher's slots by the skew without adding any.
//
// Compared with a token count stored with a refill time, the schedule needs
// no read: under load, a lease is one UpdateItem, SET next = next + k·T on
// the condition next >= floor, which DynamoDB applies atomically on the
// item and whose condition holds whenever the schedule is busy, however
// many dispatchers write at once; a token count would be read, computed
// and written back under an optimistic condition that fails on contention. Only after an idle spell, when next lies in
// the past, does a second conditional write restart the schedule at now.
// Both are single-item writes, the same on AWS and on an emulator.
//
// Leases keep the table's load far below the request rate: a dispatcher
// takes as many slots as it has requests waiting, and more while it uses
// every slot it leased, up to MaxLease (10), so at 50 requests/s the item
// sees about five writes a second. Leased slots
// cannot be hoarded: a slot is a moment, not a token, and one not used
// within Expire of its time is dropped, so a dead or idle dispatcher wastes
// at most its last lease and never spends it later in a burst. When the
// schedule is booked far ahead (many dispatchers, each with a lease), a
// dispatcher leases one slot at a time, so no one books slots seconds
// away while others starve.
//
// Burst (1 by default) lets that many requests go at once after an idle
// spell: the schedule may restart up to Burst-1 slots in the past.
package rate

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/spoolhq/spool/dispatcher/internal/clock"
	"github.com/spoolhq/spool/platform/positive"
)

// Backend keeps each destination's shared schedule.
type Backend interface {
	// Reserve books span of dest's schedule, starting at the schedule's
	// next free time or at floor, whichever is later, and returns that
	// start. It is atomic across every dispatcher sharing the backend.
	Reserve(ctx context.Context, dest string, floor time.Time, span time.Duration) (time.Time, error)
}

// Defaults for Options.
const (
	DefaultBurst    = 1
	DefaultMaxLease = 10
	DefaultExpire   = 100 * time.Millisecond
	DefaultAhead    = time.Second
)

// leaseTimeout bounds one lease write, retries by the SDK included.
const leaseTimeout = 5 * time.Second

// Options configure a Limiter. Zero values get the defaults.
type Options struct {
	// Burst is how many requests may go at once after an idle spell.
	Burst int
	// MaxLease is the most slots reserved in one write.
	MaxLease int
	// Expire is how long after its time a leased slot may still be used.
	Expire time.Duration
	// Ahead is how far ahead of now a lease may start before the limiter
	// leases one slot at a time.
	Ahead time.Duration
	// Clock is the time source; the real clock when nil.
	Clock clock.Clock
}

func (o Options) withDefaults() Options {
	o.Burst = positive.Or(o.Burst, DefaultBurst)
	o.MaxLease = positive.Or(o.MaxLease, DefaultMaxLease)
	o.Expire = positive.Or(o.Expire, DefaultExpire)
	o.Ahead = positive.Or(o.Ahead, DefaultAhead)
	o.Clock = cmp.Or[clock.Clock](o.Clock, clock.Real{})
	return o
}

// Limiter spaces one dispatcher's requests to a destination so that the
// whole fleet stays within the rate. It is safe for concurrent use. A nil
// *Limiter is no limit: Wait returns at once.
type Limiter struct {
	b         Backend
	dest      string
	perSecond float64
	interval  time.Duration
	o         Options

	mu       sync.Mutex
	slots    []time.Time   // leased and not yet taken, ascending
	waiting  int           // Waits without a slot
	fetching chan struct{} // closed when the lease under way is in
	ahead    time.Duration // how far ahead of now the last lease started
	lease    int           // size of the last lease
	want     int           // lease size that recent use asks for
	wasted   bool          // slots expired since the last lease
	granted  int64
	leases   int64
	expired  int64
}

// New returns a limiter for dest at perSecond on the job table, or nil when
// perSecond is 0 or less (no limit).
func New(db API, table, dest string, perSecond float64, o Options) *Limiter {
	return NewWith(NewDynamo(db, table), dest, perSecond, o)
}

// NewWith is New on any backend.
func NewWith(b Backend, dest string, perSecond float64, o Options) *Limiter {
	if perSecond <= 0 {
		return nil
	}
	return &Limiter{
		b:         b,
		dest:      dest,
		perSecond: perSecond,
		interval:  max(time.Duration(float64(time.Second)/perSecond), 1),
		o:         o.withDefaults(),
		want:      1,
	}
}

// Wait blocks until the caller may send one request. It returns ctx's error
// if ctx ends first, or the backend's when no slot could be reserved; the
// caller must not send then.
func (l *Limiter) Wait(ctx context.Context) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	l.waiting++
	for {
		now := l.o.Clock.Now()
		l.dropExpiredLocked(now)
		if len(l.slots) > 0 {
			slot := l.slots[0]
			l.slots = l.slots[1:]
			l.waiting--
			l.mu.Unlock()
			return l.sleepUntil(ctx, slot, now)
		}
		if err := ctx.Err(); err != nil {
			l.waiting--
			l.mu.Unlock()
			return err
		}
		if ch := l.fetching; ch != nil {
			l.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-ch:
			}
			l.mu.Lock()
			continue
		}
		if err := l.leaseLocked(ctx, now); err != nil {
			l.waiting--
			l.mu.Unlock()
			return err
		}
	}
}

// leaseLocked reserves a lease, unlocking l.mu while the backend works;
// other Waits meanwhile wait for it rather than reserve their own.
func (l *Limiter) leaseLocked(ctx context.Context, now time.Time) error {
	// The lease grows as TCP's window does in slow start: doubled while
	// every slot of the last one was used, halved when slots expired
	// unused. It covers at least the Waits already queued.
	switch {
	case l.wasted:
		l.want = max(1, l.want/2)
	case l.leases > 0:
		l.want = min(2*l.want, l.o.MaxLease)
	}
	l.wasted = false
	k := min(max(l.waiting, l.want), l.o.MaxLease)
	if l.ahead > l.o.Ahead {
		k, l.want = 1, 1
	}
	floor := now.Add(-time.Duration(l.o.Burst-1) * l.interval)
	ch := make(chan struct{})
	l.fetching = ch
	l.mu.Unlock()
	// The lease serves every Wait queued behind this one, so the caller
	// giving up does not abandon it: a write cancelled after DynamoDB
	// applied it would waste its slots.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), leaseTimeout)
	start, err := l.b.Reserve(rctx, l.dest, floor, time.Duration(k)*l.interval)
	cancel()
	l.mu.Lock()
	l.fetching = nil
	close(ch)
	if err != nil {
		return fmt.Errorf("reserve %d requests to %s: %w", k, l.dest, err)
	}
	l.leases++
	l.lease = k
	now = l.o.Clock.Now()
	l.ahead = start.Sub(now)
	for i := range k {
		// Slots in the past (a burst after an idle spell, or a slow
		// write) are due now, and expire from now.
		slot := start.Add(time.Duration(i) * l.interval)
		if slot.Before(now) {
			slot = now
		}
		l.insertLocked(slot)
	}
	return nil
}

// sleepUntil waits for slot. A caller that gives up hands its slot back, so
// the next Wait can use it.
func (l *Limiter) sleepUntil(ctx context.Context, slot, now time.Time) error {
	var wait <-chan time.Time
	if d := slot.Sub(now); d > 0 {
		wait = l.o.Clock.After(d)
	}
	if wait != nil || ctx.Err() != nil {
		select {
		case <-ctx.Done():
			l.mu.Lock()
			l.insertLocked(slot)
			l.mu.Unlock()
			return ctx.Err()
		case <-wait:
		}
	}
	l.mu.Lock()
	l.granted++
	l.mu.Unlock()
	return nil
}

func (l *Limiter) insertLocked(slot time.Time) {
	i := len(l.slots)
	for i > 0 && l.slots[i-1].After(slot) {
		i--
	}
	l.slots = append(l.slots, time.Time{})
	copy(l.slots[i+1:], l.slots[i:])
	l.slots[i] = slot
}

// dropExpiredLocked gives up the slots no one took in time: spending them
// late would be a burst.
func (l *Limiter) dropExpiredLocked(now time.Time) {
	n := 0
	for n < len(l.slots) && now.Sub(l.slots[n]) > l.o.Expire {
		n++
	}
	if n > 0 {
		l.slots = l.slots[n:]
		l.expired += int64(n)
		l.wasted = true
	}
}

// Rate returns the configured rate, requests per second; 0 for no limit.
func (l *Limiter) Rate() float64 {
	if l == nil {
		return 0
	}
	return l.perSecond
}

// Stats is a limiter's state for a status RPC.
type Stats struct {
	// Rate is the configured fleet-wide rate; 0 for no limit.
	Rate float64
	// Granted counts requests let through by this dispatcher, Leases the
	// backend writes that reserved them, Expired the slots given up.
	Granted, Leases, Expired int64
	// Lease is the size of the last lease; Waiting the Waits without a
	// slot yet.
	Lease, Waiting int
}

// Stats returns the limiter's counters.
func (l *Limiter) Stats() Stats {
	if l == nil {
		return Stats{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{
		Rate: l.perSecond, Granted: l.granted, Leases: l.leases, Expired: l.expired,
		Lease: l.lease, Waiting: l.waiting,
	}
}
