package notify_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/dispatcher/internal/deliver/delivertest"
	"github.com/spoolhq/spool/dispatcher/internal/notify"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/jobevent"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/provision"
	"github.com/spoolhq/spool/platform/testkit"
)

// receiver is a webhook that counts the arrivals of each event id and
// fails the first failFirst requests.
type receiver struct {
	mu        sync.Mutex
	byID      map[string]int
	failFirst int
	requests  int
	down      bool
	headers   http.Header
}

func newReceiver(t *testing.T) (*receiver, *httptest.Server) {
	t.Helper()
	r := &receiver{byID: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.requests++
		if r.down || r.requests <= r.failFirst {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var e jobevent.Event
		if err := json.Unmarshal(body, &e); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.byID[e.ID]++
		r.headers = req.Header.Clone()
	}))
	t.Cleanup(srv.Close)
	return r, srv
}

func (r *receiver) got() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.byID)
}

func (r *receiver) setDown(down bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down = down
}

// table is a fresh job table on dynalite, with the clock its stores read.
func table(t *testing.T) (*dynamodb.Client, *testkit.Clock) {
	t.Helper()
	db := dynamodb.NewFromConfig(emutest.Config(emutest.Start(t, emulator.DynamoDB)))
	require.NoError(t, provision.EnsureTable(context.Background(), db, "jobs"))
	return db, testkit.NewClock(time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC))
}

// completedJob makes a job of one row and completes it with store, which
// stores the job's completed event.
func completedJob(t *testing.T, s *jobstore.Store, id string) {
	t.Helper()
	ctx := context.Background()
	_, err := s.Create(ctx, &spoolv1.Job{JobId: id})
	require.NoError(t, err)
	_, err = s.Seal(ctx, id, jobstore.Ingest{Received: 1, Published: 1})
	require.NoError(t, err)
	_, err = s.Complete(ctx, id, jobstore.Settled{Delivered: 1})
	require.NoError(t, err)
}

// A dispatcher that stored an event and died before sending it: another
// dispatcher's sweep sends it, once it is SweepAfter old, and the job
// leaves the register.
func TestSweepSendsWhatADeadWriterLeft(t *testing.T) {
	ctx := context.Background()
	db, c := table(t)
	rcv, srv := newReceiver(t)
	// The writer's hook would have sent it; the process died instead.
	dead := jobstore.New(db, "jobs", jobstore.WithClock(c.Now), jobstore.WithEventHook(func(string, string) {}))
	completedJob(t, dead, "j1")

	other := jobstore.New(db, "jobs", jobstore.WithClock(c.Now))
	n := notify.New(other, []notify.Sink{&notify.Webhook{URL: srv.URL}}, notify.Options{
		SweepEvery: time.Second, SweepAfter: 30 * time.Second, RetryFor: 10 * time.Second, Now: c.Now,
	})
	n.Sweep(ctx)
	require.Empty(t, rcv.got(), "too young: its writer may still be sending it")

	c.Advance(31 * time.Second)
	n.Sweep(ctx)
	require.Equal(t, map[string]int{"j1/job.completed": 1}, rcv.got())
	require.Equal(t, "j1/job.completed", rcv.headers.Get("webhook-id"))
	evs, final, err := other.PendingEvents(ctx, "j1")
	require.NoError(t, err)
	require.Empty(t, evs)
	require.True(t, final)
	listed, err := other.Outbox(ctx)
	require.NoError(t, err)
	require.Empty(t, listed, "a final job with nothing left leaves the register")

	n.Sweep(ctx)
	require.Equal(t, map[string]int{"j1/job.completed": 1}, rcv.got(), "sent once")
}

// The direct path: the store's hook kicks the notifier, which sends at
// once and retries a failing webhook with backoff.
func TestKickSendsAtOnceAndRetries(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, _ := table(t)
	rcv, srv := newReceiver(t)
	rcv.failFirst = 2
	var n *notify.Notifier
	s := jobstore.New(db, "jobs", jobstore.WithEventHook(func(job, event string) { n.Kick(job, event) }))
	n = notify.New(s, []notify.Sink{&notify.Webhook{URL: srv.URL}}, notify.Options{
		SweepEvery: time.Hour, SweepAfter: 2 * time.Hour, RetryFor: 10 * time.Second,
	})
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	completedJob(t, s, "j2")
	require.Eventually(t, func() bool { return rcv.got()["j2/job.completed"] == 1 }, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		evs, _, err := s.PendingEvents(ctx, "j2")
		return err == nil && len(evs) == 0
	}, 5*time.Second, 20*time.Millisecond)
	cancel()
	<-done
}

// A sink down for longer than the direct path retries: the event stays in
// the record, and a sweep sends it once the sink is back.
func TestEventOutlivesASinkDown(t *testing.T) {
	ctx := context.Background()
	db, _ := table(t)
	rcv, srv := newReceiver(t)
	rcv.setDown(true)
	s := jobstore.New(db, "jobs", jobstore.WithEventHook(func(string, string) {}))
	completedJob(t, s, "j3")
	n := notify.New(s, []notify.Sink{&notify.Webhook{URL: srv.URL}}, notify.Options{
		SweepEvery: time.Second, SweepAfter: 2 * time.Second, RetryFor: 300 * time.Millisecond,
	})
	require.Equal(t, 1, n.Flush(ctx, "j3", "j3/job.completed"), "given up after RetryFor, left in the record")
	require.Empty(t, rcv.got())

	rcv.setDown(false)
	require.Eventually(t, func() bool {
		n.Sweep(ctx)
		return rcv.got()["j3/job.completed"] == 1
	}, 10*time.Second, 200*time.Millisecond)
}

func TestQueueSinkSendsTheEventWithItsID(t *testing.T) {
	ctx := context.Background()
	q := sqs.NewFromConfig(emutest.Config(emutest.Start(t, emulator.SQS)))
	out, err := q.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("events")})
	require.NoError(t, err)
	sink := &notify.Queue{Client: q, URL: aws.ToString(out.QueueUrl)}
	e := jobevent.Event{ID: "j4/job.paused/1", Kind: jobevent.Paused, JobID: "j4", Cause: "CANARY"}
	body, err := e.Marshal()
	require.NoError(t, err)
	require.NoError(t, sink.Send(ctx, e, body))

	got, err := q.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl: out.QueueUrl, MessageAttributeNames: []string{"All"}, WaitTimeSeconds: 1,
	})
	require.NoError(t, err)
	require.Len(t, got.Messages, 1)
	require.JSONEq(t, string(body), aws.ToString(got.Messages[0].Body))
	require.Equal(t, "j4/job.paused/1", aws.ToString(got.Messages[0].MessageAttributes["spool-event-id"].StringValue))
	require.Equal(t, "job.paused", aws.ToString(got.Messages[0].MessageAttributes["spool-event-kind"].StringValue))
}

// A signed webhook carries a Standard Webhooks signature over its id, the
// send's timestamp and the body, which the receiver recomputes with the
// secret.
func TestWebhookSignsEachSend(t *testing.T) {
	key := []byte("events-secret")
	signer, err := deliver.NewSigner("whsec_" + base64.StdEncoding.EncodeToString(key))
	require.NoError(t, err)
	dest := delivertest.New(t, nil)
	at := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	w := &notify.Webhook{URL: dest.URL, Signer: signer, Now: func() time.Time { return at }}
	e := jobevent.Event{ID: "j5/job.completed", Kind: jobevent.Completed, JobID: "j5"}
	sent, err := e.Marshal()
	require.NoError(t, err)
	require.NoError(t, w.Send(context.Background(), e, sent))

	got := dest.Only()
	require.Equal(t, string(sent), got.Body)
	require.Equal(t, "j5/job.completed", got.Header.Get("webhook-id"))
	require.Equal(t, strconv.FormatInt(at.Unix(), 10), got.Header.Get("webhook-timestamp"))
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%d.%s", e.ID, at.Unix(), sent)
	require.Equal(t, "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)), got.Header.Get("webhook-signature"))
}

// A kick sends the one event this process stored, not the fresh events
// of the same job another dispatcher is sending itself.
func TestKickSendsOnlyItsOwnEvent(t *testing.T) {
	ctx := context.Background()
	db, _ := table(t)
	rcv, srv := newReceiver(t)
	other := jobstore.New(db, "jobs", jobstore.WithEventHook(func(string, string) {}))
	completedJob(t, other, "j6")
	n := notify.New(other, []notify.Sink{&notify.Webhook{URL: srv.URL}}, notify.Options{RetryFor: time.Second, SweepAfter: time.Minute})
	require.Equal(t, 1, n.Flush(ctx, "j6", "j6/job.paused/1"))
	require.Empty(t, rcv.got(), "another process's fresh event is left to it")
	require.Equal(t, 0, n.Flush(ctx, "j6", "j6/job.completed"))
	require.Equal(t, map[string]int{"j6/job.completed": 1}, rcv.got())
}

// A webhook that cannot be reached fails with its URL redacted: the error
// is logged, and the URL's query may hold the receiver's credential.
func TestWebhookErrorRedactsTheURL(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	w := &notify.Webhook{URL: srv.URL + "/spool?token=s3cret"}
	e := jobevent.Event{ID: "j7/job.completed", Kind: jobevent.Completed, JobID: "j7"}
	err := w.Send(context.Background(), e, []byte(`{}`))
	require.Error(t, err)
	require.NotContains(t, err.Error(), "s3cret")
	require.Contains(t, err.Error(), "post event j7/job.completed")
}
