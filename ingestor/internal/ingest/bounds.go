package ingest

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/auth"
)

// This file bounds what StreamFile callers may hold: open streams per
// caller, and how long a stream may keep its job while sending nothing.

const (
	// DefaultMaxStreamsPerPrincipal is how many StreamFile calls one caller
	// may have open at once. Each open stream holds a publisher, its
	// buffer of rows and a job lease.
	DefaultMaxStreamsPerPrincipal = 8
	// DefaultIdleTimeout is how long a stream may send nothing before it
	// is ended. A client uploading a file sends continuously; one that
	// stops without closing holds its job RECEIVING for nobody.
	DefaultIdleTimeout = 5 * time.Minute
)

// anonymous is the count that calls without an authenticated caller share
// (a server run without auth): together they get what one caller gets.
const anonymous = "anonymous"

// streamSlots counts the open streams of each caller.
type streamSlots struct {
	max  int // 0: no limit
	mu   sync.Mutex
	open map[string]int
}

func newStreamSlots(max int) *streamSlots {
	return &streamSlots{max: max, open: map[string]int{}}
}

// acquire takes a slot for the caller of ctx, or returns a
// ResourceExhausted status naming the limit. release gives the slot back;
// it is called once, whenever and however the stream ends.
func (s *streamSlots) acquire(ctx context.Context) (release func(), err error) {
	who := anonymous
	if p, ok := auth.FromContext(ctx); ok && p.Subject != "" {
		who = p.Subject
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.max > 0 && s.open[who] >= s.max {
		return nil, status.Errorf(codes.ResourceExhausted,
			"%s has %d StreamFile calls open already: limit max-streams-per-principal=%d; finish one first", who, s.open[who], s.max)
	}
	s.open[who]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.open[who]--; s.open[who] <= 0 {
				delete(s.open, who)
			}
		})
	}, nil
}

// inUse returns the slots the caller named who holds.
func (s *streamSlots) inUse(who string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open[who]
}

// idleTimer starts the idle timeout of one wait for the client: the
// channel fires when it ran out; stop releases the timer.
type idleTimer func(d time.Duration) (fired <-chan time.Time, stop func())

func realIdleTimer(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }
}

type received struct {
	msg *spoolv1.StreamFileRequest
	err error
}

// idleStream is a StreamFile stream whose Recv ends with DeadlineExceeded
// when the client sent nothing for timeout. The stream's own Recv cannot
// be interrupted, so a goroutine receives for it; it ends when the stream
// does, that is when the handler returns. A stream ended this way is a
// broken stream like any other: the caller's failure handling (fail) keeps
// a keyed job for a resume until its lease runs out and ends a job without
// a key ABORTED.
type idleStream struct {
	grpc.ClientStreamingServer[spoolv1.StreamFileRequest, spoolv1.StreamFileResponse]
	timeout time.Duration
	timer   idleTimer
	once    sync.Once
	msgs    chan received
	ended   error // the error that ended the client's side, once seen
}

func withIdleTimeout(stream grpc.ClientStreamingServer[spoolv1.StreamFileRequest, spoolv1.StreamFileResponse], timeout time.Duration,
	timer idleTimer) grpc.ClientStreamingServer[spoolv1.StreamFileRequest, spoolv1.StreamFileResponse] {
	if timeout <= 0 {
		return stream
	}
	return &idleStream{ClientStreamingServer: stream, timeout: timeout, timer: timer, msgs: make(chan received)}
}

func (s *idleStream) receive() {
	ctx := s.Context()
	for {
		m, err := s.ClientStreamingServer.Recv()
		select {
		case s.msgs <- received{m, err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// Recv returns the client's next message, or an error once the client
// has sent nothing for the timeout. Only time spent waiting for the
// client counts: a stream slowed down by its own publishing is not idle.
func (s *idleStream) Recv() (*spoolv1.StreamFileRequest, error) {
	if s.ended != nil {
		return nil, s.ended
	}
	s.once.Do(func() { go s.receive() })
	fired, stop := s.timer(s.timeout)
	defer stop()
	select {
	case r := <-s.msgs:
		s.ended = r.err
		return r.msg, r.err
	case <-fired:
		return nil, status.Errorf(codes.DeadlineExceeded, "the client sent nothing for %s: limit stream-idle-timeout=%s", s.timeout, s.timeout)
	case <-s.Context().Done():
		return nil, s.Context().Err()
	}
}
