package upload

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spoolhq/spool/cli/internal/spooltest"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// attempt is what one StreamFile call of breakingIngest received.
type attempt struct {
	header *spoolv1.FileHeader
	data   []byte
}

// breakingIngest breaks its first streams after breakAfter chunks, as an
// ingestor that is killed would, and tells GetJob the job's checkpoint.
type breakingIngest struct {
	spoolv1.UnimplementedIngestServiceServer
	breakAfter int
	breaks     int // streams to break
	job        *spoolv1.Job
	getErrs    []error // GetJob answers before the job, in order

	mu       sync.Mutex
	attempts []attempt
	gets     []string
}

func (f *breakingIngest) StreamFile(stream grpc.ClientStreamingServer[spoolv1.StreamFileRequest, spoolv1.StreamFileResponse]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	a := attempt{header: first.GetHeader()}
	f.mu.Lock()
	n := len(f.attempts)
	f.attempts = append(f.attempts, a)
	f.mu.Unlock()
	for chunks := 0; ; chunks++ {
		if n < f.breaks && chunks == f.breakAfter {
			return status.Error(codes.Unavailable, "ingestor restarted")
		}
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		f.mu.Lock()
		f.attempts[n].data = append(f.attempts[n].data, req.GetChunk()...)
		f.mu.Unlock()
	}
	return stream.SendAndClose(&spoolv1.StreamFileResponse{JobId: "job-1", Job: &spoolv1.Job{JobId: "job-1", State: spoolv1.JobState_JOB_STATE_SEALED}})
}

func (f *breakingIngest) GetJob(_ context.Context, req *spoolv1.GetJobRequest) (*spoolv1.GetJobResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets = append(f.gets, req.GetJobKey())
	if len(f.getErrs) > 0 {
		err := f.getErrs[0]
		f.getErrs = f.getErrs[1:]
		return nil, err
	}
	return &spoolv1.GetJobResponse{Job: f.job}, nil
}

func serveBreaking(tb testing.TB, f *breakingIngest) spoolv1.IngestServiceClient {
	tb.Helper()
	net := spooltest.NewNetwork()
	net.Serve(tb, "127.0.0.1:1", func(s grpc.ServiceRegistrar) { spoolv1.RegisterIngestServiceServer(s, f) })
	return spoolv1.NewIngestServiceClient(net.Dial(tb, "127.0.0.1:1"))
}

// fakeTime is a clock that moves only when slept on.
type fakeTime struct {
	now    time.Time
	sleeps []time.Duration
}

func (c *fakeTime) Now() time.Time { return c.now }

func (c *fakeTime) Sleep(_ context.Context, d time.Duration) error {
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	return nil
}

func TestSendResumableResumesAtTheCheckpoint(t *testing.T) {
	file := []byte("id,amount\n1,10\n2,20\n3,30\n4,40\n")
	offset := int64(bytes.Index(file, []byte("3,30")))
	f := &breakingIngest{
		breakAfter: 3, breaks: 1,
		job:     &spoolv1.Job{JobId: "job-1", State: spoolv1.JobState_JOB_STATE_RECEIVING, ResumeRow: 2, ResumeOffset: offset},
		getErrs: []error{status.Error(codes.Unavailable, "still restarting")},
	}
	c := serveBreaking(t, f)
	clock := &fakeTime{now: time.Unix(0, 0)}
	type broke struct {
		row     int64
		attempt int
	}
	var breaks []broke
	var sent []int64
	header := &spoolv1.FileHeader{FileName: "f.csv", Control: &spoolv1.ControlTotals{Sha256: "ab"}}
	resp, err := SendResumable(context.Background(), c, header, bytes.NewReader(file), 4, func(n int64) { sent = append(sent, n) }, Resume{
		Jobs: c, Key: "sha256:ab", For: time.Minute, MinBackoff: time.Second, MaxBackoff: 3 * time.Second,
		Now: clock.Now, Sleep: clock.Sleep,
		OnBreak: func(row int64, attempt int, _ error) { breaks = append(breaks, broke{row, attempt}) },
	})
	require.NoError(t, err)
	require.Equal(t, "job-1", resp.GetJobId())

	require.Len(t, f.attempts, 2)
	require.Nil(t, f.attempts[0].header.GetResume())
	require.Equal(t, file[:12], f.attempts[0].data, "three chunks of 4 bytes before the break")
	require.Equal(t, int64(2), f.attempts[1].header.GetResume().GetAfterRow())
	require.Equal(t, offset, f.attempts[1].header.GetResume().GetOffset())
	require.Equal(t, "ab", f.attempts[1].header.GetControl().GetSha256(), "the resumed header keeps the control totals")
	require.Equal(t, file[offset:], f.attempts[1].data)
	require.Equal(t, []broke{{2, 1}}, breaks)
	require.Equal(t, []string{"sha256:ab", "sha256:ab"}, f.gets)
	require.Equal(t, []time.Duration{time.Second, 2 * time.Second}, clock.sleeps, "backoff doubles while the ingestor is away")
	require.Equal(t, int64(len(file)), sent[len(sent)-1], "progress counts from the file's start")
}

func TestSendResumableGivesUp(t *testing.T) {
	f := &breakingIngest{breakAfter: 1, breaks: 100,
		job: &spoolv1.Job{JobId: "job-1", State: spoolv1.JobState_JOB_STATE_RECEIVING}}
	c := serveBreaking(t, f)
	clock := &fakeTime{now: time.Unix(0, 0)}
	_, err := SendResumable(context.Background(), c, &spoolv1.FileHeader{}, bytes.NewReader([]byte("a\n1\n2\n")), 2, nil, Resume{
		Jobs: c, Key: "k", For: 10 * time.Second, MinBackoff: time.Second, MaxBackoff: 4 * time.Second, Now: clock.Now, Sleep: clock.Sleep,
	})
	require.ErrorContains(t, err, "gave up resuming after 10s")
	require.Equal(t, codes.Unavailable, status.Code(err))
	require.Equal(t, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second}, clock.sleeps)
}

func TestSendResumableStopsOnFinalJobs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		job     *spoolv1.Job
		wantErr string
	}{
		{"sealed meanwhile", &spoolv1.Job{JobId: "job-1", State: spoolv1.JobState_JOB_STATE_SEALED, RowsReceived: 2}, ""},
		{"aborted", &spoolv1.Job{JobId: "job-1", State: spoolv1.JobState_JOB_STATE_ABORTED, StateReason: "stream not resumed within 2m0s"}, "stream not resumed within 2m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &breakingIngest{breakAfter: 1, breaks: 1, job: tc.job}
			c := serveBreaking(t, f)
			clock := &fakeTime{now: time.Unix(0, 0)}
			resp, err := SendResumable(context.Background(), c, &spoolv1.FileHeader{}, bytes.NewReader([]byte("a\n1\n2\n")), 2, nil, Resume{
				Jobs: c, Key: "k", For: time.Minute, Now: clock.Now, Sleep: clock.Sleep,
			})
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.EqualValues(t, 2, resp.GetRowsReceived())
			require.Len(t, f.attempts, 1)
		})
	}
}

func TestSendResumableDoesNotRetryTheFilesFault(t *testing.T) {
	c := serve(t, &spooltest.Ingest{Err: status.Error(codes.InvalidArgument, "bad delimiter")}).(spoolv1.IngestServiceClient)
	_, err := SendResumable(context.Background(), c, &spoolv1.FileHeader{}, bytes.NewReader([]byte("a\n")), 2, nil, Resume{
		Jobs: c, Key: "k", For: time.Minute, Sleep: func(context.Context, time.Duration) error { t.Fatal("slept"); return nil },
	})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
}
