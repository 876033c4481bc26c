-- +goose Up

-- One row per run of a DAG for a logical date. The scheduler creates a run
-- at most once per (dag, logical_date); re-running the date reuses the row
-- and bumps generation, so that jobs left over from the earlier execution
-- can tell they are stale and do nothing.
CREATE TABLE dag_runs (
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
-- Newest-first listing across all DAGs; the unique index serves one DAG.
CREATE INDEX dag_runs_logical_date ON dag_runs (logical_date DESC, id DESC);

-- One row per task of a run, reset when the run is re-run.
CREATE TABLE task_runs (
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

-- +goose Down
DROP TABLE task_runs;
DROP TABLE dag_runs;
