package datadir_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/datadir"
)

func TestOneOwner(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if datadir.Owned(dir) {
		t.Fatal("a directory that does not exist is owned")
	}
	l, err := datadir.Acquire(dir, "up")
	if err != nil {
		t.Fatal(err)
	}
	if !datadir.Owned(dir) {
		t.Fatal("not owned while locked")
	}
	_, err = datadir.Acquire(dir, "broker")
	var le *datadir.LockedError
	if !errors.As(err, &le) || le.PID != os.Getpid() || le.Command != "up" || le.Since.IsZero() {
		t.Fatalf("second Acquire = %v, want a LockedError naming this process as up", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "stockpipe up (pid ") || !strings.Contains(msg, "--data-dir") || strings.Contains(msg, "\n") {
		t.Fatalf("message %q: want one line naming the owner and the fix", msg)
	}
	if _, err := datadir.ReadEndpoints(dir); !errors.Is(err, datadir.ErrNotRunning) {
		t.Fatalf("endpoints before they were written: %v", err)
	}
	want := datadir.Endpoints{PID: os.Getpid(), Command: "up", DatabaseURL: "postgres://stockpipe@127.0.0.1:54329/stockpipe",
		Brokers: []string{"127.0.0.1:9092"}, Dashboard: "http://127.0.0.1:8050/", StartedAt: time.Now().UTC().Truncate(time.Second)}
	if err := l.WriteEndpoints(want); err != nil {
		t.Fatal(err)
	}
	got, err := datadir.ReadEndpoints(dir)
	if err != nil || got.DatabaseURL != want.DatabaseURL || got.Dashboard != want.Dashboard || len(got.Brokers) != 1 || !got.StartedAt.Equal(want.StartedAt) {
		t.Fatalf("ReadEndpoints = %+v, %v", got, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "endpoints.json")); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("endpoints file readable by others: %v %v", fi.Mode(), err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if datadir.Owned(dir) {
		t.Fatal("owned after Release")
	}
	// A crashed owner leaves its endpoints behind: they are not believed.
	l2, err := datadir.Acquire(dir, "up")
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	if err := l2.WriteEndpoints(want); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "endpoints.json"))
	l2.Release()
	if err := os.WriteFile(filepath.Join(dir, "endpoints.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := datadir.ReadEndpoints(dir); !errors.Is(err, datadir.ErrNotRunning) {
		t.Fatalf("endpoints of a gone owner: %v, want ErrNotRunning", err)
	}
}
