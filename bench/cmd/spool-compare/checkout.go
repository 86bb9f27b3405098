package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// side is one checkout under comparison, built and ready to measure.
type side struct {
	// name is "base" or "head"; commit says which code it is.
	name, commit string
	// dir is the checkout's root.
	dir string
	// env is what every command of this side runs with (sideEnv).
	env []string
	// e2e is the compiled test binary of e2e/; tests those of the
	// benchmarks' packages, by package.
	e2e   string
	tests map[string]string
}

// checkout adds the base commit as a worktree under work, installs its
// emulators, and builds both sides. cleanup removes the worktree; it is
// never nil and is to be called whatever err is.
func checkout(ctx context.Context, c config, work string, log io.Writer) (base, head side, cleanup func(), err error) {
	cleanup = func() {}
	headCommit, err := git(ctx, c.root, "rev-parse", "--short", "HEAD")
	if err != nil {
		return side{}, side{}, cleanup, err
	}
	if st, err := git(ctx, c.root, "status", "--porcelain"); err != nil {
		return side{}, side{}, cleanup, err
	} else if st != "" {
		// The head is the checkout as it is, which is what a developer
		// wants measured before committing.
		headCommit += " with uncommitted changes"
	}
	baseCommit, err := git(ctx, c.root, "rev-parse", "--verify", "--short", c.base+"^{commit}")
	if err != nil {
		return side{}, side{}, cleanup, fmt.Errorf("base %q: %w", c.base, err)
	}
	head = side{name: "head", commit: headCommit, dir: c.root}
	base = side{name: "base", commit: baseCommit, dir: filepath.Join(work, "base-"+baseCommit)}

	fmt.Fprintf(log, "spool-compare: base %s in a worktree at %s\n", baseCommit, base.dir)
	if _, err := git(ctx, c.root, "worktree", "add", "--detach", base.dir, baseCommit); err != nil {
		return side{}, side{}, cleanup, err
	}
	// The result variables are cleared on a failed return: the closure
	// keeps the directory of its own.
	dir := base.dir
	cleanup = func() { removeWorktree(c.root, dir, log) }

	if err := emulators(ctx, base.dir, head.dir, log); err != nil {
		return side{}, side{}, cleanup, err
	}
	for _, s := range []*side{&base, &head} {
		s.env = sideEnv(os.Environ(), s.dir, c.rows)
		if err := s.build(ctx, work, log); err != nil {
			return side{}, side{}, cleanup, err
		}
	}
	return base, head, cleanup, nil
}

// removeWorktree removes the base's worktree and git's record of it. It
// runs after the run's context may have ended (an interrupt), so it has a
// context of its own.
func removeWorktree(root, dir string, log io.Writer) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := git(ctx, root, "worktree", "remove", "--force", dir)
	if err == nil {
		return
	}
	fmt.Fprintf(log, "spool-compare: %v; removing the directory and pruning\n", err)
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintf(log, "spool-compare: remove %s: %v\n", dir, err)
	}
	if _, err := git(ctx, root, "worktree", "prune"); err != nil {
		fmt.Fprintf(log, "spool-compare: %v\n", err)
	}
}

// emulators gives the base its npm emulators: the head's own when the two
// lock files are the same (make deps installed them), else a fresh npm ci.
func emulators(ctx context.Context, base, head string, log io.Writer) error {
	headModules := filepath.Join(head, "local", "node_modules")
	if _, err := os.Stat(filepath.Join(headModules, "dynalite")); err != nil {
		return fmt.Errorf("the head's emulators are not installed (run make deps): %w", err)
	}
	lockB, err := os.ReadFile(filepath.Join(base, "local", "package-lock.json"))
	if err != nil {
		return fmt.Errorf("base's emulators: %w", err)
	}
	lockH, err := os.ReadFile(filepath.Join(head, "local", "package-lock.json"))
	if err != nil {
		return fmt.Errorf("head's emulators: %w", err)
	}
	if bytes.Equal(lockB, lockH) {
		fmt.Fprintln(log, "spool-compare: same package-lock.json: the base uses the head's emulators")
		return os.Symlink(headModules, filepath.Join(base, "local", "node_modules"))
	}
	fmt.Fprintln(log, "spool-compare: package-lock.json differs: npm ci in the base's local/")
	return runLogged(group(ctx, filepath.Join(base, "local"), "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"), log)
}

// build builds the side's binaries into its bin/ as its own Makefile does
// (the commands to build may differ between the commits), then its two
// test binaries, so that no round compiles anything.
func (s *side) build(ctx context.Context, work string, log io.Writer) error {
	fmt.Fprintf(log, "spool-compare: building %s (%s)\n", s.name, s.commit)
	if err := runLogged(s.command(ctx, s.dir, "make", "build"), log); err != nil {
		return fmt.Errorf("build %s: %w", s.name, err)
	}
	s.e2e = filepath.Join(work, s.name+"-e2e.test")
	s.tests = map[string]string{}
	pkgs := []struct{ out, pkg string }{{s.e2e, "e2e"}}
	for _, bm := range benchmarks {
		s.tests[bm.pkg] = filepath.Join(work, s.name+"-"+strings.ReplaceAll(bm.pkg, "/", "-")+".test")
		pkgs = append(pkgs, struct{ out, pkg string }{s.tests[bm.pkg], bm.pkg})
	}
	for _, t := range pkgs {
		cmd := s.command(ctx, filepath.Join(s.dir, t.pkg), "go", "test", "-c", "-o", t.out, ".")
		if err := runLogged(cmd, log); err != nil {
			return fmt.Errorf("build %s's %s tests: %w", s.name, t.pkg, err)
		}
	}
	return nil
}

// command is name run in dir with the side's environment (group).
func (s *side) command(ctx context.Context, dir, name string, args ...string) *exec.Cmd {
	cmd := group(ctx, dir, name, args...)
	cmd.Env = s.env
	return cmd
}

// group is name run in dir in a process group of its own, which is killed
// whole when ctx ends: make's compilers and a test's emulators go with
// their parent, before the worktree they run in is removed.
func group(ctx context.Context, dir, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// sideEnv is environ for the checkout at dir: its own go.work, binaries
// and emulators, the same DynamoDB emulator and e2e size on both sides.
// What make exports (the head's GOWORK, the caller's variables through
// MAKEFLAGS) would otherwise build or run the head's code on the base's
// side.
func sideEnv(environ []string, dir string, rows int) []string {
	set := map[string]string{
		"GOWORK":                  filepath.Join(dir, "go.work"),
		"SPOOL_BIN_DIR":           filepath.Join(dir, "bin"),
		"SPOOL_LOCAL_DIR":         filepath.Join(dir, "local"),
		"SPOOL_DYNAMODB_EMULATOR": "dynalite",
		"SPOOL_E2E_ROWS":          strconv.Itoa(rows),
	}
	drop := []string{"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}
	var out []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := set[k]; ok || slices.Contains(drop, k) {
			continue
		}
		out = append(out, kv)
	}
	for _, k := range slices.Sorted(maps.Keys(set)) {
		out = append(out, k+"="+set[k])
	}
	return out
}

// git runs git in dir and returns its output, trimmed.
func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// runLogged runs cmd with its output going to log.
func runLogged(cmd *exec.Cmd, log io.Writer) error {
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s in %s: %w", strings.Join(cmd.Args, " "), cmd.Dir, err)
	}
	return nil
}
