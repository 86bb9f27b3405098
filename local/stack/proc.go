package stack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// Proc is one process of the stack.
type Proc struct {
	// Name identifies the process in logs and the pid file, e.g. "dispatcher-2".
	Name string
	// Addr is where it serves: host:port for gRPC, a URL for HTTP.
	Addr string
	// MetricsURL is its Prometheus metrics page; empty for processes
	// without one.
	MetricsURL string
	// LogPath is the file its stdout and stderr go to.
	LogPath string

	path   string
	args   []string
	env    []string
	dir    string
	detach bool

	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// start launches the process, appending to its log file.
func (p *Proc) start() error {
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log of %s: %w", p.Name, err)
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Dir, cmd.Env = p.dir, p.env
	cmd.Stdout, cmd.Stderr = logf, logf
	if p.detach {
		// Its own session: the process outlives `make up` and ignores the
		// terminal's signals; `make down` ends it through the pid file.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		// Tied to the test (or command) that started it: if that dies
		// without cleaning up, the kernel ends the child too.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	p.cmd, p.done, p.err = cmd, make(chan struct{}), nil
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return nil
}

// Pid returns the process id, or 0 before start.
func (p *Proc) Pid() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error {
	if p.cmd == nil {
		return fmt.Errorf("signal %s: not started", p.Name)
	}
	return p.cmd.Process.Signal(sig)
}

// Wait waits for the process to end, at most for timeout, and returns its
// exit error (nil for exit status 0).
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %s", p.Name, timeout)
	}
}

// Stop ends the process: SIGTERM, then SIGKILL after grace. It returns the
// exit error of a process that did not exit cleanly on SIGTERM.
func (p *Proc) Stop(grace time.Duration) error {
	if p.cmd == nil || p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.exitErr()
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed", p.Name, grace)
	}
}

// exitErr ignores exits caused by SIGTERM itself (the emulators do that):
// death by the signal (Node), or exit status 128+15, which is how a JVM
// (DynamoDB Local) reports it after running its shutdown hooks.
func (p *Proc) exitErr() error {
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok &&
			(ws.Signaled() && ws.Signal() == syscall.SIGTERM || ws.Exited() && ws.ExitStatus() == 128+int(syscall.SIGTERM)) {
			return nil
		}
		return fmt.Errorf("%s exited: %w (log: %s)", p.Name, p.err, p.LogPath)
	}
	return p.err
}

// Kill ends the process at once with SIGKILL, as a crash would.
func (p *Proc) Kill() error {
	if p.cmd == nil || p.Exited() {
		return nil
	}
	if err := p.cmd.Process.Kill(); err != nil {
		return fmt.Errorf("kill %s: %w", p.Name, err)
	}
	<-p.done
	return nil
}

// Restart starts the process again with the same command, address and log,
// after it has ended, and waits until it is ready.
func (p *Proc) Restart(ctx context.Context, ready func(context.Context, *Proc) error) error {
	if !p.Exited() {
		return fmt.Errorf("restart %s: still running", p.Name)
	}
	if err := p.start(); err != nil {
		return err
	}
	return ready(ctx, p)
}

// RestartWith is Restart with args added to the command's from now on, as
// an operator changes a setting of one service in a rolling deploy. A
// flag given again wins over its earlier value.
func (p *Proc) RestartWith(ctx context.Context, ready func(context.Context, *Proc) error, args ...string) error {
	if !p.Exited() {
		return fmt.Errorf("restart %s: still running", p.Name)
	}
	p.args = append(slices.Clip(p.args), args...)
	return p.Restart(ctx, ready)
}

func newProc(name, addr, stateDir, path string, args, env []string, dir string, detach bool) *Proc {
	return &Proc{
		Name: name, Addr: addr, LogPath: filepath.Join(stateDir, "logs", name+".log"),
		path: path, args: args, env: env, dir: dir, detach: detach,
	}
}
