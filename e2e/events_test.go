package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/local/stack"
)

// sinkEvent is one event id as the sink's GET /events lists it.
type sinkEvent struct {
	ID        string          `json:"id"`
	Kind      string          `json:"kind"`
	JobID     string          `json:"job_id"`
	Received  int64           `json:"received"`
	FirstAt   time.Time       `json:"first_at"`
	Signature string          `json:"signature"`
	Timestamp string          `json:"timestamp"`
	Body      json.RawMessage `json:"event"`
	// Event is Body, read.
	Event eventBody `json:"-"`
}

// eventBody is what the tests read of an event's JSON.
type eventBody struct {
	Time   time.Time `json:"time"`
	State  string    `json:"state"`
	Cause  string    `json:"cause"`
	Reason string    `json:"reason"`
	Rows   int64     `json:"rows"`
	Counts struct {
		Total        int64 `json:"total"`
		Delivered    int64 `json:"delivered"`
		Failed       int64 `json:"failed"`
		Unknown      int64 `json:"unknown"`
		DeadLettered int64 `json:"dead_lettered"`
	} `json:"counts"`
}

func sinkEvents(t *testing.T, s *stack.Stack) []sinkEvent {
	t.Helper()
	var l struct {
		Events []sinkEvent `json:"events"`
	}
	getJSON(t, s.Sink.Addr+"/events", &l)
	for i := range l.Events {
		require.NoError(t, json.Unmarshal(l.Events[i].Body, &l.Events[i].Event), "event %s", l.Events[i].ID)
	}
	return l.Events
}

// byJobAndKind groups events by job, then kind.
func byJobAndKind(evs []sinkEvent) map[string]map[string][]sinkEvent {
	out := map[string]map[string][]sinkEvent{}
	for _, e := range evs {
		if out[e.JobID] == nil {
			out[e.JobID] = map[string][]sinkEvent{}
		}
		out[e.JobID][e.Kind] = append(out[e.JobID][e.Kind], e)
	}
	return out
}

// TestEventsOncePerTransition runs every kind of job event through two
// dispatchers racing over the same jobs, with the sink as the events
// webhook: a job that completes with refused, UNKNOWN and dead-lettered
// rows, one its failure threshold pauses, one its canary pauses, one
// whose control totals reject it, one whose stream is abandoned. Each
// transition must arrive as exactly one event id (a receiver needs no
// deduplication to count transitions); the same id arriving twice is
// allowed, at least once, and counted.
func TestEventsOncePerTransition(t *testing.T) {
	requireFlags(t, "dispatcher", "events-webhook-url", "events-sweep", "events-rows-every", "events-signing-secrets-file")
	const rowsEvery = 2 * time.Second
	key := []byte("events-e2e-secret")
	secrets := filepath.Join(t.TempDir(), "events-secrets")
	require.NoError(t, os.WriteFile(secrets, []byte("whsec_"+base64.StdEncoding.EncodeToString(key)), 0o600))
	s := startStack(t, 2, func(o *stack.Options) {
		// Every 25th row refused; 2 % answered 503 (one attempt: dead-
		// lettered); 2 % applied and held past the dispatchers' timeout
		// (UNKNOWN, held).
		o.SinkArgs = []string{"-reject-every", "25", "-fail-rate", "0.02", "-hang-rate", "0.02", "-hang-for", "1500ms"}
		o.IngestorArgs = []string{"-abort-after", "3s", "-publish-concurrency", "1"}
		o.DispatcherArgs = append([]string{
			"-max-attempts", "1", "-destination-timeout", "500ms", "-concurrency", "8",
			"-events-sweep", "1s", "-events-sweep-after", "5s", "-events-retry-for", "3s",
			"-events-rows-every", rowsEvery.String(), "-events-signing-secrets-file", secrets,
		}, guardArgs...)
	})

	// Rejected: the file has 10 rows, the header declares 11.
	out, _ := runCLI(t, s, "send", "-no-watch", "-job-key", "events-rejected", "-rows", "11", writeSample(t, 10))
	rejected := waitJob(t, s, &spoolv1.GetJobRequest{JobKey: "events-rejected"}, 30*time.Second, "rejected",
		func(j *spoolv1.Job) bool { return isFinal(j.GetState()) })
	require.Equal(t, spoolv1.JobState_JOB_STATE_REJECTED, rejected.GetState(), out)

	// Aborted: spool send killed mid-stream, never resumed.
	cli, cliOut, done := startCLI(t, s, "send", "-job-key", "events-aborted", writeSample(t, abandonedRows))
	caught := catchMidStream(t, s, "events-aborted", abandonedRows)
	require.NoError(t, cli.Process.Kill())
	var exit *exec.ExitError
	require.ErrorAs(t, <-done, &exit, "spool send was killed:\n%s", cliOut)

	// Completed with failures of every kind; paused by its threshold;
	// paused after its canary.
	send := func(args ...string) string {
		out, err := runCLI(t, s, append([]string{"send", "-no-watch"}, args...)...)
		require.NoError(t, err, out)
		return jobIDFrom(t, out)
	}
	plain := send(writeSample(t, 600))
	threshold := send("-max-failures", "3", writeSample(t, 401))
	canary := send("-canary", "20", writeSample(t, 402))

	waitJob(t, s, &spoolv1.GetJobRequest{JobId: threshold}, time.Minute, "paused by its threshold", func(j *spoolv1.Job) bool {
		return j.GetPauseCause() == spoolv1.PauseCause_PAUSE_CAUSE_THRESHOLD
	})
	out, err := runCLI(t, s, "update", threshold, "-max-failures", "off")
	require.NoError(t, err, out)
	waitJob(t, s, &spoolv1.GetJobRequest{JobId: canary}, time.Minute, "paused after its canary", func(j *spoolv1.Job) bool {
		return j.GetPauseCause() == spoolv1.PauseCause_PAUSE_CAUSE_CANARY
	})
	out, err = runCLI(t, s, "resume", canary)
	require.NoError(t, err, out)

	final := map[string]*spoolv1.Job{}
	for _, id := range []string{plain, threshold, canary} {
		final[id] = waitJob(t, s, &spoolv1.GetJobRequest{JobId: id}, 2*time.Minute, "completed, counters settled", func(j *spoolv1.Job) bool {
			return j.GetState() == spoolv1.JobState_JOB_STATE_COMPLETED &&
				j.GetDelivered()+j.GetFailed()+j.GetUnknown()+j.GetDeadLettered()+j.GetDuplicateRows() == j.GetTotal()
		})
	}
	aborted := waitJob(t, s, &spoolv1.GetJobRequest{JobId: caught.GetJobId()}, 30*time.Second, "aborted",
		func(j *spoolv1.Job) bool { return isFinal(j.GetState()) })
	require.Equal(t, spoolv1.JobState_JOB_STATE_ABORTED, aborted.GetState())

	// Every transition's event arrives: the dispatcher that made it sends
	// it at once; the ingestor's (rejected, aborted) come with a sweep.
	want := map[string][]string{
		plain:               {"job.completed"},
		threshold:           {"job.paused", "job.completed"},
		canary:              {"job.paused", "job.completed"},
		rejected.GetJobId(): {"job.rejected"},
		aborted.GetJobId():  {"job.aborted"},
	}
	require.Eventually(t, func() bool {
		got := byJobAndKind(sinkEvents(t, s))
		for job, kinds := range want {
			for _, k := range kinds {
				if len(got[job][k]) == 0 {
					return false
				}
			}
		}
		return true
	}, 30*time.Second, 200*time.Millisecond, "every transition's event at the sink")
	// Then nothing new arrives for longer than a sweep takes to send
	// what a writer left: no late second id for a transition.
	n := len(sinkEvents(t, s))
	require.Never(t, func() bool { return len(sinkEvents(t, s)) != n }, 8*time.Second, time.Second, "no new event ids once every job is final")

	evs := sinkEvents(t, s)
	got := byJobAndKind(evs)
	once := func(job, kind string) sinkEvent {
		t.Helper()
		es := got[job][kind]
		require.Len(t, es, 1, "job %s: %s: one transition, one event id: %v", job, kind, es)
		return es[0]
	}
	for _, id := range []string{plain, threshold, canary} {
		e := once(id, "job.completed")
		j := final[id]
		require.Equal(t, id+"/job.completed", e.ID)
		require.Equal(t, "COMPLETED", e.Event.State)
		require.Equal(t, j.GetTotal(), e.Event.Counts.Total)
		require.Equal(t, j.GetDelivered(), e.Event.Counts.Delivered, "job %s", id)
		require.Equal(t, j.GetFailed(), e.Event.Counts.Failed, "job %s", id)
		require.Equal(t, j.GetUnknown(), e.Event.Counts.Unknown, "job %s", id)
		require.Equal(t, j.GetDeadLettered(), e.Event.Counts.DeadLettered, "job %s", id)
	}
	require.Empty(t, got[plain]["job.paused"], "a job with no guard is never paused")
	require.Equal(t, "THRESHOLD", once(threshold, "job.paused").Event.Cause)
	require.Equal(t, threshold+"/job.paused/1", once(threshold, "job.paused").ID)
	require.Equal(t, "CANARY", once(canary, "job.paused").Event.Cause)
	require.Equal(t, "REJECTED", once(rejected.GetJobId(), "job.rejected").Event.State)
	require.Equal(t, rejected.GetStateReason(), once(rejected.GetJobId(), "job.rejected").Event.Reason)
	require.Equal(t, "ABORTED", once(aborted.GetJobId(), "job.aborted").Event.State)
	require.Len(t, got[rejected.GetJobId()], 1, "a rejected job has no other event")
	require.Len(t, got[aborted.GetJobId()], 1, "an aborted job has no other event")

	// Rows events: each a new high of its job's count, at least the
	// coalescing interval apart, never above the job's final count; and
	// each kind seen at least once over these jobs.
	seen := map[string]int{}
	for _, id := range []string{plain, threshold, canary} {
		for kind, count := range map[string]int64{
			"job.rows_unknown":       final[id].GetUnknown(),
			"job.rows_dead_lettered": final[id].GetDeadLettered(),
		} {
			es := got[id][kind]
			sort.Slice(es, func(a, b int) bool { return es[a].Event.Time.Before(es[b].Event.Time) })
			for i, e := range es {
				require.Equal(t, fmt.Sprintf("%s/%s/%d", id, kind, e.Event.Rows), e.ID)
				require.LessOrEqual(t, e.Event.Rows, count, "%s: announced more rows than the job has", e.ID)
				if i > 0 {
					require.Greater(t, e.Event.Rows, es[i-1].Event.Rows, "%s: not a new high", e.ID)
					require.GreaterOrEqual(t, e.Event.Time.Sub(es[i-1].Event.Time), rowsEvery, "%s: sooner than the interval", e.ID)
				}
			}
			seen[kind] += len(es)
		}
	}
	require.Positive(t, seen["job.rows_unknown"], "no rows-UNKNOWN event: the jobs had %d, %d, %d UNKNOWN rows",
		final[plain].GetUnknown(), final[threshold].GetUnknown(), final[canary].GetUnknown())
	require.Positive(t, seen["job.rows_dead_lettered"], "no rows-dead-lettered event: the jobs had %d, %d, %d dead-lettered rows",
		final[plain].GetDeadLettered(), final[threshold].GetDeadLettered(), final[canary].GetDeadLettered())

	// How late events arrive: sent at once by the dispatcher that stored
	// them, or by a sweep (the ingestor's).
	// Every event is signed (Standard Webhooks) with the secret.
	for _, e := range evs {
		mac := hmac.New(sha256.New, key)
		fmt.Fprintf(mac, "%s.%s.%s", e.ID, e.Timestamp, e.Body)
		require.Equal(t, "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)), e.Signature, "event %s", e.ID)
	}

	var dups int64
	var kinds []string
	perKind := map[string]int{}
	late := map[string]time.Duration{}
	for _, e := range evs {
		if e.Received > 1 {
			t.Logf("event %s arrived %d times", e.ID, e.Received)
		}
		dups += e.Received - 1
		perKind[e.Kind]++
		late[e.Kind] = max(late[e.Kind], e.FirstAt.Sub(e.Event.Time))
	}
	for k, n := range perKind {
		kinds = append(kinds, fmt.Sprintf("%s=%d (latest %s)", k, n, late[k].Round(time.Millisecond)))
	}
	sort.Strings(kinds)
	t.Logf("%d event ids (%s); %d duplicate arrivals of an id", len(evs), strings.Join(kinds, " "), dups)
}
