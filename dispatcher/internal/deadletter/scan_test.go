package deadletter_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/deadletter"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/envelope"
	"github.com/spoolhq/spool/platform/provision"
)

// deadLetters puts rows of job on the dead-letter queue, marked as a
// dispatcher would mark them.
func deadLetters(t testing.TB, q *sqs.Client, url, job string, rows ...int64) {
	t.Helper()
	for _, row := range rows {
		body, attrs, err := envelope.Encode(&spoolv1.Envelope{
			Version: spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1, JobId: job, Row: row, TransactionKey: fmt.Sprintf("%s:%d", job, row),
		})
		require.NoError(t, err)
		attrs = deadletter.Mark(attrs, deadletter.Reason{
			Reason: "gave up after 20 attempts; last: 503 Service Unavailable", Status: 503, Attempts: 20 + int(row),
			Dispatcher: "d-1", At: time.Now(),
		})
		_, err = q.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: aws.String(body), MessageAttributes: attrs})
		require.NoError(t, err)
	}
}

func list(t testing.TB, s *deadletter.Scanner, job string, maxScan int) ([]deadletter.Entry, deadletter.Summary) {
	t.Helper()
	var got []deadletter.Entry
	sum, err := s.List(t.Context(), job, maxScan, func(e deadletter.Entry) error {
		got = append(got, e)
		return nil
	})
	require.NoError(t, err)
	return got, sum
}

func rows(es []deadletter.Entry) map[int64]bool {
	out := map[int64]bool{}
	for _, e := range es {
		out[e.Row] = true
	}
	return out
}

func TestScannerOnTheEmulator(t *testing.T) {
	q := sqs.NewFromConfig(emutest.Config(emutest.Start(t, emulator.SQS)))
	queues, err := provision.EnsureQueue(t.Context(), q, "dl-scan", provision.DefaultQueueOptions)
	require.NoError(t, err)
	deadLetters(t, q, queues.DLQURL, "job-a", 1, 2, 3, 4, 5)
	deadLetters(t, q, queues.DLQURL, "job-b", 7, 8, 9)
	s := deadletter.NewScanner(q, deadletter.Options{DeadLetterURL: queues.DLQURL, QueueURL: queues.URL})

	got, sum := list(t, s, "job-a", 0)
	require.Equal(t, map[int64]bool{1: true, 2: true, 3: true, 4: true, 5: true}, rows(got))
	require.Equal(t, deadletter.Summary{Matched: 5, Scanned: 8, Complete: true}, sum)
	for _, e := range got {
		require.Equal(t, "job-a", e.JobID)
		require.Equal(t, 503, e.Reason.Status)
		require.Equal(t, 20+int(e.Row), e.Reason.Attempts)
		require.Equal(t, "d-1", e.Reason.Dispatcher)
		require.Contains(t, e.Reason.Reason, "gave up after 20 attempts")
	}

	// The scan released what it read: another listing sees everything
	// at once, not after the hold. (The emulator makes a release visible
	// a moment after it answers; the listing must not count those as held
	// elsewhere.)
	requireNoneHeld(t, q, queues.DLQURL)
	got, sum = list(t, s, "job-b", 0)
	require.Equal(t, map[int64]bool{7: true, 8: true, 9: true}, rows(got))
	require.True(t, sum.Complete)

	// A bounded scan says it is not complete.
	requireNoneHeld(t, q, queues.DLQURL)
	_, sum = list(t, s, "job-a", 3)
	require.EqualValues(t, 3, sum.Scanned)
	require.False(t, sum.Complete)

	// The emulator turns a release into visibility a moment after it
	// answers; the next scan must not count them as held elsewhere.
	requireNoneHeld(t, q, queues.DLQURL)
	sum, err = s.Redrive(t.Context(), "job-a", 0)
	require.NoError(t, err)
	require.Equal(t, deadletter.Summary{Matched: 5, Scanned: 8, Complete: true}, sum)

	// On the main queue, without the reason, with the attempt base.
	moved := map[int64]int{}
	require.Eventually(t, func() bool {
		out, err := q.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(queues.URL), MaxNumberOfMessages: 10, MessageAttributeNames: []string{"All"}, WaitTimeSeconds: 1,
		})
		require.NoError(t, err)
		for _, m := range out.Messages {
			_, marked := m.MessageAttributes[deadletter.AttrReason]
			require.False(t, marked)
			e, err := envelope.Decode(aws.ToString(m.Body), m.MessageAttributes)
			require.NoError(t, err)
			moved[e.GetRow()] = deadletter.AttemptBase(m.MessageAttributes)
		}
		return len(moved) == 5
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, map[int64]int{1: 21, 2: 22, 3: 23, 4: 24, 5: 25}, moved)

	requireNoneHeld(t, q, queues.DLQURL)
	got, _ = list(t, s, "job-a", 0)
	require.Empty(t, got, "job-a's dead letters left the dead-letter queue")
	requireNoneHeld(t, q, queues.DLQURL)
	got, _ = list(t, s, "job-b", 0)
	require.Len(t, got, 3, "job-b's are untouched")
}

func requireNoneHeld(t testing.TB, q *sqs.Client, url string) {
	t.Helper()
	require.Eventually(t, func() bool {
		out, err := q.GetQueueAttributes(t.Context(), &sqs.GetQueueAttributesInput{
			QueueUrl: aws.String(url), AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessagesNotVisible},
		})
		require.NoError(t, err)
		return out.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessagesNotVisible)] == "0"
	}, 5*time.Second, 5*time.Millisecond)
}

func TestMarkAndParse(t *testing.T) {
	at := time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)
	body, attrs, err := envelope.Encode(&spoolv1.Envelope{Version: spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1, JobId: "j", Row: 4})
	require.NoError(t, err)
	tests := []struct {
		name string
		in   deadletter.Reason
		want deadletter.Reason
	}{
		{name: "every field", in: deadletter.Reason{Reason: "r", Status: 503, Attempts: 3, Dispatcher: "d", At: at}, want: deadletter.Reason{Reason: "r", Status: 503, Attempts: 3, Dispatcher: "d", At: at}},
		{name: "empty reason", in: deadletter.Reason{At: at}, want: deadletter.Reason{Reason: "unspecified", At: at}},
		{name: "long reason is bounded", in: deadletter.Reason{Reason: string(make([]byte, 1000)), At: at}, want: deadletter.Reason{Reason: string(make([]byte, deadletter.MaxReason)), At: at}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			marked := deadletter.Mark(attrs, tt.in)
			require.Equal(t, tt.want, deadletter.Parse(marked))
			require.LessOrEqual(t, len(marked), 10, "SQS allows ten attributes")
			job, row := envelope.Ref(body, marked)
			require.Equal(t, "j", job)
			require.EqualValues(t, 4, row)
			require.Len(t, attrs, 1, "the original attributes are not changed")
			// Marking again replaces the reason rather than adding to it.
			require.Len(t, deadletter.Mark(marked, tt.in), len(marked))
		})
	}
	require.Equal(t, "moved by the queue's redrive policy (maxReceiveCount reached)", deadletter.Parse(attrs).Reason)
}
