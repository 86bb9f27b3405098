package dispatchrpc

import (
	"context"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// GetDispatcherStatus implements spoolv1.DispatchServiceServer. It answers
// for this dispatcher only: each runs its own concurrency limit and
// breaker (the rate limit is the fleet's), so an operator asks each.
func (s *Server) GetDispatcherStatus(context.Context, *spoolv1.GetDispatcherStatusRequest) (*spoolv1.GetDispatcherStatusResponse, error) {
	return &spoolv1.GetDispatcherStatusResponse{DispatcherId: s.o.DispatcherID, Flow: s.flow()}, nil
}

// flow is the dispatcher's flow control, or nil without one.
func (s *Server) flow() *spoolv1.FlowControl {
	if s.o.Flow == nil {
		return nil
	}
	return s.o.Flow.Status()
}
