package destination

import (
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"time"
)

// maxEvents bounds the job events the sink keeps; past it, new ids are
// counted but not kept.
const maxEvents = 100_000

// Events records the job events Spool's dispatchers send to their events
// webhook (POST /events), and lists them (GET /events): each id once, with
// how many times it arrived, so a test sees both the transitions (the
// ids) and the at-least-once duplicates (the counts).
type Events struct {
	mu      sync.Mutex
	order   []string
	byID    map[string]*ReceivedEvent
	posts   int64
	dropped int64
}

// ReceivedEvent is one event id as the sink got it.
type ReceivedEvent struct {
	ID    string `json:"id"`
	Kind  string `json:"kind"`
	JobID string `json:"job_id"`
	// Received counts its arrivals; more than one is a duplicate.
	Received int64 `json:"received"`
	// Event is the body of its first arrival.
	Event json.RawMessage `json:"event"`
	// Signature is the webhook-signature header of its first arrival,
	// empty when unsigned.
	Signature string `json:"signature,omitempty"`
	// Timestamp is the webhook-timestamp header of its first arrival,
	// which the signature covers.
	Timestamp string `json:"timestamp,omitempty"`
	// FirstAt is when it first arrived: with the event's own time, how
	// late it was.
	FirstAt time.Time `json:"first_at"`
}

// EventList is the answer of GET /events.
type EventList struct {
	Events []ReceivedEvent `json:"events"`
	// Posts counts every arrival, duplicates included.
	Posts int64 `json:"posts"`
	// Dropped counts ids not kept, past the sink's bound.
	Dropped int64 `json:"dropped"`
}

func newEvents() *Events { return &Events{byID: map[string]*ReceivedEvent{}} }

func (ev *Events) record(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, answer{Error: "read event: " + err.Error()})
		return
	}
	var head struct {
		ID    string `json:"id"`
		Kind  string `json:"kind"`
		JobID string `json:"job_id"`
	}
	if err := json.Unmarshal(body, &head); err != nil || head.ID == "" {
		writeJSON(w, http.StatusBadRequest, answer{Error: "want a JSON event with an id"})
		return
	}
	if id := r.Header.Get("webhook-id"); id != "" && id != head.ID {
		writeJSON(w, http.StatusBadRequest, answer{Error: "webhook-id header differs from the event's id"})
		return
	}
	ev.mu.Lock()
	defer ev.mu.Unlock()
	ev.posts++
	if e, ok := ev.byID[head.ID]; ok {
		e.Received++
	} else if len(ev.order) >= maxEvents {
		ev.dropped++
	} else {
		ev.byID[head.ID] = &ReceivedEvent{
			ID: head.ID, Kind: head.Kind, JobID: head.JobID, Received: 1, Event: body,
			Signature: r.Header.Get("webhook-signature"), Timestamp: r.Header.Get("webhook-timestamp"), FirstAt: time.Now().UTC(),
		}
		ev.order = append(ev.order, head.ID)
	}
	writeJSON(w, http.StatusOK, answer{Status: "recorded"})
}

// list answers GET /events, in order of first arrival; ?job_id= keeps one
// job's.
func (ev *Events) list(w http.ResponseWriter, r *http.Request) {
	job := r.URL.Query().Get("job_id")
	ev.mu.Lock()
	out := EventList{Events: []ReceivedEvent{}, Posts: ev.posts, Dropped: ev.dropped}
	for _, id := range ev.order {
		if e := ev.byID[id]; job == "" || e.JobID == job {
			out.Events = append(out.Events, *e)
		}
	}
	ev.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (ev *Events) reset() {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	ev.order, ev.byID, ev.posts, ev.dropped = nil, map[string]*ReceivedEvent{}, 0, 0
}
