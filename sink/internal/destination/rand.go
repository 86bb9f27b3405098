package destination

import (
	"math/rand/v2"
	"sync"
)

// lockedRand makes a seeded math/rand/v2 source safe for the concurrent
// requests that share it.
type lockedRand struct {
	mu sync.Mutex
	r  *rand.Rand
}

// NewRand returns a Rand that yields the same sequence for the same seed.
func NewRand(seed uint64) Rand {
	return &lockedRand{r: rand.New(rand.NewPCG(seed, seed))}
}

func (l *lockedRand) Float64() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Float64()
}

func (l *lockedRand) Int64N(n int64) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Int64N(n)
}
