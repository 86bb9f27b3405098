package openjobs_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/openjobs"
	"github.com/spoolhq/spool/platform/emulator/emutest"
)

func TestRegister(t *testing.T) {
	ctx := context.Background()
	db := emutest.Table(t, "spool")
	var ms atomic.Int64
	ms.Store(time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC).UnixMilli())
	now := func() time.Time { return time.UnixMilli(ms.Load()) }
	r := openjobs.New(db, "spool", now)

	ids, err := r.List(ctx)
	require.NoError(t, err)
	require.Empty(t, ids)

	require.NoError(t, r.Mark(ctx, "a"))
	require.NoError(t, r.Mark(ctx, "b"))
	require.NoError(t, r.Mark(ctx, "a"), "marking twice is harmless")
	ids, err = r.List(ctx)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"a", "b"}, ids)

	// Another process (a fresh register on the same table) sees them too.
	ids, err = openjobs.New(db, "spool", nil).List(ctx)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"a", "b"}, ids)

	// b was marked after the cutoff: a dispatcher works on it, it stays.
	cutoff := now().Add(-time.Second)
	require.ErrorIs(t, r.Unmark(ctx, "b", cutoff), openjobs.ErrMarked)
	ms.Add((2 * time.Second).Milliseconds())
	require.NoError(t, r.Unmark(ctx, "b", now().Add(-time.Second)))
	require.NoError(t, r.Unmark(ctx, "never-marked", now()), "unmarking an unknown job is harmless")
	ids, err = r.List(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"a"}, ids)
}
