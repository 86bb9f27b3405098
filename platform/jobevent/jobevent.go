// Package jobevent is the contract of the events Spool sends when a job
// needs a person: what each kind means, how its id is made, and the JSON a
// receiver gets.
//
// An event is decided by the conditional write that made its transition
// (package jobstore): the write stores the event's body in the job record
// as it makes the transition, so the event exists exactly when the
// transition does, and a retried or raced announcement sends the very body
// that write stored. Its id is derived from the transition, never from the
// sender: the job, the kind, and what makes this transition of the job
// unique (an automatic pause's sequence number, a row count's new high), so
// a receiver that sees an id twice has seen one transition twice, and two
// ids are two transitions.
package jobevent

import (
	"encoding/json"
	"fmt"
	"time"
)

// Kind is what happened to a job.
type Kind string

// The kinds. Each names a transition a person may have to act on.
const (
	// Completed: every row of the job settled (delivered, refused,
	// dead-lettered, UNKNOWN or a duplicate). Once per job.
	Completed Kind = "job.completed"
	// Paused: the job paused itself, for its failure threshold or after
	// its canary (Cause says which). Once per automatic pause.
	Paused Kind = "job.paused"
	// RowsUnknown: the job's UNKNOWN rows reached a new high, which a
	// person must resolve. Coalesced: at most one per job per interval
	// (jobstore.RowsEvery), carrying the count.
	RowsUnknown Kind = "job.rows_unknown"
	// RowsDeadLettered: the job's dead-lettered rows reached a new high;
	// coalesced as RowsUnknown.
	RowsDeadLettered Kind = "job.rows_dead_lettered"
	// Aborted: the job's stream broke and was not resumed in time. Once.
	Aborted Kind = "job.aborted"
	// Rejected: the job's file was refused (a bad row, or control totals
	// that do not match); nothing of it was delivered. Once.
	Rejected Kind = "job.rejected"
)

// Counts are a job's figures when the event was decided.
type Counts struct {
	Total        int64 `json:"total"`
	Delivered    int64 `json:"delivered"`
	Failed       int64 `json:"failed"`
	Unknown      int64 `json:"unknown"`
	DeadLettered int64 `json:"dead_lettered"`
	Duplicates   int64 `json:"duplicate_rows"`
	Dropped      int64 `json:"dropped"`
	RowsRejected int64 `json:"rows_rejected"`
}

// Event is what a receiver gets, as JSON.
type Event struct {
	ID    string    `json:"id"`
	Kind  Kind      `json:"kind"`
	JobID string    `json:"job_id"`
	Time  time.Time `json:"time"`
	// State is the job's state after the transition.
	State string `json:"state"`
	// Cause is a pause's cause: THRESHOLD or CANARY.
	Cause  string `json:"cause,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Rows is the count a row event announces: the job's UNKNOWN or
	// dead-lettered rows when it was decided.
	Rows     int64  `json:"rows,omitempty"`
	FileName string `json:"file_name,omitempty"`
	Counts   Counts `json:"counts"`
}

// ID is the id of the transition of job of kind kind, told apart from the
// job's other transitions of that kind by n (a pause's sequence number, a
// row event's count; 0 for the once-per-job kinds).
func ID(job string, kind Kind, n int64) string {
	if n == 0 {
		return fmt.Sprintf("%s/%s", job, kind)
	}
	return fmt.Sprintf("%s/%s/%d", job, kind, n)
}

// Marshal is the event's body as sent.
func (e Event) Marshal() ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("marshal event %s: %w", e.ID, err)
	}
	return b, nil
}

// Parse reads a body Marshal made.
func Parse(b []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return Event{}, fmt.Errorf("parse event: %w", err)
	}
	return e, nil
}
