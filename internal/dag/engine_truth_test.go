package dag_test

import (
	"context"
	"maps"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/telemetry"
)

// client returns an insert-only Scheduler, as the command line and the web
// use to trigger runs.
func client(t *testing.T, cfg dag.Config) *dag.Scheduler {
	t.Helper()
	c, err := dag.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// reopen returns another pool on the database at url, as another node's
// process would have.
func reopen(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	return newPool(t, url, 10)
}

// TestEngineTriggersOfOneDateAreRunsOfTheirOwn triggers one date twice with
// different parameters before any node runs them: two runs, each executed
// with its own parameters by every task.
func TestEngineTriggersOfOneDateAreRunsOfTheirOwn(t *testing.T) {
	t.Parallel()
	pool, _ := openDB(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `CREATE TABLE seen (run_id bigint, task text, p text, q text)`); err != nil {
		t.Fatal(err)
	}
	record := func(name string) func(context.Context, *dag.TaskContext) error {
		return func(ctx context.Context, tc *dag.TaskContext) error {
			_, err := tc.Pool.Exec(ctx, `INSERT INTO seen VALUES ($1, $2, $3, $4)`, tc.RunID, name, tc.Params.String("p"), tc.Params.String("q"))
			return err
		}
	}
	dg := dag.DAG{Name: "echo", Params: textParams("p", "default", "q", "kept"), Tasks: []dag.Task{
		{Name: "first", Run: record("first")},
		{Name: "second", Deps: []string{"first"}, Run: record("second")},
	}}
	trig := client(t, testConfig(pool, dg))
	a, err := trig.Trigger(ctx, "echo", day, map[string]string{"p": "a"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := trig.Trigger(ctx, "echo", day.Add(3*time.Hour), map[string]string{"p": "b"})
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Fatalf("both triggers of %s got run %d", day.Format(time.DateOnly), a)
	}
	s := start(t, testConfig(pool, dg))
	for id, p := range map[int64]string{a: "a", b: "b"} {
		run, tasks := waitRun(t, s, id)
		if run.State != dag.RunSuccess || run.Kind != dag.KindManual || !run.LogicalDate.Equal(day) {
			t.Errorf("run %d: %+v", id, run)
		}
		if want := map[string]string{"p": p, "q": "kept"}; !maps.Equal(run.Params, want) {
			t.Errorf("run %d executed with %v, want %v", id, run.Params, want)
		}
		if want := map[string]string{"p": p}; !maps.Equal(run.Given, want) {
			t.Errorf("run %d was given %v, want %v", id, run.Given, want)
		}
		if run.ParamsNode != s.NodeID() {
			t.Errorf("run %d took the defaults of node %q, want %q", id, run.ParamsNode, s.NodeID())
		}
		for _, tr := range tasks {
			if tr.State != dag.TaskSuccess || tr.Attempts != 1 || tr.Node != s.NodeID() {
				t.Errorf("run %d task %+v", id, tr)
			}
		}
		if n := count(t, pool, `SELECT count(*) FROM seen WHERE run_id = $1 AND p = $2 AND q = 'kept'`, id, p); n != 2 {
			t.Errorf("run %d: %d tasks ran with p=%s, want 2", id, n, p)
		}
	}
	if n := count(t, pool, `SELECT count(*) FROM seen`); n != 4 {
		t.Errorf("%d task executions, want 4", n)
	}
}

// TestEngineSlowLiveTaskIsNotTakenOver runs a task for many heartbeat
// timeouts on one of two nodes that both look for stale attempts: its node's
// heartbeat keeps it its node's, and the run shows which node runs it and
// how recently it reported.
func TestEngineSlowLiveTaskIsNotTakenOver(t *testing.T) {
	t.Parallel()
	_, url := openDB(t)
	ctx := context.Background()
	release := make(chan struct{})
	var calls atomic.Int32
	dg := dag.DAG{Name: "slow", Tasks: []dag.Task{{Name: "t", Retries: 2, Run: func(ctx context.Context, _ *dag.TaskContext) error {
		calls.Add(1)
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}}}
	const timeout = 500 * time.Millisecond
	nodes := map[string]*dag.Scheduler{}
	for _, name := range []string{"node-a", "node-b"} {
		cfg := testConfig(reopen(t, url), dg)
		cfg.NodeID, cfg.HeartbeatInterval, cfg.HeartbeatTimeout = name, 50*time.Millisecond, timeout
		nodes[name] = start(t, cfg)
	}
	id, err := nodes["node-a"].Trigger(ctx, "slow", day, nil)
	if err != nil {
		t.Fatal(err)
	}
	var tr dag.TaskRun
	beats := map[time.Time]bool{}
	eventually(t, 30*time.Second, "the task to run for eight heartbeat timeouts", func() (bool, error) {
		_, tasks, err := nodes["node-a"].Run(ctx, id)
		if err != nil || len(tasks) != 1 {
			return false, err
		}
		tr = tasks[0]
		if tr.State == dag.TaskQueued && tr.Attempts == 0 {
			return false, nil // not picked up yet
		}
		if tr.State != dag.TaskRunning {
			t.Fatalf("the task is %s after %s: %+v", tr.State, tr.Duration, tr)
		}
		if nodes[tr.Node] == nil || tr.Heartbeat == nil || tr.HeartbeatAge >= timeout {
			t.Fatalf("running task shows node %q, heartbeat %v (%s ago)", tr.Node, tr.Heartbeat, tr.HeartbeatAge)
		}
		beats[*tr.Heartbeat] = true
		return tr.Duration > 8*timeout, nil
	})
	if len(beats) < 3 {
		t.Errorf("saw %d distinct heartbeats over %s", len(beats), tr.Duration)
	}
	close(release)
	run, tasks := waitRun(t, nodes["node-a"], id)
	if run.State != dag.RunSuccess || tasks[0].Attempts != 1 || tasks[0].Node != tr.Node || calls.Load() != 1 ||
		strings.Contains(tasks[0].Log, "counted failed") {
		t.Errorf("run %s, task %+v, %d calls; want one attempt on %s", run.State, tasks[0], calls.Load(), tr.Node)
	}
}

// TestEngineTakeOverOfAStoppedNode runs a task's first attempt on a node
// whose heartbeat never comes (as after a SIGKILL, or a node cut off from
// the database) next to a live node: the live node counts the attempt
// failed within the heartbeat timeout and the task is run again; the lost
// attempt, when it returns, changes nothing, and the run is counted once.
func TestEngineTakeOverOfAStoppedNode(t *testing.T) {
	t.Parallel()
	pool, url := openDB(t)
	ctx := context.Background()
	started := make(chan struct{})
	lost := make(chan error, 1)
	dg := dag.DAG{Name: "takeover", Tasks: []dag.Task{
		{Name: "t", Retries: 2, Run: func(ctx context.Context, tc *dag.TaskContext) error {
			if tc.Attempt > 1 {
				tc.Log.Info("second attempt")
				return nil
			}
			close(started)
			<-ctx.Done() // the takeover cancels the lost attempt's job
			lost <- context.Cause(ctx)
			return nil // as if it had finished its work after all
		}},
		{Name: "after", Deps: []string{"t"}, Run: func(context.Context, *dag.TaskContext) error { return nil }},
	}}
	// Whichever node finishes the run counts it.
	m := telemetry.New()
	// The silent node heartbeats once an hour: its attempt looks dead.
	silentCfg := testConfig(reopen(t, url), dg)
	silentCfg.NodeID, silentCfg.HeartbeatInterval = "silent", time.Hour
	silentCfg.Metrics = m
	silent := start(t, silentCfg)
	id, err := silent.Trigger(ctx, "takeover", day, nil)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	liveCfg := testConfig(reopen(t, url), dg)
	liveCfg.NodeID, liveCfg.HeartbeatInterval, liveCfg.HeartbeatTimeout = "live", 50*time.Millisecond, 500*time.Millisecond
	liveCfg.Metrics = m
	live := start(t, liveCfg)
	took := time.Now()

	run, tasks := waitRun(t, live, id)
	if elapsed := time.Since(took); elapsed > 10*time.Second {
		t.Errorf("the takeover took %s with a 500ms heartbeat timeout", elapsed)
	}
	tr := taskByName(t, tasks, "t")
	if run.State != dag.RunSuccess || tr.State != dag.TaskSuccess || tr.Attempts != 2 ||
		!strings.Contains(tr.Log, "attempt 1 counted failed") ||
		!strings.Contains(tr.Log, "the scheduler node running it (silent) stopped (no heartbeat for") ||
		!strings.Contains(tr.Log, "second attempt") {
		t.Errorf("run %s, task %+v", run.State, tr)
	}
	select {
	case cause := <-lost:
		t.Logf("the lost attempt ended: %v", cause)
	case <-time.After(20 * time.Second):
		t.Fatal("the lost attempt's context was never cancelled")
	}
	// Its outcome is dropped: the task run stays as the second attempt
	// left it, and its job ends cancelled, never retried.
	eventually(t, 20*time.Second, "the lost attempt's job to end cancelled", func() (bool, error) {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'stockpipe_task'
			AND (args->>'run_id')::bigint = $1 AND args->>'task' = 't' AND state = 'cancelled' AND attempt = 1`, id).Scan(&n)
		return n == 1, err
	})
	_, again, err := live.Run(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got := taskByName(t, again, "t"); got.State != dag.TaskSuccess || got.Attempts != 2 || !got.Finished.Equal(*tr.Finished) {
		t.Errorf("after the lost attempt returned, the task is %+v", got)
	}
	if n := testutil.ToFloat64(m.DAGRuns.WithLabelValues("takeover", string(dag.RunSuccess))); n != 1 {
		t.Errorf("the run was counted %v times", n)
	}
}
