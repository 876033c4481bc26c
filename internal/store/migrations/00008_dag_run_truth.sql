-- +goose Up

-- A run is no longer "the" run of a date. A manual trigger (the command
-- line, the web) and each date of a backfill make a run of their own, with
-- their own parameters and history, however many runs the date has; only
-- scheduled runs stay unique per (dag, logical_date), so that the leader
-- never starts a slot twice. kind says which a run is. Rows from before this
-- migration are 'legacy': they were unique per date, and still count as
-- their date's scheduled run so that no slot is started a second time.
ALTER TABLE dag_runs DROP CONSTRAINT dag_runs_dag_logical_date_key;
ALTER TABLE dag_runs
    ADD COLUMN kind text NOT NULL DEFAULT 'legacy'
        CHECK (kind IN ('scheduled', 'manual', 'backfill', 'legacy')),
    -- The parameters the run executes with: the DAG's defaults as the node
    -- that started executing the run has them, overridden by params (now
    -- only what the trigger gave). Resolved once, when the run's first task
    -- is claimed; NULL until then.
    ADD COLUMN effective_params jsonb
        CHECK (effective_params IS NULL OR jsonb_typeof(effective_params) = 'object'),
    -- The scheduler node whose defaults effective_params holds.
    ADD COLUMN params_node text;
-- Before this migration params held the trigger's parameters merged with
-- the triggering process's defaults, and the tasks ran with exactly that.
UPDATE dag_runs SET effective_params = params WHERE state <> 'queued';
-- A row inserted without a kind is someone's manual run, not a slot.
ALTER TABLE dag_runs ALTER COLUMN kind SET DEFAULT 'manual';
CREATE UNIQUE INDEX dag_runs_slot ON dag_runs (dag, logical_date) WHERE kind IN ('scheduled', 'legacy');
-- Listing one DAG's runs newest first, which the dropped unique index
-- served.
CREATE INDEX dag_runs_dag_logical_date ON dag_runs (dag, logical_date DESC, id DESC);

-- Each attempt of a task records the scheduler node running it and, every
-- few seconds, a heartbeat; an attempt whose heartbeat stops is taken over
-- by a live node. job_id is the River job executing the task now (a
-- taken-over task gets a fresh job); attempt_base is how many attempts
-- earlier jobs used, so that the task's attempt number is attempt_base plus
-- the job's own; max_attempts is the task's budget (retries + 1). NULL
-- job_id and max_attempts mark rows from before this migration.
ALTER TABLE task_runs
    ADD COLUMN max_attempts int CHECK (max_attempts > 0),
    ADD COLUMN attempt_base int NOT NULL DEFAULT 0 CHECK (attempt_base >= 0),
    ADD COLUMN job_id bigint,
    ADD COLUMN node text,
    ADD COLUMN heartbeat_at timestamptz;
CREATE INDEX task_runs_running ON task_runs (heartbeat_at) WHERE state = 'running';

-- +goose Down
DROP INDEX task_runs_running;
ALTER TABLE task_runs
    DROP COLUMN heartbeat_at,
    DROP COLUMN node,
    DROP COLUMN job_id,
    DROP COLUMN attempt_base,
    DROP COLUMN max_attempts;
DROP INDEX dag_runs_dag_logical_date;
DROP INDEX dag_runs_slot;
-- Going back to one run per date keeps, of each date, its scheduled (or
-- legacy) run if any, else the newest.
DELETE FROM dag_runs r WHERE EXISTS (
    SELECT 1 FROM dag_runs o
    WHERE o.dag = r.dag AND o.logical_date = r.logical_date AND o.id <> r.id
      AND (o.kind IN ('scheduled', 'legacy'), o.id) > (r.kind IN ('scheduled', 'legacy'), r.id));
UPDATE dag_runs SET params = effective_params WHERE effective_params IS NOT NULL;
ALTER TABLE dag_runs
    DROP COLUMN params_node,
    DROP COLUMN effective_params,
    DROP COLUMN kind,
    ADD CONSTRAINT dag_runs_dag_logical_date_key UNIQUE (dag, logical_date);
