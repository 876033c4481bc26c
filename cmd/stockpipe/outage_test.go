package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/stockpipe/stockpipe/internal/pgembed"
	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
)

const outageRetryLine = "PostgreSQL is unreachable; retrying until it answers"

// TestOutageDatabaseDownAtStart starts commands while their PostgreSQL is
// down: each must say once what it cannot reach and keep trying, then carry
// on by itself when the server comes up.
func TestOutageDatabaseDownAtStart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL cluster and several processes")
	}
	// A cluster of its own: stopping the package's shared one would take the
	// database away from whatever else runs in this binary.
	pg := outageCluster(t)
	dbURL := pg.URL()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	port := u.Port()
	// The cluster trusts local connections and ignores the password; it is
	// there to check that no message shows it.
	u.User = url.UserPassword("stockpipe", "hunter2")
	dbURL = u.String()

	// downThen stops the cluster, starts the command, waits for its retry
	// line, checks it is still running, and starts the cluster again.
	downThen := func(t *testing.T, args ...string) *outageProc {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := pg.Stop(ctx); err != nil {
			t.Fatalf("stopping PostgreSQL: %v", err)
		}
		p := startOutageProc(t, args...)
		p.awaitOutput(t, p.stderr, "the retry line", 30*time.Second, func(s string) bool { return strings.Contains(s, outageRetryLine) })
		line := outageLineWith(p.stderr.String(), outageRetryLine)
		for _, want := range []string{"address=127.0.0.1:" + port, `url="postgres://stockpipe:xxxxx@127.0.0.1:` + port + `/stockpipe`, "connection refused", "retry_in="} {
			if !strings.Contains(line, want) {
				t.Errorf("retry line lacks %q: %s", want, line)
			}
		}
		if strings.Contains(p.stderr.String(), "hunter2") {
			t.Errorf("the password shows on stderr:\n%s", p.stderr)
		}
		select {
		case <-p.exited:
			t.Fatalf("%v exited while PostgreSQL was down, want it to wait:\n%s", args, p.stderr)
		default:
		}
		if err := pg.Restart(ctx); err != nil {
			t.Fatalf("starting PostgreSQL again: %v", err)
		}
		return p
	}

	t.Run("migrate", func(t *testing.T) {
		p := downThen(t, "migrate", "--database-url", dbURL)
		code := p.await(t, time.Minute)
		if code != 0 || !strings.Contains(p.stdout.String(), "schema is up to date") {
			t.Fatalf("migrate: exit %d, stdout %q, stderr:\n%s", code, p.stdout, p.stderr)
		}
		outageCheckOneRetryLine(t, p)
	})

	t.Run("serve", func(t *testing.T) {
		addr := freeAddr(t)
		p := downThen(t, "serve", "--database-url", dbURL, "--http", addr)
		p.awaitOutput(t, p.stdout, "the dashboard to listen", time.Minute, func(s string) bool { return strings.Contains(s, "dashboard: http://") })
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/readyz: %d %s", resp.StatusCode, body)
		}
		outageCheckOneRetryLine(t, p)
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := p.await(t, 30*time.Second); code != 0 {
			t.Fatalf("serve exited %d after SIGTERM:\n%s", code, p.stderr)
		}
	})
}

// outageCheckOneRetryLine: a wait of seconds is announced once, not per attempt,
// and the recovery is logged.
func outageCheckOneRetryLine(t *testing.T, p *outageProc) {
	t.Helper()
	errOut := p.stderr.String()
	if n := strings.Count(errOut, outageRetryLine); n != 1 {
		t.Errorf("the retry line appears %d times, want once:\n%s", n, errOut)
	}
	if !strings.Contains(errOut, "PostgreSQL answers; continuing") {
		t.Errorf("no line saying PostgreSQL answered:\n%s", errOut)
	}
}

// TestOutageWrongCredentialsFailFast: a refusal that waiting cannot cure
// ends the command at once with one line naming the fix, and the password
// never appears.
func TestOutageWrongCredentialsFailFast(t *testing.T) {
	admin, err := url.Parse(pgtest.Cluster(t).AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	noDB := *admin
	noDB.Path = "/no_such_database"
	noRole := *admin
	noRole.User = url.UserPassword("no_such_role", "hunter2")
	fake, attempts := outageRejectingServer(t)

	for _, tc := range []struct {
		name string
		url  string
		want []string
	}{
		{"wrong password", "postgres://stockpipe:hunter2@" + fake + "/stockpipe?sslmode=disable",
			[]string{`PostgreSQL at ` + fake + ` rejected the password for user "stockpipe" (SQLSTATE 28P01)`, "fix the password in --database-url"}},
		{"unknown role", noRole.String(),
			[]string{`refused user "no_such_role" (SQLSTATE 28000`, "fix the user in --database-url"}},
		{"missing database", noDB.String(),
			[]string{`database "no_such_database" does not exist on PostgreSQL at ` + admin.Host + ` (SQLSTATE 3D000)`, `CREATE DATABASE "no_such_database"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			type result struct {
				code           int
				stdout, stderr string
			}
			done := make(chan result, 1)
			go func() {
				var out, errb bytes.Buffer
				code := run([]string{"migrate", "--database-url", tc.url}, &out, &errb)
				done <- result{code, out.String(), errb.String()}
			}()
			var r result
			select {
			case r = <-done:
			case <-time.After(20 * time.Second):
				// Retrying would go on until interrupted; there is no
				// interrupting run from here, so this is the verdict.
				t.Fatal("migrate is still running: it retries a refusal that waiting cannot cure")
			}
			line := strings.TrimSpace(r.stderr)
			if r.code != 1 || strings.Count(line, "\n") != 0 {
				t.Fatalf("exit %d, want 1 with one line on stderr; stderr:\n%s", r.code, r.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("stderr lacks %q:\n%s", w, line)
				}
			}
			if strings.Contains(line, "hunter2") || strings.Contains(line, "retrying") {
				t.Errorf("stderr shows the password or talks of retrying:\n%s", line)
			}
		})
	}
	// One connection, or two if the client retried without TLS: never a
	// retry loop.
	if n := attempts.Load(); n < 1 || n > 2 {
		t.Errorf("the rejecting server saw %d connections, want 1 or 2", n)
	}
}

// outageRejectingServer speaks just enough of the PostgreSQL protocol to ask for a
// password and reject it, as a server with password authentication does; the
// test cluster trusts every local connection and cannot. It returns its
// host:port and a count of connections.
func outageRejectingServer(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var attempts atomic.Int64
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			attempts.Add(1)
			wg.Go(func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
				be := pgproto3.NewBackend(conn, conn)
				for {
					msg, err := be.ReceiveStartupMessage()
					if err != nil {
						return
					}
					switch msg.(type) {
					case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
						if _, err := conn.Write([]byte("N")); err != nil {
							return
						}
						continue
					}
					break
				}
				be.Send(&pgproto3.AuthenticationCleartextPassword{})
				if be.Flush() != nil || be.SetAuthType(pgproto3.AuthTypeCleartextPassword) != nil {
					return
				}
				if _, err := be.Receive(); err != nil {
					return
				}
				be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "28P01",
					Message: `password authentication failed for user "stockpipe"`})
				_ = be.Flush()
			})
		}
	})
	return ln.Addr().String(), &attempts
}

// outageCluster starts a PostgreSQL cluster that only this test uses, so
// that it may stop it; it is stopped and removed when the test ends.
func outageCluster(t *testing.T) *pgembed.Cluster {
	t.Helper()
	root, err := os.MkdirTemp("", "stockpipe-outage-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	// Run as root, the server runs as an unprivileged user, which must be
	// able to enter the directory.
	if err := os.Chmod(root, 0o711); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := pgembed.Start(ctx, pgembed.Config{Dir: filepath.Join(root, "postgres"), Ephemeral: true})
	if err != nil {
		t.Fatalf("starting a private PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := pg.Stop(ctx); err != nil {
			t.Errorf("stopping the private PostgreSQL: %v", err)
		}
	})
	return pg
}

// outageProc is a stockpipe subprocess whose output can be read while it runs.
type outageProc struct {
	cmd            *exec.Cmd
	stdout, stderr *outageBuffer
	exited         chan struct{} // closed once the process has exited
	code           int           // valid after exited is closed
}

func startOutageProc(t *testing.T, args ...string) *outageProc {
	t.Helper()
	p := &outageProc{cmd: exec.Command(os.Args[0], args...), stdout: newOutageBuffer(), stderr: newOutageBuffer(), exited: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), asCLI+"=1")
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := p.cmd.Wait()
		p.code = 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.code = ee.ExitCode()
		} else if err != nil {
			p.code = -1
		}
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	})
	return p
}

// await waits for the process to exit and returns its exit code.
func (p *outageProc) await(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.code
	case <-time.After(timeout):
		t.Fatalf("%v still running after %v; stderr:\n%s", p.cmd.Args[1:], timeout, p.stderr)
		return 0
	}
}

// outageBuffer is an output buffer safe to read while a process writes it,
// which wakes waiters on every write.
type outageBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newOutageBuffer() *outageBuffer { return &outageBuffer{changed: make(chan struct{})} }

func (b *outageBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.changed)
	b.changed = make(chan struct{})
	return b.buf.Write(p)
}

func (b *outageBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// awaitOutput waits until cond holds for the contents of b, failing if the
// process exits first.
func (p *outageProc) awaitOutput(t *testing.T, b *outageBuffer, what string, timeout time.Duration, cond func(string) bool) {
	t.Helper()
	if !b.await(timeout, p.exited, cond) {
		t.Fatalf("%v: no %s; stdout:\n%s\nstderr:\n%s", p.cmd.Args[1:], what, p.stdout, p.stderr)
	}
}

// await waits until cond holds for the buffer's contents and reports
// whether it does; it gives up after timeout, or once exited is closed
// (the writer is gone) and cond still fails.
func (b *outageBuffer) await(timeout time.Duration, exited <-chan struct{}, cond func(string) bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		s, changed := b.buf.String(), b.changed
		b.mu.Unlock()
		if cond(s) {
			return true
		}
		select {
		case <-changed:
		case <-exited:
			// Wait returns after the output is copied: one last look.
			return cond(b.String())
		case <-deadline.C:
			return false
		}
	}
}

func outageLineWith(s, substr string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return fmt.Sprintf("(no line with %q)", substr)
}

// TestOutageBoundedWait: with a bound, the wait for an unreachable server
// ends with one line saying for how long it waited and what failed; an
// interrupt ends it too.
func TestOutageBoundedWait(t *testing.T) {
	dead := "postgres://stockpipe:hunter2@" + freeAddr(t) + "/stockpipe?sslmode=disable"
	for _, tc := range []struct {
		name   string
		wait   time.Duration
		cancel bool
		want   string
	}{
		{"bound", 1500 * time.Millisecond, false, "did not answer within 1.5s (last error: dial tcp "},
		{"interrupt", 0, true, "stopped while waiting for PostgreSQL at 127.0.0.1:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			logs := newOutageBuffer()
			rc := &runCtx{ctx: ctx, log: slog.New(slog.NewTextHandler(logs, nil)), stdout: io.Discard, stderr: io.Discard}
			done := make(chan error, 1)
			go func() {
				pool, err := openDBWithin(rc, dead, 1, tc.wait)
				if pool != nil {
					pool.Close()
				}
				done <- err
			}()
			if tc.cancel {
				if !logs.await(30*time.Second, nil, func(s string) bool { return strings.Contains(s, outageRetryLine) }) {
					t.Fatalf("no retry line; logged:\n%s", logs)
				}
				cancel()
			}
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "hunter2") ||
					strings.Contains(err.Error(), "\n") {
					t.Fatalf("openDBWithin: %v; want one line containing %q", err, tc.want)
				}
				if tc.cancel && !errors.Is(err, context.Canceled) {
					t.Errorf("%v does not wrap context.Canceled", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("openDBWithin is still waiting")
			}
			if n := strings.Count(logs.String(), outageRetryLine); n != 1 {
				t.Errorf("the retry line appears %d times, want once:\n%s", n, logs)
			}
		})
	}
}
