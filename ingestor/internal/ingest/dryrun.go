package ingest

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/ingestor/internal/publish"
	"github.com/spoolhq/spool/platform/envelope"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/positive"
)

// DryRunJobID is the job id of a dry run's envelopes: no job exists.
const DryRunJobID = "dry-run"

// Bounds of a dry run's preview.
const (
	defaultPreviewRows = 3
	maxPreviewRows     = 20
	// defaultMaxMessageBytes is SQS's maximum message size, for a server
	// configured without one.
	defaultMaxMessageBytes = 1 << 20
)

// dryRun reads the whole admitted stream through the very checks,
// mapping and encoding of a real one (job.run), with a publisher that
// publishes nothing: no job is created, no key claimed, no progress
// written. It answers the totals a real run would have, or the refusal it
// would have got, and the envelopes of the first rows.
func (s *Server) dryRun(ctx context.Context, stream grpc.ClientStreamingServer[spoolv1.StreamFileRequest, spoolv1.StreamFileResponse], o *opened) error {
	n := int(o.header.GetPreviewRows())
	switch {
	case n < 0:
		return status.Errorf(codes.InvalidArgument, "preview_rows %d: want 0 to %d", n, maxPreviewRows)
	case n == 0:
		n = defaultPreviewRows
	case n > maxPreviewRows:
		n = maxPreviewRows
	}
	pub := &previewPublisher{keep: n, cols: o.cols, maxBytes: positive.Or(s.cfg.MaxMessageBytes, defaultMaxMessageBytes)}
	st := &streamState{id: DryRunJobID, job: &spoolv1.Job{JobId: DryRunJobID}}
	j, err := s.newJob(st, o, pub)
	if err != nil {
		return err
	}
	err = j.run(ctx, o.reader, s.cfg.Now)
	if errors.Is(err, errInvalidRows) {
		in := j.ingest(false)
		st := status.Newf(codes.InvalidArgument, "dry run: the file would be rejected, nothing delivered: %d invalid rows of %d (row policy reject-file)",
			in.Rejected, in.Received)
		return withRowErrors(st, j.errors, &spoolv1.StreamFileResponse{
			RowsReceived: in.Received, RowsRejected: in.Rejected, Errors: j.errors, Preview: pub.kept,
		})
	}
	if err != nil {
		return err
	}
	in := j.ingest(true)
	if mismatch := jobstore.CompareTotals(o.header.GetControl(), in.Actual); mismatch != "" {
		return status.Errorf(codes.InvalidArgument, "dry run: the file would be rejected, nothing delivered: %s", mismatch)
	}
	s.cfg.Log.InfoContext(ctx, "dry run", "rows_received", in.Received, "rows_valid", in.Published, "rows_rejected", in.Rejected)
	return stream.SendAndClose(&spoolv1.StreamFileResponse{
		RowsReceived:  in.Received,
		RowsPublished: in.Published,
		RowsRejected:  in.Rejected,
		Errors:        j.errors,
		Preview:       pub.kept,
		Job: &spoolv1.Job{
			JobKey: o.key, FileName: o.header.GetFileName(), Columns: o.cols, Total: in.Published,
			BusinessKeyColumns: o.header.GetBusinessKeyColumns(), AmountColumn: o.header.GetAmountColumn(),
			Control: o.header.GetControl(), Actual: in.Actual,
		},
	})
}

// previewPublisher is a dry run's publisher: it checks each envelope as
// the real one would (publish.Check), keeps the first few, and sends
// nothing.
type previewPublisher struct {
	keep     int
	cols     []string // the job's, to name a V2 envelope's values
	maxBytes int
	enc      envelope.Encoder // one for the stream, as the real publisher's
	kept     []*spoolv1.Envelope
	handed   int64
}

func (p *previewPublisher) Publish(_ context.Context, e *spoolv1.Envelope) error {
	if err := publish.Check(&p.enc, e, p.maxBytes); err != nil {
		return err
	}
	if len(p.kept) < p.keep {
		// The preview is what a dispatcher would deliver: the V1 envelope
		// a V2 one stands for, as a dispatcher names it.
		kept := proto.CloneOf(e)
		if err := envelope.Expand(kept, p.cols); err != nil {
			return err
		}
		p.kept = append(p.kept, kept)
	}
	p.handed++
	return nil
}

func (p *previewPublisher) Flush(context.Context) error { return nil }

func (p *previewPublisher) Stats() publish.Stats {
	return publish.Stats{Published: p.handed}
}

func (p *previewPublisher) Close() {}

// checkDryRun refuses what a dry run cannot be.
func checkDryRun(h *spoolv1.FileHeader) error {
	if h.GetDryRun() && h.GetResume() != nil {
		return status.Error(codes.InvalidArgument, "a dry run cannot resume: it reads the whole file")
	}
	if !h.GetDryRun() && h.GetPreviewRows() != 0 {
		return status.Errorf(codes.InvalidArgument, "preview_rows %d without dry_run", h.GetPreviewRows())
	}
	return nil
}
