package dag

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
)

// migratedPool is a pool on a fresh database with the engine's and River's
// tables.
func migratedPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

// TestEngineTakeoverFencesTheLostAttempt walks a takeover step by step,
// on a node that is never started so that nothing happens but what the
// test does: an attempt is claimed, its heartbeat goes stale, the reaper
// counts it failed and gives the task a fresh job; then the lost attempt's
// heartbeat cancels it, and its success or failure records nothing, while
// the fresh job claims the task as its second attempt.
func TestEngineTakeoverFencesTheLostAttempt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := migratedPool(t)
	noop := func(context.Context, *TaskContext) error { return nil }
	s, err := New(Config{Pool: pool, Logger: slog.New(slog.DiscardHandler), NodeID: "reaper",
		DAGs: []DAG{{Name: "d", Tasks: []Task{{Name: "t", Retries: 2, Run: noop}}}}})
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.Trigger(ctx, "d", time.Date(2026, 11, 6, 0, 0, 0, 0, time.UTC), nil)
	if err != nil {
		t.Fatal(err)
	}
	var jobID int64
	if err := pool.QueryRow(ctx, `SELECT job_id FROM task_runs WHERE run_id = $1`, id).Scan(&jobID); err != nil {
		t.Fatal(err)
	}
	job := func(id int64, attempt, maxAttempts int, args taskArgs) *river.Job[taskArgs] {
		return &river.Job[taskArgs]{Args: args, JobRow: &rivertype.JobRow{
			ID: id, Attempt: attempt, MaxAttempts: maxAttempts, State: rivertype.JobStateRunning}}
	}
	args := taskArgs{RunID: id, DAG: "d", Task: "t", Generation: 1}
	lost := job(jobID, 1, 3, args)
	c, ok, err := s.claim(ctx, lost)
	if err != nil || !ok || c.attempt != 1 || c.maxAttempts != 3 {
		t.Fatalf("claim: %+v, %v, %v", c, ok, err)
	}
	key := attemptKey{runID: id, task: "t", attempt: attempt{jobID: jobID, number: 1}}
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	s.attempts.add(key, cancel)

	// A live heartbeat keeps it.
	conn, err := s.beat(ctx, nil, []attemptKey{key})
	if err != nil || actx.Err() != nil {
		t.Fatalf("beat of a live attempt: %v, context %v", err, context.Cause(actx))
	}
	if err := s.reap(ctx); err != nil {
		t.Fatal(err)
	}
	var state TaskState
	if err := pool.QueryRow(ctx, `SELECT state FROM task_runs WHERE run_id = $1`, id).Scan(&state); err != nil || state != TaskRunning {
		t.Fatalf("a live attempt was reaped: %s, %v", state, err)
	}

	// Its node goes silent for a minute.
	if _, err := pool.Exec(ctx, `UPDATE task_runs SET heartbeat_at = now() - interval '1 minute' WHERE run_id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if err := s.reap(ctx); err != nil {
		t.Fatal(err)
	}
	var (
		attempts, base int
		newJob         int64
		errText, log   string
	)
	if err := pool.QueryRow(ctx, `SELECT state, attempts, attempt_base, job_id, error, log FROM task_runs WHERE run_id = $1`, id).
		Scan(&state, &attempts, &base, &newJob, &errText, &log); err != nil {
		t.Fatal(err)
	}
	if state != TaskQueued || attempts != 1 || base != 1 || newJob == jobID ||
		errText != "the scheduler node running it (reaper) stopped (no heartbeat for 60 s)" || !strings.Contains(log, "attempt 1 counted failed") {
		t.Errorf("after the takeover: %s, %d attempts, base %d, job %d (was %d), error %q, log %q",
			state, attempts, base, newJob, jobID, errText, log)
	}
	stuck, err := s.client.JobGet(ctx, jobID)
	if err != nil || stuck.State != rivertype.JobStateCancelled {
		t.Errorf("the lost attempt's job: %+v, %v; want cancelled", stuck, err)
	}
	fresh, err := s.client.JobGet(ctx, newJob)
	if err != nil || fresh.MaxAttempts != 2 || fresh.State != rivertype.JobStateAvailable {
		t.Errorf("the fresh job: %+v, %v; want available with the 2 attempts left", fresh, err)
	}

	// The lost attempt's node hears of it at its next heartbeat.
	conn, err = s.beat(ctx, conn, []attemptKey{key})
	if err != nil || !errors.Is(context.Cause(actx), errTakenOver) {
		t.Errorf("beat of a lost attempt: %v, context %v", err, context.Cause(actx))
	}
	if conn != nil {
		conn.Close(ctx) //nolint:errcheck // the test is done with it
	}
	// Whatever it then records is dropped.
	p := s.plans["d"]
	if err := s.succeed(ctx, lost, key.attempt, p, attemptOutcome{log: "late success"}); !errors.Is(err, errNotCurrent) {
		t.Errorf("late success: %v", err)
	}
	if err := s.fail(ctx, lost, key.attempt, p, attemptOutcome{log: "late failure"}, errors.New("late"), true, false); !errors.Is(err, errNotCurrent) {
		t.Errorf("late failure: %v", err)
	}
	var after string
	if err := pool.QueryRow(ctx, `SELECT state || ' ' || attempts || ' ' || error FROM task_runs WHERE run_id = $1`, id).Scan(&after); err != nil ||
		after != "queued 1 "+errText {
		t.Errorf("the lost attempt's outcome changed the task run to %q, %v", after, err)
	}
	// The old job cannot claim the task again; the fresh one claims it as
	// the task's second attempt.
	if _, ok, err := s.claim(ctx, job(jobID, 2, 3, args)); ok || err != nil {
		t.Errorf("the replaced job claimed the task: %v, %v", ok, err)
	}
	args.Base = 1
	c, ok, err = s.claim(ctx, job(newJob, 1, 2, args))
	if err != nil || !ok || c.attempt != 2 || !strings.Contains(c.log, "counted failed") {
		t.Errorf("the fresh job's claim: %+v, %v, %v", c, ok, err)
	}

	// With its last attempt lost too, the task fails, and so does the run.
	if _, err := pool.Exec(ctx, `UPDATE task_runs SET attempts = 3, heartbeat_at = now() - interval '1 minute' WHERE run_id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if err := s.reap(ctx); err != nil {
		t.Fatal(err)
	}
	run, tasks, err := s.Run(ctx, id)
	if err != nil || run.State != RunFailed || run.Finished == nil || tasks[0].State != TaskFailed {
		t.Errorf("after losing the last attempt: run %+v, tasks %+v, %v", run, tasks, err)
	}
}

// TestEngineScheduledRunsAreUniquePerSlot lets two nodes tick at once, over
// and over, for a slot that already has a manual run: the slot gets exactly
// one scheduled run, and the manual run stays.
func TestEngineScheduledRunsAreUniquePerSlot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := migratedPool(t)
	now := time.Date(2026, 11, 6, 16, 32, 0, 0, time.UTC)
	noop := func(context.Context, *TaskContext) error { return nil }
	dags := []DAG{{Name: "often", Schedule: "*/5 * * * *", Params: []Param{{Name: "why", Type: Text}},
		Tasks: []Task{{Name: "t", Run: noop}}}}
	var nodes []*Scheduler
	for _, name := range []string{"a", "b"} {
		s, err := New(Config{Pool: pool, Logger: slog.New(slog.DiscardHandler), NodeID: name, DAGs: dags,
			Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, s)
	}
	slot := time.Date(2026, 11, 6, 16, 30, 0, 0, time.UTC)
	manual, err := nodes[0].Trigger(ctx, "often", slot, map[string]string{"why": "by hand"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() { errs <- nodes[i%2].tick(ctx) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	rows, err := pool.Query(ctx, `SELECT kind, count(*) FROM dag_runs WHERE logical_date = $1 GROUP BY kind ORDER BY kind`, slot)
	if err != nil {
		t.Fatal(err)
	}
	got := map[RunKind]int{}
	for rows.Next() {
		var (
			kind RunKind
			n    int
		)
		if err := rows.Scan(&kind, &n); err != nil {
			t.Fatal(err)
		}
		got[kind] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if got[KindScheduled] != 1 || got[KindManual] != 1 || len(got) != 2 {
		t.Errorf("runs of the 16:30 slot by kind: %v; want one scheduled beside the manual one (run %d)", got, manual)
	}
}
