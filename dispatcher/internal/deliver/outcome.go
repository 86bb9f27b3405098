package deliver

import "strconv"

// Outcome is how one delivery went, in the terms flow control reads: what
// the destination's answer (or its absence) says about the destination.
// It is the one vocabulary for that. The dispatcher classifies each send
// once (dispatch), and the concurrency limit and the circuit breaker each
// decide for themselves what an outcome teaches them:
//
//	outcome     concurrency limit      breaker
//	NotSent     nothing                nothing (a probe may go again)
//	Accepted    latency sample         destination up
//	Refused     nothing                destination up
//	Throttled   cut                    nothing
//	Overloaded  cut                    failure
//	Lost        nothing                failure
type Outcome int

const (
	// NotSent means nothing reached the destination for a reason of ours (the
	// row was settled, held or gated, the claim's lease was too short, the
	// request could not be built), or a probe receive found no message.
	NotSent Outcome = iota
	// Accepted means a 2xx, or a status configured as already applied. Its
	// latency is a fair sample of the destination's.
	Accepted
	// Refused means an answer that is neither acceptance nor a sign of load: a
	// 4xx other than 408 and 429 (a 409 included, unless it is configured
	// as already applied), a redirect. The destination is up and answering;
	// the row is at fault, not the load.
	Refused
	// Throttled means a 429. The destination asks for less and is up: load to
	// shed, not an outage to wait out.
	Throttled
	// Overloaded means 408, 5xx, a refused connection, or a timeout before the
	// request was written: the destination is down or has too much.
	Overloaded
	// Lost means the request was written and its answer never came (a reset or
	// a timeout after writing). It counts against the destination's health,
	// but not as load: a broken connection looks the same, and its
	// "latency" is the timeout, not a measurement. Load shows first in the
	// latency of the answers that do come.
	Lost
)

func (o Outcome) String() string {
	switch o {
	case NotSent:
		return "not-sent"
	case Accepted:
		return "accepted"
	case Refused:
		return "refused"
	case Throttled:
		return "throttled"
	case Overloaded:
		return "overloaded"
	case Lost:
		return "lost"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}
