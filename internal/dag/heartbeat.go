package dag

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// A node that dies (SIGKILL, power, OOM) leaves its task attempts
// "running" in task_runs and its River jobs running in river_job; River's
// own rescuer retries such a job only after the longest task timeout plus an
// hour. Instead, every node reports its running attempts alive every
// HeartbeatInterval (task_runs.heartbeat_at, .node), and every node looks as
// often for attempts whose heartbeat is older than HeartbeatTimeout: such an
// attempt counts as failed, and its task is retried by a fresh River job
// with the attempts left (or fails, with none left). A slow task on a live
// node is never taken over, however long it runs: its heartbeat comes from
// the node, not from the task's code. The stuck job is cancelled through
// River (JobCancelTx): a node that was only cut off, not dead, is told to
// stop the attempt, and whatever the attempt does later records nothing,
// because all bookkeeping is fenced on (job, attempt).

// errTakenOver is the cause with which a node cancels an attempt that
// another node has taken over.
var errTakenOver = errors.New("another scheduler node took the task over: this node's heartbeat for it stopped")

// attemptKey identifies a running attempt of a task of a run.
type attemptKey struct {
	runID   int64
	task    string
	attempt attempt
}

// liveAttempts are the attempts running on this node, with the functions
// that cancel them.
type liveAttempts struct {
	mu sync.Mutex
	m  map[attemptKey]context.CancelCauseFunc
}

// newLiveAttempts returns an empty set.
func newLiveAttempts() *liveAttempts {
	return &liveAttempts{m: map[attemptKey]context.CancelCauseFunc{}}
}

// add records that attempt k runs here, cancelled by cancel.
func (l *liveAttempts) add(k attemptKey, cancel context.CancelCauseFunc) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.m[k] = cancel
}

// remove forgets attempt k, which has returned.
func (l *liveAttempts) remove(k attemptKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, k)
}

// snapshot lists the attempts running here now.
func (l *liveAttempts) snapshot() []attemptKey {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := make([]attemptKey, 0, len(l.m))
	for k := range l.m {
		keys = append(keys, k)
	}
	return keys
}

// cancel cancels attempt k with cause, if it is still running here.
func (l *liveAttempts) cancel(k attemptKey, cause error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c, ok := l.m[k]; ok {
		c(cause)
	}
}

// defaultNodeID names a node by its host, its process and a random
// suffix, so that a restarted process on the same host (even one given the
// same pid in a fresh container) is a different node.
func defaultNodeID() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "node"
	}
	if len(host) > 60 {
		host = host[:60]
	}
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), rand.Text()[:6])
}

// startLoops starts the heartbeat and the reaper; they end when ctx does
// or endLoops is called.
func (s *Scheduler) startLoops(ctx context.Context) {
	lctx, cancel := context.WithCancel(ctx)
	s.stopLoops = cancel
	s.loops.Go(func() { s.heartbeatLoop(lctx) })
	s.loops.Go(func() { s.reaperLoop(lctx) })
}

// endLoops stops the heartbeat and the reaper and waits for them.
func (s *Scheduler) endLoops() {
	if s.stopLoops != nil {
		s.stopLoops()
		s.loops.Wait()
	}
}

// heartbeatLoop reports this node's running attempts alive every
// HeartbeatInterval, on a connection of its own: tasks that use up the
// pool's connections must not starve the heartbeat, or their node would
// look dead while working hardest.
func (s *Scheduler) heartbeatLoop(ctx context.Context) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			conn.Close(cctx) //nolint:errcheck // closing anyway
		}
	}()
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		keys := s.attempts.snapshot()
		if len(keys) == 0 {
			continue
		}
		var err error
		conn, err = s.beat(ctx, conn, keys)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			s.log.Warn("cannot record the heartbeat of this node's running tasks; another node takes them over if this lasts",
				"error", err, "after", s.cfg.HeartbeatTimeout)
		case err == nil && failing:
			failing = false
			s.log.Info("heartbeat recorded again")
		}
	}
}

// beat records the heartbeat of keys on conn (connecting when conn is
// nil) and cancels, with errTakenOver, those whose task run no longer runs
// that attempt. It returns the connection to use next time.
func (s *Scheduler) beat(ctx context.Context, conn *pgx.Conn, keys []attemptKey) (*pgx.Conn, error) {
	// A beat that takes longer than an interval is as good as missed.
	bctx, cancel := context.WithTimeout(ctx, max(s.cfg.HeartbeatInterval, time.Second))
	defer cancel()
	if conn == nil || conn.IsClosed() {
		c, err := pgx.ConnectConfig(bctx, s.pool.Config().ConnConfig.Copy())
		if err != nil {
			return nil, fmt.Errorf("connecting to record the heartbeat: %w", err)
		}
		conn = c
	}
	runIDs := make([]int64, len(keys))
	tasks := make([]string, len(keys))
	jobIDs := make([]int64, len(keys))
	numbers := make([]int32, len(keys))
	for i, k := range keys {
		runIDs[i], tasks[i], jobIDs[i], numbers[i] = k.runID, k.task, k.attempt.jobID, int32(k.attempt.number)
	}
	rows, err := conn.Query(bctx, `
		UPDATE task_runs t SET heartbeat_at = now()
		FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::int[]) AS a(run_id, task, job_id, attempts)
		WHERE t.run_id = a.run_id AND t.task = a.task AND t.job_id = a.job_id AND t.attempts = a.attempts
		  AND t.state = $5
		RETURNING t.run_id, t.task, t.job_id, t.attempts`, runIDs, tasks, jobIDs, numbers, TaskRunning)
	var alive []attemptKey
	if err == nil {
		alive, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (attemptKey, error) {
			var k attemptKey
			err := r.Scan(&k.runID, &k.task, &k.attempt.jobID, &k.attempt.number)
			return k, err
		})
	}
	if err != nil {
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer ccancel()
		conn.Close(cctx) //nolint:errcheck // reconnecting next time
		return nil, fmt.Errorf("recording the heartbeat of %d running attempts: %w", len(keys), err)
	}
	found := make(map[attemptKey]bool, len(alive))
	for _, k := range alive {
		found[k] = true
	}
	for _, k := range keys {
		if !found[k] {
			// Taken over, or finished since the snapshot (then the
			// cancel comes after the attempt's outcome was recorded and
			// changes nothing).
			s.attempts.cancel(k, errTakenOver)
		}
	}
	return conn, nil
}

// reaperLoop takes over stale attempts at once (a restarted node takes
// over its predecessor's as soon as they are stale) and then every
// HeartbeatInterval.
func (s *Scheduler) reaperLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		if err := s.reap(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("looking for tasks of stopped nodes", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// staleAttempt is a running attempt whose heartbeat is older than the
// HeartbeatTimeout.
type staleAttempt struct {
	runID    int64
	task     string
	jobID    *int64 // nil for a task run from before job ids
	number   int
	node     string
	dag      string
	silentMs int64
}

// reap takes over every stale attempt of a DAG this node knows.
func (s *Scheduler) reap(ctx context.Context) error {
	// The partial index task_runs_running (WHERE state = 'running': the
	// literal, for the planner to match it) serves both arms of the OR; an
	// attempt from before heartbeats (NULL) counts from its start.
	rows, err := s.pool.Query(ctx, `
		SELECT t.run_id, t.task, t.job_id, t.attempts, coalesce(t.node, ''), r.dag,
		       (extract(epoch FROM now() - coalesce(t.heartbeat_at, t.started_at)) * 1000)::bigint
		FROM task_runs t JOIN dag_runs r ON r.id = t.run_id
		WHERE t.state = 'running'
		  AND (t.heartbeat_at < now() - make_interval(secs => $1) OR t.heartbeat_at IS NULL)
		  AND coalesce(t.heartbeat_at, t.started_at, '-infinity') < now() - make_interval(secs => $1)
		ORDER BY t.run_id, t.task LIMIT 100`, s.cfg.HeartbeatTimeout.Seconds())
	if err != nil {
		return fmt.Errorf("listing attempts without a heartbeat: %w", err)
	}
	stale, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (staleAttempt, error) {
		var a staleAttempt
		err := r.Scan(&a.runID, &a.task, &a.jobID, &a.number, &a.node, &a.dag, &a.silentMs)
		return a, err
	})
	if err != nil {
		return fmt.Errorf("listing attempts without a heartbeat: %w", err)
	}
	var errs []error
	for _, a := range stale {
		// Only a node that knows the DAG can tell what depends on the
		// task; another node, or this one's successor, takes it over.
		p := s.plans[a.dag]
		if p == nil || p.tasks[a.task] == nil {
			continue
		}
		if err := s.takeOver(ctx, p, a); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// takeOver counts the stale attempt a as failed and retries its task with
// a fresh job, or fails it when no attempt is left, in one transaction with
// cancelling the attempt's River job. It does nothing if the attempt is no
// longer stale: it reported in, finished, or another node took it over
// first.
func (s *Scheduler) takeOver(ctx context.Context, p *dagPlan, a staleAttempt) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("taking over task %s of run %d: %w", a.task, a.runID, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit

	// The run's lock serialises this with the bookkeeping of its tasks and
	// with other nodes' reapers; the task run's lock with its heartbeat.
	var gen int
	err = tx.QueryRow(ctx, `SELECT generation FROM dag_runs WHERE id = $1 FOR UPDATE`, a.runID).Scan(&gen)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("taking over task %s of run %d: locking the run: %w", a.task, a.runID, err)
	}
	var (
		log         string
		maxAttempts int
		taskGen     int
		silentMs    int64
		durationMs  *int64
	)
	err = tx.QueryRow(ctx, `
		SELECT log, coalesce(max_attempts, 0), generation,
		       (extract(epoch FROM now() - coalesce(heartbeat_at, started_at)) * 1000)::bigint,
		       (extract(epoch FROM now() - started_at) * 1000)::bigint
		FROM task_runs
		WHERE run_id = $1 AND task = $2 AND state = $6 AND job_id IS NOT DISTINCT FROM $3 AND attempts = $4
		  AND coalesce(heartbeat_at, started_at, '-infinity') < now() - make_interval(secs => $5)
		FOR UPDATE`,
		a.runID, a.task, a.jobID, a.number, s.cfg.HeartbeatTimeout.Seconds(), TaskRunning).Scan(&log, &maxAttempts, &taskGen, &silentMs, &durationMs)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("taking over task %s of run %d: %w", a.task, a.runID, err)
	}
	if maxAttempts == 0 {
		maxAttempts = p.tasks[a.task].Retries + 1
	}
	final := a.number >= maxAttempts
	node := a.node
	if node == "" {
		node = "unknown"
	}
	cause := fmt.Sprintf("the scheduler node running it (%s) stopped (no heartbeat for %d s)", node, (silentMs+500)/1000)
	buf := newTailBuffer(logExcerptSize)
	buf.WriteString(log)
	next := "retrying"
	if final {
		next = "no attempts left"
	}
	fmt.Fprintf(buf, "--- attempt %d counted failed at %s by node %s: %s; %s ---\n",
		a.number, time.Now().UTC().Format(time.RFC3339), s.cfg.NodeID, cause, next)
	state := TaskQueued
	if final {
		state = TaskFailed
	}
	if _, err := tx.Exec(ctx, `
		UPDATE task_runs SET state = $3, attempt_base = attempts, job_id = NULL, finished_at = now(),
			duration_ms = $4, error = $5, log = $6, checks = NULL
		WHERE run_id = $1 AND task = $2`,
		a.runID, a.task, state, durationMs, cause, buf.String()); err != nil {
		return fmt.Errorf("taking over task %s of run %d: recording the lost attempt: %w", a.task, a.runID, err)
	}
	if err := s.cancelStuckJobs(ctx, tx, a); err != nil {
		return err
	}
	var finished RunState
	if final {
		if finished, err = failDownstream(ctx, tx, p, a.runID, a.task); err != nil {
			return err
		}
	} else {
		// A fresh job, because the stuck one is running as far as River
		// knows (and unique by its arguments): its attempts are those the
		// task has left, and Base tells it which attempt numbers are its.
		res, err := s.client.InsertTx(ctx, tx,
			taskArgs{RunID: a.runID, DAG: a.dag, Task: a.task, Generation: taskGen, Base: a.number},
			&river.InsertOpts{Queue: s.cfg.Queue, MaxAttempts: maxAttempts - a.number, UniqueOpts: river.UniqueOpts{ByArgs: true}})
		if err != nil {
			return fmt.Errorf("taking over task %s of run %d: enqueueing it again: %w", a.task, a.runID, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE task_runs SET job_id = $3 WHERE run_id = $1 AND task = $2`,
			a.runID, a.task, res.Job.ID); err != nil {
			return fmt.Errorf("taking over task %s of run %d: recording its new job: %w", a.task, a.runID, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("taking over task %s of run %d: %w", a.task, a.runID, err)
	}
	s.log.Warn("took over the task of a stopped node", "dag", a.dag, "run", a.runID, "task", a.task,
		"attempt", a.number, "stopped_node", node, "silent_for", time.Duration(silentMs)*time.Millisecond, "next", next)
	s.runFinished(a.dag, a.runID, finished)
	return nil
}

// cancelStuckJobs cancels, in tx, the River job of the taken-over attempt
// (for a task run from before job ids, every unfinished job of the task).
// River leaves a running job running but marks it: the node running it, if
// it lives, is told to cancel the attempt, River never retries it, and its
// rescuer finalises it as cancelled.
func (s *Scheduler) cancelStuckJobs(ctx context.Context, tx pgx.Tx, a staleAttempt) error {
	var ids []int64
	if a.jobID != nil {
		ids = []int64{*a.jobID}
	} else {
		rows, err := tx.Query(ctx, `
			SELECT id FROM river_job
			WHERE kind = $1 AND state::text <> ALL($4::text[])
			  AND args->>'run_id' = $2::bigint::text AND args->>'task' = $3`,
			taskArgs{}.Kind(), a.runID, a.task,
			texts([]rivertype.JobState{rivertype.JobStateCompleted, rivertype.JobStateCancelled, rivertype.JobStateDiscarded}))
		if err != nil {
			return fmt.Errorf("taking over task %s of run %d: finding its jobs: %w", a.task, a.runID, err)
		}
		if ids, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
			return fmt.Errorf("taking over task %s of run %d: finding its jobs: %w", a.task, a.runID, err)
		}
	}
	for _, id := range ids {
		if _, err := s.client.JobCancelTx(ctx, tx, id); err != nil && !errors.Is(err, river.ErrNotFound) {
			return fmt.Errorf("taking over task %s of run %d: cancelling its job %d: %w", a.task, a.runID, id, err)
		}
	}
	return nil
}
