//go:build linux

package job

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestOpenReplayFile checks what the backfill task will open: below the
// replay directory only, whatever way a name tries to lead out; never a
// named pipe (which would block the task); and with no replay directory,
// a local file as named.
func TestOpenReplayFile(t *testing.T) {
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "replay")
	outside := filepath.Join(tmp, "outside")
	for _, d := range []string{dir, filepath.Join(dir, "sub"), outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	secret := filepath.Join(outside, "secret.csv")
	for _, f := range []string{filepath.Join(dir, "good.csv"), filepath.Join(dir, "sub", "deep.csv"), secret} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(secret, filepath.Join(dir, "link.csv")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "sub", "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("good.csv", filepath.Join(dir, "inner.csv")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "pipe.csv"), 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if _, err := syscall.InotifyAddWatch(fd, secret, syscall.IN_OPEN); err != nil {
		t.Fatal(err)
	}

	for _, name := range []string{"good.csv", "sub/deep.csv", filepath.Join(dir, "good.csv"), "inner.csv", "./sub/../good.csv"} {
		f, err := OpenReplayFile(dir, name)
		if err != nil {
			t.Errorf("%q below the replay directory: %v", name, err)
			continue
		}
		f.Close()
	}
	for _, name := range []string{secret, "../outside/secret.csv", "link.csv", "sub/escape/secret.csv", "sub/../../outside/secret.csv", "/etc/passwd"} {
		if _, err := OpenReplayFile(dir, name); !errors.Is(err, ErrOutsideReplayDir) {
			t.Errorf("%q: %v, want ErrOutsideReplayDir", name, err)
		}
	}
	if n, err := syscall.Read(fd, make([]byte, 4096)); err != syscall.EAGAIN {
		t.Fatalf("the file outside was opened (%d bytes of events, %v)", n, err)
	}
	done := make(chan error, 1)
	go func() { _, err := OpenReplayFile(dir, "pipe.csv"); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a named pipe was opened as a replay file")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("opening a named pipe blocked")
	}
	// No replay directory: a person at the scheduler's command line may
	// replay any regular file.
	f, err := OpenReplayFile("", secret)
	if err != nil {
		t.Fatalf("no replay directory: %v", err)
	}
	f.Close()
}
