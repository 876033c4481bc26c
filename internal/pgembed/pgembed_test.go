package pgembed_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stockpipe/stockpipe/internal/pgembed"
	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
)

// childDirEnv makes the test binary, re-executed by
// TestEphemeralServerDiesWithItsProcess, start an ephemeral cluster in the
// named directory, print its URL and wait to be killed.
const childDirEnv = "PGEMBED_TEST_CHILD_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childDirEnv); dir != "" {
		os.Exit(runChild(dir))
	}
	pgtest.Main(m)
}

func runChild(dir string) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgembed.Start(ctx, pgembed.Config{Dir: dir, Ephemeral: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(c.URL())
	// Block until killed; the parent holds stdin open.
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// clusterDir returns a directory for a cluster that the server's OS user
// can reach: t.TempDir's parent is private to root.
func clusterDir(t *testing.T) string {
	t.Helper()
	tmp := t.TempDir()
	if err := os.Chmod(filepath.Dir(tmp), 0o711); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(tmp, "postgres")
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func start(t *testing.T, ctx context.Context, cfg pgembed.Config) *pgembed.Cluster {
	t.Helper()
	c, err := pgembed.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return c
}

func connect(t *testing.T, ctx context.Context, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func exec1(t *testing.T, ctx context.Context, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func count(t *testing.T, ctx context.Context, url, table string) int {
	t.Helper()
	conn := connect(t, ctx, url)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

func assertDown(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, url); err == nil {
		conn.Close(ctx)
		t.Fatalf("connected to %s, want the server down", url)
	}
}

func portOf(t *testing.T, url string) int {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	return int(cfg.Port)
}

// Durable settings on purpose: this is the configuration the product runs.
func TestStartStopStartKeepsData(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := clusterDir(t)

	c := start(t, ctx, pgembed.Config{Dir: dir})
	if !strings.HasPrefix(c.URL(), "postgres://stockpipe@127.0.0.1:") || !strings.HasSuffix(c.URL(), "/stockpipe?sslmode=disable") {
		t.Fatalf("URL() = %q", c.URL())
	}
	if want := strings.Replace(c.URL(), "/stockpipe?", "/postgres?", 1); c.AdminURL() != want {
		t.Fatalf("AdminURL() = %q, want %q", c.AdminURL(), want)
	}
	conn := connect(t, ctx, c.URL())
	exec1(t, ctx, conn, "CREATE TABLE ticks (symbol text, price numeric)")
	exec1(t, ctx, conn, "INSERT INTO ticks VALUES ('ACME', 12.5), ('INIT', 3)")
	var encoding string
	if err := conn.QueryRow(ctx, "SHOW server_encoding").Scan(&encoding); err != nil || encoding != "UTF8" {
		t.Fatalf("server_encoding = %q, %v; want UTF8", encoding, err)
	}
	conn.Close(ctx)

	if err := c.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	assertDown(t, ctx, c.URL())
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}

	again := start(t, ctx, pgembed.Config{Dir: dir})
	if again.URL() != c.URL() {
		t.Errorf("restarted on %s, want the recorded port again: %s", again.URL(), c.URL())
	}
	if n := count(t, ctx, again.URL(), "ticks"); n != 2 {
		t.Fatalf("after Stop and Start: %d rows, want 2", n)
	}

	if err := again.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := again.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if n := count(t, ctx, again.URL(), "ticks"); n != 2 {
		t.Fatalf("after Restart: %d rows, want 2", n)
	}
}

func TestStartAdoptsRunningServer(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := clusterDir(t)
	first := start(t, ctx, pgembed.Config{Dir: dir, Ephemeral: true})
	pid := postmasterPID(t, dir)

	second := start(t, ctx, pgembed.Config{Dir: dir, Ephemeral: true})
	if second.URL() != first.URL() {
		t.Fatalf("adopting cluster has URL %s, want %s", second.URL(), first.URL())
	}
	if got := postmasterPID(t, dir); got != pid {
		t.Fatalf("server PID changed from %d to %d: it was restarted, not adopted", pid, got)
	}
	explicit := start(t, ctx, pgembed.Config{Dir: dir, Ephemeral: true, Port: portOf(t, first.URL())})
	if got := postmasterPID(t, dir); got != pid {
		t.Fatalf("server PID changed from %d to %d when adopted with its own port", pid, got)
	}
	if n := count(t, ctx, explicit.URL(), "pg_database WHERE datname = 'stockpipe'"); n != 1 {
		t.Fatalf("%d databases named stockpipe, want 1", n)
	}

	if err := second.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	assertDown(t, ctx, first.URL())
	// The server is gone from under first; stopping it is still fine.
	if err := first.Stop(ctx); err != nil {
		t.Fatalf("Stop of a cluster stopped elsewhere: %v", err)
	}
}

// A crash (every server process SIGKILLed at once, like a power cut) leaves
// postmaster.pid behind; the next Start must recover the cluster.
func TestStartRecoversFromCrash(t *testing.T) {
	if _, err := os.Stat("/proc/self/cwd"); err != nil {
		t.Skip("finding the server's processes needs /proc")
	}
	t.Parallel()
	ctx := testContext(t)
	dir := clusterDir(t)
	c := start(t, ctx, pgembed.Config{Dir: dir})
	conn := connect(t, ctx, c.URL())
	exec1(t, ctx, conn, "CREATE TABLE ticks AS SELECT g AS n FROM generate_series(1, 1000) g")
	conn.Close(ctx)

	crash(t, ctx, dir)
	if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); err != nil {
		t.Fatalf("want a stale postmaster.pid after the crash: %v", err)
	}
	assertDown(t, ctx, c.URL())

	again := start(t, ctx, pgembed.Config{Dir: dir})
	if n := count(t, ctx, again.URL(), "ticks"); n != 1000 {
		t.Fatalf("after crash recovery: %d rows, want 1000", n)
	}
}

// crash SIGKILLs every process whose working directory is the cluster (all
// of a server's processes run there) and waits until none is left running.
func crash(t *testing.T, ctx context.Context, dir string) {
	t.Helper()
	postmaster := postmasterPID(t, dir)
	// The postmaster first, so it can't fork replacements.
	if err := syscall.Kill(postmaster, syscall.SIGKILL); err != nil {
		t.Fatalf("kill postmaster: %v", err)
	}
	for {
		live := serverProcesses(t, dir)
		if len(live) == 0 {
			return
		}
		for _, pid := range live {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("server processes %v still running after SIGKILL", live)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// serverProcesses lists the live (not zombie) processes running in dir.
func serverProcesses(t *testing.T, dir string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil || cwd != dir {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

func postmasterPID(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	return pid
}

func TestStartPortChoice(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := clusterDir(t)
	c := start(t, ctx, pgembed.Config{Dir: dir, Ephemeral: true})
	recorded := portOf(t, c.URL())
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}

	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(recorded)))
	if err != nil {
		t.Fatalf("occupy port %d: %v", recorded, err)
	}
	defer l.Close()

	_, err = pgembed.Start(ctx, pgembed.Config{Dir: dir, Ephemeral: true, Port: recorded})
	t.Log(err)
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("Start on a taken explicit port: err = %v, want one saying the port is in use", err)
	}
	if err := c.Restart(ctx); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("Restart with its port taken: err = %v, want one saying the port is in use", err)
	}

	moved := start(t, ctx, pgembed.Config{Dir: dir, Ephemeral: true})
	if p := portOf(t, moved.URL()); p == recorded {
		t.Fatalf("started on the taken port %d", p)
	}
	if n := count(t, ctx, moved.URL(), "pg_database WHERE datname = 'stockpipe'"); n != 1 {
		t.Fatalf("%d databases named stockpipe, want 1", n)
	}
}

func TestStartWithoutBinaries(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	_, err := pgembed.Start(ctx, pgembed.Config{Dir: clusterDir(t), BinDir: t.TempDir()})
	if !errors.Is(err, pgembed.ErrNoBinaries) {
		t.Fatalf("err = %v, want ErrNoBinaries", err)
	}
	t.Log(err)
	msg := err.Error()
	if !strings.Contains(msg, "--database-url") || !strings.Contains(msg, "install") || strings.Contains(msg, "\n") {
		t.Fatalf("error %q should be one line telling how to install PostgreSQL or use --database-url", msg)
	}
}

func TestStartRejectsUnreachableDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root hands the server to another OS user")
	}
	t.Parallel()
	ctx := testContext(t)
	tmp := t.TempDir() // its parent is 0700 and owned by root
	private := filepath.Dir(tmp)
	dir := filepath.Join(tmp, "postgres")
	_, err := pgembed.Start(ctx, pgembed.Config{Dir: dir})
	if err == nil {
		t.Fatal("Start succeeded in a directory the server's user cannot reach")
	}
	t.Log(err)
	msg := err.Error()
	if !strings.Contains(msg, private) || !strings.Contains(msg, "chmod o+x") || strings.Contains(msg, "\n") {
		t.Fatalf("error %q should be one line naming %s and the fix", msg, private)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("cluster directory was created anyway: %v", err)
	}
}

func TestStartRejectsForeignDir(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := clusterDir(t)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := pgembed.Start(ctx, pgembed.Config{Dir: dir})
	t.Log(err)
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("err = %v, want a refusal to initialise a non-empty directory", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "notes.txt")); err != nil || string(b) != "mine" {
		t.Fatalf("existing file disturbed: %q, %v", b, err)
	}
}

// An ephemeral (test) server must not outlive a test binary that is killed,
// e.g. by a timeout.
func TestEphemeralServerDiesWithItsProcess(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := clusterDir(t)

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childDirEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Should the watchdog fail, don't leak the server.
		if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); err == nil {
			if c, err := pgembed.Start(context.Background(), pgembed.Config{Dir: dir}); err == nil {
				_ = c.Stop(context.Background())
			}
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("child did not report a URL: %v", err)
	}
	url := strings.TrimSpace(line)
	conn := connect(t, ctx, url)
	exec1(t, ctx, conn, "SELECT 1")

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	// Await the watchdog's shutdown: the postmaster removes its pid file
	// as it exits.
	for {
		_, err := os.Stat(filepath.Join(dir, "postmaster.pid"))
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("server still running after its process was killed (postmaster.pid: %v)", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	assertDown(t, ctx, url)
}

func TestPgtestGivesEachTestItsOwnDatabase(t *testing.T) {
	ctx := testContext(t)
	var names []string
	for _, sub := range []string{"first", "second"} {
		t.Run(sub, func(t *testing.T) {
			conn := connect(t, ctx, pgtest.New(t))
			var name string
			if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
				t.Fatal(err)
			}
			var tables int
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 'mine'").Scan(&tables); err != nil || tables != 0 {
				t.Fatalf("fresh database already has table mine (%d, %v): databases are shared", tables, err)
			}
			exec1(t, ctx, conn, "CREATE TABLE mine (x int)")
			names = append(names, name)
		})
	}
	if len(names) != 2 || names[0] == names[1] {
		t.Fatalf("databases %v, want two different ones", names)
	}
	admin := connect(t, ctx, pgtest.Cluster(t).AdminURL())
	var left int
	if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = ANY($1)", names).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d of the databases %v outlived their tests", left, names)
	}
}

// TestPortFallback asks for a port another program holds: with
// PortFallback the server starts on another port and says so; without it,
// the start fails.
func TestPortFallback(t *testing.T) {
	ctx := testContext(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	if _, err := pgembed.Start(ctx, pgembed.Config{Dir: clusterDir(t), Port: taken}); err == nil {
		t.Fatal("a taken port without fallback was accepted")
	}
	c := start(t, ctx, pgembed.Config{Dir: clusterDir(t), Port: taken, PortFallback: true})
	if c.Port() == taken || c.Port() == 0 {
		t.Fatalf("running on port %d, the taken one was %d", c.Port(), taken)
	}
	conn, err := pgx.Connect(ctx, c.URL())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
}

// TestSuperviseRestartsADeadServer kills the server under a supervised
// cluster: it must be running again, on the same port, by itself.
func TestSuperviseRestartsADeadServer(t *testing.T) {
	ctx := testContext(t)
	dir := clusterDir(t)
	c := start(t, ctx, pgembed.Config{Dir: dir})
	sctx, cancel := context.WithCancel(ctx)
	supervised := make(chan error, 1)
	go func() { supervised <- c.Supervise(sctx, 100*time.Millisecond) }()
	port := c.Port()
	pid := postmasterPID(t, dir)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(45 * time.Second)
	for {
		conn, err := pgx.Connect(ctx, c.URL())
		if err == nil {
			var one int
			err = conn.QueryRow(ctx, "SELECT 1").Scan(&one)
			conn.Close(ctx)
			nb, _ := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
			if err == nil && !strings.HasPrefix(string(nb), strconv.Itoa(pid)+"\n") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("PostgreSQL not back 45 s after it was killed: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if c.Port() != port {
		t.Fatalf("back on port %d, was %d", c.Port(), port)
	}
	cancel()
	if err := <-supervised; err != nil {
		t.Fatalf("Supervise: %v", err)
	}
}

// TestSuperviseKeepsThePortAndEndsOrphans kills the server while a backend
// is busy with a long statement (so it outlives its postmaster, attached to
// the old shared memory) and holds the port for a moment after the death,
// as a closing socket does: even with PortFallback, the server must come
// back on its own port, since every pool holds URLs with that port.
func TestSuperviseKeepsThePortAndEndsOrphans(t *testing.T) {
	ctx := testContext(t)
	dir := clusterDir(t)
	c := start(t, ctx, pgembed.Config{Dir: dir, PortFallback: true})
	port := c.Port()
	conn, err := pgx.Connect(ctx, c.URL())
	if err != nil {
		t.Fatal(err)
	}
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatal(err)
	}
	busy := make(chan error, 1)
	go func() {
		// A statement that never waits on a latch, so the backend does not
		// notice the postmaster's death by itself.
		_, err := conn.Exec(context.WithoutCancel(ctx), "SELECT count(*) FROM generate_series(1, 10000000000)")
		busy <- err
	}()
	waitUntil(t, "the statement to run", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", backend))
		return err == nil && bytes.Contains(b, []byte(") R "))
	})
	pid := postmasterPID(t, dir)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Take the port the moment the dead server lets go of it, and hold it
	// for longer than Supervise's interval.
	var hold net.Listener
	waitUntil(t, "the port to be released", func() bool {
		hold, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		return err == nil
	})
	sctx, cancel := context.WithCancel(ctx)
	supervised := make(chan error, 1)
	go func() { supervised <- c.Supervise(sctx, 100*time.Millisecond) }()
	time.Sleep(time.Second) // the hold is the condition under test, not a synchronisation
	hold.Close()
	waitUntil(t, "the server back", func() bool {
		conn, err := pgx.Connect(ctx, c.URL())
		if err != nil {
			return false
		}
		defer conn.Close(ctx)
		var one int
		return conn.QueryRow(ctx, "SELECT 1").Scan(&one) == nil
	})
	if c.Port() != port {
		t.Fatalf("back on port %d, was %d", c.Port(), port)
	}
	if err := <-busy; err == nil {
		t.Fatal("the orphaned statement finished instead of being ended")
	}
	// Gone, or a zombie nobody reaps (as in a container without an init).
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", backend)); err == nil && !bytes.Contains(b, []byte(") Z ")) {
		t.Fatalf("orphaned backend %d still running: %s", backend, b)
	}
	cancel()
	if err := <-supervised; err != nil {
		t.Fatalf("Supervise: %v", err)
	}
}

// waitUntil polls cond until it holds, failing the test after a minute.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
