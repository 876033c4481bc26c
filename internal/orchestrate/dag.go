// Package orchestrate runs stockpipe's batch work: small typed DAGs of
// tasks with schedules, retries, timeouts and parameters, executed as River
// jobs in PostgreSQL so that several scheduler nodes share the work and
// never run the same task of the same run twice.
package orchestrate

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/kafka"
)

// Task is one step of a DAG.
type Task struct {
	Name string
	// Deps are the names of tasks of the same DAG that must succeed first.
	Deps []string
	// Run does the work. It must be idempotent: a retry, or a re-run of the
	// same logical date, runs it again.
	Run func(ctx context.Context, tc *TaskContext) error
	// Retries is how many times a failed run is retried (with exponential
	// backoff) before the task, and its run, fail.
	Retries int
	// Timeout bounds one attempt; zero means 10 minutes.
	Timeout time.Duration
}

// DAG is a named set of tasks with a schedule.
type DAG struct {
	Name        string
	Description string
	// Schedule is a five-field cron expression ("30 16 * * 1-5") in
	// Location; empty means the DAG only runs when triggered.
	Schedule string
	Location *time.Location // nil = UTC
	// Params are the parameters a run gets unless its trigger overrides
	// them. A run takes them from the DAG of the scheduler node that starts
	// executing it (whose settings, such as its --retention, they may
	// reflect), not from the process that triggered it.
	Params map[string]string
	Tasks  []Task
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
	Params      map[string]string
	Pool        *pgxpool.Pool
	Kafka       kafka.Config // zero when no brokers are configured
	Log         *slog.Logger // lines also go to the task run's log excerpt

	// The task's goroutine records checks while the engine may have given
	// up on it (a timed-out attempt goes on running): hence the lock.
	mu     sync.Mutex
	checks []CheckResult
}

// RecordChecks keeps the results of the checks the task carried out with
// its task run (task_runs.checks), whether the task then succeeds or fails,
// so that the run shows each check. A later call replaces an earlier one's
// results. A task whose checks fail records them and returns a
// *ChecksFailedError.
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

// Deps are what the shipped DAGs need from the process.
type Deps struct {
	Pool  *pgxpool.Pool
	Kafka kafka.Config
	// Group is the processors' consumer group, for lag checks.
	Group string
	// Partitions is the expected partition count of the ticks topic.
	Partitions int32
	// Retention is how long raw ticks are kept; default 7 days.
	Retention time.Duration
	// Now is the clock the DAGs judge by whether a trading session is
	// over; nil means time.Now.
	Now func() time.Time
	// ReplayDir, if set, is the directory below which the backfill DAG's
	// file parameter must lie (see OpenReplayFile).
	ReplayDir string
}
