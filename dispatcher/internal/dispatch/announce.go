package dispatch

import (
	"context"
	"sync"
	"time"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobevent"
)

// Announcer stores a job's rows events (jobstore.Store.AnnounceRows): one
// conditional write on the count last announced and the time of the last
// announcement, so of dispatchers seeing the same count one announces it,
// and a job's rows events are coalesced to one per interval.
type Announcer interface {
	AnnounceRows(ctx context.Context, j *spoolv1.Job, kind jobevent.Kind, n int64) (bool, error)
}

// announceRetry is how long a dispatcher waits before it asks again to
// announce a count the store refused (announced already, or too soon
// after the last announcement), so a job read every cache TTL costs a
// write attempt every few seconds at most.
const announceRetry = 5 * time.Second

// maxAnnounced bounds the announcements remembered; past it they are
// forgotten, which costs a refused write each.
const maxAnnounced = 4096

// announced remembers, per job and kind, the count this process saw
// announced and when to ask again.
type announced struct {
	mu   sync.Mutex
	byID map[string]announcedRows
}

type announcedRows struct {
	n    int64
	next time.Time
}

// announceRows announces a SEALED job's UNKNOWN and dead-lettered rows
// when their counts (the fleet's summed counters, which lag the ledger
// but never lead it) rose above what was announced. Failures are logged;
// the next read tries again.
func (h *Handler) announceRows(ctx context.Context, j *spoolv1.Job) {
	if h.o.Announce == nil || j.GetState() != spoolv1.JobState_JOB_STATE_SEALED {
		return
	}
	for _, k := range []struct {
		kind jobevent.Kind
		n    int64
	}{{jobevent.RowsUnknown, j.GetUnknown()}, {jobevent.RowsDeadLettered, j.GetDeadLettered()}} {
		if k.n <= 0 {
			continue
		}
		key := j.GetJobId() + "/" + string(k.kind)
		now := h.o.Now()
		h.announced.mu.Lock()
		a := h.announced.byID[key]
		due := k.n > a.n && !now.Before(a.next)
		h.announced.mu.Unlock()
		if !due {
			continue
		}
		ok, err := h.o.Announce.AnnounceRows(ctx, j, k.kind, k.n)
		if err != nil {
			h.log.WarnContext(ctx, "announce job rows", "job_id", j.GetJobId(), "kind", string(k.kind), "error", err)
		}
		h.announced.mu.Lock()
		if h.announced.byID == nil || len(h.announced.byID) >= maxAnnounced {
			h.announced.byID = map[string]announcedRows{}
		}
		if ok {
			h.log.InfoContext(ctx, "job rows announced", "job_id", j.GetJobId(), "kind", string(k.kind), "rows", k.n)
			h.announced.byID[key] = announcedRows{n: k.n}
		} else {
			h.announced.byID[key] = announcedRows{n: a.n, next: now.Add(announceRetry)}
		}
		h.announced.mu.Unlock()
	}
}
