-- +goose Up

-- What the scheduler's shipped DAGs record. Each table is written with
-- upserts keyed by the run's date or time, so re-running a run replaces its
-- rows rather than adding to them.

-- One data-quality report per New York trading date (the market_close DAG's
-- quality_checks task). checks is an array of
-- {"name", "passed", "value", "threshold", "detail"} objects; passed is true
-- when every check passed.
CREATE TABLE quality_reports (
    date   date        PRIMARY KEY,
    run_at timestamptz NOT NULL DEFAULT now(),
    passed boolean     NOT NULL,
    checks jsonb       NOT NULL CHECK (jsonb_typeof(checks) = 'array')
);

-- Anomalies per trading date, symbol and kind (the market_close DAG's
-- anomaly_summary task): how many, how many of each severity, and the
-- highest severity seen.
CREATE TABLE anomaly_summaries (
    date         date   NOT NULL,
    symbol       text   NOT NULL,
    kind         text   NOT NULL,
    count        bigint NOT NULL CHECK (count > 0),
    high         bigint NOT NULL CHECK (high >= 0),
    medium       bigint NOT NULL CHECK (medium >= 0),
    low          bigint NOT NULL CHECK (low >= 0),
    max_severity text   NOT NULL CHECK (max_severity IN ('low', 'medium', 'high')),
    PRIMARY KEY (date, symbol, kind),
    CONSTRAINT anomaly_summaries_count CHECK (count = high + medium + low)
);

-- One row per run of the pipeline_health DAG, keyed by the moment the run
-- is for. healthy is false when any check failed; checks has the same shape
-- as quality_reports.checks.
CREATE TABLE pipeline_health (
    logical_time timestamptz PRIMARY KEY,
    checked_at   timestamptz NOT NULL DEFAULT now(),
    healthy      boolean     NOT NULL,
    checks       jsonb       NOT NULL CHECK (jsonb_typeof(checks) = 'array')
);
CREATE INDEX pipeline_health_checked_at ON pipeline_health (checked_at DESC);

-- +goose Down
DROP TABLE pipeline_health;
DROP TABLE anomaly_summaries;
DROP TABLE quality_reports;
