package jobstore_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/jobstore"
)

// counter is one writer's cumulative counts of a job, as a dispatcher's
// tally keeps them.
type counter struct {
	s       *jobstore.Store
	job     string
	writer  string
	version int64
	counts  jobstore.Counts
}

func newCounter(s *jobstore.Store, job, writer string) *counter {
	return &counter{s: s, job: job, writer: writer}
}

// add counts d and writes the writer's counts.
func (c *counter) add(t testing.TB, d jobstore.Counts) {
	t.Helper()
	c.counts = c.counts.Plus(d)
	require.NoError(t, c.write())
}

// write writes the counts as the next version.
func (c *counter) write() error {
	c.version++
	return c.s.WriteCounts(context.Background(), c.job, jobstore.CounterWrite{Writer: c.writer, Version: c.version, Counts: c.counts})
}
