-- +goose Up

-- The engine's history: one row per run of a DAG (dag_runs) and one per
-- task of a run (task_runs).
--
-- Store's migrations 00004_scheduler.sql, 00007_task_checks.sql and
-- 00008_dag_run_truth.sql created these tables before the engine had
-- migrations of its own, and still do on a database that store migrates
-- first. This migration adopts them: it repeats those three files, step by
-- step, so that every statement is skipped where its work is done. Over
-- tables store built it changes nothing; over tables an older stockpipe
-- built in part it does what the rest of store's files would have done; on
-- a database without them it builds the same tables, column for column,
-- constraint for constraint.

-- Step 1, as 00004_scheduler.sql.
--
-- One row per run of a DAG for a logical date. (00004 made runs unique per
-- (dag, logical_date) and re-ran a date in place, bumping generation so
-- that jobs left over from the earlier execution could tell they were
-- stale; step 3 lifts the uniqueness, and generation stays for such jobs.)
CREATE TABLE IF NOT EXISTS dag_runs (
    id           bigserial   PRIMARY KEY,
    dag          text        NOT NULL,
    logical_date timestamptz NOT NULL,
    state        text        NOT NULL DEFAULT 'queued'
                 CHECK (state IN ('queued', 'running', 'success', 'failed')),
    params       jsonb       NOT NULL DEFAULT '{}',
    generation   int         NOT NULL DEFAULT 1 CHECK (generation > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    UNIQUE (dag, logical_date)
);
-- Newest-first listing across all DAGs.
CREATE INDEX IF NOT EXISTS dag_runs_logical_date ON dag_runs (logical_date DESC, id DESC);

-- One row per task of a run.
CREATE TABLE IF NOT EXISTS task_runs (
    run_id      bigint      NOT NULL REFERENCES dag_runs (id) ON DELETE CASCADE,
    task        text        NOT NULL,
    -- pos is the task's place in the DAG's dependency order, for listing.
    pos         int         NOT NULL DEFAULT 0,
    generation  int         NOT NULL DEFAULT 1 CHECK (generation > 0),
    state       text        NOT NULL DEFAULT 'waiting'
                CHECK (state IN ('waiting', 'queued', 'running', 'success', 'failed', 'upstream_failed')),
    attempts    int         NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    started_at  timestamptz,
    finished_at timestamptz,
    duration_ms bigint      CHECK (duration_ms >= 0),
    error       text        NOT NULL DEFAULT '',
    log         text        NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, task)
);

-- Step 2, as 00007_task_checks.sql.
--
-- The results of the checks a task carried out, kept with its task run so
-- that a run shows which check failed and by how much: an array of
-- {"name", "passed", "value", "threshold", "unit", "op", "detail"} objects.
-- NULL for tasks that check nothing, and for task runs recorded before the
-- column existed. (Where the column exists, the whole clause, its CHECK
-- included, is skipped.)
ALTER TABLE task_runs ADD COLUMN IF NOT EXISTS checks jsonb CHECK (checks IS NULL OR jsonb_typeof(checks) = 'array');

-- Step 3, as 00008_dag_run_truth.sql. That file ran in one transaction, so
-- a database has all of it or none; its first column, dag_runs.kind, tells
-- which. (Its statements rewrite rows, which IF NOT EXISTS alone could not
-- make safe to repeat: hence the one test.)
--
-- A run is not "the" run of a date. A manual trigger and each date of a
-- backfill make a run of their own, with their own parameters and history;
-- only scheduled runs stay unique per (dag, logical_date), so that the
-- leader never starts a slot twice. kind says which a run is; rows from
-- before are 'legacy', and count as their date's scheduled run.
-- effective_params are the parameters the run executes with (the DAG's
-- defaults on the node that started it, params_node, overridden by params,
-- what the trigger gave), resolved when its first task is claimed. Each
-- attempt of a task records the node running it and its heartbeat; job_id
-- is the River job executing the task now, attempt_base the attempts
-- earlier jobs used, max_attempts the task's budget.
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_attribute
               WHERE attrelid = 'dag_runs'::regclass AND attname = 'kind' AND NOT attisdropped) THEN
        RETURN;
    END IF;
    ALTER TABLE dag_runs DROP CONSTRAINT dag_runs_dag_logical_date_key;
    ALTER TABLE dag_runs
        ADD COLUMN kind text NOT NULL DEFAULT 'legacy'
            CHECK (kind IN ('scheduled', 'manual', 'backfill', 'legacy')),
        ADD COLUMN effective_params jsonb
            CHECK (effective_params IS NULL OR jsonb_typeof(effective_params) = 'object'),
        ADD COLUMN params_node text;
    -- Before, params held the trigger's parameters merged with the
    -- triggering process's defaults, and the tasks ran with exactly that.
    UPDATE dag_runs SET effective_params = params WHERE state <> 'queued';
    -- A row inserted without a kind is someone's manual run, not a slot.
    ALTER TABLE dag_runs ALTER COLUMN kind SET DEFAULT 'manual';
    CREATE UNIQUE INDEX dag_runs_slot ON dag_runs (dag, logical_date) WHERE kind IN ('scheduled', 'legacy');
    -- Listing one DAG's runs newest first, which the dropped unique index
    -- served.
    CREATE INDEX dag_runs_dag_logical_date ON dag_runs (dag, logical_date DESC, id DESC);
    ALTER TABLE task_runs
        ADD COLUMN max_attempts int CHECK (max_attempts > 0),
        ADD COLUMN attempt_base int NOT NULL DEFAULT 0 CHECK (attempt_base >= 0),
        ADD COLUMN job_id bigint,
        ADD COLUMN node text,
        ADD COLUMN heartbeat_at timestamptz;
    -- The reaper's look for attempts whose heartbeat stopped.
    CREATE INDEX task_runs_running ON task_runs (heartbeat_at) WHERE state = 'running';
END
$$;
-- +goose StatementEnd

-- No Down: the tables may be store's (its migrations created them on most
-- databases), and rolling the engine's migration back must not drop
-- history it did not create.
