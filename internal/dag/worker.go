package dag

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
// generation, base) is executed by one job, however many nodes try to
// enqueue it.
type taskArgs struct {
	RunID      int64  `json:"run_id"`
	DAG        string `json:"dag"`
	Task       string `json:"task"`
	Generation int    `json:"generation"`
	// Base is how many attempts of the task earlier jobs made: zero for
	// the task's first job, the attempts so far for the fresh job that
	// takes over the task of a node that stopped (engine_heartbeat.go).
	Base int `json:"base,omitempty"`
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
// Lookback that has no scheduled run. Manual and backfilled runs of the
// slot's date do not count: the scheduled run still happens (market_close
// triggered during the session writes unfinished candles, which the
// scheduled run after the close replaces). A slot's scheduled run, whatever
// its state, is never started twice: the unique index on scheduled runs
// skips a second insert, by this node or by another that was leader for a
// moment.
func (s *Scheduler) tick(ctx context.Context) error {
	now := s.now()
	var errs []error
	for _, d := range s.cfg.DAGs {
		p := s.plans[d.Name]
		if p.sched == nil {
			continue
		}
		for slot, ok := p.next(now.Add(-s.cfg.Lookback)); ok && !slot.After(now); slot, ok = p.next(slot) {
			var (
				id      int64
				created bool
			)
			err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
				var err error
				id, created, err = s.startRun(ctx, tx, p, p.logicalDate(slot), KindScheduled, nil)
				return err
			})
			if err != nil {
				errs = append(errs, fmt.Errorf("starting the run of %s for %s: %w", p.Name, slot.Format(time.RFC3339), err))
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

// Timeout implements river.Worker: the task's own bound on one attempt,
// plus room for claiming it. The task itself is held to its bound by
// runTask; were River's deadline the task's, claiming the task (a
// transaction, slow on a loaded database) would eat into it, and with a
// short timeout fail before the task ever ran, again and again.
func (w *taskWorker) Timeout(job *river.Job[taskArgs]) time.Duration {
	if p, ok := w.s.plans[job.Args.DAG]; ok {
		if t, ok := p.tasks[job.Args.Task]; ok {
			return t.timeout() + bookkeepingTimeout
		}
	}
	return defaultTaskTimeout + bookkeepingTimeout
}

// NextRetry implements river.Worker: the wait of the Config's retry
// policy (retry.Task by default) after the job's attempt.
func (w *taskWorker) NextRetry(job *river.Job[taskArgs]) time.Time {
	return time.Now().Add(w.s.cfg.Retry.Delay(job.Attempt))
}

// Work implements river.Worker: it claims the task, runs it, and records
// the outcome, enqueueing the dependents that became ready.
func (w *taskWorker) Work(ctx context.Context, job *river.Job[taskArgs]) error {
	return w.s.work(ctx, job)
}

// work executes one attempt of the task of job: claims it, runs it, and
// records the outcome (see Work).
func (s *Scheduler) work(ctx context.Context, job *river.Job[taskArgs]) error {
	a := job.Args
	log := s.log.With("dag", a.DAG, "run", a.RunID, "task", a.Task, "job", job.ID)
	claim, ok, err := s.claim(ctx, job)
	if err != nil {
		return err
	}
	if !ok {
		// A job the task no longer waits for (one replaced when its node
		// stopped, a duplicate), or a run that was deleted: nothing to do.
		log.Debug("task job is stale; skipping", "generation", a.Generation, "base", a.Base)
		return nil
	}
	log = log.With("attempt", claim.attempt)
	at := attempt{jobID: job.ID, number: claim.attempt}

	buf := newTailBuffer(logExcerptSize)
	buf.WriteString(claim.log)
	if claim.attempt > 1 || claim.log != "" {
		buf.WriteString(attemptHeader(claim.attempt, time.Now()))
	}
	tlog := newTaskLogger(s.cfg.Logger.Handler(), buf,
		slog.String("dag", a.DAG), slog.Int64("run", a.RunID), slog.String("task", a.Task), slog.Int("attempt", claim.attempt))
	tlog.Info("attempt started", "node", s.cfg.NodeID)

	var (
		p   = s.plans[a.DAG]
		t   *taskPlan
		run error
		tc  *TaskContext
	)
	if p != nil {
		t = p.tasks[a.Task]
	}
	// The heartbeat reports the attempt alive while it runs, and cancels
	// it, with errTakenOver, if another node has taken the task over.
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	key := attemptKey{runID: a.RunID, task: a.Task, attempt: at}
	s.attempts.add(key, cancel)
	defer s.attempts.remove(key)

	start := time.Now()
	switch {
	case t == nil:
		run = fmt.Errorf("DAG %q has no task %q on this node", a.DAG, a.Task)
	case claim.paramsErr != nil:
		// Parameters this node's DAG cannot take (it was changed since the
		// run was triggered): no attempt would fare better.
		run = &PermanentError{Err: claim.paramsErr}
	default:
		tc = &TaskContext{
			DAG:         a.DAG,
			RunID:       a.RunID,
			Attempt:     claim.attempt,
			LogicalDate: claim.logical.In(p.loc),
			Params:      claim.params,
			Pool:        s.pool,
			Log:         tlog,
		}
		run = runTask(actx, t, tc)
	}
	elapsed := time.Since(start)

	if errors.Is(context.Cause(actx), errTakenOver) {
		// Another node counted this attempt failed and runs the task
		// again: whatever this attempt did, it records nothing (the
		// bookkeeping is fenced on the attempt anyway), and its job, which
		// the takeover cancelled, ends cancelled.
		log.Warn("attempt taken over by another node; its outcome is dropped", "outcome", errString(run))
		return river.JobCancel(fmt.Errorf("task %s of run %d: %w", a.Task, a.RunID, errTakenOver))
	}

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

	bctx, bcancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
	defer bcancel()
	if run == nil {
		tlog.Info("task succeeded", "took", elapsed.Round(time.Millisecond))
		outcome.log = buf.String()
		err := s.succeed(bctx, job, at, p, outcome)
		if errors.Is(err, errNotCurrent) {
			// Completed would say the job did the task's work; it did,
			// but another attempt's outcome is the task's.
			return river.JobCancel(err)
		}
		return err
	}
	// An attempt cut short because this node is stopping does not count:
	// River makes the job available again with the attempt given back.
	// One cancelled through River is final, and so is a verdict of failed
	// checks: the data was measured, and measuring it again would find the
	// same.
	cancelled := errors.Is(context.Cause(ctx), river.ErrJobCancelledRemotely)
	interrupted := !permanent && !cancelled && ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded)
	// The task's budget is counted across the jobs that ran it (a task
	// taken over gets a fresh job with the attempts left); River's count
	// of this job's attempts agrees with it.
	exhausted := job.Attempt >= job.MaxAttempts || (claim.maxAttempts > 0 && claim.attempt >= claim.maxAttempts)
	final := permanent || cancelled || (!interrupted && exhausted)
	switch {
	case interrupted:
		tlog.Warn("task interrupted; it will run again", "error", run.Error())
	case isVerdict:
		tlog.Error("checks failed; the task fails without retrying", "error", run.Error(), "attempts", claim.attempt)
	case permanent:
		tlog.Error("task failed; retrying cannot help", "error", run.Error(), "attempts", claim.attempt)
	case final:
		tlog.Error("task failed", "error", run.Error(), "attempts", claim.attempt)
	default:
		tlog.Warn("task attempt failed; retrying", "error", run.Error(),
			"retry_in", s.cfg.Retry.Delay(job.Attempt))
	}
	outcome.log = buf.String()
	if err := s.fail(bctx, job, at, p, outcome, run, final, interrupted); errors.Is(err, errNotCurrent) {
		return river.JobCancel(fmt.Errorf("%w; it failed: %w", err, run))
	} else if err != nil {
		// The outcome is not recorded: let River retry the job, which
		// runs the task again and records that attempt.
		return errors.Join(run, err)
	}
	if final && !interrupted && job.Attempt < job.MaxAttempts {
		// River would retry any other error while its attempts remain; a
		// cancelled job is never run again.
		return river.JobCancel(run)
	}
	return run
}

// errString is err's message, or "success" for nil.
func errString(err error) string {
	if err == nil {
		return "success"
	}
	return err.Error()
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

// runTask runs one attempt, held to the task's timeout. It returns when
// the task does, or when the attempt's context ends even if the task
// ignores it, and turns a panic into an error.
func runTask(ctx context.Context, t *taskPlan, tc *TaskContext) error {
	ctx, cancel := context.WithTimeout(ctx, t.timeout())
	defer cancel()
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

// attempt identifies one attempt of a task: the River job running it and
// the task's attempt number, counted across jobs. The bookkeeping of an
// attempt changes its task run only while the task run is still running
// that attempt, so an attempt taken over by another node (or any stale one)
// records nothing, whenever it returns.
type attempt struct {
	jobID  int64
	number int
}

// errNotCurrent is what the bookkeeping of an attempt returns when the
// task run no longer runs that attempt (another node took it over): it
// recorded nothing.
var errNotCurrent = errors.New("the attempt is no longer its task's (another node took the task over); its outcome is not recorded")

// claimed is what a claimed task runs with.
type claimed struct {
	logical time.Time
	params  Params
	// paramsErr is why the run's parameters do not suit this node's DAG;
	// the attempt then fails for good.
	paramsErr error
	log       string // the excerpt of earlier attempts
	// attempt is the task's attempt number, across jobs; maxAttempts its
	// budget, or zero when the task run predates it.
	attempt, maxAttempts int
}

// claim marks the task running for this attempt on this node, if the job
// is the task's current one: the run exists in the job's generation, the
// task run names this job (or predates job ids) and is queued, or was left
// running by an earlier attempt of this same job that River retried after
// its node died. The conditional UPDATE, under the run's lock, is what
// keeps a task of a run from running twice at once even were two jobs for
// it to exist.
//
// The run's first claim also fixes its parameters: this node's defaults
// for the DAG, overridden by those the trigger gave, recorded in the run
// for every later task to use, on whichever node. Each claim reads them as
// this node's DAG declares them; parameters it cannot take (the DAG changed
// since the run was triggered) are left unrecorded and fail the attempt.
func (s *Scheduler) claim(ctx context.Context, job *river.Job[taskArgs]) (claimed, bool, error) {
	a := job.Args
	var c claimed
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return c, false, fmt.Errorf("claiming task %s of run %d: %w", a.Task, a.RunID, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit

	var (
		gen             int
		given, resolved []byte
	)
	err = tx.QueryRow(ctx, `SELECT logical_date, params, effective_params, generation FROM dag_runs WHERE id = $1 FOR UPDATE`,
		a.RunID).Scan(&c.logical, &given, &resolved, &gen)
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
		UPDATE task_runs SET state = $7, attempts = attempt_base + $4, job_id = $5, node = $6,
			heartbeat_at = now(), started_at = now(), finished_at = NULL, duration_ms = NULL, checks = NULL
		WHERE run_id = $1 AND task = $2 AND generation = $3 AND (job_id IS NULL OR job_id = $5)
		  AND (state = $8 OR (state = $7 AND attempts < attempt_base + $4))
		RETURNING log, attempts, coalesce(max_attempts, 0)`,
		a.RunID, a.Task, a.Generation, job.Attempt, job.ID, s.cfg.NodeID, TaskRunning, TaskQueued).Scan(&c.log, &c.attempt, &c.maxAttempts)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, false, nil
	}
	if err != nil {
		return c, false, fmt.Errorf("claiming task %s of run %d: %w", a.Task, a.RunID, err)
	}
	// This node reads the run's parameters as its DAG declares them: the
	// ones recorded by the run's first claim, or else the given ones over
	// its own defaults, which it then records. A node that does not know
	// the DAG fails the attempt saying so, and records nothing.
	if p := s.plans[a.DAG]; p != nil {
		doc := resolved
		if doc == nil {
			doc = given
		}
		var text map[string]string
		if len(doc) > 0 {
			if err := json.Unmarshal(doc, &text); err != nil {
				return c, false, fmt.Errorf("run %d params: %w", a.RunID, err)
			}
		}
		c.params, c.paramsErr = p.ParseParams(text)
		if resolved == nil && c.paramsErr == nil {
			if resolved, err = json.Marshal(c.params.Text()); err != nil {
				return c, false, fmt.Errorf("run %d: encoding its parameters: %w", a.RunID, err)
			}
			if _, err := tx.Exec(ctx, `UPDATE dag_runs SET effective_params = $2, params_node = $3 WHERE id = $1`,
				a.RunID, resolved, s.cfg.NodeID); err != nil {
				return c, false, fmt.Errorf("recording the parameters of run %d: %w", a.RunID, err)
			}
		}
	}
	if _, err := tx.Exec(ctx, `
		UPDATE dag_runs SET state = $2, started_at = coalesce(started_at, now())
		WHERE id = $1 AND state = $3`, a.RunID, RunRunning, RunQueued); err != nil {
		return c, false, fmt.Errorf("marking run %d running: %w", a.RunID, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return c, false, fmt.Errorf("claiming task %s of run %d: %w", a.Task, a.RunID, err)
	}
	return c, true, nil
}

// lockRun locks the run's row, serialising the bookkeeping of its tasks so
// that of two dependencies finishing together the second sees the first as
// succeeded. It reports false when the run is gone, or was re-run in
// place since (runs from before every trigger made a new run bumped their
// generation when re-run).
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
// it or none. An attempt that is no longer the task run's (taken over)
// records nothing.
func (s *Scheduler) succeed(ctx context.Context, job *river.Job[taskArgs], at attempt, p *dagPlan, o attemptOutcome) error {
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
		UPDATE task_runs SET state = $9, finished_at = now(), duration_ms = $6, error = '', log = $7, checks = $8
		WHERE run_id = $1 AND task = $2 AND generation = $3 AND state = $10 AND job_id = $4 AND attempts = $5`,
		a.RunID, a.Task, a.Generation, at.jobID, at.number, o.elapsed.Milliseconds(), o.log, checks, TaskSuccess, TaskRunning)
	if err != nil {
		return fmt.Errorf("recording success of task %s of run %d: %w", a.Task, a.RunID, err)
	}
	if tag.RowsAffected() == 0 {
		s.log.Warn("a successful attempt is no longer its task's; recording nothing",
			"dag", a.DAG, "run", a.RunID, "task", a.Task, "attempt", at.number)
		return errNotCurrent
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
	s.runFinished(a.DAG, a.RunID, finished)
	return nil
}

// runFinished reports a run that the committed bookkeeping of one of its
// tasks finished: once per run, by the node that finished it.
func (s *Scheduler) runFinished(dag string, runID int64, state RunState) {
	if state == "" {
		return
	}
	s.log.Info("run finished", "dag", dag, "run", runID, "state", state)
	s.cfg.Metrics.DAGRunFinished(dag, string(state))
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
	states := map[string]TaskState{}
	var (
		task  string
		state TaskState
	)
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
		UPDATE task_runs SET state = $3
		WHERE run_id = $1 AND task = ANY($2) AND state = $4
		RETURNING task`, a.RunID, candidates, TaskQueued, TaskWaiting)
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
// back to queued for River's retry of the same job. An interrupted attempt
// (the node is stopping) does not count as one. An attempt that is no
// longer the task run's (taken over) records nothing.
func (s *Scheduler) fail(ctx context.Context, job *river.Job[taskArgs], at attempt, p *dagPlan, o attemptOutcome, cause error, final, interrupted bool) error {
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
	state, attempts := TaskQueued, at.number
	switch {
	case final:
		state = TaskFailed
	case interrupted:
		attempts = max(at.number-1, 0)
	}
	tag, err := tx.Exec(ctx, `
		UPDATE task_runs SET state = $6, attempts = $7, finished_at = now(), duration_ms = $8, error = $9, log = $10, checks = $11
		WHERE run_id = $1 AND task = $2 AND generation = $3 AND state = $12 AND job_id = $4 AND attempts = $5`,
		a.RunID, a.Task, a.Generation, at.jobID, at.number, state, attempts, o.elapsed.Milliseconds(), cause.Error(), o.log, checks, TaskRunning)
	if err != nil {
		return fmt.Errorf("recording failure of task %s of run %d: %w", a.Task, a.RunID, err)
	}
	if tag.RowsAffected() == 0 {
		s.log.Warn("a failed attempt is no longer its task's; recording nothing",
			"dag", a.DAG, "run", a.RunID, "task", a.Task, "attempt", at.number)
		return errNotCurrent
	}
	var finished RunState
	if final {
		if finished, err = failDownstream(ctx, tx, p, a.RunID, a.Task); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("recording failure of task %s of run %d: %w", a.Task, a.RunID, err)
	}
	s.runFinished(a.DAG, a.RunID, finished)
	return nil
}

// failDownstream marks every task downstream of the failed task
// upstream_failed and settles the run, returning its state if this
// finished it.
func failDownstream(ctx context.Context, tx pgx.Tx, p *dagPlan, runID int64, task string) (RunState, error) {
	if p != nil && p.tasks[task] != nil {
		if down := p.downstream(task); len(down) > 0 {
			if _, err := tx.Exec(ctx, `
				UPDATE task_runs SET state = $4, error = $3
				WHERE run_id = $1 AND task = ANY($2) AND state = $5`,
				runID, down, fmt.Sprintf("upstream task %s failed", task), TaskUpstreamFailed, TaskWaiting); err != nil {
				return "", fmt.Errorf("marking tasks downstream of %s of run %d: %w", task, runID, err)
			}
		}
	}
	return settleRun(ctx, tx, runID)
}

// settleRun derives the run's state from its tasks: failed as soon as one
// task failed, success when all succeeded; finished once no task is left
// to run. It returns the run's final state when this call finished it, and
// "" otherwise, so that a finished run is counted once.
func settleRun(ctx context.Context, tx pgx.Tx, runID int64) (finished RunState, err error) {
	// prev reads the row as it was before this statement: the run is
	// locked (lockRun), so no one else changed it since.
	var (
		state        RunState
		justFinished bool
	)
	err = tx.QueryRow(ctx, `
		UPDATE dag_runs r SET
			state = CASE WHEN c.bad > 0 THEN $4 WHEN c.active = 0 THEN $5 ELSE r.state END,
			finished_at = CASE WHEN c.active = 0 THEN coalesce(r.finished_at, now()) END
		FROM (SELECT count(*) FILTER (WHERE state = ANY($2)) AS active,
		             count(*) FILTER (WHERE state = ANY($3)) AS bad
		      FROM task_runs WHERE run_id = $1) c,
		     (SELECT finished_at FROM dag_runs WHERE id = $1) prev
		WHERE r.id = $1
		RETURNING r.state, prev.finished_at IS NULL AND r.finished_at IS NOT NULL`,
		runID, texts(activeTaskStates), texts(badTaskStates), RunFailed, RunSuccess).Scan(&state, &justFinished)
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
