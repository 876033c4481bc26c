// Package pgembed runs a private PostgreSQL server out of a directory the
// program owns, so stockpipe works on a machine that has the PostgreSQL
// binaries installed but no server set up, and so tests get a real database
// without any shared state.
//
// The server listens on 127.0.0.1 only (no unix socket, whose path length
// limit long temporary directories exceed) and trusts every loopback
// connection: it is a single-user development and test database, not a
// multi-tenant one.
//
// pg_ctl daemonises the server, so it outlives a program that is killed
// without calling Stop; the next Start on the same directory adopts it rather
// than failing.
package pgembed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNoBinaries means the PostgreSQL server programs could not be found. The
// message is meant to be shown to a user as is.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: " +
	"install PostgreSQL (apt-get install postgresql, or brew install postgresql@15) " +
	"or pass --database-url / set DATABASE_URL to use an existing server")

const (
	superuser = "stockpipe"
	database  = "stockpipe"

	portFile    = "pgembed.port"
	logFile     = "server.log"
	pidFile     = "postmaster.pid"
	versionFile = "PG_VERSION"

	// startAttempts bounds retries when an automatically chosen port is
	// taken between choosing it and the server binding it, which happens
	// when several clusters start at once.
	startAttempts = 5
	// maxLogSize is how large server.log may grow before a start moves it
	// aside, so a long-lived development cluster doesn't fill the disk.
	maxLogSize = 16 << 20
	// portRelease is how long a restart waits for the port of the server
	// it replaces to be released.
	portRelease = 30 * time.Second
)

// errPortInUse marks a start that failed only because the port was taken,
// which is worth retrying on another port.
var errPortInUse = errors.New("port already in use by another program")

// Config says where and how to run the cluster.
type Config struct {
	// Dir is the cluster directory (PGDATA), e.g. <data-dir>/postgres. It is
	// created and initialised if it holds no cluster yet; if it exists it
	// must be empty or hold a cluster. When running as root, every directory
	// above it must be traversable by the unprivileged OS user the server
	// runs as.
	Dir string
	// Port is the TCP port on 127.0.0.1. Zero reuses the port the cluster
	// last ran on if that is free, so URLs stay stable across restarts, and
	// otherwise picks a free one. A non-zero port that is taken is an error,
	// unless PortFallback is set.
	Port int
	// PortFallback makes a taken Port a warning rather than an error: the
	// server then runs on the port it last ran on, if free, or a free one.
	// A server already running on the directory is adopted on whatever
	// port it has.
	PortFallback bool
	// BinDir is the directory holding initdb, pg_ctl and postgres. Empty
	// means search pg_config --bindir, PATH and the usual install locations.
	// A non-empty BinDir is the only place looked at, so a wrong override
	// fails rather than silently running some other installation.
	BinDir string
	// Logger receives lifecycle events (init, start, adopt, stop). Nil
	// discards them; the server's own output always goes to server.log in
	// Dir.
	Logger *slog.Logger
	// Ephemeral is for tests only. It trades durability for speed (initdb
	// --no-sync; fsync, synchronous_commit and full_page_writes off), so an
	// OS crash can corrupt the cluster. It also stops the server when the
	// process that started it exits, even by SIGKILL, so a test binary
	// killed by a timeout leaves no server behind.
	Ephemeral bool
}

// Cluster is a running server started or adopted by Start. Its methods are
// safe for concurrent use.
type Cluster struct {
	dir       string
	bins      binaries
	owner     *osUser // nil: run the binaries as the current user
	log       *slog.Logger
	ephemeral bool
	fallback  bool // Config.PortFallback

	// port is read by URL without taking mu, which lifecycle methods hold
	// while they wait for the server.
	port atomic.Int32

	mu       sync.Mutex // serialises Stop and Restart
	running  bool
	died     bool // it died under Supervise and is not running again yet
	watchdog *watchdog
}

// Start makes sure a server is running on cfg.Dir and that its database
// "stockpipe" exists, initialising the cluster first if needed. A server
// already running on cfg.Dir (left by a process that died without Stop) is
// adopted, with whatever settings it was started with. Start returns once
// the server accepts connections; ctx bounds the whole operation, including
// crash recovery, which on a large cluster can take minutes.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Dir == "" {
		return nil, errors.New("start PostgreSQL: no cluster directory given")
	}
	if cfg.Port < 0 || cfg.Port > math.MaxUint16 {
		return nil, fmt.Errorf("start PostgreSQL: port %d out of range", cfg.Port)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("start PostgreSQL: resolve cluster directory %s: %w", cfg.Dir, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "pgembed", "dir", dir)

	owner, err := serverUser()
	if err != nil {
		return nil, err
	}
	bins, err := findBinaries(ctx, cfg.BinDir, dir)
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, bins: bins, owner: owner, log: log, ephemeral: cfg.Ephemeral, fallback: cfg.PortFallback}
	if err := c.prepare(ctx); err != nil {
		return nil, err
	}
	if err := c.launch(ctx, cfg.Port, c.fallback); err != nil {
		return nil, err
	}
	return c, nil
}

// URL is the connection URL of the "stockpipe" database.
func (c *Cluster) URL() string { return c.url(database) }

// AdminURL is the connection URL of the "postgres" maintenance database, for
// creating and dropping databases.
func (c *Cluster) AdminURL() string { return c.url("postgres") }

func (c *Cluster) url(db string) string {
	port := int(c.port.Load())
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Stop shuts the server down (fast mode: open sessions are disconnected,
// committed data is kept) and waits for it to exit. Stopping a stopped
// cluster, or one whose server another Cluster value already stopped, is
// not an error.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stop(ctx)
}

// Restart brings the server back on the same directory and port, stopping
// it first if it is running. Keeping the port means URLs handed out before
// stay valid, which is what tests that take the database away and bring it
// back need; if another program took the port meanwhile, Restart fails.
func (c *Cluster) Restart(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.stop(ctx); err != nil {
		return err
	}
	return c.relaunch(ctx)
}

// relaunch starts the server again on the port it had, which everything
// holding its URL still dials: it never falls back to another port. The
// old server's listening socket can outlive it by a moment (a killed
// process closes its files while exiting, after its command line is gone),
// so a taken port is waited for, up to portRelease, before giving up.
func (c *Cluster) relaunch(ctx context.Context) error {
	port := int(c.port.Load())
	deadline := time.Now().Add(portRelease)
	for !portFree(port) {
		if time.Now().After(deadline) {
			return fmt.Errorf("start PostgreSQL in %s again on 127.0.0.1:%d: %w for %s; stop the program holding it (e.g. find it with: ss -ltnp 'sport = :%d')",
				c.dir, port, errPortInUse, portRelease, port)
		}
		if err := pause(ctx); err != nil {
			return fmt.Errorf("start PostgreSQL in %s again: wait for port %d: %w", c.dir, port, err)
		}
	}
	return c.launch(ctx, port, false)
}

func (c *Cluster) stop(ctx context.Context) error {
	c.died = false
	if !c.running {
		return nil
	}
	if err := c.pgctlStop(ctx); err != nil {
		return err
	}
	c.running = false
	c.stopWatchdog()
	c.log.Info("PostgreSQL stopped", "port", c.port.Load())
	return nil
}

// Port returns the port the server listens on.
func (c *Cluster) Port() int { return int(c.port.Load()) }

// Supervise watches the server until ctx ends, checking every interval
// that it is still running, and starts it again on the same port if it has
// died (killed, out of memory): a pipeline must not run on with a dead
// database. It returns an error, and stops watching, if the server cannot
// be brought back after several attempts, or keeps dying. A server stopped
// by Stop is left stopped.
func (c *Cluster) Supervise(ctx context.Context, interval time.Duration) error {
	const (
		maxRevivals = 3
		window      = 5 * time.Minute
	)
	var revived []time.Time
	failures := 0
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		dead, err := c.revive(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			failures++
			c.log.Error("could not start PostgreSQL again", "attempt", failures, "err", err)
			if failures >= maxRevivals {
				return fmt.Errorf("PostgreSQL in %s died and could not be started again (%d attempts; see %s): %w",
					c.dir, failures, filepath.Join(c.dir, logFile), err)
			}
		case dead:
			failures = 0
			now := time.Now()
			revived = append(revived, now)
			for len(revived) > 0 && now.Sub(revived[0]) > window {
				revived = revived[1:]
			}
			if len(revived) > maxRevivals {
				return fmt.Errorf("PostgreSQL in %s keeps dying (%d restarts within %s; see %s)",
					c.dir, len(revived), window, filepath.Join(c.dir, logFile))
			}
		}
	}
}

// revive starts the server again if it was running and has died, and
// reports whether it had.
func (c *Cluster) revive(ctx context.Context) (dead bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running && !c.died {
		return false, nil
	}
	if c.running {
		pid, _, alive, err := c.runningServer()
		if err != nil || alive {
			return false, err
		}
		c.log.Error("PostgreSQL has exited unexpectedly; starting it again", "pid", pid, "port", c.port.Load())
		c.running, c.died = false, true
		c.stopWatchdog()
	}
	c.killOrphans()
	if err := c.relaunch(ctx); err != nil {
		return true, err
	}
	c.died = false
	return true, nil
}

// launch adopts the server running on the cluster, or starts one. want is
// the requested port, 0 for automatic; fallback allows another port when
// want is taken. c.mu is held or c is not yet shared.
func (c *Cluster) launch(ctx context.Context, want int, fallback bool) error {
	pid, port, alive, err := c.runningServer()
	if err != nil {
		return err
	}
	if alive {
		if want == 0 || want == port || fallback {
			return c.adopt(ctx, pid)
		}
		c.log.Info("restarting running PostgreSQL on the requested port", "pid", pid, "port", port, "want", want)
		if err := c.pgctlStop(ctx); err != nil {
			return err
		}
	}

	c.rotateLog()
	if want != 0 && fallback && !portFree(want) {
		c.log.Warn(fmt.Sprintf("port %d is taken by another program; PostgreSQL runs on another port (see the database URL printed at start)", want))
		want = 0
	}
	auto := want == 0
	port = want
	if auto {
		port = c.recordedPort()
		if port == 0 || !portFree(port) {
			if port, err = freePort(); err != nil {
				return err
			}
		}
	}
	for attempt := 1; ; attempt++ {
		err = c.pgctlStart(ctx, port)
		if err == nil {
			break
		}
		if !auto || !errors.Is(err, errPortInUse) || attempt == startAttempts {
			return err
		}
		c.log.Warn("port taken while starting PostgreSQL, trying another", "port", port)
		if port, err = freePort(); err != nil {
			return err
		}
	}
	c.port.Store(int32(port))
	c.running = true
	if err := c.afterStart(ctx); err != nil {
		// Don't leave behind a server the caller never got a handle to.
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if serr := c.stop(stopCtx); serr != nil {
			c.log.Warn("could not stop PostgreSQL after a failed start", "err", serr)
		}
		return err
	}
	c.log.Info("PostgreSQL started", "port", port)
	return nil
}

// adopt takes over a server a previous process started and left running.
func (c *Cluster) adopt(ctx context.Context, pid int) error {
	c.log.Info("adopting running PostgreSQL", "pid", pid)
	for {
		// The pid file gets its port line a moment after the process
		// appears, so a server caught starting up has none yet.
		_, port, alive, err := c.runningServer()
		if err != nil {
			return err
		}
		if !alive {
			return fmt.Errorf("adopt PostgreSQL in %s: server (PID %d) exited while being adopted; see %s",
				c.dir, pid, filepath.Join(c.dir, logFile))
		}
		if port != 0 {
			c.port.Store(int32(port))
			break
		}
		if err := pause(ctx); err != nil {
			return fmt.Errorf("adopt PostgreSQL in %s: wait for server (PID %d) to open its port: %w", c.dir, pid, err)
		}
	}
	c.running = true
	if err := c.afterStart(ctx); err != nil {
		return err
	}
	c.log.Info("PostgreSQL adopted", "pid", pid, "port", c.port.Load())
	return nil
}

// afterStart finishes a start or adoption: ties an ephemeral server to this
// process, waits for connections, creates the database and records the port.
func (c *Cluster) afterStart(ctx context.Context) error {
	if c.ephemeral && c.watchdog == nil {
		if err := c.startWatchdog(); err != nil {
			return err
		}
	}
	if err := c.waitReady(ctx); err != nil {
		return err
	}
	if err := c.ensureDatabase(ctx); err != nil {
		return err
	}
	return c.recordPort()
}

// waitReady waits until the server accepts connections. pg_ctl -w only
// waits for the server to declare itself ready, which an adopted server may
// not be yet, so a real connection is the proof.
func (c *Cluster) waitReady(ctx context.Context) error {
	for {
		conn, err := pgx.Connect(ctx, c.AdminURL())
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(context.WithoutCancel(ctx))
			if err == nil {
				return nil
			}
		}
		if _, _, alive, serr := c.runningServer(); serr == nil && !alive {
			return fmt.Errorf("connect to PostgreSQL in %s: server is not running: %w%s", c.dir, err, c.logTail(0))
		}
		if perr := pause(ctx); perr != nil {
			return fmt.Errorf("connect to PostgreSQL on port %d: %w (last error: %w)", c.port.Load(), perr, err)
		}
	}
}

func (c *Cluster) ensureDatabase(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, c.AdminURL())
	if err != nil {
		return fmt.Errorf("create database %s: connect: %w", database, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	err = conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", database).Scan(&exists)
	if err != nil {
		return fmt.Errorf("create database %s: check whether it exists: %w", database, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{database}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" {
		// Another process adopting the same server created it first.
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database %s: %w", database, err)
	}
	c.log.Info("created database", "database", database)
	return nil
}

// pgctlStart starts the server on port and waits for it to report ready.
func (c *Cluster) pgctlStart(ctx context.Context, port int) error {
	if !portFree(port) {
		return fmt.Errorf("start PostgreSQL in %s on 127.0.0.1:%d: %w", c.dir, port, errPortInUse)
	}
	logPath := filepath.Join(c.dir, logFile)
	var offset int64
	if fi, err := os.Stat(logPath); err == nil {
		offset = fi.Size()
	}
	opts := []string{
		"-c listen_addresses=127.0.0.1",
		"-p " + strconv.Itoa(port),
		// No unix socket: its path would have to fit in 107 bytes, and
		// everything connects over TCP anyway. pg_ctl hands the options
		// to /bin/sh, hence the shell quoting of the empty value.
		"-c unix_socket_directories=''",
		"-c max_connections=200",
		"-c shared_buffers=128MB",
	}
	if c.ephemeral {
		opts = append(opts, "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")
	}
	err := c.run(ctx, c.bins.pgCtl, "start", "-D", c.dir, "-l", logPath, "-w", "-t", waitSeconds(ctx), "-s",
		"-o", strings.Join(opts, " "))
	if err == nil {
		return nil
	}
	tail := c.logTail(offset)
	if strings.Contains(tail, "Address already in use") {
		// Taken between the check above and the server binding it.
		err = fmt.Errorf("%w (%w)", errPortInUse, err)
	}
	return fmt.Errorf("start PostgreSQL in %s on 127.0.0.1:%d: %w%s", c.dir, port, err, tail)
}

// pgctlStop stops the server and waits for it to exit.
func (c *Cluster) pgctlStop(ctx context.Context) error {
	err := c.run(ctx, c.bins.pgCtl, "stop", "-D", c.dir, "-m", "fast", "-w", "-t", waitSeconds(ctx), "-s")
	if err == nil {
		return nil
	}
	if _, _, alive, serr := c.runningServer(); serr == nil && !alive {
		return nil
	}
	return fmt.Errorf("stop PostgreSQL in %s: %w", c.dir, err)
}

// recordedPort is the port the cluster last ran on, or 0.
func (c *Cluster) recordedPort() int {
	b, err := os.ReadFile(filepath.Join(c.dir, portFile))
	if err != nil {
		return 0
	}
	port, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || port <= 0 || port > math.MaxUint16 {
		return 0
	}
	return port
}

func (c *Cluster) recordPort() error {
	port := int(c.port.Load())
	if c.recordedPort() == port {
		return nil
	}
	path := filepath.Join(c.dir, portFile)
	if err := os.WriteFile(path, []byte(strconv.Itoa(port)+"\n"), 0o644); err != nil {
		return fmt.Errorf("record PostgreSQL port: %w", err)
	}
	return c.owner.chown(path)
}

// rotateLog moves an oversized server log aside. The server isn't running,
// so nothing holds the file open.
func (c *Cluster) rotateLog() {
	path := filepath.Join(c.dir, logFile)
	if fi, err := os.Stat(path); err == nil && fi.Size() > maxLogSize {
		if err := os.Rename(path, path+".1"); err != nil {
			c.log.Warn("could not rotate server log", "err", err)
		}
	}
}

// logTail returns the end of what the server logged after offset, formatted
// for appending to an error, or "" if it logged nothing.
func (c *Cluster) logTail(offset int64) string {
	const maxTail = 4 << 10
	path := filepath.Join(c.dir, logFile)
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	if fi.Size()-offset > maxTail {
		offset = fi.Size() - maxTail
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return ""
	}
	tail := strings.TrimSpace(string(b))
	if tail == "" {
		return ""
	}
	return "\nend of " + path + ":\n" + tail
}

// portFree reports whether port can be bound on 127.0.0.1 right now.
func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port for PostgreSQL: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitSeconds turns ctx's deadline into pg_ctl's -t. Without a deadline the
// wait is long rather than pg_ctl's default minute, because crash recovery
// of a big cluster can take longer and ctx is what should bound it.
func waitSeconds(ctx context.Context) string {
	dl, ok := ctx.Deadline()
	if !ok {
		return "3600"
	}
	return strconv.Itoa(max(1, int(math.Ceil(time.Until(dl).Seconds()))))
}

// pause waits a moment between polls of a condition, or until ctx ends.
func pause(ctx context.Context) error {
	t := time.NewTimer(50 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
