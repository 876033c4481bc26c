package orchestrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/telemetry"
)

// Run states.
const (
	RunQueued  = "queued"  // created, no task started yet
	RunRunning = "running" // some task has started
	RunSuccess = "success" // every task succeeded
	RunFailed  = "failed"  // some task failed for good, or its checks failed
)

// Task run states.
const (
	TaskWaiting        = "waiting"         // some dependency has not succeeded yet
	TaskQueued         = "queued"          // enqueued, or waiting for a retry
	TaskRunning        = "running"         // an attempt is in progress
	TaskSuccess        = "success"         // the task succeeded
	TaskFailed         = "failed"          // every attempt failed, or the task's checks failed (not retried)
	TaskUpstreamFailed = "upstream_failed" // a task it depends on failed
)

// Errors callers can test for with errors.Is.
var (
	ErrUnknownDAG  = errors.New("unknown DAG")
	ErrRunNotFound = errors.New("run not found")
	// ErrNotWorker is returned by Start on a Scheduler made by NewClient.
	ErrNotWorker = errors.New("scheduler was created without workers (NewClient); use New to run tasks")
)

// Defaults for Config.
const (
	DefaultQueue        = "stockpipe"
	DefaultWorkers      = 4
	DefaultTickInterval = time.Minute
	DefaultLookback     = 5 * time.Minute
	DefaultRetryBase    = time.Second
	DefaultRetryMax     = 5 * time.Minute
	DefaultPollInterval = time.Second
)

// maxBackfillRuns bounds one Backfill call.
const maxBackfillRuns = 5000

// Config configures a Scheduler.
type Config struct {
	Pool *pgxpool.Pool
	DAGs []DAG
	// Kafka is passed through to every TaskContext.
	Kafka  kafka.Config
	Logger *slog.Logger // nil = slog.Default()
	// Queue is the River queue tasks run in; default "stockpipe". Schedule
	// ticks use the queue Queue+"_tick" so that long tasks cannot delay
	// them.
	Queue string
	// Workers is how many tasks one node runs at once; default 4.
	Workers int
	// Now lets tests control the time schedule ticks see; default
	// time.Now.
	Now func() time.Time
	// TickInterval is how often the leader checks the DAGs' schedules for
	// due slots; default one minute.
	TickInterval time.Duration
	// Lookback is how far back a tick looks for slots without a run.
	// Slots older than that, missed while no scheduler node was running,
	// are not caught up; Backfill runs them. Default five minutes, and at
	// least two tick intervals.
	Lookback time.Duration
	// RetryBase and RetryMax shape the backoff between attempts: RetryBase
	// after the first failure, doubling after each further one, at most
	// RetryMax. Defaults one second and five minutes.
	RetryBase, RetryMax time.Duration
	// PollInterval is how often an idle node looks for jobs besides being
	// woken by PostgreSQL notifications (due retries are found this way);
	// default one second.
	PollInterval time.Duration
	// Metrics, if set, counts the runs this node finishes
	// (stockpipe_dag_runs_total); nil records nothing.
	Metrics *telemetry.Metrics
}

// Scheduler runs DAGs as River jobs and keeps their history in PostgreSQL
// (dag_runs, task_runs). Several nodes may run a Scheduler on the same
// database: tasks are shared among them and the leader alone starts
// scheduled runs. Slots missed while no node ran are not caught up (see
// Config.Lookback); Backfill runs them.
type Scheduler struct {
	cfg     Config
	pool    *pgxpool.Pool
	log     *slog.Logger
	plans   map[string]*dagPlan
	client  *river.Client[pgx.Tx]
	working bool
	now     func() time.Time
}

// Migrate applies River's own migrations. It is idempotent, and safe to call
// from several processes at once: a PostgreSQL advisory lock, held on a
// connection of its own, serialises them. The pool needs room for two
// connections.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	m, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return fmt.Errorf("creating River migrator: %w", err)
	}
	if pool.Config().MaxConns < 2 {
		return errors.New("migrating River: the pool must allow at least two connections")
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrating River: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrateLockKey); err != nil {
		return fmt.Errorf("locking River migrations: %w", err)
	}
	defer func() {
		// A connection that cannot unlock is closed, which unlocks.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", migrateLockKey); err != nil {
			conn.Conn().Close(uctx) //nolint:errcheck // closing is the fallback
		}
	}()
	// Each migration runs in a transaction of its own: some add enum
	// values that later ones use, which one transaction cannot do.
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("applying River migrations: %w", err)
	}
	return nil
}

// migrateLockKey is the advisory lock Migrate holds ("stockpipe" in ASCII,
// padded).
const migrateLockKey int64 = 0x73746f636b706970

// New validates the DAGs and returns a Scheduler that can run tasks once
// started. Invalid DAGs (duplicate names, unknown or cyclic dependencies,
// schedules that do not parse) are reported all at once.
func New(cfg Config) (*Scheduler, error) {
	return newScheduler(cfg, true)
}

// NewClient is New for processes that only read history and trigger runs
// (the command line, the web UI): it starts no workers and no schedule, and
// Start fails. Runs it triggers are picked up by a started Scheduler on the
// same database.
func NewClient(cfg Config) (*Scheduler, error) {
	return newScheduler(cfg, false)
}

func newScheduler(cfg Config, working bool) (*Scheduler, error) {
	plans, err := planDAGs(cfg.DAGs)
	if err != nil {
		return nil, err
	}
	if cfg.Pool == nil {
		return nil, errors.New("orchestrate: Config.Pool is nil")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Queue == "" {
		cfg.Queue = DefaultQueue
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.TickInterval <= 0 {
		cfg.TickInterval = DefaultTickInterval
	}
	if cfg.Lookback <= 0 {
		cfg.Lookback = DefaultLookback
	}
	cfg.Lookback = max(cfg.Lookback, 2*cfg.TickInterval)
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = DefaultRetryBase
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	cfg.RetryMax = max(cfg.RetryMax, cfg.RetryBase)
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	cfg.DAGs = append([]DAG(nil), cfg.DAGs...)
	s := &Scheduler{
		cfg:     cfg,
		pool:    cfg.Pool,
		log:     cfg.Logger.With("component", "scheduler"),
		plans:   plans,
		working: working,
		now:     cfg.Now,
	}
	rc := &river.Config{
		Logger: slog.New(minLevelHandler{cfg.Logger.Handler(), slog.LevelWarn}).With("component", "river"),
	}
	if working {
		workers := river.NewWorkers()
		if err := river.AddWorkerSafely[taskArgs](workers, &taskWorker{s: s}); err != nil {
			return nil, fmt.Errorf("registering task worker: %w", err)
		}
		if err := river.AddWorkerSafely[tickArgs](workers, &tickWorker{s: s}); err != nil {
			return nil, fmt.Errorf("registering tick worker: %w", err)
		}
		maxTimeout := time.Minute
		for _, p := range plans {
			for _, t := range p.tasks {
				maxTimeout = max(maxTimeout, t.timeout())
			}
		}
		rc.Workers = workers
		rc.Queues = map[string]river.QueueConfig{
			cfg.Queue:     {MaxWorkers: cfg.Workers},
			s.tickQueue(): {MaxWorkers: 1},
		}
		rc.FetchPollInterval = cfg.PollInterval
		rc.FetchCooldown = min(river.FetchCooldownDefault, cfg.PollInterval)
		// Only a default: every job's worker sets its own timeout. It also
		// sets when River rescues (retries) a job whose node died: after an
		// hour, or after the longest task timeout plus an hour.
		rc.JobTimeout = maxTimeout
		if s.hasSchedules() {
			// A tick is harmless twice (runs are created once per slot);
			// uniqueness by period just saves work around a change of
			// leader. River's shortest period is a second.
			var unique river.UniqueOpts
			if cfg.TickInterval >= time.Second {
				unique.ByPeriod = cfg.TickInterval
			}
			rc.PeriodicJobs = []*river.PeriodicJob{river.NewPeriodicJob(
				river.PeriodicInterval(cfg.TickInterval),
				func() (river.JobArgs, *river.InsertOpts) {
					return tickArgs{}, &river.InsertOpts{
						Queue:       s.tickQueue(),
						MaxAttempts: 1,
						UniqueOpts:  unique,
					}
				},
				&river.PeriodicJobOpts{RunOnStart: true},
			)}
		}
	}
	client, err := river.NewClient(riverpgxv5.New(cfg.Pool), rc)
	if err != nil {
		return nil, fmt.Errorf("creating River client: %w", err)
	}
	s.client = client
	return s, nil
}

func (s *Scheduler) tickQueue() string { return s.cfg.Queue + "_tick" }

func (s *Scheduler) hasSchedules() bool {
	for _, p := range s.plans {
		if p.sched != nil {
			return true
		}
	}
	return false
}

// Start starts working tasks, and takes part in the election of the node
// that starts scheduled runs (River's leader, the only node whose schedule
// ticks run). It returns once started; cancelling ctx stops the Scheduler
// too, but Stop is the graceful way.
func (s *Scheduler) Start(ctx context.Context) error {
	if !s.working {
		return ErrNotWorker
	}
	if err := s.client.Start(ctx); err != nil {
		return fmt.Errorf("starting River: %w", err)
	}
	s.log.Info("scheduler started", "dags", len(s.plans), "queue", s.cfg.Queue, "workers", s.cfg.Workers)
	return nil
}

// Stop stops taking new tasks and waits for running ones to finish. If ctx
// ends first, running tasks are cancelled (their attempts are retried by
// another node) and Stop waits a little longer for them to return.
func (s *Scheduler) Stop(ctx context.Context) error {
	if !s.working {
		return nil
	}
	err := s.client.Stop(ctx)
	if err != nil && ctx.Err() != nil {
		hard, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err2 := s.client.StopAndCancel(hard); err2 != nil {
			return fmt.Errorf("stopping scheduler: %w", errors.Join(err, err2))
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("stopping scheduler: %w", err)
	}
	return nil
}

// DAGs returns the scheduler's DAGs in the order they were configured.
func (s *Scheduler) DAGs() []DAG { return append([]DAG(nil), s.cfg.DAGs...) }

// NextRun returns the first scheduled slot of dag strictly after after, in
// the DAG's Location. It returns false for an unknown DAG or one without a
// schedule.
func (s *Scheduler) NextRun(dag string, after time.Time) (time.Time, bool) {
	p, ok := s.plans[dag]
	if !ok {
		return time.Time{}, false
	}
	return p.next(after)
}

func (s *Scheduler) plan(dag string) (*dagPlan, error) {
	p, ok := s.plans[dag]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownDAG, dag)
	}
	return p, nil
}

// Trigger creates the run of dag for the logical date of logical and
// enqueues its root tasks; a zero logical means now. For daily and
// triggered-only DAGs the logical date is midnight (in the DAG's Location)
// of logical's date; for sub-daily schedules it is logical to the minute.
//
// If that run exists it is re-run: its task rows are reset and every task
// runs again, under the same run id. params override the DAG's Params; nil
// params keep the run's earlier parameters when re-running. Trigger only
// inserts rows and jobs, so it works on a Scheduler that was not started.
func (s *Scheduler) Trigger(ctx context.Context, dag string, logical time.Time, params map[string]string) (int64, error) {
	p, err := s.plan(dag)
	if err != nil {
		return 0, err
	}
	if logical.IsZero() {
		logical = s.now()
	}
	id, _, err := s.startRun(ctx, p, p.logicalDate(logical), params, true)
	return id, err
}

// Backfill triggers one run per schedule slot in [from, to]: for daily
// schedules every date in the range the cron expression fires on (so only
// weekdays for "30 16 * * 1-5"), for sub-daily schedules every slot, and
// for triggered-only DAGs every date. Dates are taken in the DAG's
// Location. Existing runs in the range are re-run, as Trigger does.
func (s *Scheduler) Backfill(ctx context.Context, dag string, from, to time.Time, params map[string]string) ([]int64, error) {
	p, err := s.plan(dag)
	if err != nil {
		return nil, err
	}
	if to.Before(from) {
		return nil, fmt.Errorf("backfill %s: range end %s is before its start %s", dag, to.Format(time.RFC3339), from.Format(time.RFC3339))
	}
	dates, err := p.slots(from, to)
	if err != nil {
		return nil, fmt.Errorf("backfill %s: %w", dag, err)
	}
	ids := make([]int64, 0, len(dates))
	for _, d := range dates {
		id, _, err := s.startRun(ctx, p, d, params, true)
		if err != nil {
			return ids, fmt.Errorf("backfill %s: %w", dag, err)
		}
		ids = append(ids, id)
	}
	s.log.Info("backfilled", "dag", dag, "from", from, "to", to, "runs", len(ids))
	return ids, nil
}

// slots lists the logical dates of the runs Backfill makes for [from, to].
func (p *dagPlan) slots(from, to time.Time) ([]time.Time, error) {
	var out []time.Time
	add := func(t time.Time) error {
		if len(out) == maxBackfillRuns {
			return fmt.Errorf("more than %d runs in the range; backfill a shorter one", maxBackfillRuns)
		}
		out = append(out, t)
		return nil
	}
	if p.sched != nil && !p.daily {
		for slot, ok := p.next(from.Add(-time.Second)); ok && !slot.After(to); slot, ok = p.next(slot) {
			if slot.Before(from) {
				continue
			}
			if err := add(slot); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	last := midnight(to.In(p.loc))
	for day := midnight(from.In(p.loc)); !day.After(last); {
		next := time.Date(day.Year(), day.Month(), day.Day()+1, 0, 0, 0, 0, p.loc)
		fires := true
		if p.sched != nil {
			slot, ok := p.next(day.Add(-time.Second))
			fires = ok && slot.Before(next)
		}
		if fires {
			if err := add(day); err != nil {
				return nil, err
			}
		}
		day = next
	}
	return out, nil
}

// startRun creates the run of p for logical (or, when rerun, resets an
// existing one) with its task rows, and enqueues the root tasks, in one
// transaction. created reports whether anything was started: without
// rerun an existing run is left alone.
func (s *Scheduler) startRun(ctx context.Context, p *dagPlan, logical time.Time, params map[string]string, rerun bool) (id int64, created bool, err error) {
	merged := maps.Clone(p.Params)
	if merged == nil {
		merged = map[string]string{}
	}
	maps.Copy(merged, params)
	paramsJSON, err := json.Marshal(merged)
	if err != nil {
		return 0, false, fmt.Errorf("encoding params: %w", err)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("triggering %s: %w", p.Name, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit

	var gen int
	if rerun {
		err = tx.QueryRow(ctx, `
			INSERT INTO dag_runs (dag, logical_date, state, params) VALUES ($1, $2, 'queued', $3)
			ON CONFLICT (dag, logical_date) DO UPDATE SET
				state = 'queued',
				generation = dag_runs.generation + 1,
				params = CASE WHEN $4 THEN EXCLUDED.params ELSE dag_runs.params END,
				started_at = NULL,
				finished_at = NULL
			RETURNING id, generation`,
			p.Name, logical, paramsJSON, params != nil).Scan(&id, &gen)
	} else {
		err = tx.QueryRow(ctx, `
			INSERT INTO dag_runs (dag, logical_date, state, params) VALUES ($1, $2, 'queued', $3)
			ON CONFLICT (dag, logical_date) DO NOTHING
			RETURNING id, generation`,
			p.Name, logical, paramsJSON).Scan(&id, &gen)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, false, nil
		}
	}
	if err != nil {
		return 0, false, fmt.Errorf("creating run of %s for %s: %w", p.Name, logical.Format(time.RFC3339), err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM task_runs WHERE run_id = $1`, id); err != nil {
		return 0, false, fmt.Errorf("resetting run %d: %w", id, err)
	}
	names := make([]string, len(p.order))
	states := make([]string, len(p.order))
	pos := make([]int32, len(p.order))
	for i, name := range p.order {
		names[i], pos[i], states[i] = name, int32(i), TaskWaiting
		if len(p.tasks[name].Deps) == 0 {
			states[i] = TaskQueued
		}
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO task_runs (run_id, task, pos, generation, state)
		SELECT $1, t.task, t.pos, $2, t.state FROM unnest($3::text[], $4::int[], $5::text[]) AS t(task, pos, state)`,
		id, gen, names, pos, states); err != nil {
		return 0, false, fmt.Errorf("creating task rows of run %d: %w", id, err)
	}
	if err := s.enqueue(ctx, tx, p, id, gen, p.roots); err != nil {
		return 0, false, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, false, fmt.Errorf("committing run %d: %w", id, err)
	}
	s.log.Info("run triggered", "dag", p.Name, "run", id, "logical_date", logical, "generation", gen)
	return id, true, nil
}

// enqueue inserts the jobs of tasks of run id in tx.
func (s *Scheduler) enqueue(ctx context.Context, tx pgx.Tx, p *dagPlan, id int64, gen int, tasks []string) error {
	if len(tasks) == 0 {
		return nil
	}
	jobs := make([]river.InsertManyParams, len(tasks))
	for i, name := range tasks {
		jobs[i] = river.InsertManyParams{
			Args: taskArgs{RunID: id, DAG: p.Name, Task: name, Generation: gen},
			InsertOpts: &river.InsertOpts{
				Queue:       s.cfg.Queue,
				MaxAttempts: p.tasks[name].Retries + 1,
				// One job per task execution: a second insert of the same
				// (run, task, generation) is skipped, whoever makes it.
				UniqueOpts: river.UniqueOpts{ByArgs: true},
			},
		}
	}
	if _, err := s.client.InsertManyTx(ctx, tx, jobs); err != nil {
		return fmt.Errorf("enqueueing tasks %v of run %d: %w", tasks, id, err)
	}
	return nil
}

// Run is one run of a DAG.
type Run struct {
	ID          int64
	DAG         string
	LogicalDate time.Time // in the DAG's Location when the DAG is known
	State       string    // RunQueued, RunRunning, RunSuccess or RunFailed
	Params      map[string]string
	// Started is when the first task started; Finished is when the last
	// task finished. Both are nil until then, and reset by a re-run.
	Started, Finished *time.Time
}

// TaskRun is one task of a run.
type TaskRun struct {
	RunID int64
	Task  string
	// State is TaskWaiting, TaskQueued, TaskRunning, TaskSuccess, TaskFailed
	// or TaskUpstreamFailed.
	State    string
	Attempts int
	// Started and Finished bound the latest attempt.
	Started, Finished *time.Time
	// Duration is the latest attempt's, or how long the running one has
	// been going.
	Duration time.Duration
	Error    string // the latest attempt's error
	Log      string // the end (about 4 KB) of the task's log, all attempts
	// Checks are the results of the checks the latest attempt carried out
	// (TaskContext.RecordChecks); nil for a task that records none.
	Checks []CheckResult
}

// Runs lists runs of dag ("" for all DAGs), newest logical date first, at
// most limit of them (100 when limit is not positive).
func (s *Scheduler) Runs(ctx context.Context, dag string, limit int) ([]Run, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.pool.Query(ctx, `
		SELECT id, dag, logical_date, state, params, started_at, finished_at
		FROM dag_runs WHERE $1 = '' OR dag = $1
		ORDER BY logical_date DESC, id DESC LIMIT $2`, dag, limit)
	if err != nil {
		return nil, fmt.Errorf("listing runs: %w", err)
	}
	runs, err := pgx.CollectRows(rows, s.scanRun)
	if err != nil {
		return nil, fmt.Errorf("listing runs: %w", err)
	}
	return runs, nil
}

// Run returns run id and its tasks in dependency order.
func (s *Scheduler) Run(ctx context.Context, id int64) (Run, []TaskRun, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT id, dag, logical_date, state, params, started_at, finished_at
		FROM dag_runs WHERE id = $1`, id)
	if err != nil {
		return Run{}, nil, fmt.Errorf("reading run %d: %w", id, err)
	}
	run, err := pgx.CollectExactlyOneRow(rows, s.scanRun)
	if errors.Is(err, pgx.ErrNoRows) {
		return Run{}, nil, fmt.Errorf("%w: %d", ErrRunNotFound, id)
	}
	if err != nil {
		return Run{}, nil, fmt.Errorf("reading run %d: %w", id, err)
	}
	rows, err = s.pool.Query(ctx, `
		SELECT run_id, task, state, attempts, started_at, finished_at, duration_ms, error, log,
		       extract(epoch FROM now() - started_at), checks
		FROM task_runs WHERE run_id = $1 ORDER BY pos, task`, id)
	if err != nil {
		return Run{}, nil, fmt.Errorf("reading tasks of run %d: %w", id, err)
	}
	tasks, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (TaskRun, error) {
		var (
			t       TaskRun
			ms      *int64
			running *float64
			checks  []byte
		)
		if err := r.Scan(&t.RunID, &t.Task, &t.State, &t.Attempts, &t.Started, &t.Finished, &ms, &t.Error, &t.Log, &running, &checks); err != nil {
			return t, err
		}
		if checks != nil {
			if err := json.Unmarshal(checks, &t.Checks); err != nil {
				return t, fmt.Errorf("task %s checks: %w", t.Task, err)
			}
		}
		switch {
		case ms != nil:
			t.Duration = time.Duration(*ms) * time.Millisecond
		case t.State == TaskRunning && running != nil:
			t.Duration = time.Duration(*running * float64(time.Second)).Round(time.Millisecond)
		}
		return t, nil
	})
	if err != nil {
		return Run{}, nil, fmt.Errorf("reading tasks of run %d: %w", id, err)
	}
	return run, tasks, nil
}

func (s *Scheduler) scanRun(r pgx.CollectableRow) (Run, error) {
	var (
		run    Run
		params []byte
	)
	if err := r.Scan(&run.ID, &run.DAG, &run.LogicalDate, &run.State, &params, &run.Started, &run.Finished); err != nil {
		return run, err
	}
	if len(params) > 0 {
		if err := json.Unmarshal(params, &run.Params); err != nil {
			return run, fmt.Errorf("run %d params: %w", run.ID, err)
		}
	}
	if p, ok := s.plans[run.DAG]; ok {
		run.LogicalDate = run.LogicalDate.In(p.loc)
	} else {
		run.LogicalDate = run.LogicalDate.UTC()
	}
	return run, nil
}
