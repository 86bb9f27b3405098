package upload

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/spoolhq/spool/cli/internal/spooltest"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

func serve(tb testing.TB, fake *spooltest.Ingest) Client {
	tb.Helper()
	net := spooltest.NewNetwork()
	net.Serve(tb, "127.0.0.1:1", func(s grpc.ServiceRegistrar) { spoolv1.RegisterIngestServiceServer(s, fake) })
	return spoolv1.NewIngestServiceClient(net.Dial(tb, "127.0.0.1:1"))
}

func TestSendStreamsTheExactBytesInChunks(t *testing.T) {
	file := bytes.Repeat([]byte("id,name,amount\n1,\"Doe, Jane\",12.50\n2,\"multi\nline\",3\n"), 500)
	header := &spoolv1.FileHeader{FileName: "payroll.csv", JobKey: "payroll-2026-11", Columns: []string{"a", "b"}, Csv: &spoolv1.CsvOptions{Delimiter: ";"}}
	tests := []struct {
		name      string
		size      int
		file      []byte
		wantCount int
	}{
		{name: "many chunks with a short last one", size: 1000, file: file, wantCount: (len(file) + 999) / 1000},
		{name: "exact multiple", size: len(file) / 4, file: file, wantCount: 4},
		{name: "one byte chunks", size: 1, file: file[:300], wantCount: 300},
		{name: "larger than the file", size: DefaultChunkSize, file: file, wantCount: 1},
		{name: "empty file sends only the header", size: 10, file: nil, wantCount: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Zero(t, len(file)%4, "test file must split in four")
			answer := &spoolv1.StreamFileResponse{JobId: "j1", RowsReceived: 1000, RowsPublished: 1000}
			fake := &spooltest.Ingest{Answer: answer}
			var progress []int64
			// A reader that returns little at a time proves chunks are
			// filled up, not sent as they come.
			r := &trickle{r: bytes.NewReader(tt.file), max: 7}
			got, err := Send(context.Background(), serve(t, fake), header, r, tt.size, func(n int64) { progress = append(progress, n) })
			require.NoError(t, err)
			require.Empty(t, cmp.Diff(answer, got, protocmp.Transform()))

			gotHeader, chunks := fake.Received()
			require.Empty(t, cmp.Diff(header, gotHeader, protocmp.Transform()))
			require.Equal(t, tt.wantCount, len(chunks))
			var joined []byte
			for i, c := range chunks {
				if i < len(chunks)-1 {
					require.Equal(t, tt.size, len(c), "chunk %d", i)
				} else {
					require.LessOrEqual(t, len(c), tt.size)
					require.NotZero(t, len(c))
				}
				joined = append(joined, c...)
				require.Equal(t, int64(len(joined)), progress[i])
			}
			require.True(t, bytes.Equal(tt.file, joined), "reassembled chunks differ from the file")
		})
	}
}

func TestSendReportsServerRejection(t *testing.T) {
	fake := &spooltest.Ingest{Err: status.Error(codes.InvalidArgument, "delimiter must be one character")}
	big := strings.NewReader(strings.Repeat("x", 1<<20))
	_, err := Send(context.Background(), serve(t, fake), &spoolv1.FileHeader{}, big, 1024, nil)
	require.Error(t, err)
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Contains(t, err.Error(), "InvalidArgument: delimiter must be one character")
	require.NotContains(t, err.Error(), "rpc error")
}

func TestSendCancelsTheStreamWhenTheInputFails(t *testing.T) {
	fake := &spooltest.Ingest{Answer: &spoolv1.StreamFileResponse{JobId: "j1"}}
	// The input breaks only once the ingestor is reading the stream, so
	// the test sees what the ingestor sees.
	broken := io.MultiReader(strings.NewReader("a,b\n1,2\n"), errReader{err: errors.New("disk on fire"), after: fake.HeaderSeen()})
	_, err := Send(context.Background(), serve(t, fake), &spoolv1.FileHeader{}, broken, 4, nil)
	require.ErrorContains(t, err, "disk on fire")
	// The ingestor must see the stream cancelled, never a clean end that
	// would seal a truncated file.
	require.Eventually(t, func() bool { return status.Code(fake.StreamErr()) == codes.Canceled }, 5*time.Second, 10*time.Millisecond)
}

func TestSendRejectsBadChunkSizes(t *testing.T) {
	for _, size := range []int{0, -1, MaxChunkSize + 1} {
		_, err := Send(context.Background(), nil, &spoolv1.FileHeader{}, strings.NewReader(""), size, nil)
		require.ErrorContains(t, err, "chunk size")
	}
}

type trickle struct {
	r   io.Reader
	max int
}

func (t *trickle) Read(p []byte) (int, error) { return t.r.Read(p[:min(len(p), t.max)]) }

type errReader struct {
	err   error
	after <-chan struct{}
}

func (e errReader) Read([]byte) (int, error) {
	<-e.after
	return 0, e.err
}

// answersAtHeader is an ingestor that recognises the job key from the
// header and answers at once, reading nothing more.
type answersAtHeader struct {
	spoolv1.UnimplementedIngestServiceServer
	answer *spoolv1.StreamFileResponse
}

func (a *answersAtHeader) StreamFile(stream grpc.ClientStreamingServer[spoolv1.StreamFileRequest, spoolv1.StreamFileResponse]) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	return stream.SendAndClose(a.answer)
}

func TestSendAcceptsAnEarlyAnswerOnlyForAnExistingJob(t *testing.T) {
	// Far more than gRPC's flow-control window, so Send sees the server's
	// early end while chunks are still going out.
	file := bytes.Repeat([]byte("id,amount\n1,2.00\n"), 1<<17)
	tests := []struct {
		name    string
		answer  *spoolv1.StreamFileResponse
		wantErr string
	}{
		{name: "existing job", answer: &spoolv1.StreamFileResponse{JobId: "j1", Existing: true}},
		{name: "anything else is an error", answer: &spoolv1.StreamFileResponse{JobId: "j1"}, wantErr: "answered before the end of the file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			net := spooltest.NewNetwork()
			net.Serve(t, "127.0.0.1:1", func(s grpc.ServiceRegistrar) {
				spoolv1.RegisterIngestServiceServer(s, &answersAtHeader{answer: tt.answer})
			})
			c := spoolv1.NewIngestServiceClient(net.Dial(t, "127.0.0.1:1"))
			got, err := Send(context.Background(), c, &spoolv1.FileHeader{JobKey: "k"}, bytes.NewReader(file), 4096, nil)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.True(t, got.GetExisting())
		})
	}
}
