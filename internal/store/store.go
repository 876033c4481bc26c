// Package store is stockpipe's PostgreSQL side: the connection pool, the
// embedded schema migrations, the exactly-once sink the processor commits
// through, and the read queries.
package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// migrations are the schema's. 00004, 00007 and 00008 created the
// scheduler's history (dag_runs, task_runs), which internal/dag owns now:
// its own migrations adopt those tables. The files stay, unchanged: on a
// fresh database they still create the tables (stockpipe migrates store
// first; the engine's migration then finds them done), and every database
// keeps the history goose expects, so that an older binary run against a
// newer database finds nothing missing.
//
//go:embed migrations/*.sql
var migrations embed.FS

// CheckURL reports a database URL that cannot work, with a message that says
// how to write one.
func CheckURL(raw string) error {
	if raw == "" {
		return errors.New("no database URL (pass --database-url postgres://user@host:5432/db or set DATABASE_URL)")
	}
	if strings.Contains(raw, "://") {
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("database URL is not a URL (%w); expected postgres://user:password@host:5432/dbname", err)
		}
		if u.Scheme != "postgres" && u.Scheme != "postgresql" {
			return fmt.Errorf("database URL scheme %q is not postgres:// or postgresql://", u.Scheme)
		}
	}
	if _, err := pgxpool.ParseConfig(raw); err != nil {
		return fmt.Errorf("database URL is not valid: %w (expected postgres://user:password@host:5432/dbname)", err)
	}
	return nil
}

// Open connects a pool to the database at url and checks that it answers.
func Open(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	if err := CheckURL(url); err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parsing database URL: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "stockpipe"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("creating database pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to PostgreSQL at %s: %w", Redact(url), err)
	}
	return pool, nil
}

// Migrate brings the schema up to date, and makes the day partitions of
// ticks and rejected_ticks around the present (see EnsureAhead). A
// PostgreSQL advisory lock makes it safe for several processes to migrate
// the same database at once.
func Migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("creating migration lock: %w", err)
	}
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, mustSub(migrations, "migrations"),
		goose.WithSessionLocker(locker))
	if err != nil {
		return fmt.Errorf("loading migrations: %w", err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("applying migrations: %w", err)
	}
	for _, r := range results {
		log.Info("applied migration", "version", r.Source.Version, "file", r.Source.Path, "took", r.Duration)
	}
	// The day partitions of the present, so that the processor starting
	// now seldom has one to make: the day before (the backlog of a
	// processor started after midnight), today and the next two.
	if err := EnsureAhead(ctx, pool, time.Now(), 1); err != nil {
		return fmt.Errorf("making the day partitions: %w", err)
	}
	return nil
}

// Redact hides the password in a database URL for logs and errors.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}
