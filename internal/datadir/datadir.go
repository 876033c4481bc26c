// Package datadir is what a stockpipe data directory holds besides the
// broker's and PostgreSQL's own files: the lock that gives the directory one
// owner, and the addresses that owner serves, for other commands to find.
//
// The lock is an advisory flock(2) on DIR/stockpipe.lock, so it ends with
// its process however that process ends (a crash, SIGKILL): there is no
// stale lock to clean up, and a lock that can be taken means nobody owns
// the directory.
package datadir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	lockFile      = "stockpipe.lock"
	endpointsFile = "endpoints.json"
)

// LockedError is returned by Acquire when another process owns the
// directory.
type LockedError struct {
	Dir     string
	PID     int       // the owner's process id, 0 if it could not be read
	Command string    // the owner's subcommand, e.g. "up"
	Since   time.Time // when the owner took the lock, zero if unknown
}

func (e *LockedError) Error() string {
	who := "another stockpipe"
	if e.Command != "" {
		who = "stockpipe " + e.Command
	}
	if e.PID > 0 {
		who += " (pid " + strconv.Itoa(e.PID)
		if !e.Since.IsZero() {
			who += ", since " + e.Since.Local().Format("15:04:05")
		}
		who += ")"
	}
	return fmt.Sprintf("data directory %s is in use by %s: stop that one first, or pass --data-dir with another directory to run a second pipeline", e.Dir, who)
}

// Lock is the ownership of a data directory, held until Release or the end
// of the process.
type Lock struct {
	dir string
	f   *os.File
}

// Acquire creates dir if needed and takes its lock for command, or returns
// a *LockedError naming the owner. It touches nothing else in dir.
func Acquire(dir, command string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating data directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the lock of data directory %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, lockedBy(dir)
		}
		return nil, fmt.Errorf("locking data directory %s: %w", dir, err)
	}
	// The owner's identity, for the message a second process prints.
	info := fmt.Sprintf("%d\n%s\n%s\n", os.Getpid(), command, time.Now().UTC().Format(time.RFC3339))
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(info), 0)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("writing the lock of data directory %s: %w", dir, err)
		}
	}
	return &Lock{dir: dir, f: f}, nil
}

// lockedBy reads who holds dir's lock.
func lockedBy(dir string) *LockedError {
	e := &LockedError{Dir: dir}
	b, err := os.ReadFile(filepath.Join(dir, lockFile))
	if err != nil {
		return e
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) > 0 {
		e.PID, _ = strconv.Atoi(strings.TrimSpace(lines[0]))
	}
	if len(lines) > 1 {
		e.Command = strings.TrimSpace(lines[1])
	}
	if len(lines) > 2 {
		e.Since, _ = time.Parse(time.RFC3339, strings.TrimSpace(lines[2]))
	}
	return e
}

// Dir returns the locked directory.
func (l *Lock) Dir() string { return l.dir }

// Release removes the endpoints file and gives up the lock.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := os.Remove(filepath.Join(l.dir, endpointsFile))
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	// Closing the descriptor releases the flock.
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	return err
}

// Endpoints are the addresses the owner of a data directory serves.
type Endpoints struct {
	PID         int       `json:"pid"`
	Command     string    `json:"command"`
	DatabaseURL string    `json:"database_url,omitempty"`
	Brokers     []string  `json:"brokers,omitempty"`
	Dashboard   string    `json:"dashboard,omitempty"`
	StartedAt   time.Time `json:"started_at"`
}

// WriteEndpoints records what the owner serves, atomically, readable by
// the owner's user only: a database URL may hold a password.
func (l *Lock) WriteEndpoints(e Endpoints) error {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the endpoints of %s: %w", l.dir, err)
	}
	tmp, err := os.CreateTemp(l.dir, endpointsFile+".*")
	if err != nil {
		return fmt.Errorf("writing the endpoints of %s: %w", l.dir, err)
	}
	_, werr := tmp.Write(append(b, '\n'))
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("writing the endpoints of %s: %w", l.dir, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(l.dir, endpointsFile)); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("writing the endpoints of %s: %w", l.dir, err)
	}
	return nil
}

// ErrNotRunning is returned by ReadEndpoints when no process owns the
// directory or its owner has not published its endpoints.
var ErrNotRunning = errors.New("no stockpipe is running there")

// ReadEndpoints returns what the owner of dir serves. It returns an error
// wrapping ErrNotRunning if nothing owns dir (the lock is free), even if a
// crashed owner left its endpoints file behind.
func ReadEndpoints(dir string) (Endpoints, error) {
	var e Endpoints
	if !Owned(dir) {
		return e, fmt.Errorf("%s: %w", dir, ErrNotRunning)
	}
	b, err := os.ReadFile(filepath.Join(dir, endpointsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return e, fmt.Errorf("%s: its owner has not published its addresses (yet): %w", dir, ErrNotRunning)
	}
	if err != nil {
		return e, fmt.Errorf("reading the endpoints of %s: %w", dir, err)
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("reading the endpoints of %s: %w", dir, err)
	}
	return e, nil
}

// Owned reports whether a live process holds dir's lock.
func Owned(dir string) bool {
	f, err := os.Open(filepath.Join(dir, lockFile))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	// Taken: nobody holds it. Give it back at once.
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}
