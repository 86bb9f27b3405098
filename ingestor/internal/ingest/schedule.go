package ingest

import (
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// DefaultMaxDeliverAfter is how far ahead a payment date may be by
// default: three days, inside SQS's default message retention of four, so
// the job's messages are still in the queue when the day comes.
const DefaultMaxDeliverAfter = 72 * time.Hour

// checkDeliverAfter refuses a payment date the queue would not keep the
// job's messages for. A date in the past is no wait at all.
func (s *Server) checkDeliverAfter(h *spoolv1.FileHeader) error {
	d := h.GetDeliverAfter()
	if d == nil || d.CheckValid() != nil {
		return nil // admit reports an invalid one
	}
	if ahead := d.AsTime().Sub(s.cfg.Now()); ahead > s.cfg.MaxDeliverAfter {
		return status.Errorf(codes.InvalidArgument, "header.deliver_after %s is %s ahead, more than the ingestor's -max-deliver-after of %s: the queue would not keep the messages that long",
			d.AsTime().UTC().Format(time.RFC3339), ahead.Round(time.Minute), s.cfg.MaxDeliverAfter)
	}
	return nil
}

// canaryOf is the header's canary as the job keeps it: none for zero rows,
// and never released at the start.
func canaryOf(h *spoolv1.FileHeader) *spoolv1.Canary {
	c := h.GetCanary()
	if c.GetRows() <= 0 {
		return nil
	}
	return &spoolv1.Canary{Rows: c.GetRows(), ContinueWhenClean: c.GetContinueWhenClean()}
}
