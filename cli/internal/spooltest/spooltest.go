// Package spooltest runs fake Spool services in memory for the CLI's tests:
// an in-process network of bufconn listeners addressed by name, a fake
// ingestor that records what it was sent, and a fake dispatcher that plays
// a scripted watch.
package spooltest

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// Network is a set of in-memory listeners, each known by an address such
// as "127.0.0.1:1". Dialing an address nobody serves fails as a refused
// connection does.
type Network struct {
	mu  sync.Mutex
	lis map[string]*bufconn.Listener
}

// NewNetwork returns an empty network.
func NewNetwork() *Network { return &Network{lis: map[string]*bufconn.Listener{}} }

// Serve runs a gRPC server at addr with the services register adds, until
// the test ends.
func (n *Network) Serve(tb testing.TB, addr string, register func(grpc.ServiceRegistrar)) {
	tb.Helper()
	n.ServeWith(tb, addr, nil, register)
}

// ServeWith is Serve with server options: TLS credentials, interceptors.
func (n *Network) ServeWith(tb testing.TB, addr string, opts []grpc.ServerOption, register func(grpc.ServiceRegistrar)) {
	tb.Helper()
	lis := bufconn.Listen(1 << 20)
	n.mu.Lock()
	n.lis[addr] = lis
	n.mu.Unlock()
	srv := grpc.NewServer(opts...)
	register(srv)
	done := make(chan struct{})
	go func() { _ = srv.Serve(lis); close(done) }()
	tb.Cleanup(func() {
		srv.Stop()
		<-done
	})
}

// DialOptions make a client dial this network in plaintext, as the CLI
// does when no credentials are configured.
func (n *Network) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), n.Dialer()}
}

// Dialer makes a client dial this network, leaving its transport
// credentials to other options.
func (n *Network) Dialer() grpc.DialOption {
	return grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		n.mu.Lock()
		lis := n.lis[addr]
		n.mu.Unlock()
		if lis == nil {
			return nil, fmt.Errorf("dial %s: connection refused", addr)
		}
		return lis.DialContext(ctx)
	})
}

// Dial returns a client connection to addr on the network, closed when the
// test ends.
func (n *Network) Dial(tb testing.TB, addr string) *grpc.ClientConn {
	tb.Helper()
	cc, err := grpc.NewClient(addr, n.DialOptions()...)
	if err != nil {
		tb.Fatalf("dial %s: %v", addr, err)
	}
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// Ingest is a fake IngestService. StreamFile records the header and every
// chunk, then answers Answer (with the job id filled in) or Err.
type Ingest struct {
	spoolv1.UnimplementedIngestServiceServer

	// Answer is returned by StreamFile when Err is nil.
	Answer *spoolv1.StreamFileResponse
	// Err, when set, ends StreamFile after the header.
	Err error
	// Jobs are what GetJob returns, by id.
	Jobs map[string]*spoolv1.Job

	mu         sync.Mutex
	header     *spoolv1.FileHeader
	chunks     [][]byte
	ended      error
	headerOnce sync.Once
	headerSeen chan struct{}
}

// HeaderSeen is closed once a StreamFile call has received its header.
func (f *Ingest) HeaderSeen() <-chan struct{} { return f.seen() }

func (f *Ingest) seen() chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.headerSeen == nil {
		f.headerSeen = make(chan struct{})
	}
	return f.headerSeen
}

// StreamFile implements spoolv1.IngestServiceServer.
func (f *Ingest) StreamFile(stream grpc.ClientStreamingServer[spoolv1.StreamFileRequest, spoolv1.StreamFileResponse]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.header = first.GetHeader()
	f.mu.Unlock()
	seen := f.seen()
	f.headerOnce.Do(func() { close(seen) })
	if f.Err != nil {
		return f.Err
	}
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			f.mu.Lock()
			f.ended = err
			f.mu.Unlock()
			return err
		}
		if req.GetHeader() != nil {
			return status.Error(codes.InvalidArgument, "header sent twice")
		}
		f.mu.Lock()
		f.chunks = append(f.chunks, append([]byte(nil), req.GetChunk()...))
		f.mu.Unlock()
	}
	return stream.SendAndClose(f.Answer)
}

// GetJob implements spoolv1.IngestServiceServer.
func (f *Ingest) GetJob(_ context.Context, req *spoolv1.GetJobRequest) (*spoolv1.GetJobResponse, error) {
	job, ok := f.Jobs[req.GetJobId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "job %s not found", req.GetJobId())
	}
	return &spoolv1.GetJobResponse{Job: job}, nil
}

// Received returns the header and the chunks StreamFile received.
func (f *Ingest) Received() (*spoolv1.FileHeader, [][]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.header, f.chunks
}

// StreamErr returns the error that ended the last stream early, if any.
func (f *Ingest) StreamErr() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ended
}

// Dispatch is a fake DispatchService whose WatchJob sends Progress, one
// message each, then ends with End (nil: a clean end).
type Dispatch struct {
	spoolv1.UnimplementedDispatchServiceServer

	Progress []*spoolv1.JobProgress
	End      error
	// Report is what ReportJob sends, then it ends with ReportErr.
	Report    []*spoolv1.ReportJobResponse
	ReportErr error
	// Resolve answers ResolveTransaction.
	Resolve func(*spoolv1.ResolveTransactionRequest) (*spoolv1.ResolveTransactionResponse, error)
	// Approve answers ApproveRequest, Pending ListPendingRequests, and
	// Audit ListAuditEvents.
	Approve func(*spoolv1.ApproveRequestRequest) (*spoolv1.ApproveRequestResponse, error)
	Pending func(*spoolv1.ListPendingRequestsRequest) (*spoolv1.ListPendingRequestsResponse, error)
	Audit   func(*spoolv1.ListAuditEventsRequest) (*spoolv1.ListAuditEventsResponse, error)
	// List answers ListJobs; Render answers RenderRequests.
	List   func(*spoolv1.ListJobsRequest) (*spoolv1.ListJobsResponse, error)
	Render func(*spoolv1.RenderRequestsRequest) (*spoolv1.RenderRequestsResponse, error)

	mu    sync.Mutex
	calls []string
}

// ReportJob implements spoolv1.DispatchServiceServer.
func (f *Dispatch) ReportJob(_ *spoolv1.ReportJobRequest, stream grpc.ServerStreamingServer[spoolv1.ReportJobResponse]) error {
	for _, m := range f.Report {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	return f.ReportErr
}

// ListJobs implements spoolv1.DispatchServiceServer.
func (f *Dispatch) ListJobs(_ context.Context, req *spoolv1.ListJobsRequest) (*spoolv1.ListJobsResponse, error) {
	return scripted(f.List, req, "no ListJobs")
}

// RenderRequests implements spoolv1.DispatchServiceServer.
func (f *Dispatch) RenderRequests(_ context.Context, req *spoolv1.RenderRequestsRequest) (*spoolv1.RenderRequestsResponse, error) {
	return scripted(f.Render, req, "no RenderRequests")
}

// ResolveTransaction implements spoolv1.DispatchServiceServer.
func (f *Dispatch) ResolveTransaction(_ context.Context, req *spoolv1.ResolveTransactionRequest) (*spoolv1.ResolveTransactionResponse, error) {
	return scripted(f.Resolve, req, "no resolve scripted")
}

// ApproveRequest implements spoolv1.DispatchServiceServer.
func (f *Dispatch) ApproveRequest(_ context.Context, req *spoolv1.ApproveRequestRequest) (*spoolv1.ApproveRequestResponse, error) {
	return scripted(f.Approve, req, "no approve scripted")
}

// ListPendingRequests implements spoolv1.DispatchServiceServer.
func (f *Dispatch) ListPendingRequests(_ context.Context, req *spoolv1.ListPendingRequestsRequest) (*spoolv1.ListPendingRequestsResponse, error) {
	return scripted(f.Pending, req, "no pending list scripted")
}

// ListAuditEvents implements spoolv1.DispatchServiceServer.
func (f *Dispatch) ListAuditEvents(_ context.Context, req *spoolv1.ListAuditEventsRequest) (*spoolv1.ListAuditEventsResponse, error) {
	return scripted(f.Audit, req, "no audit trail scripted")
}

// WatchJob implements spoolv1.DispatchServiceServer.
func (f *Dispatch) WatchJob(req *spoolv1.WatchJobRequest, stream grpc.ServerStreamingServer[spoolv1.WatchJobResponse]) error {
	f.mu.Lock()
	f.calls = append(f.calls, req.GetJobId())
	f.mu.Unlock()
	for _, p := range f.Progress {
		if err := stream.Send(&spoolv1.WatchJobResponse{Progress: p}); err != nil {
			return err
		}
	}
	return f.End
}

// Calls returns the job ids WatchJob was called with, in order.
func (f *Dispatch) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// scripted answers req with fn, the script a test set, or Unimplemented
// with why when the test set none.
func scripted[Req, Resp any](fn func(Req) (*Resp, error), req Req, why string) (*Resp, error) {
	if fn == nil {
		return nil, status.Error(codes.Unimplemented, why)
	}
	return fn(req)
}
