package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/testkit"
)

// pubs hands each stream its own fake publisher.
type pubs struct {
	mu  sync.Mutex
	all []*fakePub
}

func (p *pubs) factory() func() (Publisher, error) {
	return func() (Publisher, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		fp := &fakePub{}
		p.all = append(p.all, fp)
		return fp, nil
	}
}

// rows returns the row numbers stream i published.
func (p *pubs) rows(i int) []int64 {
	p.mu.Lock()
	fp := p.all[i]
	p.mu.Unlock()
	var out []int64
	for _, e := range fp.envelopes() {
		out = append(out, e.GetRow())
	}
	return out
}

func seqIDs() func() string {
	var mu sync.Mutex
	n := 0
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		n++
		return fmt.Sprintf("job-%d", n)
	}
}

func TestKeyOfFinishedJobReturnsIt(t *testing.T) {
	for _, state := range []spoolv1.JobState{spoolv1.JobState_JOB_STATE_SEALED, spoolv1.JobState_JOB_STATE_COMPLETED} {
		t.Run(state.String(), func(t *testing.T) {
			jobs, ps := newFakeJobs(), &pubs{}
			_, err := jobs.Start(context.Background(), &spoolv1.Job{JobId: "old", JobKey: "payroll-11"}, "s")
			require.NoError(t, err)
			jobs.set("old", func(j *spoolv1.Job) { j.State = state })
			c, _ := startServer(t, jobs, Config{NewPublisher: ps.factory()})

			resp, err := send(context.Background(), c, hdr(&spoolv1.FileHeader{JobKey: "payroll-11"}), chunkMsg("a\n1\n"))
			require.NoError(t, err)
			require.True(t, resp.GetExisting())
			require.Equal(t, "old", resp.GetJobId())
			require.Equal(t, state, resp.GetJob().GetState())
			require.Empty(t, ps.all, "nothing is read or published")
			require.Equal(t, 1, jobs.count())
		})
	}
}

func TestSecondSubmissionOfReceivingKey(t *testing.T) {
	jobs, ps := newFakeJobs(), &pubs{}
	c, _ := startServer(t, jobs, Config{NewPublisher: ps.factory(), NewID: seqIDs()})
	ctx := context.Background()
	first, err := c.StreamFile(ctx)
	require.NoError(t, err)
	require.NoError(t, first.Send(hdr(&spoolv1.FileHeader{JobKey: "k", Columns: []string{"a"}})))
	require.NoError(t, first.Send(rowsMsg([]string{"1"})))
	require.Eventually(t, func() bool { return jobs.count() == 1 }, 5*time.Second, time.Millisecond)

	_, err = send(ctx, c, hdr(&spoolv1.FileHeader{JobKey: "k", Columns: []string{"a"}}), rowsMsg([]string{"1"}))
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "job k is still receiving (row 0 published); resume with after_row=0")

	resp, err := first.CloseAndRecv()
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, resp.GetJob().GetState())
	require.Equal(t, 1, jobs.count())
}

// breakStream starts a stream, sends msgs, waits until the job's checkpoint
// reaches row, then cancels the stream as a crashing client would, and
// waits until the server handled the break.
func breakStream(t *testing.T, c spoolv1.IngestServiceClient, jobs *fakeJobs, logs *testkit.Buffer, row int64, msgs ...*spoolv1.StreamFileRequest) *spoolv1.Job {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := c.StreamFile(ctx)
	require.NoError(t, err)
	for _, m := range msgs {
		require.NoError(t, stream.Send(m))
	}
	require.Eventually(t, func() bool {
		return jobs.count() == 1 && jobs.only(t).GetResumeRow() == row
	}, 5*time.Second, time.Millisecond)
	cancel()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "stream broke") }, 5*time.Second, time.Millisecond)
	j := jobs.only(t)
	require.Equal(t, spoolv1.JobState_JOB_STATE_RECEIVING, j.GetState(), "a job with a key waits to be resumed")
	return j
}

func TestResumeRows(t *testing.T) {
	jobs, ps := newFakeJobs(), &pubs{}
	c, logs := startServer(t, jobs, Config{NewPublisher: ps.factory(), NewID: seqIDs(), CheckpointEvery: 1, ProgressInterval: time.Millisecond})
	h := &spoolv1.FileHeader{
		JobKey: "k", Columns: []string{"id", "amount"}, AmountColumn: "amount", BusinessKeyColumns: []string{"id"},
		Control: &spoolv1.ControlTotals{RowCount: proto.Int64(5), AmountSum: "15.05"},
		Canary:  &spoolv1.Canary{Rows: 4},
	}
	rows := [][]string{{"e1", "1.01"}, {"e2", "2.01"}, {"e3", "3.01"}, {"e4", "4.01"}, {"e5", "5.01"}}
	breakStream(t, c, jobs, logs, 3, hdr(h), rowsMsg(rows[:3]...))

	// The client resumes from row 2 (before the checkpoint): row 3 is
	// published again, but counted once.
	resumed := proto.Clone(h).(*spoolv1.FileHeader)
	resumed.Resume = &spoolv1.Resume{AfterRow: 2}
	resp, err := send(context.Background(), c, hdr(resumed), rowsMsg(rows[2:]...))
	require.NoError(t, err)
	require.Equal(t, "job-1", resp.GetJobId())
	require.EqualValues(t, 5, resp.GetRowsReceived())
	require.EqualValues(t, 5, resp.GetRowsPublished())
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, resp.GetJob().GetState(), resp.GetJob().GetStateReason())
	require.EqualValues(t, 5, resp.GetJob().GetTotal())
	require.Equal(t, "15.05", resp.GetJob().GetActual().GetAmountSum())
	require.EqualValues(t, 4, resp.GetJob().GetCanary().GetSize(), "canary rows counted once across the resume")
	require.Equal(t, []int64{1, 2, 3}, ps.rows(0))
	require.Equal(t, []int64{3, 4, 5}, ps.rows(1))
	// The republished row keeps its transaction key, so the ledger sees
	// the same transaction.
	require.Equal(t, ps.all[0].envelopes()[2].GetTransactionKey(), ps.all[1].envelopes()[0].GetTransactionKey())
	require.True(t, strings.HasPrefix(ps.all[1].envelopes()[0].GetTransactionKey(), "bk:"))

	// Resuming a sealed job answers it as existing and publishes nothing.
	resp, err = send(context.Background(), c, hdr(resumed), rowsMsg(rows[2:]...))
	require.NoError(t, err)
	require.True(t, resp.GetExisting())
	require.Len(t, ps.all, 2)
}

func TestResumePastCheckpointRefused(t *testing.T) {
	jobs, ps := newFakeJobs(), &pubs{}
	c, logs := startServer(t, jobs, Config{NewPublisher: ps.factory(), CheckpointEvery: 1, ProgressInterval: time.Millisecond})
	h := &spoolv1.FileHeader{JobKey: "k", Columns: []string{"id"}}
	breakStream(t, c, jobs, logs, 1, hdr(h), rowsMsg([]string{"1"}))
	h.Resume = &spoolv1.Resume{AfterRow: 2}
	_, err := send(context.Background(), c, hdr(h), rowsMsg([]string{"3"}))
	require.Equal(t, codes.FailedPrecondition, status.Code(err))
	require.ErrorContains(t, err, "after_row=2 is past the job's last durably published row 1")
}

func TestResumeChunksContinuesHash(t *testing.T) {
	file := "\xEF\xBB\xBFid,amount\r\ne1,1.50\r\ne2,2.50\r\ne3,3.00\r\n"
	sum := sha256.Sum256([]byte(file))
	digest := hex.EncodeToString(sum[:])
	jobs, ps := newFakeJobs(), &pubs{}
	c, logs := startServer(t, jobs, Config{NewPublisher: ps.factory(), NewID: seqIDs(), CheckpointEvery: 1, ProgressInterval: time.Millisecond})
	// No job key: the declared hash is the key.
	h := &spoolv1.FileHeader{Control: &spoolv1.ControlTotals{Sha256: digest, AmountSum: "7"}, AmountColumn: "amount"}
	cut := strings.Index(file, "e3") + 1 // inside row 3
	j := breakStream(t, c, jobs, logs, 2, hdr(h), chunkMsg(file[:5]), chunkMsg(file[5:cut]))
	require.Equal(t, "sha256:"+digest, j.GetJobKey())
	offset := j.GetResumeOffset()
	require.EqualValues(t, strings.Index(file, "e3"), offset)

	// Chunks must start at the checkpoint.
	bad := proto.Clone(h).(*spoolv1.FileHeader)
	bad.Resume = &spoolv1.Resume{AfterRow: 2, Offset: offset - 1}
	_, err := send(context.Background(), c, hdr(bad), chunkMsg(file[offset-1:]))
	require.Equal(t, codes.FailedPrecondition, status.Code(err))
	require.ErrorContains(t, err, "chunks must resume at the checkpoint")

	h.Resume = &spoolv1.Resume{AfterRow: 2, Offset: offset}
	resp, err := send(context.Background(), c, hdr(h), chunkMsg(file[offset:offset+3]), chunkMsg(file[offset+3:]))
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, resp.GetJob().GetState(), resp.GetJob().GetStateReason())
	require.Equal(t, digest, resp.GetJob().GetActual().GetSha256(), "the hash continued over the break equals the whole file's")
	require.Equal(t, "7.00", resp.GetJob().GetActual().GetAmountSum())
	require.EqualValues(t, 3, resp.GetRowsReceived())
	require.Equal(t, []int64{3}, ps.rows(len(ps.all)-1))
}

func TestControlTotalMismatchRejects(t *testing.T) {
	jobs, ps := newFakeJobs(), &pubs{}
	c, _ := startServer(t, jobs, Config{NewPublisher: ps.factory()})
	_, err := send(context.Background(), c,
		hdr(&spoolv1.FileHeader{Control: &spoolv1.ControlTotals{RowCount: proto.Int64(3)}}),
		chunkMsg("a\n1\n2\n"))
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.ErrorContains(t, err, "row_count declared 3, actual 2")
	j := jobs.only(t)
	require.Equal(t, spoolv1.JobState_JOB_STATE_REJECTED, j.GetState())
	require.Zero(t, j.GetTotal())
}

func TestHeaderChecks(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    *spoolv1.FileHeader
		msg  string
	}{
		{"unknown business key column", &spoolv1.FileHeader{BusinessKeyColumns: []string{"nope"}}, `column "nope"`},
		{"unknown amount column", &spoolv1.FileHeader{AmountColumn: "amt"}, `column "amt"`},
		{"sum without column", &spoolv1.FileHeader{Control: &spoolv1.ControlTotals{AmountSum: "1"}}, "needs amount_column"},
		{"sum not decimal", &spoolv1.FileHeader{AmountColumn: "a", Control: &spoolv1.ControlTotals{AmountSum: "1e3"}}, "not a decimal"},
		{"bad hash", &spoolv1.FileHeader{Control: &spoolv1.ControlTotals{Sha256: "xyz"}}, "64 hex digits"},
		{"resume without key", &spoolv1.FileHeader{Resume: &spoolv1.Resume{}}, "needs the job key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			jobs := newFakeJobs()
			c, _ := startServer(t, jobs, Config{NewPublisher: (&pubs{}).factory()})
			_, err := send(context.Background(), c, hdr(tc.h), chunkMsg("a\n1\n"))
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
			require.ErrorContains(t, err, tc.msg)
			require.Zero(t, jobs.count())
		})
	}
}

func TestBadAmountIsARowError(t *testing.T) {
	jobs, ps := newFakeJobs(), &pubs{}
	c, _ := startServer(t, jobs, Config{NewPublisher: ps.factory(), MaxErrors: 5})
	resp, err := send(context.Background(), c, hdr(&spoolv1.FileHeader{AmountColumn: "amount", InlineProfile: lenient}), chunkMsg("id,amount\n1,1.5\n2,1,5\n3,abc\n"))
	require.NoError(t, err)
	require.EqualValues(t, 2, resp.GetRowsRejected())
	require.Equal(t, "amount", resp.GetErrors()[1].GetColumn())
	require.EqualValues(t, 3, resp.GetErrors()[1].GetRow())
	require.Equal(t, "1.5", resp.GetJob().GetActual().GetAmountSum())
}

func TestAbandonedStreamIsAborted(t *testing.T) {
	jobs, ps := newFakeJobs(), &pubs{}
	c, logs := startServer(t, jobs, Config{NewPublisher: ps.factory(), CheckpointEvery: 1, ProgressInterval: time.Millisecond})
	h := &spoolv1.FileHeader{JobKey: "k", Columns: []string{"id"}}
	breakStream(t, c, jobs, logs, 1, hdr(h), rowsMsg([]string{"1"}))

	got, err := c.GetJob(context.Background(), &spoolv1.GetJobRequest{JobKey: "k"})
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_RECEIVING, got.GetJob().GetState())
	require.EqualValues(t, 1, got.GetJob().GetResumeRow())

	jobs.advance(2 * time.Minute)
	got, err = c.GetJob(context.Background(), &spoolv1.GetJobRequest{JobKey: "k"})
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_ABORTED, got.GetJob().GetState())
	require.Contains(t, got.GetJob().GetStateReason(), "stream not resumed within")

	h.Resume = &spoolv1.Resume{AfterRow: 1}
	_, err = send(context.Background(), c, hdr(h), rowsMsg([]string{"2"}))
	require.Equal(t, codes.FailedPrecondition, status.Code(err))
	require.ErrorContains(t, err, "submit the file again without resume")
}

func TestOldStreamFencedAfterTakeover(t *testing.T) {
	jobs, ps := newFakeJobs(), &pubs{}
	c, logs := startServer(t, jobs, Config{NewPublisher: ps.factory(), CheckpointEvery: 1, ProgressInterval: time.Millisecond})
	h := &spoolv1.FileHeader{JobKey: "k", Columns: []string{"id"}}
	old, err := c.StreamFile(context.Background())
	require.NoError(t, err)
	require.NoError(t, old.Send(hdr(h)))
	require.NoError(t, old.Send(rowsMsg([]string{"1"})))
	require.Eventually(t, func() bool { return jobs.count() == 1 && jobs.only(t).GetResumeRow() == 1 }, 5*time.Second, time.Millisecond)

	// The client thinks the old stream is dead and resumes.
	resumed := proto.Clone(h).(*spoolv1.FileHeader)
	resumed.Resume = &spoolv1.Resume{AfterRow: 1}
	newer, err := c.StreamFile(context.Background())
	require.NoError(t, err)
	require.NoError(t, newer.Send(hdr(resumed)))
	require.NoError(t, newer.Send(rowsMsg([]string{"2"})))
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "stream lost its job") }, 5*time.Second, time.Millisecond)

	// The old stream comes back to life: it publishes nothing more.
	require.NoError(t, old.Send(rowsMsg([]string{"2"})))
	_, err = old.CloseAndRecv()
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "resumed by another stream")
	require.Equal(t, []int64{1}, ps.rows(0))

	resp, err := newer.CloseAndRecv()
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, resp.GetJob().GetState())
	require.EqualValues(t, 2, resp.GetJob().GetTotal())
}
