package main

import (
	"context"
	"fmt"

	"github.com/spoolhq/spool/cli/internal/report"
	"github.com/spoolhq/spool/cli/internal/rpcerr"
	"github.com/spoolhq/spool/cli/internal/upload"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// dryRun streams the file to the ingestor as a dry run (its real checks
// and mapping; no job, nothing published), prints the totals, then asks a
// dispatcher to render the first rows' requests with the code that sends
// them, and prints those: what the third party would receive.
func (a *app) dryRun(ctx context.Context, ingestorAddr string, dispatchers []string, path string, header *spoolv1.FileHeader, chunkSize, preview int) error {
	// preview_rows 0 would be the server's default: ask for one, show none.
	header.DryRun, header.PreviewRows = true, int32(max(preview, 1))
	cc, err := a.dial(ingestorAddr)
	if err != nil {
		return err
	}
	defer cc.Close()
	in := a.stdin
	header.FileName = "stdin"
	var size int64
	if path != "-" {
		// The file goes as a real send sends it, its SHA-256 included, so
		// the control totals are checked alike.
		f, n, err := openToSend(path, header)
		if err != nil {
			return err
		}
		defer f.Close()
		in, size = f, n
	}
	display := a.uploadDisplay(ctx, header.GetFileName(), size)
	resp, err := upload.Send(ctx, spoolv1.NewIngestServiceClient(cc), header, in, chunkSize, display.Sent)
	display.Stop(err == nil)
	if err != nil {
		return fmt.Errorf("dry run of %s: %w%s", header.GetFileName(), err, hint(err, "ingestor", "SPOOL_INGESTOR_ADDR"))
	}
	fmt.Fprintf(a.stdout, "dry run of %s: nothing was published, no job was created\n", header.GetFileName())
	fmt.Fprintf(a.stdout, "rows: %d read, %d would be delivered, %d rejected\n", resp.GetRowsReceived(), resp.GetRowsPublished(), resp.GetRowsRejected())
	if sum := resp.GetJob().GetActual().GetAmountSum(); sum != "" {
		fmt.Fprintf(a.stdout, "amount sum (%s): %s\n", resp.GetJob().GetAmountColumn(), sum)
	}
	report.RowErrors(a.stdout, resp)
	if preview == 0 || len(resp.GetPreview()) == 0 {
		return nil
	}
	return a.onDispatcher(dispatchers, func(client spoolv1.DispatchServiceClient) (bool, error) {
		rendered, err := client.RenderRequests(ctx, &spoolv1.RenderRequestsRequest{Envelopes: resp.GetPreview()})
		if err != nil {
			return false, fmt.Errorf("render the first rows' requests: %w", rpcerr.Readable(err))
		}
		fmt.Fprintf(a.stdout, "\nthe first rows' requests, as a dispatcher would send them (a real run's job id replaces %q, in the keys made from it too):\n", "dry-run")
		for _, r := range rendered.GetRequests() {
			fmt.Fprintf(a.stdout, "\nrow %d: %s %s\n", r.GetRow(), r.GetMethod(), r.GetUrl())
			for _, h := range r.GetHeaders() {
				fmt.Fprintf(a.stdout, "%s: %s\n", h.GetName(), h.GetValue())
			}
			fmt.Fprintf(a.stdout, "\n%s\n", r.GetBody())
		}
		return true, nil
	})
}
