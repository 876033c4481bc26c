// Package pgtest gives tests a real PostgreSQL: one private cluster per test
// binary, a fresh database per test.
//
// A package opts in from its TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// and each test then calls New for a database of its own, so tests can run
// in parallel without seeing each other's data. The cluster trades
// durability for speed and dies with the test binary, even when a timeout
// kills it. Without PostgreSQL installed the tests fail rather than skip:
// a skipped database test proves nothing.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/pgembed"
)

var (
	shared *pgembed.Cluster
	seq    atomic.Int64
	// createOptions speed up CREATE DATABASE where the server has them:
	// with fsync off, copying template1's files (and the checkpoint that
	// comes with it) is about twice as fast as PostgreSQL 15's default of
	// WAL-logging every block.
	createOptions string
)

// Main starts the package's cluster in a temporary directory, runs the
// tests, stops the cluster and exits with the tests' status. It never
// returns. If the cluster can't start, Main prints why and exits 1.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	sweep()
	root, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: create cluster directory: %v\n", err)
		return 1
	}
	defer os.RemoveAll(root)
	lock, err := lockDir(root)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		return 1
	}
	defer lock.Close()
	// Run as root, the server runs as an unprivileged user, which must be
	// able to enter MkdirTemp's private (0700) directory.
	if err := os.Chmod(root, 0o711); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		return 1
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c, err := pgembed.Start(ctx, pgembed.Config{Dir: filepath.Join(root, "postgres"), Ephemeral: true})
	cancel()
	if err != nil {
		if errors.Is(err, pgembed.ErrNoBinaries) {
			fmt.Fprintf(os.Stderr, "pgtest: these tests need PostgreSQL: %v\n", err)
		} else {
			fmt.Fprintf(os.Stderr, "pgtest: start PostgreSQL: %v\n", err)
		}
		return 1
	}
	shared = c
	// Were the version unknowable, New would report the underlying
	// problem; plain CREATE DATABASE works everywhere.
	if v, err := serverVersion(c); err == nil && v >= 150000 {
		createOptions = " STRATEGY FILE_COPY"
	}

	code := m.Run()

	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Stop(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// New creates an empty database on the shared cluster and returns its URL.
// The database is dropped, with any sessions still connected to it, when
// the test finishes.
func New(t testing.TB) string {
	t.Helper()
	c := Cluster(t)
	name := databaseName(t.Name())
	ident := pgx.Identifier{name}.Sanitize()
	if err := admin(c, "CREATE DATABASE "+ident+createOptions); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := admin(c, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s (a test that stopped the cluster must restart it): %v", name, err)
		}
	})
	u, err := url.Parse(c.AdminURL())
	if err != nil {
		t.Fatalf("pgtest: parse cluster URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// Cluster is the shared cluster, for tests that stop and restart the
// database to check how code copes. Such a test must not run in parallel
// with other tests of its package, and must restart the cluster (Restart
// keeps URLs valid) before it ends.
func Cluster(t testing.TB) *pgembed.Cluster {
	t.Helper()
	if shared == nil {
		t.Fatal("pgtest: no cluster: call pgtest.Main(m) from the package's TestMain")
	}
	return shared
}

const (
	dirPrefix = "pgtest-"
	lockFile  = "owner.lock"
)

// lockDir marks root as in use for as long as this process lives: the
// kernel drops the lock however the process ends.
func lockDir(root string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(root, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock cluster directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock cluster directory: %w", err)
	}
	return f, nil
}

// sweep removes the directories of test binaries that were killed before
// they could clean up (their servers are stopped by pgembed's watchdog, but
// the data would stay). A directory counts as abandoned when its lock is
// free, its server is gone, and it isn't brand new: a binary that has just
// created its directory may not have locked it yet.
func sweep() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, dir := range dirs {
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() || time.Since(fi.ModTime()) < time.Minute {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "postgres", "postmaster.pid")); err == nil {
			continue
		}
		lock, err := lockDir(dir)
		if err != nil {
			continue
		}
		os.RemoveAll(dir)
		lock.Close()
	}
}

func serverVersion(c *pgembed.Cluster) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.AdminURL())
	if err != nil {
		return 0, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer conn.Close(ctx)
	var v int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&v); err != nil {
		return 0, fmt.Errorf("ask PostgreSQL for its version: %w", err)
	}
	return v, nil
}

func admin(c *pgembed.Cluster, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.AdminURL())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// databaseName derives a unique database name from the test's name, so a
// database left over in a debugging session says which test made it.
func databaseName(test string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(test) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() == 40 {
			break
		}
	}
	// 63 bytes is PostgreSQL's identifier limit; this stays well inside.
	return fmt.Sprintf("t_%s_%d", b.String(), seq.Add(1))
}

// Rows returns the rows of query as strings, one per row with its values
// separated by '|' and floats written as their exact bits, for comparing
// two databases' contents exactly.
func Rows(t testing.TB, pool *pgxpool.Pool, query string) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), query)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, v := range vals {
			if f, ok := v.(float64); ok {
				fmt.Fprintf(&b, "%b|", f)
			} else {
				fmt.Fprintf(&b, "%v|", v)
			}
		}
		out = append(out, b.String())
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
