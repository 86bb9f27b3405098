package ingest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/testkit"
)

// owner returns the stream that owns a job and its lease, as stored.
func (f *fakeJobs) owner(id string) (string, time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.streams[id], f.jobs[id].GetLeaseExpiresAt().AsTime()
}

// TestBadResumeLeavesTheJobAlone resumes a job whose first stream is
// still alive with headers that must be refused: each is refused before
// the job is taken over, so the job keeps its stream and lease, and the
// first stream goes on to seal it.
func TestBadResumeLeavesTheJobAlone(t *testing.T) {
	jobs, ps := newFakeJobs(), &pubs{}
	c, _ := startServer(t, jobs, Config{NewPublisher: ps.factory(), NewID: seqIDs(), CheckpointEvery: 1, ProgressInterval: time.Millisecond})
	h := &spoolv1.FileHeader{JobKey: "k", Columns: []string{"id", "amount"}, AmountColumn: "amount"}
	live, err := c.StreamFile(context.Background())
	require.NoError(t, err)
	require.NoError(t, live.Send(hdr(h)))
	require.NoError(t, live.Send(rowsMsg([]string{"e1", "1.00"})))
	require.Eventually(t, func() bool { return jobs.count() == 1 && jobs.only(t).GetResumeRow() == 1 }, 5*time.Second, time.Millisecond)
	id := jobs.only(t).GetJobId()

	tests := []struct {
		name   string
		change func(h *spoolv1.FileHeader)
		data   *spoolv1.StreamFileRequest
		code   codes.Code
		msg    string
	}{
		{
			name:   "business-key column the file lacks",
			change: func(h *spoolv1.FileHeader) { h.BusinessKeyColumns = []string{"nope"} },
			code:   codes.InvalidArgument, msg: "business_key_columns",
		},
		{
			name:   "amount column other than the job's",
			change: func(h *spoolv1.FileHeader) { h.AmountColumn = "id" },
			code:   codes.InvalidArgument, msg: "amount_column",
		},
		{
			name: "profile the file does not fit",
			change: func(h *spoolv1.FileHeader) {
				h.InlineProfile = &spoolv1.Profile{Name: "p", Columns: []*spoolv1.ColumnSpec{{Name: "iban"}}}
			},
			code: codes.InvalidArgument, msg: `column "iban" of profile "p" is missing`,
		},
		{
			name:   "delimiter",
			change: func(h *spoolv1.FileHeader) { h.Csv = &spoolv1.CsvOptions{Delimiter: "::"} },
			code:   codes.InvalidArgument, msg: "delimiter",
		},
		{
			name:   "chunks away from the checkpoint",
			change: func(h *spoolv1.FileHeader) { h.Resume.Offset = 3 },
			data:   chunkMsg("e2,2.00\n"),
			code:   codes.FailedPrecondition, msg: "chunks must resume at the checkpoint",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream, lease := jobs.owner(id)
			resumed := proto.Clone(h).(*spoolv1.FileHeader)
			resumed.Resume = &spoolv1.Resume{AfterRow: 1}
			tt.change(resumed)
			data := tt.data
			if data == nil {
				data = rowsMsg([]string{"e2", "2.00"})
			}
			_, err := send(context.Background(), c, hdr(resumed), data)
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			require.ErrorContains(t, err, tt.msg)
			gotStream, gotLease := jobs.owner(id)
			require.Equal(t, stream, gotStream, "the job still belongs to the live stream")
			require.False(t, gotLease.Before(lease), "nothing but the live stream renewed the lease")
			require.Equal(t, spoolv1.JobState_JOB_STATE_RECEIVING, jobs.only(t).GetState())
		})
	}

	require.NoError(t, live.Send(rowsMsg([]string{"e2", "2.00"})))
	resp, err := live.CloseAndRecv()
	require.NoError(t, err, "the live stream was never fenced")
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, resp.GetJob().GetState())
	require.EqualValues(t, 2, resp.GetJob().GetTotal())
	require.Len(t, ps.all, 1, "no refused resume started a publisher")
}

// TestResumeWaitingForDataUsesTheCallsContext resumes with a header that
// names the columns, so the stream's mode is known only from its first
// data message, and lets the call's deadline pass before any arrives. The
// failure is mapped with the call's context (it ended, and the status
// says so), and the job was never taken over.
func TestResumeWaitingForDataUsesTheCallsContext(t *testing.T) {
	jobs, ps := newFakeJobs(), &pubs{}
	c, logs := startServer(t, jobs, Config{NewPublisher: ps.factory(), CheckpointEvery: 1, ProgressInterval: time.Millisecond})
	h := &spoolv1.FileHeader{JobKey: "k", Columns: []string{"id"}}
	j := breakStream(t, c, jobs, logs, 1, hdr(h), rowsMsg([]string{"1"}))
	stream, _ := jobs.owner(j.GetJobId())

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	s, err := c.StreamFile(ctx)
	require.NoError(t, err)
	h.Resume = &spoolv1.Resume{AfterRow: 1}
	require.NoError(t, s.Send(hdr(h)))
	// The send side stays open: the server waits for the first data
	// message until the deadline.
	require.Error(t, s.RecvMsg(&spoolv1.StreamFileResponse{}))
	// The server sees its context end, by the deadline or by the client's
	// cancellation that follows it, and says so.
	require.Eventually(t, func() bool {
		return strings.Contains(logs.String(), "the call's deadline passed: receive first data message") ||
			strings.Contains(logs.String(), "stream cancelled (the client went away or the server is stopping): receive first data message")
	}, 5*time.Second, time.Millisecond)
	got, _ := jobs.owner(j.GetJobId())
	require.Equal(t, stream, got, "a resume that sent no data did not take the job over")
}

// streamWithFailingProgress starts a stream with a lease of abortAfter,
// waits until row 1 is checkpointed, and from then on fails every progress
// write as a throttled table would.
func streamWithFailingProgress(t *testing.T, abortAfter time.Duration) (*fakeJobs, *pubs, spoolv1.IngestService_StreamFileClient, *testkit.Buffer) {
	t.Helper()
	jobs, ps := newFakeJobs(), &pubs{}
	c, logs := startServer(t, jobs, Config{
		NewPublisher: ps.factory(), CheckpointEvery: 1, ProgressInterval: time.Millisecond, AbortAfter: abortAfter,
	})
	s, err := c.StreamFile(context.Background())
	require.NoError(t, err)
	require.NoError(t, s.Send(hdr(&spoolv1.FileHeader{JobKey: "k", Columns: []string{"id"}})))
	require.NoError(t, s.Send(rowsMsg([]string{"1"})))
	require.Eventually(t, func() bool { return jobs.count() == 1 && jobs.only(t).GetResumeRow() == 1 }, 5*time.Second, time.Millisecond)
	jobs.mu.Lock()
	jobs.recordErr = errors.New("ProvisionedThroughputExceededException")
	jobs.mu.Unlock()
	return jobs, ps, s, logs
}

// TestUnrecordedProgressStopsTheStream fails every progress write once
// row 1 is checkpointed. A stream that cannot renew its lease stops
// before it publishes another row, fails with the write's error, and
// leaves the job RECEIVING at its last durable checkpoint.
func TestUnrecordedProgressStopsTheStream(t *testing.T) {
	jobs, ps, s, logs := streamWithFailingProgress(t, 20*time.Millisecond)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "record progress; stream stops") }, 5*time.Second, time.Millisecond)

	require.NoError(t, s.Send(rowsMsg([]string{"2"})))
	_, err := s.CloseAndRecv()
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "ProvisionedThroughputExceededException")
	require.Equal(t, []int64{1}, ps.rows(0), "nothing is published once the lease may be lost")
	j := jobs.only(t)
	require.Equal(t, spoolv1.JobState_JOB_STATE_RECEIVING, j.GetState(), "the job waits to be resumed")
	require.EqualValues(t, 1, j.GetResumeRow())
	require.Contains(t, logs.String(), "its last checkpoint was not recorded")
}

// TestShortProgressOutageIsRidden fails progress writes for a while well
// inside the lease: the stream goes on and seals.
func TestShortProgressOutageIsRidden(t *testing.T) {
	jobs, _, s, logs := streamWithFailingProgress(t, time.Hour)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), `"msg":"record progress"`) }, 5*time.Second, time.Millisecond)
	jobs.mu.Lock()
	jobs.recordErr = nil
	jobs.mu.Unlock()
	require.NoError(t, s.Send(rowsMsg([]string{"2"})))
	resp, err := s.CloseAndRecv()
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, resp.GetJob().GetState())
}

// hangingJobs is a job store whose reads never answer.
type hangingJobs struct {
	*fakeJobs
}

func (h hangingJobs) Get(ctx context.Context, _ string) (*spoolv1.Job, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (h hangingJobs) GetByKey(ctx context.Context, _ string) (*spoolv1.Job, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestStoreCallsHaveDeadlines calls GetJob and StreamFile without a
// deadline on a table that never answers: each store call ends at the
// store timeout, and the caller hears Unavailable.
func TestStoreCallsHaveDeadlines(t *testing.T) {
	c, _ := startServer(t, hangingJobs{newFakeJobs()}, Config{NewPublisher: (&pubs{}).factory(), StoreTimeout: 50 * time.Millisecond})
	done := make(chan error, 2)
	go func() {
		_, err := c.GetJob(context.Background(), &spoolv1.GetJobRequest{JobKey: "k"})
		done <- err
	}()
	go func() {
		_, err := send(context.Background(), c, hdr(&spoolv1.FileHeader{JobKey: "k"}), chunkMsg("a\n1\n"))
		done <- err
	}()
	for range 2 {
		select {
		case err := <-done:
			require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
			require.ErrorContains(t, err, context.DeadlineExceeded.Error())
		case <-time.After(5 * time.Second):
			t.Fatal("a store call without a deadline hung")
		}
	}
}

var _ Jobs = hangingJobs{}
