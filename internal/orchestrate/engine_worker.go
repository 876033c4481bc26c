package orchestrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
)

// bookkeepingTimeout bounds the transactions that record an attempt's
// outcome; they run even when the attempt's context has ended.
const bookkeepingTimeout = 30 * time.Second

// taskArgs are the arguments of the River job that executes one task of
// one run. Jobs are unique by their arguments, so each (run, task,
// generation) is executed by one job, however many nodes try to enqueue it.
type taskArgs struct {
	RunID      int64  `json:"run_id"`
	DAG        string `json:"dag"`
	Task       string `json:"task"`
	Generation int    `json:"generation"`
}

// Kind implements river.JobArgs.
func (taskArgs) Kind() string { return "stockpipe_task" }

// tickArgs are the arguments of the leader's periodic schedule check.
type tickArgs struct{}

// Kind implements river.JobArgs.
func (tickArgs) Kind() string { return "stockpipe_tick" }

// tickWorker starts the runs whose schedule slots are due.
type tickWorker struct {
	river.WorkerDefaults[tickArgs]
	s *Scheduler
}

// Timeout implements river.Worker.
func (w *tickWorker) Timeout(*river.Job[tickArgs]) time.Duration { return time.Minute }

// Work implements river.Worker.
func (w *tickWorker) Work(ctx context.Context, _ *river.Job[tickArgs]) error {
	return w.s.tick(ctx)
}

// tick starts a run for every slot of every scheduled DAG in the last
// Lookback that has none. A run that exists, whatever its state, is left
// alone: only an explicit Trigger re-runs a date.
func (s *Scheduler) tick(ctx context.Context) error {
	now := s.now()
	var errs []error
	for _, d := range s.cfg.DAGs {
		p := s.plans[d.Name]
		if p.sched == nil {
			continue
		}
		for slot, ok := p.next(now.Add(-s.cfg.Lookback)); ok && !slot.After(now); slot, ok = p.next(slot) {
			id, created, err := s.startRun(ctx, p, p.logicalDate(slot), nil, false)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if created {
				s.log.Info("scheduled run started", "dag", p.Name, "run", id, "slot", slot)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("schedule tick: %w", err)
	}
	return nil
}

// taskWorker executes tasks.
type taskWorker struct {
	river.WorkerDefaults[taskArgs]
	s *Scheduler
}

// Timeout implements river.Worker: the task's own bound on one attempt.
func (w *taskWorker) Timeout(job *river.Job[taskArgs]) time.Duration {
	if p, ok := w.s.plans[job.Args.DAG]; ok {
		if t, ok := p.tasks[job.Args.Task]; ok {
			return t.timeout()
		}
	}
	return defaultTaskTimeout
}

// NextRetry implements river.Worker: exponential backoff from RetryBase,
// capped at RetryMax.
func (w *taskWorker) NextRetry(job *river.Job[taskArgs]) time.Time {
	return time.Now().Add(backoff(w.s.cfg.RetryBase, w.s.cfg.RetryMax, job.Attempt))
}

// backoff is the wait after the attempt-th failed attempt.
func backoff(base, ceiling time.Duration, attempt int) time.Duration {
	d := base
	for i := 1; i < attempt && d < ceiling; i++ {
		d *= 2
	}
	return min(d, ceiling)
}

// Work implements river.Worker: it claims the task, runs it, and records
// the outcome, enqueueing the dependents that became ready.
func (w *taskWorker) Work(ctx context.Context, job *river.Job[taskArgs]) error {
	return w.s.work(ctx, job)
}

func (s *Scheduler) work(ctx context.Context, job *river.Job[taskArgs]) error {
	a := job.Args
	log := s.log.With("dag", a.DAG, "run", a.RunID, "task", a.Task, "attempt", job.Attempt)
	claim, ok, err := s.claim(ctx, job)
	if err != nil {
		return err
	}
	if !ok {
		// A job of an earlier generation of a re-run run, or a run that was
		// deleted: nothing to do.
		log.Debug("task job is stale; skipping", "generation", a.Generation)
		return nil
	}

	buf := newTailBuffer(logExcerptSize)
	buf.WriteString(claim.log)
	if job.Attempt > 1 || claim.log != "" {
		buf.WriteString(attemptHeader(job.Attempt, time.Now()))
	}
	tlog := newTaskLogger(s.cfg.Logger.Handler(), buf,
		slog.String("dag", a.DAG), slog.Int64("run", a.RunID), slog.String("task", a.Task), slog.Int("attempt", job.Attempt))

	var (
		p   = s.plans[a.DAG]
		t   *taskPlan
		run error
		tc  *TaskContext
	)
	if p != nil {
		t = p.tasks[a.Task]
	}
	start := time.Now()
	if t == nil {
		run = fmt.Errorf("DAG %q has no task %q on this node", a.DAG, a.Task)
	} else {
		tc = &TaskContext{
			DAG:         a.DAG,
			RunID:       a.RunID,
			LogicalDate: claim.logical.In(p.loc),
			Params:      claim.params,
			Pool:        s.pool,
			Kafka:       s.cfg.Kafka,
			Log:         tlog,
		}
		run = runTask(ctx, t, tc)
	}
	elapsed := time.Since(start)

	var verdict *ChecksFailedError
	isVerdict := errors.As(run, &verdict)
	var perm *PermanentError
	permanent := isVerdict || errors.As(run, &perm)
	var checks []CheckResult
	if tc != nil {
		checks = tc.recordedChecks()
	}
	if checks == nil && isVerdict {
		checks = verdict.Checks
	}
	outcome := attemptOutcome{elapsed: elapsed, checks: checks}

	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
	defer cancel()
	if run == nil {
		tlog.Info("task succeeded", "took", elapsed.Round(time.Millisecond))
		outcome.log = buf.String()
		return s.succeed(bctx, job, p, outcome)
	}
	// An attempt cut short because this node is stopping does not count:
	// River makes the job available again with the attempt given back.
	// One cancelled through River is final, and so is a verdict of failed
	// checks: the data was measured, and measuring it again would find the
	// same.
	cancelled := errors.Is(context.Cause(ctx), river.ErrJobCancelledRemotely)
	interrupted := !permanent && !cancelled && ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded)
	final := permanent || cancelled || (!interrupted && job.Attempt >= job.MaxAttempts)
	switch {
	case interrupted:
		tlog.Warn("task interrupted; it will run again", "error", run.Error())
	case isVerdict:
		tlog.Error("checks failed; the task fails without retrying", "error", run.Error(), "attempts", job.Attempt)
	case permanent:
		tlog.Error("task failed; retrying cannot help", "error", run.Error(), "attempts", job.Attempt)
	case final:
		tlog.Error("task failed", "error", run.Error(), "attempts", job.Attempt)
	default:
		tlog.Warn("task attempt failed; retrying", "error", run.Error(),
			"retry_in", backoff(s.cfg.RetryBase, s.cfg.RetryMax, job.Attempt))
	}
	outcome.log = buf.String()
	if err := s.fail(bctx, job, p, outcome, run, final, interrupted); err != nil {
		// The outcome is not recorded: let River retry the job, which
		// runs the task again and records that attempt.
		return errors.Join(run, err)
	}
	if permanent {
		// River would retry any other error while attempts remain; a
		// cancelled job is never run again.
		return river.JobCancel(run)
	}
	return run
}

// attemptOutcome is what an attempt leaves in its task run besides its
// state and error.
type attemptOutcome struct {
	elapsed time.Duration
	log     string        // the log excerpt, all attempts
	checks  []CheckResult // nil when the task recorded none
}

// checksJSON encodes the outcome's checks for task_runs.checks; nil (SQL
// NULL) when there are none.
func (o attemptOutcome) checksJSON() ([]byte, error) {
	if o.checks == nil {
		return nil, nil
	}
	doc, err := json.Marshal(o.checks)
	if err != nil {
		return nil, fmt.Errorf("encoding the task's checks: %w", err)
	}
	return doc, nil
}

// runTask runs one attempt. It returns when the task does, or when the
// attempt's context ends even if the task ignores it, and turns a panic
// into an error.
func runTask(ctx context.Context, t *taskPlan, tc *TaskContext) error {
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				tc.Log.Error("task panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				done <- fmt.Errorf("task panicked: %v", r)
			}
		}()
		done <- t.Run(ctx, tc)
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = fmt.Errorf("task did not return when its context ended: %w", context.Cause(ctx))
	}
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("attempt timed out after %s: %w", t.timeout(), err)
	}
	return err
}

// claimed is what a claimed task runs with.
type claimed struct {
	logical time.Time
	params  map[string]string
	log     string // the excerpt of earlier attempts
}

// claim marks the task running for this attempt, if the job is current:
// the run exists in the job's generation and the task is queued (or was
// left running by an earlier attempt of this same job whose node died).
// The conditional UPDATE is what keeps a task of a run from running twice
// at once even were two jobs for it to exist.
func (s *Scheduler) claim(ctx context.Context, job *river.Job[taskArgs]) (claimed, bool, error) {
	a := job.Args
	var c claimed
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return c, false, fmt.Errorf("claiming task %s of run %d: %w", a.Task, a.RunID, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit

	var (
		gen    int
		params []byte
	)
	err = tx.QueryRow(ctx, `SELECT logical_date, params, generation FROM dag_runs WHERE id = $1 FOR UPDATE`,
		a.RunID).Scan(&c.logical, &params, &gen)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, false, nil
	}
	if err != nil {
		return c, false, fmt.Errorf("claiming task %s of run %d: %w", a.Task, a.RunID, err)
	}
	if gen != a.Generation {
		return c, false, nil
	}
	err = tx.QueryRow(ctx, `
		UPDATE task_runs SET state = 'running', attempts = $4, started_at = now(),
			finished_at = NULL, duration_ms = NULL, checks = NULL
		WHERE run_id = $1 AND task = $2 AND generation = $3
		  AND (state = 'queued' OR (state = 'running' AND attempts < $4))
		RETURNING log`, a.RunID, a.Task, a.Generation, job.Attempt).Scan(&c.log)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, false, nil
	}
	if err != nil {
		return c, false, fmt.Errorf("claiming task %s of run %d: %w", a.Task, a.RunID, err)
	}
	if _, err := tx.Exec(ctx, `
		UPDATE dag_runs SET state = 'running', started_at = coalesce(started_at, now())
		WHERE id = $1 AND state = 'queued'`, a.RunID); err != nil {
		return c, false, fmt.Errorf("marking run %d running: %w", a.RunID, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return c, false, fmt.Errorf("claiming task %s of run %d: %w", a.Task, a.RunID, err)
	}
	if len(params) > 0 {
		if err := json.Unmarshal(params, &c.params); err != nil {
			return c, false, fmt.Errorf("run %d params: %w", a.RunID, err)
		}
	}
	if c.params == nil {
		c.params = map[string]string{}
	}
	return c, true, nil
}

// lockRun locks the run's row, serialising the bookkeeping of its tasks so
// that of two dependencies finishing together the second sees the first as
// succeeded. It reports false when the run is gone or re-run since.
func lockRun(ctx context.Context, tx pgx.Tx, a taskArgs) (bool, error) {
	var gen int
	err := tx.QueryRow(ctx, `SELECT generation FROM dag_runs WHERE id = $1 FOR UPDATE`, a.RunID).Scan(&gen)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("locking run %d: %w", a.RunID, err)
	}
	return gen == a.Generation, nil
}

// succeed records a successful attempt and, in the same transaction,
// enqueues the dependents whose dependencies have all succeeded, settles
// the run's state and completes the River job: a crash loses either all of
// it or none.
func (s *Scheduler) succeed(ctx context.Context, job *river.Job[taskArgs], p *dagPlan, o attemptOutcome) error {
	a := job.Args
	checks, err := o.checksJSON()
	if err != nil {
		return fmt.Errorf("recording success of task %s of run %d: %w", a.Task, a.RunID, err)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("recording success of task %s of run %d: %w", a.Task, a.RunID, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit

	current, err := lockRun(ctx, tx, a)
	if err != nil || !current {
		return err
	}
	tag, err := tx.Exec(ctx, `
		UPDATE task_runs SET state = 'success', finished_at = now(), duration_ms = $5, error = '', log = $6, checks = $7
		WHERE run_id = $1 AND task = $2 AND generation = $3 AND state = 'running' AND attempts = $4`,
		a.RunID, a.Task, a.Generation, job.Attempt, o.elapsed.Milliseconds(), o.log, checks)
	if err != nil {
		return fmt.Errorf("recording success of task %s of run %d: %w", a.Task, a.RunID, err)
	}
	if tag.RowsAffected() == 0 {
		return nil
	}
	if ready, err := readyDependents(ctx, tx, p, a); err != nil {
		return err
	} else if err := s.enqueue(ctx, tx, p, a.RunID, a.Generation, ready); err != nil {
		return err
	}
	finished, err := settleRun(ctx, tx, a.RunID)
	if err != nil {
		return err
	}
	// JobCompleteTx finds the River client among ctx's values, which ctx
	// keeps from the work context.
	if _, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, job); err != nil {
		return fmt.Errorf("completing job of task %s of run %d: %w", a.Task, a.RunID, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("recording success of task %s of run %d: %w", a.Task, a.RunID, err)
	}
	s.runFinished(a, finished)
	return nil
}

// runFinished reports a run that the committed bookkeeping of one of its
// tasks finished: once per execution of the run, by the node that
// finished it.
func (s *Scheduler) runFinished(a taskArgs, state string) {
	if state == "" {
		return
	}
	s.log.Info("run finished", "dag", a.DAG, "run", a.RunID, "state", state)
	s.cfg.Metrics.DAGRunFinished(a.DAG, state)
}

// readyDependents moves the dependents of a.Task whose dependencies have
// all succeeded from waiting to queued and returns them.
func readyDependents(ctx context.Context, tx pgx.Tx, p *dagPlan, a taskArgs) ([]string, error) {
	if p == nil || len(p.tasks[a.Task].dependents) == 0 {
		return nil, nil
	}
	rows, err := tx.Query(ctx, `SELECT task, state FROM task_runs WHERE run_id = $1`, a.RunID)
	if err != nil {
		return nil, fmt.Errorf("reading tasks of run %d: %w", a.RunID, err)
	}
	states := map[string]string{}
	var task, state string
	if _, err := pgx.ForEachRow(rows, []any{&task, &state}, func() error {
		states[task] = state
		return nil
	}); err != nil {
		return nil, fmt.Errorf("reading tasks of run %d: %w", a.RunID, err)
	}
	var candidates []string
next:
	for _, dn := range p.tasks[a.Task].dependents {
		if states[dn] != TaskWaiting {
			continue
		}
		for _, dep := range p.tasks[dn].Deps {
			if states[dep] != TaskSuccess {
				continue next
			}
		}
		candidates = append(candidates, dn)
	}
	if len(candidates) == 0 {
		return nil, nil
	}
	rows, err = tx.Query(ctx, `
		UPDATE task_runs SET state = 'queued'
		WHERE run_id = $1 AND task = ANY($2) AND state = 'waiting'
		RETURNING task`, a.RunID, candidates)
	if err != nil {
		return nil, fmt.Errorf("queueing dependents of task %s of run %d: %w", a.Task, a.RunID, err)
	}
	ready, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("queueing dependents of task %s of run %d: %w", a.Task, a.RunID, err)
	}
	return ready, nil
}

// fail records a failed attempt. A final failure also marks every task
// downstream upstream_failed and the run failed; otherwise the task goes
// back to queued for River's retry. An interrupted attempt (the node is
// stopping) does not count as one.
func (s *Scheduler) fail(ctx context.Context, job *river.Job[taskArgs], p *dagPlan, o attemptOutcome, cause error, final, interrupted bool) error {
	a := job.Args
	checks, err := o.checksJSON()
	if err != nil {
		return fmt.Errorf("recording failure of task %s of run %d: %w", a.Task, a.RunID, err)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("recording failure of task %s of run %d: %w", a.Task, a.RunID, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit

	current, err := lockRun(ctx, tx, a)
	if err != nil || !current {
		return err
	}
	state, attempts := TaskQueued, job.Attempt
	switch {
	case final:
		state = TaskFailed
	case interrupted:
		attempts = max(job.Attempt-1, 0)
	}
	tag, err := tx.Exec(ctx, `
		UPDATE task_runs SET state = $5, attempts = $6, finished_at = now(), duration_ms = $7, error = $8, log = $9, checks = $10
		WHERE run_id = $1 AND task = $2 AND generation = $3 AND state = 'running' AND attempts = $4`,
		a.RunID, a.Task, a.Generation, job.Attempt, state, attempts, o.elapsed.Milliseconds(), cause.Error(), o.log, checks)
	if err != nil {
		return fmt.Errorf("recording failure of task %s of run %d: %w", a.Task, a.RunID, err)
	}
	if tag.RowsAffected() == 0 {
		return nil
	}
	var finished string
	if final {
		if p != nil && p.tasks[a.Task] != nil {
			if down := p.downstream(a.Task); len(down) > 0 {
				if _, err := tx.Exec(ctx, `
					UPDATE task_runs SET state = 'upstream_failed', error = $3
					WHERE run_id = $1 AND task = ANY($2) AND state = 'waiting'`,
					a.RunID, down, fmt.Sprintf("upstream task %s failed", a.Task)); err != nil {
					return fmt.Errorf("marking tasks downstream of %s of run %d: %w", a.Task, a.RunID, err)
				}
			}
		}
		if finished, err = settleRun(ctx, tx, a.RunID); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("recording failure of task %s of run %d: %w", a.Task, a.RunID, err)
	}
	s.runFinished(a, finished)
	return nil
}

// settleRun derives the run's state from its tasks: failed as soon as one
// task failed, success when all succeeded; finished once no task is left
// to run. It returns the run's final state when this call finished it, and
// "" otherwise, so that a finished run is counted once.
func settleRun(ctx context.Context, tx pgx.Tx, runID int64) (finished string, err error) {
	// prev reads the row as it was before this statement: the run is
	// locked (lockRun), so no one else changed it since.
	var (
		state        string
		justFinished bool
	)
	err = tx.QueryRow(ctx, `
		UPDATE dag_runs r SET
			state = CASE WHEN c.bad > 0 THEN 'failed' WHEN c.active = 0 THEN 'success' ELSE r.state END,
			finished_at = CASE WHEN c.active = 0 THEN coalesce(r.finished_at, now()) END
		FROM (SELECT count(*) FILTER (WHERE state IN ('waiting', 'queued', 'running')) AS active,
		             count(*) FILTER (WHERE state IN ('failed', 'upstream_failed')) AS bad
		      FROM task_runs WHERE run_id = $1) c,
		     (SELECT finished_at FROM dag_runs WHERE id = $1) prev
		WHERE r.id = $1
		RETURNING r.state, prev.finished_at IS NULL AND r.finished_at IS NOT NULL`, runID).Scan(&state, &justFinished)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("settling run %d: %w", runID, err)
	}
	if !justFinished {
		return "", nil
	}
	return state, nil
}
