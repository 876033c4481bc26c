package orchestrate_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/stockpipe/stockpipe/internal/orchestrate"
	"github.com/stockpipe/stockpipe/internal/telemetry"
)

func TestChecksFailedErrorMessage(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("quality report of 2026-11-02: %w", &orchestrate.ChecksFailedError{Kind: "quality", Checks: []orchestrate.CheckResult{
		{Name: "reject_rate", Value: 0.0855, Threshold: 0.01, Unit: orchestrate.UnitRatio},
		{Name: "seq_order", Passed: true, Value: 0, Threshold: 0},
		{Name: "missing_minutes", Value: 12, Threshold: 0},
		{Name: "candles_match_ticks", Passed: true, Skipped: true, Detail: "skipped: no ticks"},
		{Name: "tick_age", Value: 0, Threshold: 300, Unit: orchestrate.UnitSeconds, Detail: "no ticks stored"},
		{Name: "topics", Value: 3, Threshold: 6, Op: orchestrate.Equal},
	}})
	const want = "quality report of 2026-11-02: 4 of 6 quality checks failed: reject_rate 8.55% > 1%; missing_minutes 12 > 0; " +
		"tick_age: no ticks stored; topics 3 ≠ 6"
	if err.Error() != want {
		t.Errorf("message\n %q\nwant\n %q", err, want)
	}
	if !errors.Is(err, orchestrate.ErrChecksFailed) {
		t.Error("errors.Is(err, ErrChecksFailed) is false")
	}
	var cf *orchestrate.ChecksFailedError
	if !errors.As(err, &cf) || len(cf.Failed()) != 4 {
		t.Errorf("errors.As found %+v", cf)
	}
	if got := (orchestrate.CheckResult{Threshold: 0.05, Unit: orchestrate.UnitRatio}).Limit(); got != "≤ 5%" {
		t.Errorf("limit %q", got)
	}
}

// tradingDay stores 20 minutes of one symbol's ticks on a New York trading
// date (one a second from the open) with the 1m candles the stream would
// have built from them, and rejected records received that day: the
// quality checks pass unless rejected is large enough to break the reject
// rate.
func tradingDay(t *testing.T, pool *pgxpool.Pool, date string, firstSeq, rejected int) {
	t.Helper()
	ctx := context.Background()
	open := date + " 14:30:00+00" // 09:30 New York in November
	if _, err := pool.Exec(ctx, `
		INSERT INTO ticks (symbol, seq, ts, price, size, bid, ask, kafka_partition, kafka_offset)
		SELECT 'AAPL', $2 + g, $1::timestamptz + g * interval '1 second', 100 + g % 7, 10 + g % 3, 99, 120, 0, $2 + g
		FROM generate_series(0, 1199) g`, open, firstSeq); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `
		INSERT INTO candles (symbol, interval, bucket, open, high, low, close, volume, vwap, trades, final)
		SELECT symbol, '1m', date_bin('1 minute', ts, timestamptz 'epoch'),
		       (array_agg(price ORDER BY ts))[1], max(price), min(price), (array_agg(price ORDER BY ts DESC))[1],
		       sum(size), sum(price * size) / sum(size), count(*), true
		FROM ticks WHERE ts >= $1::timestamptz AND ts < $1::timestamptz + interval '1 day' GROUP BY 1, 2, 3`, open); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `
		INSERT INTO rejected_ticks (topic, partition, "offset", reason, received_at)
		SELECT 'ticks', 0, $2 + g, 'malformed_json', $1::timestamptz + g * interval '1 second' FROM generate_series(1, $3) g`,
		open, 1_000_000+firstSeq, rejected); err != nil {
		t.Fatal(err)
	}
}

// shippedOnly returns the shipped DAG name, triggered only: these tests
// trigger their runs, and a schedule would start others.
func shippedOnly(t *testing.T, deps orchestrate.Deps, name string) orchestrate.DAG {
	t.Helper()
	for _, d := range orchestrate.Shipped(deps) {
		if d.Name == name {
			d.Schedule = ""
			return d
		}
	}
	t.Fatalf("no shipped DAG %s", name)
	return orchestrate.DAG{}
}

// riverJob waits until the River job of one task of a run has settled and
// returns its state and attempt.
func riverJob(t *testing.T, pool *pgxpool.Pool, run int64, task string) (state string, attempt int) {
	t.Helper()
	eventually(t, 20*time.Second, "the River job of "+task+" to settle", func() (bool, error) {
		err := pool.QueryRow(context.Background(), `
			SELECT state, attempt FROM river_job
			WHERE kind = 'stockpipe_task' AND (args->>'run_id')::bigint = $1 AND args->>'task' = $2
			ORDER BY id DESC LIMIT 1`, run, task).Scan(&state, &attempt)
		return err == nil && slices.Contains([]string{"completed", "cancelled", "discarded"}, state), err
	})
	return state, attempt
}

// scrape returns the /metrics text of m.
func scrape(t *testing.T, m *telemetry.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, err := io.ReadAll(rec.Result().Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestVerdictMarketCloseFailedChecks runs market_close through the engine
// over a date whose reject rate breaks its threshold and over one whose
// data passes: the first run fails, at once and for good, with the report
// written, the checks kept with the task run and the anomaly summary done;
// the second succeeds. Each finished run is counted in /metrics.
func TestVerdictMarketCloseFailedChecks(t *testing.T) {
	t.Parallel()
	pool, _ := openDB(t)
	tradingDay(t, pool, "2026-11-03", 1, 10)     // 10 of 1210 rejected: 0.83%, within 5%
	tradingDay(t, pool, "2026-11-04", 2001, 200) // 200 of 1400 rejected: 14.3%
	if _, err := pool.Exec(context.Background(), `
		INSERT INTO anomalies (symbol, ts, kind, severity, value, threshold, detail)
		VALUES ('AAPL', '2026-11-04 14:35:00+00', 'price_spike', 'high', 5, 3, 'planted')`); err != nil {
		t.Fatal(err)
	}
	m := telemetry.New()
	cfg := testConfig(pool, shippedOnly(t, orchestrate.Deps{Pool: pool}, orchestrate.DAGMarketClose))
	cfg.Metrics = m
	s := start(t, cfg)
	ctx := context.Background()
	ny := cfg.DAGs[0].Location

	badID, err := s.Trigger(ctx, orchestrate.DAGMarketClose, time.Date(2026, 11, 4, 0, 0, 0, 0, ny), nil)
	if err != nil {
		t.Fatal(err)
	}
	goodID, err := s.Trigger(ctx, orchestrate.DAGMarketClose, time.Date(2026, 11, 3, 0, 0, 0, 0, ny), nil)
	if err != nil {
		t.Fatal(err)
	}

	run, tasks := waitRun(t, s, badID)
	if run.State != orchestrate.RunFailed {
		t.Errorf("run over failing data ended %s, want %s", run.State, orchestrate.RunFailed)
	}
	q := taskByName(t, tasks, "quality_checks")
	const wantErr = "quality report of 2026-11-04: 1 of 5 quality checks failed: reject_rate 14.3% > 5%"
	if q.State != orchestrate.TaskFailed || q.Attempts != 1 || q.Error != wantErr {
		t.Errorf("quality_checks: state %s, %d attempt(s), error %q; want failed after 1 attempt with %q",
			q.State, q.Attempts, q.Error, wantErr)
	}
	if !strings.Contains(q.Log, "checks failed; the task fails without retrying") || strings.Contains(q.Log, "--- attempt 2") {
		t.Errorf("quality_checks log:\n%s", q.Log)
	}
	if len(q.Checks) != 5 {
		t.Fatalf("quality_checks kept %d checks, want 5: %+v", len(q.Checks), q.Checks)
	}
	for _, c := range q.Checks {
		if c.Passed == (c.Name == "reject_rate") {
			t.Errorf("check %+v", c)
		}
		if c.Name == "reject_rate" && (c.Value != 200.0/1400 || c.Threshold != 0.05 || c.Unit != orchestrate.UnitRatio) {
			t.Errorf("reject_rate %+v, want 200/1400 against 0.05", c)
		}
	}
	for _, name := range []string{"daily_candles", "anomaly_summary"} {
		if tr := taskByName(t, tasks, name); tr.State != orchestrate.TaskSuccess || tr.Checks != nil {
			t.Errorf("%s: %+v", name, tr)
		}
	}
	if n := count(t, pool, `SELECT count(*) FROM quality_reports WHERE date = '2026-11-04' AND NOT passed`); n != 1 {
		t.Errorf("%d failed quality reports of 2026-11-04, want 1", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM anomaly_summaries WHERE date = '2026-11-04' AND kind = 'price_spike'`); n != 1 {
		t.Errorf("%d anomaly summary rows of 2026-11-04, want 1", n)
	}
	// River gave the job up (cancelled) rather than retrying it, though
	// the task allows two retries.
	if state, attempt := riverJob(t, pool, badID, "quality_checks"); state != "cancelled" || attempt != 1 {
		t.Errorf("River job of quality_checks is %s after attempt %d, want cancelled after 1", state, attempt)
	}

	run, tasks = waitRun(t, s, goodID)
	if run.State != orchestrate.RunSuccess {
		t.Errorf("run over passing data ended %s: %+v", run.State, tasks)
	}
	q = taskByName(t, tasks, "quality_checks")
	if q.State != orchestrate.TaskSuccess || q.Error != "" || len(q.Checks) != 5 {
		t.Errorf("quality_checks over passing data: %+v", q)
	}
	for _, c := range q.Checks {
		if !c.Passed {
			t.Errorf("check %+v failed over passing data", c)
		}
	}
	if n := count(t, pool, `SELECT count(*) FROM quality_reports WHERE date = '2026-11-03' AND passed`); n != 1 {
		t.Errorf("%d passed quality reports of 2026-11-03, want 1", n)
	}

	// The node counts a run after committing its last task's outcome.
	eventually(t, 10*time.Second, "both runs counted", func() (bool, error) {
		return testutil.ToFloat64(m.DAGRuns.WithLabelValues(orchestrate.DAGMarketClose, "failed")) == 1 &&
			testutil.ToFloat64(m.DAGRuns.WithLabelValues(orchestrate.DAGMarketClose, "success")) == 1, nil
	})
	text := scrape(t, m)
	for _, want := range []string{
		`stockpipe_dag_runs_total{dag="market_close",state="failed"} 1`,
		`stockpipe_dag_runs_total{dag="market_close",state="success"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// A re-run of the failed date with a raised threshold is a run of its
	// own: it succeeds and is counted as a second finished run, and the
	// failed run stays failed.
	rerunID, err := s.Trigger(ctx, orchestrate.DAGMarketClose, time.Date(2026, 11, 4, 0, 0, 0, 0, ny),
		map[string]string{"max_reject_rate": "0.2"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the re-run counted", func() (bool, error) {
		return testutil.ToFloat64(m.DAGRuns.WithLabelValues(orchestrate.DAGMarketClose, "success")) == 2, nil
	})
	run, tasks = waitRun(t, s, rerunID)
	if q := taskByName(t, tasks, "quality_checks"); run.State != orchestrate.RunSuccess || q.State != orchestrate.TaskSuccess || len(q.Checks) != 5 {
		t.Errorf("re-run with max_reject_rate=0.2: run %s, quality_checks %+v", run.State, q)
	}
	if run, _ = waitRun(t, s, badID); run.State != orchestrate.RunFailed {
		t.Errorf("the re-run changed the failed run to %s", run.State)
	}
	if n := testutil.ToFloat64(m.DAGRuns.WithLabelValues(orchestrate.DAGMarketClose, "failed")); n != 1 {
		t.Errorf("%v failed runs counted, want 1", n)
	}
}

// TestVerdictPipelineHealthUnhealthy runs pipeline_health through the
// engine: stale ticks make it unhealthy, which is a failed run (not
// retried) with the row still written; fresh ones make it succeed.
func TestVerdictPipelineHealthUnhealthy(t *testing.T) {
	t.Parallel()
	pool, _ := openDB(t)
	ctx := context.Background()
	// The check looks for the newest tick of each known symbol.
	if _, err := pool.Exec(ctx, `
		INSERT INTO symbols (symbol) VALUES ('AAPL');
		INSERT INTO ticks (symbol, seq, ts, price, size, bid, ask, kafka_partition, kafka_offset, ingested_at)
		VALUES ('AAPL', 1, now() - interval '1 hour', 100, 10, 99, 101, 0, 0, now() - interval '1 hour')`); err != nil {
		t.Fatal(err)
	}
	m := telemetry.New()
	// No brokers: the Kafka checks are skipped and pass.
	cfg := testConfig(pool, shippedOnly(t, orchestrate.Deps{Pool: pool}, orchestrate.DAGPipelineHealth))
	cfg.Metrics = m
	s := start(t, cfg)

	stale, err := s.Trigger(ctx, orchestrate.DAGPipelineHealth, day, nil)
	if err != nil {
		t.Fatal(err)
	}
	run, tasks := waitRun(t, s, stale)
	c := taskByName(t, tasks, "check")
	if run.State != orchestrate.RunFailed || c.State != orchestrate.TaskFailed || c.Attempts != 1 ||
		!strings.Contains(c.Error, "1 of 5 health checks failed: tick_age 36") || !strings.HasSuffix(c.Error, "s > 300s") {
		t.Errorf("stale ticks: run %s, task %s after %d attempt(s): %q", run.State, c.State, c.Attempts, c.Error)
	}
	if len(c.Checks) != 5 {
		t.Errorf("the check task kept %d checks, want 5", len(c.Checks))
	}
	if n := count(t, pool, `SELECT count(*) FROM pipeline_health WHERE logical_time = $1 AND NOT healthy`, run.LogicalDate); n != 1 {
		t.Errorf("%d unhealthy rows for the run, want 1", n)
	}
	if state, attempt := riverJob(t, pool, stale, "check"); state != "cancelled" || attempt != 1 {
		t.Errorf("River job of check is %s after attempt %d, want cancelled after 1", state, attempt)
	}

	if _, err := pool.Exec(ctx, `UPDATE ticks SET ingested_at = now()`); err != nil {
		t.Fatal(err)
	}
	fresh, err := s.Trigger(ctx, orchestrate.DAGPipelineHealth, day.AddDate(0, 0, 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	if run, tasks := waitRun(t, s, fresh); run.State != orchestrate.RunSuccess {
		t.Errorf("fresh ticks: run %s, tasks %+v", run.State, tasks)
	}
	eventually(t, 10*time.Second, "both runs counted", func() (bool, error) {
		return testutil.ToFloat64(m.DAGRuns.WithLabelValues(orchestrate.DAGPipelineHealth, "failed")) == 1 &&
			testutil.ToFloat64(m.DAGRuns.WithLabelValues(orchestrate.DAGPipelineHealth, "success")) == 1, nil
	})
}
