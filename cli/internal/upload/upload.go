// Package upload streams a CSV file to the ingestor's StreamFile: a
// FileHeader, then the file's raw bytes in fixed-size chunks. The file is
// never read into memory: one chunk buffer is reused for the whole file,
// and gRPC flow control paces the reads to the ingestor's speed.
package upload

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"

	"github.com/spoolhq/spool/cli/internal/rpcerr"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// DefaultChunkSize is the default size of one chunk message.
const DefaultChunkSize = 64 << 10

// MaxChunkSize keeps a chunk message well under gRPC's default 4 MiB
// receive limit.
const MaxChunkSize = 2 << 20

// Client is the part of the ingest client an upload uses.
type Client interface {
	StreamFile(ctx context.Context, opts ...grpc.CallOption) (grpc.ClientStreamingClient[spoolv1.StreamFileRequest, spoolv1.StreamFileResponse], error)
}

// Send streams header and then everything r yields, in chunks of chunkSize
// bytes (the last one shorter), and returns the ingestor's answer. sent,
// when not nil, is called after every chunk with the bytes sent so far.
func Send(ctx context.Context, c Client, header *spoolv1.FileHeader, r io.Reader, chunkSize int, sent func(int64)) (*spoolv1.StreamFileResponse, error) {
	if chunkSize <= 0 || chunkSize > MaxChunkSize {
		return nil, fmt.Errorf("chunk size %d: want 1 to %d bytes", chunkSize, MaxChunkSize)
	}
	ctx, cancel := context.WithCancel(ctx)
	// Cancelling on every early return tells the ingestor the file is
	// incomplete, so it never seals a truncated job.
	defer cancel()
	stream, err := c.StreamFile(ctx)
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", rpcerr.Readable(err))
	}
	if err := stream.Send(&spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Header{Header: header}}); err != nil {
		return sendError(stream, "send header", err)
	}
	// gRPC serialises a message before Send returns, so one buffer serves
	// every chunk.
	buf := make([]byte, chunkSize)
	var total int64
	for n := 1; ; n++ {
		read, rerr := io.ReadFull(r, buf)
		if read > 0 {
			if err := stream.Send(&spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Chunk{Chunk: buf[:read]}}); err != nil {
				return sendError(stream, fmt.Sprintf("send chunk %d", n), err)
			}
			total += int64(read)
			if sent != nil {
				sent(total)
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("read input after %d bytes: %w", total, rerr)
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, fmt.Errorf("finish stream after %d bytes: %w", total, rpcerr.Readable(err))
	}
	return resp, nil
}

// sendError explains a failed Send. io.EOF from Send only means the server
// ended the stream; what it answered is what CloseAndRecv returns. The one
// early answer that is not an error is an existing job: the ingestor
// recognised the job key and reads no further.
func sendError(stream grpc.ClientStreamingClient[spoolv1.StreamFileRequest, spoolv1.StreamFileResponse], what string, err error) (*spoolv1.StreamFileResponse, error) {
	if errors.Is(err, io.EOF) {
		resp, rerr := stream.CloseAndRecv()
		if rerr == nil && resp.GetExisting() {
			return resp, nil
		}
		err = rerr
		if err == nil {
			err = errors.New("ingestor answered before the end of the file")
		}
	}
	return nil, fmt.Errorf("%s: %w", what, rpcerr.Readable(err))
}
