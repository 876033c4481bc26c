package dag_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
	"github.com/stockpipe/stockpipe/internal/retry"
)

// The package's TestMain (main_test.go) starts the PostgreSQL that
// pgtest.New hands out databases of.

var quiet = slog.New(slog.DiscardHandler)

// newPool returns a pool of up to maxConns connections on the database at
// url, closed when the test ends.
func newPool(t *testing.T, url string, maxConns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// openDB returns a pool on a fresh database with the engine's tables and
// River's, and its URL. The engine needs nothing else: its tests never
// migrate store's schema.
func openDB(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	ctx := context.Background()
	url := pgtest.New(t)
	pool := newPool(t, url, 10)
	// The engine's migrations and River's are idempotent and safe to run
	// concurrently, as when several nodes start at once.
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = dag.Migrate(ctx, pool) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return pool, url
}

// testConfig is a Config with short retries and polling.
func testConfig(pool *pgxpool.Pool, dags ...dag.DAG) dag.Config {
	return dag.Config{
		Pool:         pool,
		DAGs:         dags,
		Logger:       quiet,
		Retry:        retry.Policy{Name: "test task", Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond},
		PollInterval: 50 * time.Millisecond,
	}
}

// textParams declares text parameters with the given defaults.
func textParams(defaults ...string) []dag.Param {
	var ps []dag.Param
	for i := 0; i+1 < len(defaults); i += 2 {
		ps = append(ps, dag.Param{Name: defaults[i], Type: dag.Text, Default: defaults[i+1]})
	}
	return ps
}

// start creates and starts a Scheduler, stopping it when the test ends.
func start(t *testing.T, cfg dag.Config) *dag.Scheduler {
	t.Helper()
	s, err := dag.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return s
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitRun waits until run id has finished and returns it with its tasks.
func waitRun(t *testing.T, s *dag.Scheduler, id int64) (dag.Run, []dag.TaskRun) {
	t.Helper()
	var (
		run   dag.Run
		tasks []dag.TaskRun
	)
	eventually(t, 20*time.Second, fmt.Sprintf("run %d to finish", id), func() (bool, error) {
		var err error
		run, tasks, err = s.Run(context.Background(), id)
		return err == nil && run.Finished != nil, err
	})
	return run, tasks
}

func taskByName(t *testing.T, tasks []dag.TaskRun, name string) dag.TaskRun {
	t.Helper()
	for _, tr := range tasks {
		if tr.Task == name {
			return tr
		}
	}
	t.Fatalf("no task %q in %+v", name, tasks)
	return dag.TaskRun{}
}

func count(t *testing.T, pool *pgxpool.Pool, q string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

var day = time.Date(2026, 11, 6, 0, 0, 0, 0, time.UTC) // a Friday

func TestEngineDiamondOrder(t *testing.T) {
	t.Parallel()
	pool, _ := openDB(t)
	var (
		mu    sync.Mutex
		order []string
	)
	step := func(name string) func(context.Context, *dag.TaskContext) error {
		return func(_ context.Context, tc *dag.TaskContext) error {
			tc.Log.Info("working", "step", name, "param", tc.Params.String("p"))
			time.Sleep(10 * time.Millisecond)
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			return nil
		}
	}
	dg := dag.DAG{
		Name:   "diamond",
		Params: textParams("p", "default", "q", "kept"),
		Tasks: []dag.Task{
			{Name: "d", Deps: []string{"b", "c"}, Run: step("d")},
			{Name: "b", Deps: []string{"a"}, Run: step("b")},
			{Name: "c", Deps: []string{"a"}, Run: step("c")},
			{Name: "a", Run: step("a")},
		},
	}
	s := start(t, testConfig(pool, dg))
	id, err := s.Trigger(context.Background(), "diamond", day.Add(13*time.Hour), map[string]string{"p": "given"})
	if err != nil {
		t.Fatal(err)
	}
	run, tasks := waitRun(t, s, id)
	if run.State != dag.RunSuccess || run.Started == nil || run.DAG != "diamond" {
		t.Fatalf("run = %+v", run)
	}
	if !run.LogicalDate.Equal(day) {
		t.Errorf("logical date %s, want %s (midnight of the date)", run.LogicalDate, day)
	}
	if run.Params["p"] != "given" || run.Params["q"] != "kept" {
		t.Errorf("params %v: trigger's should override the DAG's", run.Params)
	}
	mu.Lock()
	got := slices.Clone(order)
	mu.Unlock()
	pos := func(n string) int { return slices.Index(got, n) }
	if len(got) != 4 || pos("a") != 0 || pos("d") != 3 {
		t.Fatalf("execution order %v: want a first, d last, each once", got)
	}
	// Tasks are listed in dependency order.
	var names []string
	for _, tr := range tasks {
		names = append(names, tr.Task)
		if tr.State != dag.TaskSuccess || tr.Attempts != 1 || tr.Started == nil || tr.Finished == nil || tr.Duration <= 0 {
			t.Errorf("task %+v", tr)
		}
		if !strings.Contains(tr.Log, "msg=working step="+tr.Task+" param=given") {
			t.Errorf("task %s log excerpt %q lacks its line", tr.Task, tr.Log)
		}
	}
	if !slices.Equal(names, []string{"a", "b", "c", "d"}) {
		t.Errorf("tasks listed as %v", names)
	}
	runs, err := s.Runs(context.Background(), "", 10)
	if err != nil || len(runs) != 1 || runs[0].ID != id {
		t.Fatalf("Runs = %+v, %v", runs, err)
	}
}

// flaky fails its first failures calls, then succeeds.
func flaky(failures int32, calls *atomic.Int32) func(context.Context, *dag.TaskContext) error {
	return func(_ context.Context, tc *dag.TaskContext) error {
		n := calls.Add(1)
		if n <= failures {
			tc.Log.Info("about to fail", "call", n)
			return fmt.Errorf("boom %d", n)
		}
		return nil
	}
}

func TestEngineRetry(t *testing.T) {
	t.Parallel()
	pool, _ := openDB(t)
	var ok, bad atomic.Int32
	var downstream atomic.Int32
	noop := func(context.Context, *dag.TaskContext) error { downstream.Add(1); return nil }
	dags := []dag.DAG{
		{Name: "recovers", Tasks: []dag.Task{
			{Name: "flaky", Retries: 2, Run: flaky(2, &ok)},
			{Name: "after", Deps: []string{"flaky"}, Run: noop},
		}},
		{Name: "gives_up", Tasks: []dag.Task{
			{Name: "flaky", Retries: 1, Run: flaky(2, &bad)},
			{Name: "after", Deps: []string{"flaky"}, Run: noop},
			{Name: "last", Deps: []string{"after"}, Run: noop},
		}},
	}
	s := start(t, testConfig(pool, dags...))
	ctx := context.Background()
	okID, err := s.Trigger(ctx, "recovers", day, nil)
	if err != nil {
		t.Fatal(err)
	}
	badID, err := s.Trigger(ctx, "gives_up", day, nil)
	if err != nil {
		t.Fatal(err)
	}

	run, tasks := waitRun(t, s, okID)
	if run.State != dag.RunSuccess {
		t.Errorf("recovering run state %s", run.State)
	}
	if f := taskByName(t, tasks, "flaky"); f.State != dag.TaskSuccess || f.Attempts != 3 || f.Error != "" ||
		!strings.Contains(f.Log, "call=2") || !strings.Contains(f.Log, "--- attempt 3") {
		t.Errorf("flaky task %+v", f)
	}
	if a := taskByName(t, tasks, "after"); a.State != dag.TaskSuccess {
		t.Errorf("downstream task %+v", a)
	}

	run, tasks = waitRun(t, s, badID)
	if run.State != dag.RunFailed {
		t.Errorf("failing run state %s", run.State)
	}
	f := taskByName(t, tasks, "flaky")
	if f.State != dag.TaskFailed || f.Attempts != 2 || !strings.Contains(f.Error, "boom 2") ||
		!strings.Contains(f.Log, "task failed") || !strings.Contains(f.Log, "boom 2") {
		t.Errorf("failed task %+v", f)
	}
	for _, name := range []string{"after", "last"} {
		if a := taskByName(t, tasks, name); a.State != dag.TaskUpstreamFailed || a.Attempts != 0 {
			t.Errorf("downstream task %+v", a)
		}
	}
	if n := downstream.Load(); n != 1 {
		t.Errorf("downstream tasks ran %d times, want 1 (only the recovering run's)", n)
	}
	if n := ok.Load(); n != 3 {
		t.Errorf("recovering task ran %d times", n)
	}
	if n := bad.Load(); n != 2 {
		t.Errorf("failing task ran %d times", n)
	}
}

// TestEngineRetriggerKeepsHistory triggers a date again after its run
// succeeded, this time without parameters and with a task that fails: the
// second trigger is a run of its own, with the DAG's defaults, and the
// successful run keeps its state, parameters and task history.
func TestEngineRetriggerKeepsHistory(t *testing.T) {
	t.Parallel()
	pool, _ := openDB(t)
	var first, second atomic.Int32
	dg := dag.DAG{Name: "rerun", Params: textParams("p", "1"), Tasks: []dag.Task{
		{Name: "first", Run: func(context.Context, *dag.TaskContext) error { first.Add(1); return nil }},
		{Name: "second", Deps: []string{"first"}, Run: func(_ context.Context, tc *dag.TaskContext) error {
			tc.Log.Info("param", "p", tc.Params.String("p"))
			if second.Add(1) > 1 {
				return errors.New("broken the second time")
			}
			return nil
		}},
	}}
	s := start(t, testConfig(pool, dg))
	ctx := context.Background()
	id1, err := s.Trigger(ctx, "rerun", day, map[string]string{"p": "2"})
	if err != nil {
		t.Fatal(err)
	}
	run1, tasks1 := waitRun(t, s, id1)
	if run1.State != dag.RunSuccess {
		t.Fatalf("first run %+v", run1)
	}
	// The same date, given as another moment of the day.
	id2, err := s.Trigger(ctx, "rerun", day.Add(5*time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	if id2 == id1 {
		t.Fatalf("the second trigger of the date reused run %d", id1)
	}
	run2, tasks2 := waitRun(t, s, id2)
	if run2.State != dag.RunFailed || run2.Params["p"] != "1" || len(run2.Given) != 0 || !run2.LogicalDate.Equal(day) {
		t.Errorf("second run %+v: want failed, with the default p=1", run2)
	}
	if tr := taskByName(t, tasks2, "second"); tr.State != dag.TaskFailed || !strings.Contains(tr.Log, "p=1") {
		t.Errorf("second run's task %+v", tr)
	}
	again, tasks, err := s.Run(ctx, id1)
	if err != nil {
		t.Fatal(err)
	}
	if again.State != dag.RunSuccess || again.Params["p"] != "2" || !again.Finished.Equal(*run1.Finished) {
		t.Errorf("the first run became %+v", again)
	}
	for i, tr := range tasks {
		if tr.State != dag.TaskSuccess || tr.Attempts != 1 || tr.Log != tasks1[i].Log || !tr.Finished.Equal(*tasks1[i].Finished) {
			t.Errorf("the first run's task %s became %+v", tr.Task, tr)
		}
	}
	if first.Load() != 2 || second.Load() != 2 {
		t.Errorf("tasks ran %d and %d times, want 2 each", first.Load(), second.Load())
	}
	runs, err := s.Runs(ctx, "rerun", 0)
	if err != nil || len(runs) != 2 || runs[0].ID != id2 || runs[1].ID != id1 {
		t.Errorf("Runs = %+v, %v: want both, the newer first", runs, err)
	}
	if n := count(t, pool, `SELECT count(*) FROM task_runs`); n != 4 {
		t.Errorf("%d task_runs rows, want 4", n)
	}
}

func TestEngineBackfill(t *testing.T) {
	t.Parallel()
	pool, _ := openDB(t)
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	var ran sync.Map // dag/logical date -> count
	task := func(_ context.Context, tc *dag.TaskContext) error {
		v, _ := ran.LoadOrStore(tc.DAG+"/"+tc.LogicalDate.Format(time.DateOnly), new(atomic.Int32))
		v.(*atomic.Int32).Add(1)
		return nil
	}
	dags := []dag.DAG{
		{Name: "daily", Schedule: "0 18 * * *", Location: ny, Tasks: []dag.Task{{Name: "t", Run: task}}},
		{Name: "weekdays", Schedule: "30 16 * * 1-5", Location: ny, Tasks: []dag.Task{{Name: "t", Run: task}}},
		{Name: "manual", Tasks: []dag.Task{{Name: "t", Run: task}}},
	}
	s := start(t, testConfig(pool, dags...))
	ctx := context.Background()
	// Thursday 5 November to Monday 9 November 2026, in each DAG's
	// Location.
	want := map[string][]string{
		"daily":    {"2026-11-05", "2026-11-06", "2026-11-07", "2026-11-08", "2026-11-09"},
		"weekdays": {"2026-11-05", "2026-11-06", "2026-11-09"},
		"manual":   {"2026-11-05", "2026-11-06", "2026-11-07", "2026-11-08", "2026-11-09"},
	}
	for _, d := range dags {
		loc := d.Location
		if loc == nil {
			loc = time.UTC
		}
		from := time.Date(2026, 11, 5, 0, 0, 0, 0, loc)
		to := time.Date(2026, 11, 9, 23, 0, 0, 0, loc)
		ids, err := s.Backfill(ctx, d.Name, from, to, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) != len(want[d.Name]) {
			t.Fatalf("%s: backfill made %d runs, want %d", d.Name, len(ids), len(want[d.Name]))
		}
		var dates []string
		for _, id := range ids {
			run, _ := waitRun(t, s, id)
			if run.State != dag.RunSuccess {
				t.Errorf("%s run %+v", d.Name, run)
			}
			if run.LogicalDate.Location().String() != loc.String() || run.LogicalDate.Hour() != 0 {
				t.Errorf("%s: logical date %s is not midnight in %s", d.Name, run.LogicalDate, loc)
			}
			dates = append(dates, run.LogicalDate.Format(time.DateOnly))
		}
		slices.Sort(dates)
		if !slices.Equal(dates, want[d.Name]) {
			t.Errorf("%s: backfilled %v, want %v", d.Name, dates, want[d.Name])
		}
		runs, err := s.Runs(ctx, d.Name, 0)
		if err != nil || len(runs) != len(ids) {
			t.Fatalf("%s: Runs = %d runs, %v", d.Name, len(runs), err)
		}
		if !runs[0].LogicalDate.After(runs[len(runs)-1].LogicalDate) {
			t.Errorf("%s: runs not newest first", d.Name)
		}
	}
	ran.Range(func(k, v any) bool {
		if n := v.(*atomic.Int32).Load(); n != 1 {
			t.Errorf("%s ran %d times", k, n)
		}
		return true
	})
	if _, err := s.Backfill(ctx, "daily", day, day.Add(-time.Hour), nil); err == nil {
		t.Error("backfill of an inverted range succeeded")
	}
	if _, err := s.Backfill(ctx, "nope", day, day, nil); !errors.Is(err, dag.ErrUnknownDAG) {
		t.Errorf("backfill of an unknown DAG: %v", err)
	}
}

// TestEngineTwoNodes runs two scheduler nodes on one database, as two
// processes would, and checks that every task of every run ran exactly
// once.
func TestEngineTwoNodes(t *testing.T) {
	t.Parallel()
	pool, url := openDB(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `
		CREATE TABLE counters (task text PRIMARY KEY, n int NOT NULL);
		CREATE TABLE executions (run_id bigint, task text, node text)`); err != nil {
		t.Fatal(err)
	}
	dg := func(node string) dag.DAG {
		step := func(name string) func(context.Context, *dag.TaskContext) error {
			return func(ctx context.Context, tc *dag.TaskContext) error {
				if _, err := tc.Pool.Exec(ctx, `
					INSERT INTO counters VALUES ($1, 1) ON CONFLICT (task) DO UPDATE SET n = counters.n + 1`, name); err != nil {
					return err
				}
				if _, err := tc.Pool.Exec(ctx, `INSERT INTO executions VALUES ($1, $2, $3)`, tc.RunID, name, node); err != nil {
					return err
				}
				time.Sleep(15 * time.Millisecond)
				return nil
			}
		}
		return dag.DAG{Name: "shared", Tasks: []dag.Task{
			{Name: "extract", Run: step("extract")},
			{Name: "load", Deps: []string{"extract"}, Run: step("load")},
			{Name: "report", Deps: []string{"extract"}, Run: step("report")},
		}}
	}
	var nodes []*dag.Scheduler
	for _, name := range []string{"node1", "node2"} {
		cfg := testConfig(newPool(t, url, 10), dg(name))
		cfg.Workers = 3
		nodes = append(nodes, start(t, cfg))
	}
	// A process that only triggers, such as the command line.
	trigger, err := dag.NewClient(testConfig(pool, dg("client")))
	if err != nil {
		t.Fatal(err)
	}
	if err := trigger.Start(ctx); !errors.Is(err, dag.ErrNotWorker) {
		t.Errorf("Start of a client-only scheduler: %v", err)
	}
	const runs = 20
	ids := make([]int64, runs)
	for i := range runs {
		by := []*dag.Scheduler{nodes[0], nodes[1], trigger}[i%3]
		if ids[i], err = by.Trigger(ctx, "shared", day.AddDate(0, 0, i), nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		if run, _ := waitRun(t, trigger, id); run.State != dag.RunSuccess {
			t.Errorf("run %+v", run)
		}
	}
	for _, task := range []string{"extract", "load", "report"} {
		if n := count(t, pool, `SELECT n FROM counters WHERE task = $1`, task); n != runs {
			t.Errorf("task %s ran %d times, want %d", task, n, runs)
		}
	}
	if n := count(t, pool, `SELECT count(*) FROM (SELECT 1 FROM executions GROUP BY run_id, task HAVING count(*) > 1) d`); n != 0 {
		t.Errorf("%d tasks of a run ran more than once", n)
	}
	rows, err := pool.Query(ctx, `SELECT node, count(*) FROM executions GROUP BY node ORDER BY node`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var node string
		var n int
		if err := rows.Scan(&node, &n); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s ran %d tasks", node, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestEngineTimeout(t *testing.T) {
	t.Parallel()
	pool, _ := openDB(t)
	var calls atomic.Int32
	dags := []dag.DAG{
		{Name: "stuck", Tasks: []dag.Task{
			// Honours its context.
			{Name: "waits", Timeout: 100 * time.Millisecond, Run: func(ctx context.Context, _ *dag.TaskContext) error {
				<-ctx.Done()
				return ctx.Err()
			}},
		}},
		{Name: "deaf", Tasks: []dag.Task{
			// Ignores its context; the attempt ends at the timeout anyway.
			{Name: "sleeps", Timeout: 100 * time.Millisecond, Run: func(context.Context, *dag.TaskContext) error {
				time.Sleep(time.Second)
				return nil
			}},
		}},
		{Name: "slow_once", Tasks: []dag.Task{
			{Name: "t", Timeout: 100 * time.Millisecond, Retries: 1, Run: func(ctx context.Context, _ *dag.TaskContext) error {
				if calls.Add(1) == 1 {
					<-ctx.Done()
					return ctx.Err()
				}
				return nil
			}},
		}},
	}
	s := start(t, testConfig(pool, dags...))
	ctx := context.Background()
	for _, name := range []string{"stuck", "deaf"} {
		id, err := s.Trigger(ctx, name, day, nil)
		if err != nil {
			t.Fatal(err)
		}
		run, tasks := waitRun(t, s, id)
		if run.State != dag.RunFailed || tasks[0].State != dag.TaskFailed ||
			!strings.Contains(tasks[0].Error, "timed out after 100ms") {
			t.Errorf("%s: run %+v tasks %+v", name, run, tasks)
		}
		if tasks[0].Duration > 900*time.Millisecond {
			t.Errorf("%s: attempt took %s despite the 100ms timeout", name, tasks[0].Duration)
		}
	}
	id, err := s.Trigger(ctx, "slow_once", day, nil)
	if err != nil {
		t.Fatal(err)
	}
	run, tasks := waitRun(t, s, id)
	if run.State != dag.RunSuccess || tasks[0].Attempts != 2 {
		t.Errorf("retried timeout: run %+v tasks %+v", run, tasks)
	}
}

// TestEngineSchedule checks that the leader starts a run for each due slot,
// once, with the slot's logical date.
func TestEngineSchedule(t *testing.T) {
	t.Parallel()
	pool, _ := openDB(t)
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	noop := func(context.Context, *dag.TaskContext) error { return nil }
	dags := []dag.DAG{
		{Name: "close", Schedule: "30 16 * * 1-5", Location: ny, Tasks: []dag.Task{{Name: "t", Run: noop}}},
		{Name: "health", Schedule: "*/5 * * * *", Tasks: []dag.Task{{Name: "t", Run: noop}}},
		{Name: "manual", Tasks: []dag.Task{{Name: "t", Run: noop}}},
	}
	// Friday 6 November 2026, 16:32 in New York.
	now := time.Date(2026, 11, 6, 16, 32, 0, 0, ny)
	cfg := testConfig(pool, dags...)
	cfg.Now = func() time.Time { return now }
	cfg.TickInterval = 100 * time.Millisecond
	cfg.Lookback = 4 * time.Minute
	s := start(t, cfg)
	ctx := context.Background()
	eventually(t, 30*time.Second, "scheduled runs", func() (bool, error) {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM dag_runs WHERE state = 'success'`).Scan(&n)
		return n >= 2, err
	})
	// Let more ticks pass: they must not start or re-run anything.
	ticks := count(t, pool, `SELECT count(*) FROM river_job WHERE kind = 'stockpipe_tick'`)
	eventually(t, 20*time.Second, "three more ticks", func() (bool, error) {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'stockpipe_tick' AND state = 'completed'`).Scan(&n)
		return n >= ticks+3, err
	})
	runs, err := s.Runs(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]time.Time{}
	for _, r := range runs {
		if _, dup := got[r.DAG]; dup {
			t.Errorf("more than one run of %s: %+v", r.DAG, runs)
		}
		got[r.DAG] = r.LogicalDate
	}
	if want := time.Date(2026, 11, 6, 0, 0, 0, 0, ny); !got["close"].Equal(want) {
		t.Errorf("close run for %s, want %s", got["close"], want)
	}
	// 16:30 New York is 21:30 UTC; the 16:30 slot, not 16:25 (outside the
	// lookback).
	if want := time.Date(2026, 11, 6, 21, 30, 0, 0, time.UTC); !got["health"].Equal(want) {
		t.Errorf("health run for %s, want %s", got["health"], want)
	}
	if _, ok := got["manual"]; ok || len(got) != 2 {
		t.Errorf("runs %v", got)
	}
	if n := count(t, pool, `SELECT max(generation) FROM dag_runs`); n != 1 {
		t.Errorf("a scheduled run was re-run (generation %d)", n)
	}
}

func TestEngineNewRejectsBadDAGs(t *testing.T) {
	t.Parallel()
	noop := func(context.Context, *dag.TaskContext) error { return nil }
	cases := []struct {
		name string
		dags []dag.DAG
		want []string
	}{
		{"cycle", []dag.DAG{{Name: "x", Tasks: []dag.Task{
			{Name: "a", Run: noop},
			{Name: "b", Deps: []string{"a", "d"}, Run: noop},
			{Name: "c", Deps: []string{"b"}, Run: noop},
			{Name: "d", Deps: []string{"c"}, Run: noop},
		}}}, []string{`DAG "x"`, "cycle", "b → c → d → b"}},
		{"unknown dep", []dag.DAG{{Name: "x", Tasks: []dag.Task{
			{Name: "a", Deps: []string{"ghost"}, Run: noop},
		}}}, []string{`task "a" depends on unknown task "ghost"`}},
		{"self dep", []dag.DAG{{Name: "x", Tasks: []dag.Task{
			{Name: "a", Deps: []string{"a"}, Run: noop},
		}}}, []string{`task "a" depends on itself`}},
		{"duplicate DAG", []dag.DAG{
			{Name: "x", Tasks: []dag.Task{{Name: "a", Run: noop}}},
			{Name: "x", Tasks: []dag.Task{{Name: "a", Run: noop}}},
		}, []string{`DAG "x" is defined twice`}},
		{"duplicate task", []dag.DAG{{Name: "x", Tasks: []dag.Task{
			{Name: "a", Run: noop}, {Name: "a", Run: noop},
		}}}, []string{`task "a" is defined twice`}},
		{"bad cron", []dag.DAG{{Name: "x", Schedule: "30 25 * * *", Tasks: []dag.Task{{Name: "a", Run: noop}}}},
			[]string{`schedule "30 25 * * *"`}},
		{"interval", []dag.DAG{{Name: "x", Schedule: "@every 5m", Tasks: []dag.Task{{Name: "a", Run: noop}}}},
			[]string{"not a calendar schedule"}},
		{"no run", []dag.DAG{{Name: "x", Tasks: []dag.Task{{Name: "a"}}}}, []string{"no Run function"}},
		{"no tasks", []dag.DAG{{Name: "x"}}, []string{"has no tasks"}},
		{"no name", []dag.DAG{{Tasks: []dag.Task{{Name: "a", Run: noop}}}}, []string{"has no name"}},
	}
	for _, c := range cases {
		_, err := dag.New(dag.Config{DAGs: c.dags, Logger: quiet})
		if err == nil {
			t.Errorf("%s: New accepted %+v", c.name, c.dags)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", c.name, err, w)
			}
		}
	}
	// Several problems are reported together.
	_, err := dag.New(dag.Config{DAGs: []dag.DAG{
		{Name: "x", Tasks: []dag.Task{{Name: "a", Deps: []string{"ghost"}, Run: noop}}},
		{Name: "y", Schedule: "nonsense", Tasks: []dag.Task{{Name: "a", Run: noop}}},
	}})
	if err == nil || !strings.Contains(err.Error(), "ghost") || !strings.Contains(err.Error(), "nonsense") {
		t.Errorf("combined error %v", err)
	}
	if _, err := dag.New(dag.Config{DAGs: []dag.DAG{{Name: "x", Tasks: []dag.Task{{Name: "a", Run: noop}}}}}); err == nil {
		t.Error("New accepted a nil pool")
	}
}

func TestEngineNextRun(t *testing.T) {
	t.Parallel()
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	noop := func(context.Context, *dag.TaskContext) error { return nil }
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s, err := dag.NewClient(dag.Config{Pool: pool, Logger: quiet, DAGs: []dag.DAG{
		{Name: "close", Schedule: "30 16 * * 1-5", Location: ny, Tasks: []dag.Task{{Name: "a", Run: noop}}},
		{Name: "manual", Tasks: []dag.Task{{Name: "a", Run: noop}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	friday := time.Date(2026, 11, 6, 19, 0, 0, 0, ny)
	next, ok := s.NextRun("close", friday)
	want := time.Date(2026, 11, 9, 16, 30, 0, 0, ny)
	if !ok || !next.Equal(want) || next.Location() != ny {
		t.Errorf("NextRun after Friday evening = %s, %v; want %s (Monday)", next, ok, want)
	}
	// Before the close the same day.
	if next, _ := s.NextRun("close", friday.Add(-4*time.Hour)); !next.Equal(time.Date(2026, 11, 6, 16, 30, 0, 0, ny)) {
		t.Errorf("NextRun Friday morning = %s", next)
	}
	// Across the end of daylight saving time (1 November 2026).
	if next, _ := s.NextRun("close", time.Date(2026, 10, 30, 20, 0, 0, 0, ny)); !next.Equal(time.Date(2026, 11, 2, 21, 30, 0, 0, time.UTC)) {
		t.Errorf("NextRun across DST = %s", next.UTC())
	}
	if _, ok := s.NextRun("manual", friday); ok {
		t.Error("NextRun of a triggered-only DAG")
	}
	if _, ok := s.NextRun("nope", friday); ok {
		t.Error("NextRun of an unknown DAG")
	}
	if got := s.DAGs(); len(got) != 2 || got[0].Name != "close" {
		t.Errorf("DAGs() = %+v", got)
	}
	// (That the shipped DAGs pass validation is job's TestDAGShippedDefinitions.)
}
