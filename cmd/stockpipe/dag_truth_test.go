package main

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/fixture"
	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
	"github.com/stockpipe/stockpipe/internal/store"
)

// dagDB is a fresh, migrated database for the scheduler: its URL and a
// pool on it.
func dagDB(t *testing.T) (string, *pgxpool.Pool) {
	t.Helper()
	dbURL := pgtest.New(t)
	return dbURL, fixture.Open(t, dbURL, 8)
}

// dagTrigger runs stockpipe dag trigger with args and returns the run id
// it prints.
func dagTrigger(t *testing.T, args ...string) int64 {
	t.Helper()
	code, out, errOut := runCLI(t, append([]string{"dag", "trigger"}, args...)...)
	m := regexp.MustCompile(`: run (\d+) `).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("dag trigger %v: code %d\n%s%s", args, code, out, errOut)
	}
	id, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// dagRunsLine returns the line of run id in stockpipe dag runs name.
func dagRunsLine(t *testing.T, dbURL, name string, id int64) string {
	t.Helper()
	code, out, errOut := runCLI(t, "dag", "runs", name, "--database-url", dbURL)
	if code != 0 {
		t.Fatalf("dag runs: code %d\n%s%s", code, out, errOut)
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == strconv.FormatInt(id, 10) {
			return strings.Join(f, " ")
		}
	}
	t.Fatalf("dag runs lists no run %d:\n%s", id, out)
	return ""
}

// waitFinished waits until run id has finished, within timeout, and
// returns its state.
func waitFinished(t *testing.T, pool *pgxpool.Pool, id int64, timeout time.Duration) dag.RunState {
	t.Helper()
	var state dag.RunState
	waitFor(t, fmt.Sprintf("run %d to finish", id), timeout, func() bool {
		var done bool
		err := pool.QueryRow(context.Background(), `SELECT state, finished_at IS NOT NULL FROM dag_runs WHERE id = $1`, id).Scan(&state, &done)
		return err == nil && done
	})
	return state
}

// TestDagTriggersOfOneDateAreSeparateRuns triggers the backfill of one date
// for two symbols from the command line: two runs, each listed with its own
// symbol, waiting for the defaults of the scheduler that will run it.
func TestDagTriggersOfOneDateAreSeparateRuns(t *testing.T) {
	dbURL, _ := dagDB(t)
	aapl := dagTrigger(t, "backfill", "--date", "2026-11-04", "--param", "symbol=AAPL", "--database-url", dbURL)
	msft := dagTrigger(t, "backfill", "--date", "2026-11-04", "--param", "symbol=MSFT", "--database-url", dbURL)
	if aapl == msft {
		t.Fatalf("both triggers printed run %d", aapl)
	}
	for id, sym := range map[int64]string{aapl: "AAPL", msft: "MSFT"} {
		line := dagRunsLine(t, dbURL, "backfill", id)
		if want := "backfill 2026-11-04 00:00 queued manual"; !strings.Contains(line, want) ||
			!strings.Contains(line, "symbol="+sym+",(defaults when it starts)") {
			t.Errorf("run %d is listed as %q; want %q and symbol=%s", id, line, want, sym)
		}
	}
	// A misspelt parameter would be ignored by the task: it is refused.
	code, _, errOut := runCLI(t, "dag", "trigger", "backfill", "--param", "sybmol=AAPL", "--database-url", dbURL)
	if code == 0 || !strings.Contains(errOut, `has no parameter "sybmol"`) {
		t.Errorf("a misspelt parameter: code %d, %q", code, errOut)
	}
}

// TestDagManualRunTakesSchedulerRetention triggers the retention DAG from
// the command line (whose own --retention is the default seven days) and
// lets a scheduler started with --retention 48h run it: the run records and
// uses 48 hours.
func TestDagManualRunTakesSchedulerRetention(t *testing.T) {
	ctx := context.Background()
	dbURL, pool := dagDB(t)
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	y, m, d := time.Now().In(ny).Date()
	today := time.Date(y, m, d, 0, 0, 0, 0, ny)
	// Ticks three days and one day before today: 48 hours keep only the
	// second, seven days both. Rows written by hand need their day's
	// partition, as the sink makes it.
	if err := store.EnsureDays(ctx, pool, store.TicksTable, today.Add(-72*time.Hour), today.Add(-24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `
		INSERT INTO ticks (symbol, seq, ts, price, size, bid, ask, kafka_partition, kafka_offset) VALUES
		('AAPL', 1, $1, 100, 10, 99, 101, 0, 1), ('AAPL', 2, $2, 100, 10, 99, 101, 0, 2)`,
		today.Add(-72*time.Hour), today.Add(-24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	sched := start(t, "scheduler", "--retention", "48h", "--database-url", dbURL)
	id := dagTrigger(t, "retention", "--database-url", dbURL)
	if state := waitFinished(t, pool, id, 60*time.Second); state != dag.RunSuccess {
		t.Fatalf("run %d ended %s\n%s", id, state, sched.out.tail(3000))
	}
	line := dagRunsLine(t, dbURL, "retention", id)
	if !strings.Contains(line, "success manual") || !strings.Contains(line, "retention=48h0m0s") {
		t.Errorf("run %d is listed as %q; want success, manual, retention=48h0m0s", id, line)
	}
	if n := scalar(t, pool, `SELECT count(*) FROM ticks`); n != 1 {
		t.Errorf("%d ticks left, want 1 (the one within 48 hours)", n)
	}
}

// TestSchedulerKilledMidTaskIsTakenOver SIGKILLs the scheduler running a
// backfill (held up by a lock on the candles table) and starts another:
// meanwhile dag runs shows the task running on the dead node with the age
// of its last heartbeat, and the new node runs the task again, to success,
// within a minute of the kill.
func TestSchedulerKilledMidTaskIsTakenOver(t *testing.T) {
	ctx := context.Background()
	dbURL, pool := dagDB(t)
	lock, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx) //nolint:errcheck // released below
	if _, err := lock.Exec(ctx, `LOCK TABLE candles IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	first := start(t, "scheduler", "--database-url", dbURL)
	id := dagTrigger(t, "backfill", "--date", "2026-11-04", "--param", "symbol=AAPL", "--database-url", dbURL)
	var node string
	waitFor(t, "the backfill to run on the first scheduler", time.Minute, func() bool {
		err := pool.QueryRow(ctx, `SELECT node FROM task_runs WHERE run_id = $1 AND state = 'running'`, id).Scan(&node)
		return err == nil
	})
	if !strings.Contains(node, fmt.Sprintf("-%d-", first.cmd.Process.Pid)) {
		t.Fatalf("the task runs on node %q, not on the first scheduler (pid %d)", node, first.cmd.Process.Pid)
	}
	first.kill(t)
	killed := time.Now()
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	line := dagRunsLine(t, dbURL, "backfill", id)
	t.Logf("dag runs after the kill: %s", line)
	if !strings.Contains(line, "running manual") || !strings.Contains(line, "recompute:running[on "+node+", heartbeat ") {
		t.Errorf("after the kill run %d is listed as %q; want it running on %s with its heartbeat's age", id, line, node)
	}

	second := start(t, "scheduler", "--database-url", dbURL)
	if state := waitFinished(t, pool, id, 90*time.Second); state != dag.RunSuccess {
		t.Fatalf("run %d ended %s\n%s", id, state, second.out.tail(3000))
	}
	took := time.Since(killed)
	t.Logf("the task was run again to success %s after the kill", took.Round(time.Millisecond))
	if took > time.Minute {
		t.Errorf("the takeover took %s, more than a minute", took)
	}
	var (
		attempts int
		last     string
		log      string
	)
	if err := pool.QueryRow(ctx, `SELECT attempts, node, log FROM task_runs WHERE run_id = $1`, id).Scan(&attempts, &last, &log); err != nil {
		t.Fatal(err)
	}
	if attempts != 2 || !strings.Contains(last, fmt.Sprintf("-%d-", second.cmd.Process.Pid)) ||
		!strings.Contains(log, "the scheduler node running it ("+node+") stopped (no heartbeat for") {
		t.Errorf("task run: %d attempts, last on %s, log:\n%s", attempts, last, log)
	}
	line = dagRunsLine(t, dbURL, "backfill", id)
	t.Logf("dag runs after the takeover: %s", line)
	if !strings.Contains(line, "success manual") || !strings.Contains(line, "recompute:success[attempt 2]") {
		t.Errorf("run %d is listed as %q", id, line)
	}
}

// TestDagTriggerChecksParams triggers from the command line with a value
// that is not of its parameter's type, one out of its bounds and an
// unknown name: each is a one-line error naming the parameter (and what a
// valid value is), and no run exists afterwards; the defaults a good
// trigger's run will take are listed by dag list, with each parameter's
// type.
func TestDagTriggerChecksParams(t *testing.T) {
	dbURL, pool := dagDB(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"market_close", "--param", "max_reject_rate=lots"}, `parameter max_reject_rate="lots" is not a number in [0, 1] (such as 0.05)`},
		{[]string{"market_close", "--param", "max_reject_rate=1.5"}, `parameter max_reject_rate="1.5" is not a number in [0, 1]`},
		{[]string{"retention", "--param", "batch_size=0"}, `parameter batch_size="0" is not an integer ≥ 1`},
		{[]string{"backfill", "--param", "symbol=AAPL", "--param", "from=yesterday"}, `parameter from="yesterday" is not a date (such as 2026-11-02)`},
		{[]string{"backfill", "--param", "symbol=AAPL", "--param", "from=2026-11-04", "--param", "to=2026-11-03"}, `parameter to=2026-11-03 is before from=2026-11-04`},
		{[]string{"backfill", "--param", "symbol=aapl"}, `parameter symbol="aapl" is not a symbol`},
		{[]string{"pipeline_health", "--param", "max_lag=-1"}, `parameter max_lag="-1" is not an integer ≥ 0`},
		{[]string{"pipeline_health", "--param", "max_tick_age=5"}, `parameter max_tick_age="5" is not a duration ≥ 0s`},
		{[]string{"pipeline_health", "--param", "max_dlq=0.1"}, `DAG pipeline_health has no parameter "max_dlq" (it has: max_lag, max_tick_age, max_dlq_rate)`},
	} {
		code, _, errOut := runCLI(t, append(append([]string{"dag", "trigger"}, c.args...), "--database-url", dbURL)...)
		if code == 0 || !strings.Contains(errOut, c.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("dag trigger %v: code %d, stderr %q; want one line containing %q", c.args, code, errOut, c.want)
		}
	}
	if n := scalar(t, pool, `SELECT count(*) FROM dag_runs`); n != 0 {
		t.Errorf("%d runs after refused triggers", n)
	}
	if n := scalar(t, pool, `SELECT count(*) FROM river_job`); n != 0 {
		t.Errorf("%d River jobs after refused triggers", n)
	}

	code, out, errOut := runCLI(t, "dag", "list", "--database-url", dbURL)
	if code != 0 {
		t.Fatalf("dag list: code %d\n%s%s", code, out, errOut)
	}
	for _, want := range [][]string{
		{"market_close", "max_reject_rate", "number", "in", "[0,", "1]", "0.05"},
		{"market_close", "lateness", "duration", "≥", "0s", "2s"},
		{"retention", "retention", "duration", "≥", "1s", "168h0m0s"},
		{"retention", "batch_size", "integer", "≥", "1", "50000"},
		{"pipeline_health", "max_tick_age", "duration", "≥", "0s", "5m"},
		{"backfill", "symbol", "symbol,", "required", "-"},
		{"backfill", "from", "date", "-"},
		{"backfill", "file", "file", "-"},
		{"backfill", "skip_bad", "boolean", "false"},
	} {
		found := false
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) >= len(want) && slices.Equal(f[:len(want)], want) {
				found = true
			}
		}
		if !found {
			t.Errorf("dag list has no parameter line starting %q:\n%s", strings.Join(want, " "), out)
		}
	}
}
