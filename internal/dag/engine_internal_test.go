package dag

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/stockpipe/stockpipe/internal/retry"
)

// TestEngineDuplicateJobs checks both guards against running a task of a
// run twice: a second job for the same (run, task, generation) is not
// inserted, and one that exists anyway (inserted without uniqueness) finds
// the task no longer queued and does nothing.
func TestEngineDuplicateJobs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := migratedPool(t)
	var runs atomic.Int32
	s, err := New(Config{
		Pool: pool, Logger: slog.New(slog.DiscardHandler), PollInterval: 50 * time.Millisecond,
		DAGs: []DAG{{Name: "once", Tasks: []Task{{Name: "t", Run: func(context.Context, *TaskContext) error {
			runs.Add(1)
			return nil
		}}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })

	id, err := s.Trigger(ctx, "once", time.Date(2026, 11, 6, 0, 0, 0, 0, time.UTC), nil)
	if err != nil {
		t.Fatal(err)
	}
	waitState := func(want RunState) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			run, _, err := s.Run(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if run.State == want && run.Finished != nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("run %d is %s, want %s", id, run.State, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitState(RunSuccess)

	args := taskArgs{RunID: id, DAG: "once", Task: "t", Generation: 1}
	res, err := s.client.Insert(ctx, args, &river.InsertOpts{Queue: s.cfg.Queue, UniqueOpts: river.UniqueOpts{ByArgs: true}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.UniqueSkippedAsDuplicate {
		t.Error("a second unique job for the same task execution was inserted")
	}
	res, err = s.client.Insert(ctx, args, &river.InsertOpts{Queue: s.cfg.Queue})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		job, err := s.client.JobGet(ctx, res.Job.ID)
		if err != nil {
			t.Fatal(err)
		}
		if job.State == "completed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("duplicate job is %s", job.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("task ran %d times, want 1", n)
	}
	_, tasks, err := s.Run(ctx, id)
	if err != nil || tasks[0].State != TaskSuccess || tasks[0].Attempts != 1 {
		t.Errorf("task %+v, %v", tasks, err)
	}
}

// TestEngineBackoff checks the wait before a task's next attempt: the
// Config's retry policy (retry.Task unless set), doubling from its
// Initial after each failed attempt, at most its Max.
func TestEngineBackoff(t *testing.T) {
	noop := func(context.Context, *TaskContext) error { return nil }
	dags := []DAG{{Name: "d", Tasks: []Task{{Name: "t", Run: noop}}}}
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s, err := New(Config{Pool: pool, DAGs: dags, Logger: slog.New(slog.DiscardHandler),
		Retry: retry.Policy{Name: "task", Initial: time.Second, Max: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	w := &taskWorker{s: s}
	wait := func(attempt int) time.Duration {
		before := time.Now()
		at := w.NextRetry(&river.Job[taskArgs]{JobRow: &rivertype.JobRow{Attempt: attempt}})
		return at.Sub(before).Round(100 * time.Millisecond)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for i, w := range want {
		if got := wait(i + 1); got != w {
			t.Errorf("backoff after attempt %d = %s, want %s", i+1, got, w)
		}
	}
	if got := wait(1000); got != 5*time.Second {
		t.Errorf("backoff after many attempts = %s", got)
	}
	// Without a policy, the engine waits as retry.Task says.
	d, err := New(Config{Pool: pool, DAGs: dags, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if d.cfg.Retry != retry.Task {
		t.Errorf("default retry policy %+v, want retry.Task %+v", d.cfg.Retry, retry.Task)
	}
}

func TestEngineLogExcerpt(t *testing.T) {
	buf := newTailBuffer(64)
	log := newTaskLogger(slog.DiscardHandler, buf, slog.String("task", "x"))
	for i := range 20 {
		log.Info("line", "i", i)
	}
	got := buf.String()
	if len(got) > 64 || !strings.HasPrefix(got, "time=") || !strings.Contains(got, "i=19\n") || strings.Contains(got, "task=x") {
		t.Errorf("excerpt %q: want whole last lines, at most 64 bytes, without the process attrs", got)
	}
	small := newTailBuffer(64)
	small.WriteString("a\nb\n")
	if small.String() != "a\nb\n" {
		t.Errorf("short excerpt %q", small.String())
	}
}

func TestEngineLogicalDates(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	noop := func(context.Context, *TaskContext) error { return nil }
	plan := func(schedule string) *dagPlan {
		p, err := planDAG(DAG{Name: "d", Schedule: schedule, Location: ny, Tasks: []Task{{Name: "t", Run: noop}}})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	at := time.Date(2026, 11, 6, 16, 32, 17, 0, ny)
	for _, c := range []struct {
		schedule string
		daily    bool
		want     time.Time
	}{
		{"30 16 * * 1-5", true, time.Date(2026, 11, 6, 0, 0, 0, 0, ny)},
		{"@daily", true, time.Date(2026, 11, 6, 0, 0, 0, 0, ny)},
		{"", false, time.Date(2026, 11, 6, 0, 0, 0, 0, ny)},
		{"*/5 * * * *", false, time.Date(2026, 11, 6, 16, 32, 0, 0, ny)},
		{"0 9,17 * * *", false, time.Date(2026, 11, 6, 16, 32, 0, 0, ny)},
	} {
		p := plan(c.schedule)
		if p.daily != c.daily {
			t.Errorf("%q: daily = %v", c.schedule, p.daily)
		}
		if got := p.logicalDate(at); !got.Equal(c.want) {
			t.Errorf("%q: logical date of %s = %s, want %s", c.schedule, at, got, c.want)
		}
	}
	// Sub-daily backfill: every slot in the range, ends included.
	slots, err := plan("*/5 * * * *").slots(time.Date(2026, 11, 6, 10, 0, 0, 0, ny), time.Date(2026, 11, 6, 10, 30, 0, 0, ny))
	if err != nil || len(slots) != 7 {
		t.Errorf("sub-daily slots = %v, %v", slots, err)
	}
}
