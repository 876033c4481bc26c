-- +goose Up

-- The results of the checks a task carried out (the market_close DAG's
-- quality_checks, the pipeline_health DAG's check), kept with its task run
-- so that a run shows which check failed and by how much: an array of
-- {"name", "passed", "value", "threshold", "unit", "op", "detail"} objects,
-- as in quality_reports.checks. NULL for tasks that check nothing, and for
-- every task run recorded before this column existed.
ALTER TABLE task_runs ADD COLUMN checks jsonb CHECK (checks IS NULL OR jsonb_typeof(checks) = 'array');

-- +goose Down
ALTER TABLE task_runs DROP COLUMN checks;
