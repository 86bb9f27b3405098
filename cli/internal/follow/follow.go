// Package follow watches a job's progress through the dispatchers'
// WatchJob. Any dispatcher answers for any job, so when one is unreachable
// or goes away (a deploy, a crash) the watch resumes on the next address.
package follow

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spoolhq/spool/cli/internal/rpcerr"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// WatchClient is the part of the dispatch client a watch uses.
type WatchClient interface {
	WatchJob(ctx context.Context, in *spoolv1.WatchJobRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[spoolv1.WatchJobResponse], error)
}

// Target is one dispatcher.
type Target struct {
	Addr   string
	Client WatchClient
}

// Follower watches jobs across a list of dispatchers.
type Follower struct {
	Targets []Target
	// Rounds is how many times in a row every target may fail before the
	// watch gives up. A message received resets the count.
	Rounds int
	// Backoff is the pause after a round in which every target failed.
	Backoff time.Duration
	// OnSwitch, when set, is told that the watch moves from one address to
	// another and why.
	OnSwitch func(from, to string, err error)
}

// DefaultRounds and DefaultBackoff ride out a rolling restart of every
// dispatcher without hanging for long when none is there at all.
const (
	DefaultRounds  = 3
	DefaultBackoff = time.Second
)

// errEnded marks a stream that ended without its final message, which a
// dispatcher shutting down may do.
var errEnded = errors.New("watch ended before the job's final state")

// Follow watches jobID until a message with final set, calling update with
// every message (the final one included), and returns the final progress.
// It moves to the next target when one is unavailable; any other error
// ends the watch.
func (f *Follower) Follow(ctx context.Context, jobID string, update func(*spoolv1.JobProgress)) (*spoolv1.JobProgress, error) {
	if len(f.Targets) == 0 {
		return nil, errors.New("no dispatcher address")
	}
	rounds := max(f.Rounds, 1)
	failures := 0
	for i := 0; ; i = (i + 1) % len(f.Targets) {
		t := f.Targets[i]
		final, received, err := f.watchOnce(ctx, t, jobID, update)
		if err == nil {
			return final, nil
		}
		if received {
			failures = 0
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !retryable(err) {
			return nil, fmt.Errorf("watch job %s on %s: %w", jobID, t.Addr, err)
		}
		failures++
		if failures >= rounds*len(f.Targets) {
			return nil, fmt.Errorf("watch job %s: no dispatcher answered (tried %d times, last %s): %w", jobID, failures, t.Addr, err)
		}
		next := f.Targets[(i+1)%len(f.Targets)].Addr
		if f.OnSwitch != nil {
			f.OnSwitch(t.Addr, next, err)
		}
		// Pause only after a whole round failed, so a single bad address
		// costs nothing.
		if failures%len(f.Targets) == 0 && f.Backoff > 0 {
			timer := time.NewTimer(f.Backoff)
			select {
			case <-ctx.Done():
				timer.Stop()
				return nil, ctx.Err()
			case <-timer.C:
			}
		}
	}
}

// watchOnce runs one WatchJob call. received reports whether any message
// arrived, which proves the target was useful.
func (f *Follower) watchOnce(ctx context.Context, t Target, jobID string, update func(*spoolv1.JobProgress)) (final *spoolv1.JobProgress, received bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := t.Client.WatchJob(ctx, &spoolv1.WatchJobRequest{JobId: jobID})
	if err != nil {
		return nil, false, rpcerr.Readable(err)
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil, received, errEnded
		}
		if err != nil {
			return nil, received, rpcerr.Readable(err)
		}
		received = true
		p := resp.GetProgress()
		if update != nil {
			update(p)
		}
		if p.GetFinal() {
			return p, true, nil
		}
	}
}

// retryable reports whether another dispatcher may do better: this one is
// unreachable, shutting down, or ended the stream early.
func retryable(err error) bool {
	if errors.Is(err, errEnded) {
		return true
	}
	return status.Code(err) == codes.Unavailable
}
