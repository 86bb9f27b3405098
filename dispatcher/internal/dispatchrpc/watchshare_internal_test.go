package dispatchrpc

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// gatedJobs answers a read once the test lets it through.
type gatedJobs struct {
	started chan struct{}
	gate    chan struct{}
}

func (g *gatedJobs) Get(ctx context.Context, id string) (*spoolv1.Job, error) {
	g.started <- struct{}{}
	select {
	case <-g.gate:
		return &spoolv1.Job{JobId: id}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func TestSharedReadsLifecycle(t *testing.T) {
	tests := []struct {
		name string
		// cancelFirst: the watcher that started the read goes away before
		// it returns; the other still gets it.
		cancelFirst bool
	}{
		{name: "two waiters, one read"},
		{name: "the reader going away does not fail the others", cancelFirst: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &gatedJobs{started: make(chan struct{}, 2), gate: make(chan struct{})}
			s := newSharedReads(g, time.Second, 5*time.Second)
			leave1, leave2 := s.join("j"), s.join("j")
			now := time.Now()

			ctx1, cancel1 := context.WithCancel(context.Background())
			defer cancel1()
			first := make(chan error, 1)
			go func() { _, err := s.get(ctx1, "j", now); first <- err }()
			<-g.started
			second := make(chan *spoolv1.Job, 1)
			go func() { j, _ := s.get(context.Background(), "j", now); second <- j }()
			if tt.cancelFirst {
				cancel1()
				require.ErrorIs(t, <-first, context.Canceled)
			}
			close(g.gate)
			require.Equal(t, "j", (<-second).GetJobId())
			if !tt.cancelFirst {
				require.NoError(t, <-first)
			}
			require.Empty(t, g.started, "one read for both")

			leave1()
			leave1() // once only
			require.Len(t, s.watched, 1, "a watcher is left")
			leave2()
			require.Empty(t, s.watched, "the last watcher gone, the job is forgotten")
		})
	}
}
