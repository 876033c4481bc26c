package dag

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/stockpipe/stockpipe/internal/retry"
	"github.com/stockpipe/stockpipe/internal/telemetry"
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
	DefaultPollInterval = time.Second
	// DefaultHeartbeatInterval and DefaultHeartbeatTimeout bound how long
	// the task of a node that died stays "running": a live node takes it
	// over once its heartbeat is DefaultHeartbeatTimeout old, looking every
	// DefaultHeartbeatInterval, so within about 40 seconds of the death.
	DefaultHeartbeatInterval = 5 * time.Second
	DefaultHeartbeatTimeout  = 30 * time.Second
)

// maxBackfillRuns bounds one Backfill call.
const maxBackfillRuns = 5000

// Config configures a Scheduler.
type Config struct {
	Pool   *pgxpool.Pool
	DAGs   []DAG
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
	// Retry is the backoff between a task's attempts: Retry.Initial after
	// the first failure, doubling after each further one, at most
	// Retry.Max. The zero Policy means retry.Task, stockpipe's one policy
	// for tasks.
	Retry retry.Policy
	// PollInterval is how often an idle node looks for jobs besides being
	// woken by PostgreSQL notifications (due retries are found this way);
	// default one second.
	PollInterval time.Duration
	// Metrics, if set, counts the runs this node finishes
	// (stockpipe_dag_runs_total); nil records nothing.
	Metrics *telemetry.Metrics
	// NodeID names this node in the history (which node runs a task, whose
	// defaults a run's parameters are) and is its River client's ID; it
	// must differ between nodes. Default: host name, process id and a
	// random suffix.
	NodeID string
	// HeartbeatInterval is how often a node records that its running task
	// attempts are alive, and how often it looks for attempts of other
	// nodes that are not; default five seconds.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout is how old an attempt's heartbeat may grow before a
	// live node takes the task over: the attempt counts as failed and the
	// task is retried (or fails, with no attempts left). Default 30
	// seconds, and at least three heartbeat intervals, so that a slow
	// database round trip or two never costs a live node its task.
	HeartbeatTimeout time.Duration
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

	// attempts are the task attempts running on this node, for the
	// heartbeat; stopLoops ends the heartbeat and reaper loops, which
	// loops tracks.
	attempts  *liveAttempts
	stopLoops context.CancelFunc
	loops     sync.WaitGroup
}

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

// newScheduler is New (working) or NewClient.
func newScheduler(cfg Config, working bool) (*Scheduler, error) {
	plans, err := planDAGs(cfg.DAGs)
	if err != nil {
		return nil, err
	}
	if cfg.Pool == nil {
		return nil, errors.New("dag: Config.Pool is nil")
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
	if cfg.Retry.Initial <= 0 {
		cfg.Retry = retry.Task
	}
	cfg.Retry.Max = max(cfg.Retry.Max, cfg.Retry.Initial)
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.NodeID == "" {
		cfg.NodeID = defaultNodeID()
	}
	if len(cfg.NodeID) > 100 {
		return nil, fmt.Errorf("dag: NodeID %.20q… is longer than 100 bytes", cfg.NodeID)
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.HeartbeatTimeout <= 0 {
		cfg.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	cfg.HeartbeatTimeout = max(cfg.HeartbeatTimeout, 3*cfg.HeartbeatInterval)
	cfg.DAGs = append([]DAG(nil), cfg.DAGs...)
	s := &Scheduler{
		cfg:      cfg,
		pool:     cfg.Pool,
		log:      cfg.Logger.With("component", "scheduler", "node", cfg.NodeID),
		plans:    plans,
		working:  working,
		now:      cfg.Now,
		attempts: newLiveAttempts(),
	}
	rc := &river.Config{
		ID:     cfg.NodeID,
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
		// sets when River's own rescuer would retry a job whose node died
		// (the longest task timeout plus an hour); the heartbeat reaper
		// (engine_heartbeat.go) takes such tasks over long before.
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

// tickQueue is the River queue of the schedule's ticks.
func (s *Scheduler) tickQueue() string { return s.cfg.Queue + "_tick" }

// hasSchedules reports whether any DAG has a schedule (else no tick is
// needed).
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
	s.startLoops(ctx)
	s.log.Info("scheduler started", "dags", len(s.plans), "queue", s.cfg.Queue, "workers", s.cfg.Workers,
		"heartbeat", s.cfg.HeartbeatInterval, "takeover_after", s.cfg.HeartbeatTimeout)
	return nil
}

// NodeID is the name of this node in the history.
func (s *Scheduler) NodeID() string { return s.cfg.NodeID }

// Stop stops taking new tasks and waits for running ones to finish. If ctx
// ends first, running tasks are cancelled (their attempts are retried by
// another node) and Stop waits a little longer for them to return.
func (s *Scheduler) Stop(ctx context.Context) error {
	if !s.working {
		return nil
	}
	// The heartbeat goes on while running tasks finish: a node that is
	// stopping is alive, and its tasks must not be taken over.
	defer s.endLoops()
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

// plan returns the plan of dag, or ErrUnknownDAG.
func (s *Scheduler) plan(dag string) (*dagPlan, error) {
	p, ok := s.plans[dag]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownDAG, dag)
	}
	return p, nil
}

// Trigger creates a new manual run of dag for the logical date of logical
// and enqueues its root tasks; a zero logical means now. For daily and
// triggered-only DAGs the logical date is midnight (in the DAG's Location)
// of logical's date; for sub-daily schedules it is logical to the minute.
//
// Every call makes a run of its own, whatever other runs the date has:
// their parameters and history stay as they were. The run records only
// params, the parameters given here; the DAG's defaults are those of the
// scheduler node that starts executing the run, merged once when its first
// task starts (see Run.Params). Trigger only inserts rows and jobs, so it
// works on a Scheduler that was not started.
//
// params are checked first against the DAG's declarations (see
// DAG.ParseParams): an unknown name or a bad value is answered with a
// *ParamError naming the parameter, and nothing is inserted.
func (s *Scheduler) Trigger(ctx context.Context, dag string, logical time.Time, params map[string]string) (int64, error) {
	p, err := s.plan(dag)
	if err != nil {
		return 0, err
	}
	if _, err := p.ParseParams(params); err != nil {
		return 0, err
	}
	if logical.IsZero() {
		logical = s.now()
	}
	var id int64
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		id, _, err = s.startRun(ctx, tx, p, p.logicalDate(logical), KindManual, params)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("triggering %s: %w", dag, err)
	}
	s.log.Info("run triggered", "dag", p.Name, "run", id, "kind", KindManual, "params", params)
	return id, nil
}

// Backfill creates one run per schedule slot in [from, to]: for daily
// schedules every date in the range the cron expression fires on (so only
// weekdays for "30 16 * * 1-5"), for sub-daily schedules every slot, and
// for triggered-only DAGs every date. Dates are taken in the DAG's
// Location. All the runs are created in one transaction, or none is.
//
// Backfilled runs are runs of their own (KindBackfill), like a manual
// trigger's, not the slots' scheduled runs: a backfill is an operator's
// request with its own parameters, and re-running a range (after fixing the
// data, with a raised threshold) must neither be skipped because the dates
// ran before nor overwrite the history of those runs. Nor does a backfilled
// date stop the leader from starting the date's scheduled run.
//
// params are checked as Trigger checks them, before any run is created.
func (s *Scheduler) Backfill(ctx context.Context, dag string, from, to time.Time, params map[string]string) ([]int64, error) {
	p, err := s.plan(dag)
	if err != nil {
		return nil, err
	}
	if _, err := p.ParseParams(params); err != nil {
		return nil, err
	}
	if to.Before(from) {
		return nil, fmt.Errorf("backfill %s: range end %s is before its start %s", dag, to.Format(time.RFC3339), from.Format(time.RFC3339))
	}
	dates, err := p.slots(from, to)
	if err != nil {
		return nil, fmt.Errorf("backfill %s: %w", dag, err)
	}
	var ids []int64
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		ids = make([]int64, 0, len(dates))
		for _, d := range dates {
			id, _, err := s.startRun(ctx, tx, p, d, KindBackfill, params)
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("backfill %s: %w", dag, err)
	}
	s.log.Info("backfilled", "dag", dag, "from", from, "to", to, "runs", len(ids), "params", params)
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

// startRun creates, in tx, a run of p for logical of the given kind with
// its task rows, and enqueues its root tasks. A scheduled run is created
// only if the slot has none (created reports whether it was); other kinds
// always make a new run. params are recorded as given: the defaults are
// merged in when the run starts executing (see claim).
func (s *Scheduler) startRun(ctx context.Context, tx pgx.Tx, p *dagPlan, logical time.Time, kind RunKind, params map[string]string) (id int64, created bool, err error) {
	if params == nil {
		params = map[string]string{}
	}
	paramsJSON, err := json.Marshal(params)
	if err != nil {
		return 0, false, fmt.Errorf("encoding params: %w", err)
	}
	// The partial unique index dag_runs_slot holds scheduled (and legacy)
	// runs only: for those a second insert of the slot, by any node, is
	// skipped; a manual or backfill run never conflicts. The ON CONFLICT
	// clause names the index by its predicate, which must be written as
	// the migration wrote it (KindScheduled, KindLegacy), not bound.
	err = tx.QueryRow(ctx, `
		INSERT INTO dag_runs (dag, logical_date, state, params, kind) VALUES ($1, $2, $5, $3, $4)
		ON CONFLICT (dag, logical_date) WHERE kind IN ('scheduled', 'legacy') DO NOTHING
		RETURNING id`,
		p.Name, logical, paramsJSON, kind, RunQueued).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("creating run of %s for %s: %w", p.Name, logical.Format(time.RFC3339), err)
	}
	// Runs are no longer re-run in place; the generation stays in the
	// schema for runs recorded before, whose jobs may still be queued.
	const gen = 1
	names := make([]string, len(p.order))
	states := make([]TaskState, len(p.order))
	pos := make([]int32, len(p.order))
	maxAttempts := make([]int32, len(p.order))
	for i, name := range p.order {
		names[i], pos[i], states[i] = name, int32(i), TaskWaiting
		maxAttempts[i] = int32(p.tasks[name].Retries + 1)
		if len(p.tasks[name].Deps) == 0 {
			states[i] = TaskQueued
		}
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO task_runs (run_id, task, pos, generation, state, max_attempts)
		SELECT $1, t.task, t.pos, $2, t.state, t.max_attempts
		FROM unnest($3::text[], $4::int[], $5::text[], $6::int[]) AS t(task, pos, state, max_attempts)`,
		id, gen, names, pos, texts(states), maxAttempts); err != nil {
		return 0, false, fmt.Errorf("creating task rows of run %d: %w", id, err)
	}
	if err := s.enqueue(ctx, tx, p, id, gen, p.roots); err != nil {
		return 0, false, err
	}
	return id, true, nil
}

// enqueue inserts the jobs of tasks of run id in tx, each task's first job,
// and records each job in its task run.
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
				// (run, task, generation, base) is skipped, whoever makes it.
				UniqueOpts: river.UniqueOpts{ByArgs: true},
			},
		}
	}
	res, err := s.client.InsertManyTx(ctx, tx, jobs)
	if err != nil {
		return fmt.Errorf("enqueueing tasks %v of run %d: %w", tasks, id, err)
	}
	// Matched by their arguments: River does not promise to return the
	// jobs in the order given.
	names := make([]string, len(res))
	jobIDs := make([]int64, len(res))
	for i, r := range res {
		var ta taskArgs
		if err := json.Unmarshal(r.Job.EncodedArgs, &ta); err != nil {
			return fmt.Errorf("reading the job enqueued for run %d: %w", id, err)
		}
		names[i], jobIDs[i] = ta.Task, r.Job.ID
	}
	// Only the task's current job may claim it: a job a takeover replaced
	// finds another job recorded and does nothing.
	if _, err := tx.Exec(ctx, `
		UPDATE task_runs t SET job_id = j.job_id
		FROM unnest($2::text[], $3::bigint[]) AS j(task, job_id)
		WHERE t.run_id = $1 AND t.task = j.task`, id, names, jobIDs); err != nil {
		return fmt.Errorf("recording the jobs of tasks %v of run %d: %w", tasks, id, err)
	}
	return nil
}

// Run is one run of a DAG.
type Run struct {
	ID          int64
	DAG         string
	LogicalDate time.Time // in the DAG's Location when the DAG is known
	State       RunState
	Kind        RunKind
	// Params are the parameters the run executes with, every task of it,
	// as written: the DAG's defaults as the scheduler node that started
	// executing the run has them (ParamsNode), overridden by Given; "" for
	// a parameter without either. Nil until the run's first task starts.
	Params map[string]string
	// Given are the parameters the trigger (or backfill) gave, which
	// override the defaults. For a legacy run they are the parameters it
	// was recorded with, defaults included.
	Given map[string]string
	// ParamsNode is the node whose defaults Params holds; empty until the
	// run starts, and for legacy runs.
	ParamsNode string
	// Started is when the first task started; Finished is when the last
	// task finished. Both are nil until then.
	Started, Finished *time.Time
}

// TaskRun is one task of a run.
type TaskRun struct {
	RunID int64
	Task  string
	State TaskState
	// Attempts counts the attempts made so far, on whichever nodes: an
	// attempt whose node stopped counts as a failed one.
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
	// Node is the scheduler node that runs (or last ran) the task.
	Node string
	// Heartbeat is when the node last reported the running attempt alive,
	// and HeartbeatAge how long ago that was by the database's clock (so
	// that a reader's clock does not matter). A running attempt whose
	// heartbeat is older than the HeartbeatTimeout of the nodes is taken
	// over by a live node. Nil and zero for tasks never started.
	Heartbeat    *time.Time
	HeartbeatAge time.Duration
}

// runColumns are what scanRun reads.
const runColumns = `id, dag, logical_date, state, kind, params, effective_params, coalesce(params_node, ''), started_at, finished_at`

// Runs lists runs of dag ("" for all DAGs), newest logical date first (and
// of one date, the newest run first), at most limit of them (100 when
// limit is not positive).
func (s *Scheduler) Runs(ctx context.Context, dag string, limit int) ([]Run, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.pool.Query(ctx, `
		SELECT `+runColumns+`
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
	rows, err := s.pool.Query(ctx, `SELECT `+runColumns+` FROM dag_runs WHERE id = $1`, id)
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
		       extract(epoch FROM now() - started_at), checks,
		       coalesce(node, ''), heartbeat_at, extract(epoch FROM now() - heartbeat_at)
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
			beatAge *float64
		)
		if err := r.Scan(&t.RunID, &t.Task, &t.State, &t.Attempts, &t.Started, &t.Finished, &ms, &t.Error, &t.Log, &running, &checks,
			&t.Node, &t.Heartbeat, &beatAge); err != nil {
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
		if beatAge != nil {
			t.HeartbeatAge = max(0, time.Duration(*beatAge*float64(time.Second)).Round(time.Millisecond))
		}
		return t, nil
	})
	if err != nil {
		return Run{}, nil, fmt.Errorf("reading tasks of run %d: %w", id, err)
	}
	return run, tasks, nil
}

// scanRun reads a row of runColumns.
func (s *Scheduler) scanRun(r pgx.CollectableRow) (Run, error) {
	var (
		run             Run
		given, resolved []byte
	)
	if err := r.Scan(&run.ID, &run.DAG, &run.LogicalDate, &run.State, &run.Kind, &given, &resolved, &run.ParamsNode,
		&run.Started, &run.Finished); err != nil {
		return run, err
	}
	if len(given) > 0 {
		if err := json.Unmarshal(given, &run.Given); err != nil {
			return run, fmt.Errorf("run %d params: %w", run.ID, err)
		}
	}
	if len(resolved) > 0 {
		if err := json.Unmarshal(resolved, &run.Params); err != nil {
			return run, fmt.Errorf("run %d effective params: %w", run.ID, err)
		}
	}
	if p, ok := s.plans[run.DAG]; ok {
		run.LogicalDate = run.LogicalDate.In(p.loc)
	} else {
		run.LogicalDate = run.LogicalDate.UTC()
	}
	return run, nil
}
