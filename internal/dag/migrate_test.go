package dag_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
)

// storeMigrations are store's migration files, which created the engine's
// tables before the engine had migrations of its own (00004, 00007, 00008).
// The test reads them from their directory, as goose does for store, so
// that the engine's tests need not import store.
var storeMigrations = os.DirFS("../store/migrations")

// engineTables are the tables the engine owns.
var engineTables = []string{"dag_runs", "task_runs"}

// migrateStore applies store's migrations up to version (0: all) to the
// database of pool, as store.Migrate does, in goose's default version
// table.
func migrateStore(t *testing.T, pool *pgxpool.Pool, version int64) {
	t.Helper()
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, storeMigrations)
	if err != nil {
		t.Fatal(err)
	}
	if version == 0 {
		_, err = p.Up(context.Background())
	} else {
		_, err = p.UpTo(context.Background(), version)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// schema describes tables as PostgreSQL has them, one line per column
// (position, name, type, default, nullability), constraint (name,
// definition), index (definition) and owned sequence, so that equal lists
// mean the same tables.
func schema(t *testing.T, pool *pgxpool.Pool, tables []string) []string {
	t.Helper()
	var out []string
	collect := func(q string) {
		rows, err := pool.Query(context.Background(), q, tables)
		if err != nil {
			t.Fatal(err)
		}
		lines, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			vals, err := r.Values()
			if err != nil {
				return "", err
			}
			parts := make([]string, len(vals))
			for i, v := range vals {
				parts[i] = strings.TrimSpace(strings.ReplaceAll(strings.ReplaceAll(toString(v), "\n", " "), "  ", " "))
			}
			return strings.Join(parts, " | "), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, lines...)
	}
	collect(`SELECT 'column', table_name, lpad(ordinal_position::text, 3, '0'), column_name, data_type, coalesce(column_default, '-'),
	                is_nullable, coalesce(character_maximum_length::text, '-'), coalesce(numeric_precision::text, '-')
	         FROM information_schema.columns
	         WHERE table_schema = current_schema() AND table_name = ANY($1) ORDER BY table_name, ordinal_position`)
	collect(`SELECT 'constraint', c.conrelid::regclass::text, c.conname, c.contype::text, pg_get_constraintdef(c.oid)
	         FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid
	         WHERE r.relnamespace = current_schema()::regnamespace AND r.relname = ANY($1) ORDER BY 2, 3`)
	collect(`SELECT 'index', tablename, indexname, indexdef FROM pg_indexes
	         WHERE schemaname = current_schema() AND tablename = ANY($1) ORDER BY 2, 3`)
	collect(`SELECT 'sequence', s.relname, t.relname, a.attname
	         FROM pg_class s JOIN pg_depend d ON d.objid = s.oid AND d.deptype = 'a'
	         JOIN pg_class t ON t.oid = d.refobjid JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
	         WHERE s.relkind = 'S' AND t.relname = ANY($1) ORDER BY 2`)
	return out
}

// toString writes a value of a catalogue row.
func toString(v any) string {
	if v == nil {
		return "NULL"
	}
	return fmt.Sprint(v)
}

// userTables lists the tables of the current schema other than River's and
// the engine's goose version table: store's and the engine's.
func userTables(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT tablename FROM pg_tables
		WHERE schemaname = current_schema() AND tablename NOT LIKE 'river%' AND tablename <> $1 ORDER BY 1`, dag.VersionTable)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// engineVersions lists the versions the engine's goose table records.
func engineVersions(t *testing.T, pool *pgxpool.Pool) []int64 {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT version_id FROM `+dag.VersionTable+` WHERE version_id > 0 ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	v, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// diff fails the test naming the first line where got and want differ.
func diff(t *testing.T, what string, got, want []string) {
	t.Helper()
	if slices.Equal(got, want) {
		return
	}
	for i := range max(len(got), len(want)) {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			t.Errorf("%s differ at line %d (%d and %d lines):\n  got  %s\n  want %s", what, i+1, len(got), len(want), g, w)
			return
		}
	}
}

// TestMigrateAdoptsStoreTables migrates databases as stockpipe has over
// time and compares what the engine's tables end up as:
//
//   - fresh: the engine's migrations alone, on an empty database;
//   - today: store's migrations, then the engine's (how stockpipe migrates);
//   - store only: store's migrations, as before the engine had its own;
//   - old: an older stockpipe's database, store migrated up to 00004 (and
//     to 00007), with runs in it, then the engine's migrations.
//
// The engine's tables are the same in all of them — columns, defaults,
// constraints, indexes — the engine's migration changes nothing over
// store's tables, the old runs are kept as 00008 would have kept them, and
// migrating again is a no-op.
func TestMigrateAdoptsStoreTables(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	open := func() *pgxpool.Pool { return newPool(t, pgtest.New(t), 4) }

	fresh := open()
	if err := dag.Migrate(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	want := schema(t, fresh, engineTables)
	if len(want) < 30 {
		t.Fatalf("the fresh schema has only %d lines:\n%s", len(want), strings.Join(want, "\n"))
	}

	today := open()
	migrateStore(t, today, 0)
	storeOnly := schema(t, today, userTables(t, today))
	if err := dag.Migrate(ctx, today); err != nil {
		t.Fatal(err)
	}
	diff(t, "the engine's tables, adopted from store's migrations and fresh", schema(t, today, engineTables), want)
	diff(t, "store's tables before and after the engine's migration", schema(t, today, userTables(t, today)), storeOnly)
	if v := engineVersions(t, today); !slices.Equal(v, []int64{1}) {
		t.Errorf("the engine's goose table records %v", v)
	}
	// Again: nothing to do, nothing changes.
	if err := dag.Migrate(ctx, today); err != nil {
		t.Fatal(err)
	}
	diff(t, "store's tables after migrating twice", schema(t, today, userTables(t, today)), storeOnly)

	for _, upTo := range []int64{4, 7} {
		old := open()
		migrateStore(t, old, upTo)
		// Runs of that time: one per date, one finished and one queued.
		if _, err := old.Exec(ctx, `
			INSERT INTO dag_runs (id, dag, logical_date, state, params, started_at, finished_at) VALUES
				(1, 'market_close', '2026-11-02 05:00:00+00', 'success', '{"max_reject_rate": "0.05"}', now(), now()),
				(2, 'market_close', '2026-11-03 05:00:00+00', 'queued', '{"max_reject_rate": "0.2"}', NULL, NULL);
			SELECT setval('dag_runs_id_seq', 2);
			INSERT INTO task_runs (run_id, task, pos, state, attempts) VALUES
				(1, 'daily_candles', 0, 'success', 1), (2, 'daily_candles', 0, 'queued', 0)`); err != nil {
			t.Fatal(err)
		}
		if err := dag.Migrate(ctx, old); err != nil {
			t.Fatalf("adopting a database at store version %d: %v", upTo, err)
		}
		diff(t, "the engine's tables, adopted from an older database and fresh", schema(t, old, engineTables), want)
		got := pgtest.Rows(t, old, `SELECT id, kind, coalesce(effective_params->>'max_reject_rate', 'none'), params_node IS NULL
			FROM dag_runs ORDER BY id`)
		if want := []string{"1|legacy|0.05|true|", "2|legacy|none|true|"}; !slices.Equal(got, want) {
			t.Errorf("store version %d: runs after adoption %q, want %q: both legacy, the finished one with its parameters in effect", upTo, got, want)
		}
		if got := pgtest.Rows(t, old, `SELECT run_id, attempt_base, max_attempts, job_id, checks FROM task_runs ORDER BY run_id`); len(got) != 2 {
			t.Errorf("store version %d: task runs %q", upTo, got)
		}
		// A date is no longer unique: a manual run joins the legacy one.
		if _, err := old.Exec(ctx, `INSERT INTO dag_runs (dag, logical_date) VALUES ('market_close', '2026-11-02 05:00:00+00')`); err != nil {
			t.Errorf("store version %d: a second run of a date: %v", upTo, err)
		}
		if err := dag.Migrate(ctx, old); err != nil {
			t.Fatal(err)
		}
	}

	// The adopted database works: a run is triggered and listed.
	noop := func(context.Context, *dag.TaskContext) error { return nil }
	s := client(t, testConfig(today, dag.DAG{Name: "d", Tasks: []dag.Task{{Name: "t", Run: noop}}}))
	id, err := s.Trigger(ctx, "d", time.Date(2026, 11, 6, 0, 0, 0, 0, time.UTC), nil)
	if err != nil {
		t.Fatal(err)
	}
	if run, tasks, err := s.Run(ctx, id); err != nil || run.State != dag.RunQueued || run.Kind != dag.KindManual || len(tasks) != 1 {
		t.Errorf("run %+v, tasks %+v, %v", run, tasks, err)
	}
}
