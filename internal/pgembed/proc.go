package pgembed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// run runs one of the PostgreSQL programs on the cluster.
func (c *Cluster) run(ctx context.Context, path string, args ...string) error {
	return c.runIn(ctx, c.dir, path, args...)
}

// runIn runs a PostgreSQL program as the server's OS user in dir, which
// that user must be able to enter: the working directory is changed after
// the user is.
func (c *Cluster) runIn(ctx context.Context, dir, path string, args ...string) error {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = dir
	cmd.Env = c.env()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.owner.credential()}
	// pg_ctl redirects the server's output to the log, but should anything
	// daemonised keep the output pipe open, don't wait for it forever.
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s %s: %w", filepath.Base(path), args[0], ctx.Err())
	}
	msg := strings.Join(strings.Fields(string(out)), " ")
	if msg == "" {
		return fmt.Errorf("%s %s: %w", filepath.Base(path), args[0], err)
	}
	return fmt.Errorf("%s %s: %w: %s", filepath.Base(path), args[0], err, msg)
}

// env is the environment for the PostgreSQL programs: without PG*
// variables, which would override what we pass (PGDATA, PGPORT,
// PGCTLTIMEOUT...), and in the C locale, so messages we look for in the log
// are in English.
func (c *Cluster) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "PG"), strings.HasPrefix(name, "LC_"), name == "LANG", name == "LANGUAGE":
			continue
		case c.owner != nil && (name == "HOME" || name == "USER" || name == "LOGNAME"):
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "LC_ALL=C")
	if c.owner != nil {
		env = append(env, "HOME="+c.owner.home, "USER="+c.owner.name, "LOGNAME="+c.owner.name)
	}
	return env
}

// runningServer reads postmaster.pid and reports whether the server it
// names is alive, with its PID and port (0 if not written yet). A pid file
// naming a zombie or a process that isn't PostgreSQL is removed: where
// nothing reaps orphans (a container whose init doesn't), a crashed
// server's PID stays "alive" as a zombie and would make the next start
// refuse to run.
func (c *Cluster) runningServer() (pid, port int, alive bool, err error) {
	path := filepath.Join(c.dir, pidFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, fmt.Errorf("read %s: %w", path, err)
	}
	lines := strings.Split(string(b), "\n")
	pid, err = strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil || pid <= 0 {
		// Empty while being written, or a single-user backend (negative
		// PID): not a server to adopt, and pg_ctl will say why if it
		// can't start.
		return 0, 0, false, nil
	}
	if len(lines) > 3 {
		port, _ = strconv.Atoi(strings.TrimSpace(lines[3]))
	}
	switch processState(pid) {
	case procPostgres:
		return pid, port, true, nil
	case procStale:
		c.log.Info("removing postmaster.pid of a dead server", "pid", pid)
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return 0, 0, false, fmt.Errorf("remove stale %s: %w", path, err)
		}
	}
	return pid, port, false, nil
}

type procState int

const (
	procGone     procState = iota // no such process
	procStale                     // a zombie, or some other program that reused the PID
	procPostgres                  // a live PostgreSQL process
)

func processState(pid int) procState {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if _, perr := os.Stat("/proc/self/stat"); perr != nil {
			// No procfs (macOS): all we can tell is whether it exists.
			if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
				return procPostgres
			}
		}
		return procGone
	}
	// The state follows the command name, which is in parentheses and
	// may itself contain parentheses and spaces.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		if s := stat[i+2]; s == 'Z' || s == 'X' {
			return procStale
		}
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return procGone
	}
	if bytes.Contains(cmdline, []byte("postgres")) || bytes.Contains(cmdline, []byte("postmaster")) {
		return procPostgres
	}
	return procStale
}

// A watchdog stops an ephemeral server once this process is gone. It is a
// shell blocked reading a pipe only this process holds the write end of:
// the kernel closes that end however the process exits, the read returns,
// and the shell runs pg_ctl stop. It has its own session, so the Ctrl-C or
// kill aimed at our process group doesn't take it down too.
type watchdog struct {
	cmd  *exec.Cmd
	pipe *os.File
}

// watchdogs keeps every live watchdog's pipe reachable: were a Cluster
// dropped without Stop, the garbage collector would otherwise close the
// pipe and stop the server under a process still using it.
var watchdogs sync.Map

func (c *Cluster) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start PostgreSQL watchdog: %w", err)
	}
	defer r.Close()
	cmd := exec.Command("/bin/sh", "-c", `read -r _; exec "$0" stop -D "$1" -m immediate -s`, c.bins.pgCtl, c.dir)
	cmd.Stdin = r
	cmd.Dir = c.dir
	cmd.Env = c.env()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: c.owner.credential()}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start PostgreSQL watchdog: %w", err)
	}
	c.watchdog = &watchdog{cmd: cmd, pipe: w}
	watchdogs.Store(c.watchdog, struct{}{})
	return nil
}

// stopWatchdog dismisses the watchdog once the server is stopped, killing
// it before closing the pipe so it doesn't run pg_ctl stop for nothing.
func (c *Cluster) stopWatchdog() {
	wd := c.watchdog
	if wd == nil {
		return
	}
	c.watchdog = nil
	watchdogs.Delete(wd)
	if err := wd.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		c.log.Warn("could not stop PostgreSQL watchdog", "err", err)
	}
	_ = wd.cmd.Wait() // reap it; "killed" is the expected outcome
	wd.pipe.Close()
}

// killOrphans ends the server processes a killed postmaster left behind. A
// backend notices its postmaster's death only when it next waits, so one
// busy with a long statement runs on, attached to the old shared memory,
// and a new server refuses to start beside it ("pre-existing shared memory
// block is still in use"). They are the cluster's processes (running
// postgres, working directory the cluster's), so ending them is what the
// postmaster itself does when a child crashes. Without procfs it does
// nothing and the start's own error says what is left.
func (c *Cluster) killOrphans() {
	orphans := c.serverProcesses()
	if len(orphans) == 0 {
		return
	}
	c.log.Warn("ending server processes the dead PostgreSQL left behind", "pids", orphans)
	for _, pid := range orphans {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(c.serverProcesses()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
}

// serverProcesses lists the live postgres processes working in the
// cluster's directory.
func (c *Cluster) serverProcesses() []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	dir := c.dir
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		exe, err := os.Readlink("/proc/" + e.Name() + "/exe")
		if err != nil || filepath.Base(strings.TrimSuffix(exe, " (deleted)")) != "postgres" {
			continue
		}
		if cwd, err := os.Readlink("/proc/" + e.Name() + "/cwd"); err != nil || cwd != dir {
			continue
		}
		if processState(pid) == procPostgres {
			pids = append(pids, pid)
		}
	}
	return pids
}
