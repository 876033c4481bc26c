package job_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/feed"
	"github.com/stockpipe/stockpipe/internal/job"
	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
	"github.com/stockpipe/stockpipe/internal/retry"
	"github.com/stockpipe/stockpipe/internal/store"
	"github.com/stockpipe/stockpipe/internal/telemetry"
)

// The shipped DAGs run by the engine, as a scheduler node runs them: their
// verdicts, their parameters, their defaults taken from the executing node.
// (shared_test.go's dagsEnv runs their tasks directly.)

var quiet = slog.New(slog.DiscardHandler)

// day is a Friday.
var day = time.Date(2026, 11, 6, 0, 0, 0, 0, time.UTC)

// openDB returns a pool on a fresh database migrated as stockpipe migrates
// one, store's schema then the engine's, and its URL.
func openDB(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	ctx := context.Background()
	url := pgtest.New(t)
	pool, err := store.Open(ctx, url, 10)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := store.Migrate(ctx, pool, quiet); err != nil {
		t.Fatal(err)
	}
	// Several nodes starting at once migrate at once.
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = dag.Migrate(ctx, pool) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return pool, url
}

// testConfig is a Config with short retries and polling.
func testConfig(pool *pgxpool.Pool, dags ...dag.DAG) dag.Config {
	return dag.Config{
		Pool:         pool,
		DAGs:         dags,
		Logger:       quiet,
		Retry:        retry.Policy{Name: "test task", Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond},
		PollInterval: 50 * time.Millisecond,
	}
}

// start creates and starts a Scheduler, stopping it when the test ends.
func start(t *testing.T, cfg dag.Config) *dag.Scheduler {
	t.Helper()
	s, err := dag.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return s
}

// client returns an insert-only Scheduler, as the command line and the web
// use to trigger runs.
func client(t *testing.T, cfg dag.Config) *dag.Scheduler {
	t.Helper()
	c, err := dag.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitRun waits until run id has finished and returns it with its tasks.
func waitRun(t *testing.T, s *dag.Scheduler, id int64) (dag.Run, []dag.TaskRun) {
	t.Helper()
	var (
		run   dag.Run
		tasks []dag.TaskRun
	)
	eventually(t, 20*time.Second, fmt.Sprintf("run %d to finish", id), func() (bool, error) {
		var err error
		run, tasks, err = s.Run(context.Background(), id)
		return err == nil && run.Finished != nil, err
	})
	return run, tasks
}

// taskByName returns the task run name of tasks.
func taskByName(t *testing.T, tasks []dag.TaskRun, name string) dag.TaskRun {
	t.Helper()
	for _, tr := range tasks {
		if tr.Task == name {
			return tr
		}
	}
	t.Fatalf("no task %q in %+v", name, tasks)
	return dag.TaskRun{}
}

// count runs a query that counts.
func count(t *testing.T, pool *pgxpool.Pool, q string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestEngineBackfillOfTwoSymbolsRebuildsBoth triggers the shipped backfill
// for one date twice, for two symbols: both symbols' candles are rebuilt.
func TestEngineBackfillOfTwoSymbolsRebuildsBoth(t *testing.T) {
	t.Parallel()
	pool, _ := openDB(t)
	ctx := context.Background()
	// Rows written by hand need their day's partition, as the sink makes it.
	if err := store.EnsureDays(ctx, pool, store.TicksTable, time.Date(2026, 11, 4, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `
		INSERT INTO ticks (symbol, seq, ts, price, size, bid, ask, kafka_partition, kafka_offset)
		SELECT sym, g + 1, timestamptz '2026-11-04 14:30:00+00' + g * interval '1 second', 100 + g % 7, 10, 99, 120, 0, g
		FROM unnest(ARRAY['AAPL', 'MSFT']) AS sym, generate_series(0, 599) g`); err != nil {
		t.Fatal(err)
	}
	dg := shippedOnly(t, job.Deps{Pool: pool}, job.DAGBackfill)
	trig := client(t, testConfig(pool, dg))
	date := time.Date(2026, 11, 4, 0, 0, 0, 0, dg.Location)
	var ids []int64
	for _, sym := range []string{"AAPL", "MSFT"} {
		id, err := trig.Trigger(ctx, job.DAGBackfill, date, map[string]string{"symbol": sym})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	s := start(t, testConfig(pool, dg))
	for i, sym := range []string{"AAPL", "MSFT"} {
		run, tasks := waitRun(t, s, ids[i])
		if run.State != dag.RunSuccess || run.Params["symbol"] != sym || !strings.Contains(tasks[0].Log, "symbol="+sym) {
			t.Errorf("backfill of %s: run %+v, log:\n%s", sym, run, tasks[0].Log)
		}
		if n := count(t, pool, `SELECT count(*) FROM candles WHERE symbol = $1 AND interval = '1m'`, sym); n != 10 {
			t.Errorf("%d 1m candles of %s rebuilt, want 10", n, sym)
		}
	}
}

// TestEngineManualRunTakesTheExecutingNodesDefaults triggers the shipped
// retention DAG from a process whose retention is the default seven days
// and runs it on a node whose retention is 48 hours: the run records and
// uses 48 hours.
func TestEngineManualRunTakesTheExecutingNodesDefaults(t *testing.T) {
	t.Parallel()
	pool, _ := openDB(t)
	ctx := context.Background()
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	logical := time.Date(2026, 11, 6, 0, 0, 0, 0, ny)
	// Ticks three days and one day before the logical date: a retention
	// of 48 hours deletes the first, seven days would keep both.
	if err := store.EnsureDays(ctx, pool, store.TicksTable, logical.Add(-72*time.Hour), logical.Add(-24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `
		INSERT INTO ticks (symbol, seq, ts, price, size, bid, ask, kafka_partition, kafka_offset) VALUES
		('AAPL', 1, $1, 100, 10, 99, 101, 0, 1), ('AAPL', 2, $2, 100, 10, 99, 101, 0, 2)`,
		logical.Add(-72*time.Hour), logical.Add(-24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	trig := client(t, testConfig(pool, shippedOnly(t, job.Deps{}, job.DAGRetention)))
	id, err := trig.Trigger(ctx, job.DAGRetention, logical, nil)
	if err != nil {
		t.Fatal(err)
	}
	if run, _, err := trig.Run(ctx, id); err != nil || run.Params != nil || len(run.Given) != 0 || run.State != dag.RunQueued {
		t.Fatalf("queued run %+v, %v: it records what was given (nothing), no defaults yet", run, err)
	}
	s := start(t, testConfig(pool, shippedOnly(t, job.Deps{Pool: pool, Retention: 48 * time.Hour}, job.DAGRetention)))
	run, tasks := waitRun(t, s, id)
	if run.State != dag.RunSuccess || run.Params["retention"] != "48h0m0s" || run.ParamsNode != s.NodeID() {
		t.Errorf("run %+v: want success with retention=48h0m0s of node %s", run, s.NodeID())
	}
	if drop := taskByName(t, tasks, "drop_old_ticks"); !strings.Contains(drop.Log, "retention=48h0m0s") {
		t.Errorf("drop_old_ticks log:\n%s", drop.Log)
	}
	if n := count(t, pool, `SELECT count(*) FROM ticks`); n != 1 {
		t.Errorf("%d ticks left, want 1 (the one within 48 hours)", n)
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
	day, err := time.Parse(time.DateOnly, date)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.EnsureDays(ctx, pool, store.TicksTable, day); err != nil {
		t.Fatal(err)
	}
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
func shippedOnly(t *testing.T, deps job.Deps, name string) dag.DAG {
	t.Helper()
	for _, d := range job.Shipped(deps) {
		if d.Name == name {
			d.Schedule = ""
			return d
		}
	}
	t.Fatalf("no shipped DAG %s", name)
	return dag.DAG{}
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
	cfg := testConfig(pool, shippedOnly(t, job.Deps{Pool: pool}, job.DAGMarketClose))
	cfg.Metrics = m
	s := start(t, cfg)
	ctx := context.Background()
	ny := cfg.DAGs[0].Location

	badID, err := s.Trigger(ctx, job.DAGMarketClose, time.Date(2026, 11, 4, 0, 0, 0, 0, ny), nil)
	if err != nil {
		t.Fatal(err)
	}
	goodID, err := s.Trigger(ctx, job.DAGMarketClose, time.Date(2026, 11, 3, 0, 0, 0, 0, ny), nil)
	if err != nil {
		t.Fatal(err)
	}

	run, tasks := waitRun(t, s, badID)
	if run.State != dag.RunFailed {
		t.Errorf("run over failing data ended %s, want %s", run.State, dag.RunFailed)
	}
	q := taskByName(t, tasks, "quality_checks")
	const wantErr = "quality report of 2026-11-04: 1 of 5 quality checks failed: reject_rate 14.3% > 5%"
	if q.State != dag.TaskFailed || q.Attempts != 1 || q.Error != wantErr {
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
		if c.Name == "reject_rate" && (c.Value != 200.0/1400 || c.Threshold != 0.05 || c.Unit != dag.UnitRatio) {
			t.Errorf("reject_rate %+v, want 200/1400 against 0.05", c)
		}
	}
	for _, name := range []string{"daily_candles", "anomaly_summary"} {
		if tr := taskByName(t, tasks, name); tr.State != dag.TaskSuccess || tr.Checks != nil {
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
	if run.State != dag.RunSuccess {
		t.Errorf("run over passing data ended %s: %+v", run.State, tasks)
	}
	q = taskByName(t, tasks, "quality_checks")
	if q.State != dag.TaskSuccess || q.Error != "" || len(q.Checks) != 5 {
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
		return testutil.ToFloat64(m.DAGRuns.WithLabelValues(job.DAGMarketClose, string(dag.RunFailed))) == 1 &&
			testutil.ToFloat64(m.DAGRuns.WithLabelValues(job.DAGMarketClose, "success")) == 1, nil
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
	rerunID, err := s.Trigger(ctx, job.DAGMarketClose, time.Date(2026, 11, 4, 0, 0, 0, 0, ny),
		map[string]string{"max_reject_rate": "0.2"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the re-run counted", func() (bool, error) {
		return testutil.ToFloat64(m.DAGRuns.WithLabelValues(job.DAGMarketClose, "success")) == 2, nil
	})
	run, tasks = waitRun(t, s, rerunID)
	if q := taskByName(t, tasks, "quality_checks"); run.State != dag.RunSuccess || q.State != dag.TaskSuccess || len(q.Checks) != 5 {
		t.Errorf("re-run with max_reject_rate=0.2: run %s, quality_checks %+v", run.State, q)
	}
	if run, _ = waitRun(t, s, badID); run.State != dag.RunFailed {
		t.Errorf("the re-run changed the failed run to %s", run.State)
	}
	if n := testutil.ToFloat64(m.DAGRuns.WithLabelValues(job.DAGMarketClose, string(dag.RunFailed))); n != 1 {
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
	cfg := testConfig(pool, shippedOnly(t, job.Deps{Pool: pool}, job.DAGPipelineHealth))
	cfg.Metrics = m
	s := start(t, cfg)

	stale, err := s.Trigger(ctx, job.DAGPipelineHealth, day, nil)
	if err != nil {
		t.Fatal(err)
	}
	run, tasks := waitRun(t, s, stale)
	c := taskByName(t, tasks, "check")
	if run.State != dag.RunFailed || c.State != dag.TaskFailed || c.Attempts != 1 ||
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
	fresh, err := s.Trigger(ctx, job.DAGPipelineHealth, day.AddDate(0, 0, 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	if run, tasks := waitRun(t, s, fresh); run.State != dag.RunSuccess {
		t.Errorf("fresh ticks: run %s, tasks %+v", run.State, tasks)
	}
	eventually(t, 10*time.Second, "both runs counted", func() (bool, error) {
		return testutil.ToFloat64(m.DAGRuns.WithLabelValues(job.DAGPipelineHealth, "failed")) == 1 &&
			testutil.ToFloat64(m.DAGRuns.WithLabelValues(job.DAGPipelineHealth, "success")) == 1, nil
	})
}

// TestEngineBackfillFromAProvider triggers the backfill with source=alpaca:
// a scheduler with the provider's credentials pulls the run's New York
// dates, [from 00:00, to+1 00:00); one without them fails the run at once
// with the fix, and a refusal of the provider is not retried.
func TestEngineBackfillFromAProvider(t *testing.T) {
	t.Parallel()
	pool, _ := openDB(t)
	ctx := context.Background()
	type pull struct {
		source, symbol string
		from, to       time.Time
	}
	pulls := make(chan pull, 4)
	var refuse atomic.Bool
	deps := job.Deps{Pool: pool, PullTrades: func(_ context.Context, _ *slog.Logger, source, symbol string, from, to time.Time) (int64, error) {
		pulls <- pull{source, symbol, from, to}
		if refuse.Load() {
			return 0, &feed.FatalError{Source: "alpaca", Code: 402, Msg: "auth failed", Fix: "check APCA_API_KEY_ID"}
		}
		return 42, nil
	}}
	dg := shippedOnly(t, deps, job.DAGBackfill)
	s := start(t, testConfig(pool, dg))
	params := map[string]string{"symbol": "AAPL", "source": "alpaca", "from": "2026-11-02", "to": "2026-11-03"}
	id, err := s.Trigger(ctx, job.DAGBackfill, time.Date(2026, 11, 4, 0, 0, 0, 0, dg.Location), params)
	if err != nil {
		t.Fatal(err)
	}
	run, tasks := waitRun(t, s, id)
	p := <-pulls
	if run.State != dag.RunSuccess || p.source != "alpaca" || p.symbol != "AAPL" ||
		!p.from.Equal(time.Date(2026, 11, 2, 5, 0, 0, 0, time.UTC)) || !p.to.Equal(time.Date(2026, 11, 4, 5, 0, 0, 0, time.UTC)) ||
		!strings.Contains(tasks[0].Log, "ticks=42") {
		t.Fatalf("run %+v pulled %+v; log:\n%s", run, p, tasks[0].Log)
	}

	refuse.Store(true)
	id, err = s.Trigger(ctx, job.DAGBackfill, time.Date(2026, 11, 4, 0, 0, 0, 0, dg.Location), params)
	if err != nil {
		t.Fatal(err)
	}
	run, tasks = waitRun(t, s, id)
	<-pulls
	if run.State != dag.RunFailed || len(pulls) != 0 || !strings.Contains(tasks[0].Error, "402 auth failed") {
		t.Fatalf("a refused key: run %+v, %d more pulls, error %q", run, len(pulls), tasks[0].Error)
	}

	// Another database, so that the scheduler with the key is not the
	// one to run it.
	pool2, _ := openDB(t)
	noKey := shippedOnly(t, job.Deps{Pool: pool2}, job.DAGBackfill)
	s2 := start(t, testConfig(pool2, noKey))
	id, err = s2.Trigger(ctx, job.DAGBackfill, time.Date(2026, 11, 4, 0, 0, 0, 0, dg.Location), params)
	if err != nil {
		t.Fatal(err)
	}
	if run, tasks = waitRun(t, s2, id); run.State != dag.RunFailed || !strings.Contains(tasks[0].Error, "APCA_API_KEY_ID and APCA_API_SECRET_KEY") {
		t.Fatalf("without a key: run %+v, error %q", run, tasks[0].Error)
	}
}
