package dag

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// The engine's tables (dag_runs, task_runs) were created by store's
// migrations 00004, 00007 and 00008 before the engine had migrations of its
// own. Those files stay in store, untouched, so that every database keeps
// the history goose expects, and on a database that store migrates they
// still create the tables. The engine's own migrations adopt them: each
// statement is idempotent, so over store's tables it changes nothing, over
// a database that ran only some of those files (an older stockpipe) it does
// what the rest would have done, and on a database without them it builds
// the same tables, column for column. Its versions are kept in a goose
// table of its own (VersionTable), apart from store's goose_db_version, so
// that the two sets never mix.
//
// When a database gets both, store's migrations must come first (as
// stockpipe runs them): on a fresh database store's 00004 creates dag_runs
// without IF NOT EXISTS, and would fail over the engine's.

//go:embed migrations/*.sql
var migrations embed.FS

// VersionTable is the goose table that records the engine's migrations.
const VersionTable = "dag_goose_db_version"

// Migrate applies the engine's migrations (its tables, adopting those that
// store's older migrations created; see above) and River's. It is
// idempotent, and safe to call from several processes at once: advisory
// locks serialise them. The pool needs room for two connections.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	if pool.Config().MaxConns < 2 {
		return errors.New("migrating the scheduler: the pool must allow at least two connections")
	}
	if err := migrateTables(ctx, pool); err != nil {
		return err
	}
	return migrateRiver(ctx, pool)
}

// migrateTables applies the embedded migrations with goose, recording them
// in VersionTable.
func migrateTables(ctx context.Context, pool *pgxpool.Pool) error {
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(tablesLockKey))
	if err != nil {
		return fmt.Errorf("creating the scheduler's migration lock: %w", err)
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("loading the scheduler's migrations: %w", err) // fixed at build time
	}
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, sub,
		goose.WithTableName(VersionTable), goose.WithSessionLocker(locker),
		// The global registry holds Go migrations of any goose user in the
		// binary; the engine has none, and must not run another's.
		goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("loading the scheduler's migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("applying the scheduler's migrations: %w", err)
	}
	return nil
}

// migrateRiver applies River's own migrations. Several processes may start
// at once: a PostgreSQL advisory lock, held on a connection of its own,
// serialises them.
func migrateRiver(ctx context.Context, pool *pgxpool.Pool) error {
	m, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return fmt.Errorf("creating River migrator: %w", err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrating River: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrateLockKey); err != nil {
		return fmt.Errorf("locking River migrations: %w", err)
	}
	defer func() {
		// A connection that cannot unlock is closed, which unlocks.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", migrateLockKey); err != nil {
			conn.Conn().Close(uctx) //nolint:errcheck // closing is the fallback
		}
	}()
	// Each migration runs in a transaction of its own: some add enum
	// values that later ones use, which one transaction cannot do.
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("applying River migrations: %w", err)
	}
	return nil
}

// migrateLockKey is the advisory lock migrateRiver holds ("stockpipe" in
// ASCII, padded); tablesLockKey the one goose holds for the engine's tables
// ("stockdag"), apart from the one store's migrations hold.
const (
	migrateLockKey int64 = 0x73746f636b706970
	tablesLockKey  int64 = 0x73746f636b646167
)
