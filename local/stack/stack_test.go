package stack

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDownDetached checks that `make down` ends the processes in the pid
// file and leaves alone a pid that now runs another program.
func TestDownDetached(t *testing.T) {
	dir := t.TempDir()
	sleep, err := exec.LookPath("sleep")
	require.NoError(t, err)
	ours := exec.Command(sleep, "300")
	ours.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	require.NoError(t, ours.Start())
	waited := make(chan error, 1)
	go func() { waited <- ours.Wait() }()
	t.Cleanup(func() { _ = ours.Process.Kill() })

	// Another process whose pid the file claims for a different program.
	other := exec.Command(sleep, "300")
	require.NoError(t, other.Start())
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })

	pids := fmt.Sprintf("sleeper %d %s\nimpostor %d /no/such/dispatcher\n", ours.Process.Pid, sleep, other.Process.Pid)
	require.NoError(t, os.WriteFile(filepath.Join(dir, PIDFile), []byte(pids), 0o644))

	require.NoError(t, DownDetached(dir, io.Discard))
	require.Error(t, <-waited, "sleeper ended by a signal")
	require.True(t, runs(other.Process.Pid, sleep), "a pid running another program was signalled")
	require.NoFileExists(t, filepath.Join(dir, PIDFile))

	// Down again with nothing up is fine.
	require.NoError(t, DownDetached(dir, io.Discard))
}
