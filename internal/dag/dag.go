// Package dag is stockpipe's DAG engine: small DAGs of tasks with
// dependencies, typed parameters, a cron schedule in a time zone, retries
// and a timeout per task, executed as River jobs in PostgreSQL so that
// several scheduler nodes share the work and never run the same task of the
// same run twice. It keeps every run's history (dag_runs, task_runs, which
// its own migrations create), takes over the tasks of a node that stopped
// (heartbeats), and records the checks a task carried out as a verdict.
//
// What the DAGs do is not its business: stockpipe's own DAGs are in
// internal/job. The engine knows nothing of ticks, candles or Kafka.
//
// A newcomer's map: dag.go (what a DAG is), params.go (typed parameters,
// checked when a run is triggered), state.go (run and task states),
// checks.go (a task's checks and its verdict), plan.go (validating a DAG,
// its schedule), scheduler.go (triggering, backfilling, reading history),
// worker.go (executing a task and recording its outcome), heartbeat.go
// (taking over the tasks of a node that stopped), tasklog.go (a task's log
// excerpt), migrate.go (the engine's tables).
package dag

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Task is one step of a DAG.
type Task struct {
	Name string
	// Deps are the names of tasks of the same DAG that must succeed first.
	Deps []string
	// Run does the work. It must be idempotent: a retry, or a re-run of the
	// same logical date, runs it again. An error is retried while the task
	// has attempts left, unless it is a *PermanentError (bad input, missing
	// data: retrying cannot help) or a *ChecksFailedError (a verdict on the
	// data), which fail the task at once.
	Run func(ctx context.Context, tc *TaskContext) error
	// Retries is how many times a failed run is retried (with exponential
	// backoff) before the task, and its run, fail.
	Retries int
	// Timeout bounds one attempt; zero means 10 minutes.
	Timeout time.Duration
}

// DAG is a named set of tasks with a schedule and parameters.
type DAG struct {
	Name        string
	Description string
	// Schedule is a five-field cron expression ("30 16 * * 1-5") in
	// Location; empty means the DAG only runs when triggered.
	Schedule string
	Location *time.Location // nil = UTC
	// Params declare the parameters a run takes, with their types, bounds
	// and defaults. A trigger may give only these, each a valid value of
	// its type (Trigger refuses others before a run exists). A run takes
	// the defaults from the DAG of the scheduler node that starts executing
	// it (whose settings, such as its --retention, they may reflect), not
	// from the process that triggered it.
	Params []Param
	// Validate, if set, checks a run's parameters together (a range whose
	// end is before its start), once each has been checked alone; it runs
	// when the run is triggered and again when it starts. Its error should
	// name the parameter at fault (see BadParam).
	Validate func(Params) error
	Tasks    []Task
}

// TaskContext is what a task runs with.
type TaskContext struct {
	DAG   string
	RunID int64
	// Attempt is the task's attempt number, from 1, counted across the
	// nodes that ran it.
	Attempt int
	// LogicalDate is the date (midnight in the DAG's Location) or, for
	// sub-daily schedules, the scheduled moment the run is for.
	LogicalDate time.Time
	// Params are the run's parameters, typed: what its trigger gave over
	// the DAG's defaults, checked against the DAG's declarations.
	Params Params
	Pool   *pgxpool.Pool
	Log    *slog.Logger // lines also go to the task run's log excerpt

	// The task's goroutine records checks while the engine may have given
	// up on it (a timed-out attempt goes on running): hence the lock.
	mu     sync.Mutex
	checks []CheckResult
}

// RecordChecks keeps the results of the checks the task carried out with
// its task run (task_runs.checks), whether the task then succeeds or fails,
// so that the run shows each check. A later call replaces an earlier one's
// results. A task whose checks fail records them and returns a
// *ChecksFailedError (see Verdict).
func (tc *TaskContext) RecordChecks(checks []CheckResult) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.checks = append([]CheckResult(nil), checks...)
}

// recordedChecks returns what RecordChecks kept, or nil.
func (tc *TaskContext) recordedChecks() []CheckResult {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.checks
}
