package orchestrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/analytics"
	"github.com/stockpipe/stockpipe/internal/generate"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
	"github.com/stockpipe/stockpipe/internal/store"
)

// dagsNY is New York, where trading dates are.
var dagsNY = func() *time.Location {
	loc, err := time.LoadLocation("America/New_York")
	if err != nil {
		panic(err)
	}
	return loc
}()

// dagsDate returns midnight New York of a date in November 2026, the
// logical date the engine gives a New York daily DAG. 2026-11-02 is a
// Monday, the day after daylight saving time ends: 14:30 UTC is 09:30 in
// New York.
func dagsDate(day int) time.Time { return time.Date(2026, 11, day, 0, 0, 0, 0, dagsNY) }

var dagsSymbols = []string{"AAPL", "MSFT", "XOM"}

// dagsEnv is a migrated database with the stream's output for some
// simulated sessions, and the shipped DAGs over it.
type dagsEnv struct {
	t    *testing.T
	pool *pgxpool.Pool
	deps Deps
	dags map[string]DAG
}

func newDagsEnv(t *testing.T, deps Deps) *dagsEnv {
	t.Helper()
	ctx := context.Background()
	pool, err := store.Open(ctx, pgtest.New(t), 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := store.Migrate(ctx, pool, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	deps.Pool = pool
	e := &dagsEnv{t: t, pool: pool, deps: deps, dags: map[string]DAG{}}
	for _, d := range Shipped(deps) {
		e.dags[d.Name] = d
	}
	return e
}

// session is one simulated stretch of trading.
type session struct {
	start  time.Time
	dur    time.Duration
	rate   float64 // ticks per second across the symbols
	faults float64
	seed   uint64
}

// simulate feeds the sessions, in order, through the stream's computation
// as the processor does it (decode, rules, analytics.Partition, one
// Flush per batch) and stores each batch with the processor's sink. One
// partition holds every symbol; seqs and prices carry over from one
// session to the next as a resumed simulator continues them.
func (e *dagsEnv) simulate(sessions ...session) {
	e.t.Helper()
	ctx := context.Background()
	syms, err := generate.LookupSymbols(dagsSymbols)
	if err != nil {
		e.t.Fatal(err)
	}
	part, err := analytics.New(analytics.Config{})
	if err != nil {
		e.t.Fatal(err)
	}
	sink := store.NewSink(e.pool)
	dec := market.NewDecoder()
	rules := market.DefaultRules()
	resume := map[string]generate.Resume{}
	b := &store.Batch{Group: "stockpipe", Topic: kafka.TopicTicks}
	var out analytics.Output
	var offset int64
	commit := func() {
		part.Flush(&out)
		b.Candles, b.Anomalies = out.Candles, out.Anomalies
		if _, err := sink.Commit(ctx, b); err != nil {
			e.t.Fatal(err)
		}
		b.Reset()
		out.Reset()
	}
	for _, s := range sessions {
		sim, err := generate.NewSimulator(generate.SimConfig{
			Symbols: syms, Rate: s.rate, Seed: s.seed, Start: s.start,
			Faults: s.faults, AnomalyRate: generate.DefaultAnomalyRate, Resume: maps.Clone(resume),
		})
		if err != nil {
			e.t.Fatal(err)
		}
		end := s.start.Add(s.dur)
		for {
			rec, ok, err := sim.Next()
			if err != nil {
				e.t.Fatal(err)
			}
			if !ok || !rec.TS.Before(end) {
				break
			}
			offset++
			var tk market.Tick
			err = dec.Decode(rec.Value, &tk)
			if err == nil && string(rec.Key) != tk.Symbol {
				err = &market.Rejection{Reason: market.ReasonKeyMismatch, Detail: "key is not the symbol"}
			}
			if err == nil {
				err = rules.Check(&tk, tk.TS)
			}
			if err == nil {
				switch part.Apply(&tk, &out) {
				case analytics.Duplicate:
					continue
				case analytics.Late:
					err = &market.Rejection{Reason: market.ReasonLate, Detail: "behind the watermark"}
				}
			}
			if err != nil {
				var rj *market.Rejection
				if !errors.As(err, &rj) {
					rj = &market.Rejection{Reason: market.ReasonMalformedJSON, Detail: err.Error()}
				}
				b.Rejected = append(b.Rejected, store.Rejected{Topic: kafka.TopicTicks, Offset: offset,
					Reason: rj.Reason, Detail: rj.Detail, Key: slices.Clone(rec.Key), Raw: slices.Clone(rec.Value)})
			} else {
				b.Ticks = append(b.Ticks, store.TickRow{Tick: tk, Offset: offset})
				if r := resume[tk.Symbol]; tk.Seq > r.Seq {
					resume[tk.Symbol] = generate.Resume{Seq: tk.Seq, Price: tk.Price}
				}
			}
			if len(b.Ticks)+len(b.Rejected) >= 10_000 {
				commit()
			}
		}
	}
	commit()
}

// runTask runs one task of a DAG as the engine would, with the DAG's
// parameters overridden by params.
func (e *dagsEnv) runTask(dag, task string, logical time.Time, params map[string]string) error {
	e.t.Helper()
	d, ok := e.dags[dag]
	if !ok {
		e.t.Fatalf("no DAG %s", dag)
	}
	i := slices.IndexFunc(d.Tasks, func(t Task) bool { return t.Name == task })
	if i < 0 {
		e.t.Fatalf("DAG %s has no task %s", dag, task)
	}
	merged := maps.Clone(d.Params)
	maps.Copy(merged, params)
	tc := &TaskContext{DAG: dag, RunID: 1, LogicalDate: logical, Params: merged, Pool: e.pool,
		Kafka: e.deps.Kafka, Log: slog.New(slog.NewTextHandler(dagsLogWriter{e.t}, nil)).With("task", task)}
	ctx, cancel := context.WithTimeout(context.Background(), d.Tasks[i].Timeout)
	defer cancel()
	return d.Tasks[i].Run(ctx, tc)
}

// run runs every task of a DAG in dependency order and fails the test if
// any task fails, its checks included.
func (e *dagsEnv) run(dag string, logical time.Time, params map[string]string) {
	e.t.Helper()
	if err := e.runChecked(dag, logical, params); err != nil {
		e.t.Fatalf("%s for %s: %v", dag, logical.Format(time.DateOnly), err)
	}
}

// runChecked runs every task of a DAG in dependency order, as the engine
// would: a task whose checks fail does not stop the tasks that do not
// depend on it, and its *ChecksFailedError is returned (joined with any
// other's). Any other error fails the test.
func (e *dagsEnv) runChecked(dag string, logical time.Time, params map[string]string) error {
	e.t.Helper()
	done := map[string]bool{}
	var verdicts []error
next:
	for _, task := range e.dags[dag].Tasks {
		for _, dep := range task.Deps {
			if !done[dep] {
				continue next
			}
		}
		err := e.runTask(dag, task.Name, logical, params)
		if err != nil && !errors.Is(err, ErrChecksFailed) {
			e.t.Fatalf("%s.%s for %s: %v", dag, task.Name, logical.Format(time.DateOnly), err)
		}
		if err != nil {
			verdicts = append(verdicts, err)
			continue
		}
		done[task.Name] = true
	}
	return errors.Join(verdicts...)
}

type dagsLogWriter struct{ t *testing.T }

func (w dagsLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (e *dagsEnv) count(query string, args ...any) int64 {
	e.t.Helper()
	var n int64
	if err := e.pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	return n
}

func (e *dagsEnv) exec(query string, args ...any) int64 {
	e.t.Helper()
	tag, err := e.pool.Exec(context.Background(), query, args...)
	if err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	return tag.RowsAffected()
}

func (e *dagsEnv) dump(query string) []string { return pgtest.Rows(e.t, e.pool, query) }

// report returns a date's quality report by check name.
func (e *dagsEnv) report(day string) (bool, map[string]CheckResult) {
	e.t.Helper()
	var passed bool
	var doc []byte
	if err := e.pool.QueryRow(context.Background(),
		`SELECT passed, checks FROM quality_reports WHERE date = $1::date`, day).Scan(&passed, &doc); err != nil {
		e.t.Fatalf("quality report of %s: %v", day, err)
	}
	return passed, e.checks(doc)
}

func (e *dagsEnv) checks(doc []byte) map[string]CheckResult {
	e.t.Helper()
	var cs []CheckResult
	if err := json.Unmarshal(doc, &cs); err != nil {
		e.t.Fatal(err)
	}
	m := map[string]CheckResult{}
	for _, c := range cs {
		m[c.Name] = c
	}
	return m
}

func TestDAGShippedDefinitions(t *testing.T) {
	dags := Shipped(Deps{})
	want := map[string]string{
		DAGMarketClose: "30 16 * * 1-5", DAGRetention: "15 * * * *", DAGPipelineHealth: "*/5 * * * *", DAGBackfill: "",
	}
	if len(dags) != len(want) {
		t.Fatalf("%d DAGs, want %d", len(dags), len(want))
	}
	for _, d := range dags {
		sched, ok := want[d.Name]
		if !ok || d.Schedule != sched {
			t.Errorf("DAG %s schedule %q, want %q", d.Name, d.Schedule, sched)
		}
		loc := "America/New_York"
		if d.Name == DAGPipelineHealth {
			loc = "UTC"
		}
		if d.Location == nil || d.Location.String() != loc {
			t.Errorf("DAG %s location %v, want %s", d.Name, d.Location, loc)
		}
		seen := map[string]bool{}
		for _, task := range d.Tasks {
			if task.Run == nil || task.Timeout <= 0 {
				t.Errorf("%s.%s has no Run or timeout", d.Name, task.Name)
			}
			for _, dep := range task.Deps {
				if !seen[dep] {
					t.Errorf("%s.%s depends on %s, which is not an earlier task", d.Name, task.Name, dep)
				}
			}
			seen[task.Name] = true
		}
	}
	if got := dags[1].Params["retention"]; got != "168h0m0s" {
		t.Errorf("default retention %q, want 7 days", got)
	}
}

// dump1d lists the 1d candles with every column, updated_at included, so
// that equal dumps mean the rows were not even rewritten.
const dump1d = `SELECT symbol, bucket, open, high, low, close, volume, vwap, trades,
	sma_5, sma_20, ema_12, ema_26, bb_upper, bb_lower, rsi_14, final, updated_at
	FROM candles WHERE interval = '1d' ORDER BY symbol, bucket`

func TestDAGMarketClose(t *testing.T) {
	t.Parallel()
	e := newDagsEnv(t, Deps{})
	day := dagsDate(2)
	// Two hours from the open, with faults (duplicates, out-of-order, late,
	// malformed and invalid records) and injected anomalies.
	e.simulate(session{start: time.Date(2026, 11, 2, 14, 30, 0, 0, time.UTC), dur: 2 * time.Hour, rate: 20, faults: 0.01, seed: 1})
	// Rejected records are stamped with the wall clock; put them on the
	// simulated date so the reject rate has something to measure.
	rejected := e.exec(`UPDATE rejected_ticks SET received_at = '2026-11-02 15:00:00+00'`)
	ticks := e.count(`SELECT count(*) FROM ticks`)
	t.Logf("%d ticks, %d rejected records, %d 1m candles, %d anomalies", ticks, rejected,
		e.count(`SELECT count(*) FROM candles WHERE interval = '1m'`), e.count(`SELECT count(*) FROM anomalies`))
	if rejected == 0 || e.count(`SELECT count(*) FROM anomalies`) == 0 {
		t.Fatal("the simulation should have produced rejected records and anomalies")
	}

	e.run(DAGMarketClose, day, nil)

	// One final 1d candle per symbol at midnight New York, equal to an
	// aggregate of its 1m candles computed another way.
	if n := e.count(`SELECT count(*) FROM candles WHERE interval = '1d'`); n != int64(len(dagsSymbols)) {
		t.Fatalf("%d 1d candles, want %d", n, len(dagsSymbols))
	}
	if n := e.count(`SELECT count(*) FROM candles WHERE interval = '1d' AND bucket = '2026-11-02 05:00:00+00' AND final`); n != int64(len(dagsSymbols)) {
		t.Fatalf("%d 1d candles are final at midnight New York, want %d", n, len(dagsSymbols))
	}
	if n := e.count(`
		WITH m AS (SELECT * FROM candles WHERE interval = '1m' AND bucket >= $1 AND bucket < $2),
		a AS (SELECT symbol, max(high) AS high, min(low) AS low, sum(volume) AS volume, sum(trades) AS trades,
		             sum(vwap * volume) / sum(volume) AS vwap FROM m GROUP BY symbol),
		o AS (SELECT DISTINCT ON (symbol) symbol, open FROM m ORDER BY symbol, bucket),
		c AS (SELECT DISTINCT ON (symbol) symbol, close FROM m ORDER BY symbol, bucket DESC),
		-- the day's VWAP straight from the ticks
		t AS (SELECT symbol, sum(price * size) / sum(size) AS vwap FROM ticks WHERE ts >= $1 AND ts < $2 GROUP BY symbol)
		SELECT count(*) FROM candles d JOIN a USING (symbol) JOIN o USING (symbol) JOIN c USING (symbol) JOIN t USING (symbol)
		WHERE d.interval = '1d' AND d.bucket = $1 AND d.open = o.open AND d.high = a.high AND d.low = a.low
		  AND d.close = c.close AND d.volume = a.volume AND d.trades = a.trades
		  AND abs(d.vwap - a.vwap) <= 1e-9 * a.vwap AND abs(d.vwap - t.vwap) <= 1e-9 * t.vwap`,
		day, day.AddDate(0, 0, 1)); n != int64(len(dagsSymbols)) {
		t.Errorf("%d of %d 1d candles equal the aggregate of their 1m candles", n, len(dagsSymbols))
	}
	// One close: only the EMAs (seeded with the first close) are defined.
	if n := e.count(`SELECT count(*) FROM candles WHERE interval = '1d' AND sma_5 IS NULL AND sma_20 IS NULL
		AND bb_upper IS NULL AND bb_lower IS NULL AND rsi_14 IS NULL AND ema_12 = close AND ema_26 = close`); n != int64(len(dagsSymbols)) {
		t.Errorf("%d 1d candles have the indicators of a first close, want %d", n, len(dagsSymbols))
	}

	// Clean data passes every check.
	passed, checks := e.report("2026-11-02")
	if !passed || len(checks) != 5 {
		t.Errorf("clean data: passed=%v, checks %+v", passed, checks)
	}
	for _, c := range checks {
		if !c.Passed || c.Skipped {
			t.Errorf("clean data: check %+v", c)
		}
	}
	if c := checks["reject_rate"]; math.Abs(c.Value-float64(rejected)/float64(rejected+ticks)) > 1e-12 || c.Threshold != 0.05 {
		t.Errorf("reject_rate %+v, want %d/%d", c, rejected, rejected+ticks)
	}
	if c := checks["candles_match_ticks"]; !strings.Contains(c.Detail, "0 of ") {
		t.Errorf("candles_match_ticks %+v", c)
	}

	// The anomaly summary agrees with a direct count.
	if n := e.count(`
		WITH a AS (SELECT symbol, kind, count(*) AS n, count(*) FILTER (WHERE severity = 'high') AS high,
		                  count(*) FILTER (WHERE severity = 'medium') AS medium, count(*) FILTER (WHERE severity = 'low') AS low,
		                  max(CASE severity WHEN 'high' THEN 3 WHEN 'medium' THEN 2 ELSE 1 END) AS top
		           FROM anomalies WHERE ts >= $1 AND ts < $2 GROUP BY 1, 2)
		SELECT count(*) FROM a FULL JOIN (SELECT * FROM anomaly_summaries WHERE date = '2026-11-02') s USING (symbol, kind)
		WHERE s.count IS DISTINCT FROM a.n OR s.high IS DISTINCT FROM a.high OR s.medium IS DISTINCT FROM a.medium
		   OR s.low IS DISTINCT FROM a.low
		   OR s.max_severity IS DISTINCT FROM (ARRAY['low', 'medium', 'high'])[a.top]`, day, day.AddDate(0, 0, 1)); n != 0 {
		t.Errorf("%d anomaly summary rows differ from a direct count", n)
	}
	if n := e.count(`SELECT count(*) FROM anomaly_summaries`); n == 0 {
		t.Error("no anomaly summary rows")
	}

	// Re-running the DAG for the same date changes nothing.
	const dumpReport = `SELECT date, passed, checks FROM quality_reports ORDER BY date`
	const dumpSummary = `SELECT * FROM anomaly_summaries ORDER BY date, symbol, kind`
	candles, report, summary := e.dump(dump1d), e.dump(dumpReport), e.dump(dumpSummary)
	e.run(DAGMarketClose, day, nil)
	if got := e.dump(dump1d); !slices.Equal(got, candles) {
		t.Errorf("1d candles changed on a re-run:\n%v\n%v", candles, got)
	}
	if got := e.dump(dumpReport); !slices.Equal(got, report) {
		t.Errorf("quality report changed on a re-run:\n%v\n%v", report, got)
	}
	if got := e.dump(dumpSummary); !slices.Equal(got, summary) {
		t.Errorf("anomaly summary changed on a re-run")
	}
	// The same trading date given as midnight UTC, or as the instant of
	// midnight New York in UTC, is the same run.
	for _, logical := range []time.Time{time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC), day.UTC()} {
		if err := e.runTask(DAGMarketClose, "daily_candles", logical, nil); err != nil {
			t.Fatal(err)
		}
		if got := e.dump(dump1d); !slices.Equal(got, candles) {
			t.Errorf("logical date %v built other candles", logical)
		}
	}

	// Plant faults:
	//  - a gap: three minutes of AAPL's 1m candles deleted mid-session;
	//  - a candle whose volume disagrees with its ticks (MSFT 11:00);
	//  - a tick of XOM whose seq is the highest but whose ts is half an
	//    hour before the newest (it also makes its minute disagree with
	//    its candle);
	//  - a 5m candle whose high is below its close, once the candles_ohlc
	//    constraint that would refuse it is gone.
	if n := e.exec(`DELETE FROM candles WHERE symbol = 'AAPL' AND interval = '1m'
		AND bucket IN ('2026-11-02 15:30:00+00', '2026-11-02 15:31:00+00', '2026-11-02 15:32:00+00')`); n != 3 {
		t.Fatalf("deleted %d candles", n)
	}
	if n := e.exec(`UPDATE candles SET volume = volume + 1 WHERE symbol = 'MSFT' AND interval = '1m' AND bucket = '2026-11-02 16:00:00+00'`); n != 1 {
		t.Fatalf("updated %d candles", n)
	}
	e.exec(`INSERT INTO ticks (symbol, seq, ts, price, size, bid, ask, kafka_partition, kafka_offset)
		SELECT 'XOM', max(seq) + 1, '2026-11-02 16:00:30+00', 110, 100, 109.99, 110.01, 0, 0 FROM ticks WHERE symbol = 'XOM'`)
	e.exec(`ALTER TABLE candles DROP CONSTRAINT candles_ohlc`)
	if n := e.exec(`UPDATE candles SET high = close - 0.01, low = least(low, close - 0.01)
		WHERE symbol = 'AAPL' AND interval = '5m' AND bucket = '2026-11-02 15:00:00+00'`); n != 1 {
		t.Fatalf("updated %d candles", n)
	}
	// The report is written, and the task fails naming each failed check
	// with its value against its threshold.
	err := e.runTask(DAGMarketClose, "quality_checks", day, nil)
	var verdict *ChecksFailedError
	if !errors.As(err, &verdict) {
		t.Fatalf("quality checks over planted faults returned %v, want a *ChecksFailedError", err)
	}
	const wantMsg = "quality report of 2026-11-02: 4 of 5 quality checks failed: missing_minutes 3 > 0; seq_order 1 > 0; " +
		"ohlc_consistency 1 > 0; candles_match_ticks 2 > 0"
	if err.Error() != wantMsg {
		t.Errorf("error\n %q\nwant\n %q", err, wantMsg)
	}
	if len(verdict.Checks) != 5 || len(verdict.Failed()) != 4 {
		t.Errorf("verdict carries %d checks, %d failed; want 5 and 4", len(verdict.Checks), len(verdict.Failed()))
	}
	passed, checks = e.report("2026-11-02")
	if passed {
		t.Error("report passed with planted faults")
	}
	want := map[string]struct {
		passed bool
		value  float64
	}{
		"missing_minutes":     {false, 3},
		"seq_order":           {false, 1},
		"ohlc_consistency":    {false, 1},
		"candles_match_ticks": {false, 2}, // MSFT's volume and XOM's extra tick
		"reject_rate":         {true, checks["reject_rate"].Value},
	}
	for name, w := range want {
		if c := checks[name]; c.Passed != w.passed || c.Value != w.value {
			t.Errorf("check %s = %+v, want passed=%v value=%v", name, c, w.passed, w.value)
		}
	}
	if c := checks["missing_minutes"]; !strings.Contains(c.Detail, "AAPL 3") {
		t.Errorf("missing_minutes detail %q does not name AAPL", c.Detail)
	}
	if c := checks["candles_match_ticks"]; !strings.Contains(c.Detail, "3 minute(s) of ticks have no candle") {
		t.Errorf("candles_match_ticks detail %q", c.Detail)
	}
	if c := checks["seq_order"]; !strings.Contains(c.Detail, "XOM 1") || !strings.Contains(c.Detail, "primary key") {
		t.Errorf("seq_order detail %q", c.Detail)
	}
	// The anomaly summary does not wait for the verdict: written afresh,
	// it is what it was.
	e.exec(`DELETE FROM anomaly_summaries`)
	if err := e.runChecked(DAGMarketClose, day, nil); !errors.Is(err, ErrChecksFailed) {
		t.Errorf("the DAG over planted faults returned %v, want failed checks", err)
	}
	if got := e.dump(dumpSummary); !slices.Equal(got, summary) {
		t.Errorf("the anomaly summary was not rewritten when the quality checks failed")
	}
	// Thresholds are parameters.
	if err := e.runTask(DAGMarketClose, "quality_checks", day, map[string]string{
		"max_missing_minutes": "3", "max_seq_regressions": "1", "max_ohlc_errors": "1", "max_candle_mismatches": "2",
	}); err != nil {
		t.Fatal(err)
	}
	if passed, checks = e.report("2026-11-02"); !passed {
		t.Errorf("raised thresholds: report %+v", checks)
	}
	if err := e.runTask(DAGMarketClose, "quality_checks", day, map[string]string{"max_reject_rate": "x"}); err == nil {
		t.Error("a bad threshold was accepted")
	}

	// Without the date's ticks (retention), candles are not reconciled;
	// every stored record of the date is then a rejected one.
	e.exec(`DELETE FROM ticks`)
	err = e.runTask(DAGMarketClose, "quality_checks", day, nil)
	if !errors.As(err, &verdict) || !strings.Contains(err.Error(), "reject_rate 100% > 5%") ||
		strings.Contains(err.Error(), "candles_match_ticks") {
		t.Errorf("without ticks: %v", err)
	}
	if _, checks = e.report("2026-11-02"); !checks["candles_match_ticks"].Skipped || !checks["candles_match_ticks"].Passed {
		t.Errorf("without ticks: %+v", checks["candles_match_ticks"])
	}

	// A date without data is a successful run with nothing built.
	if err := e.runTask(DAGMarketClose, "daily_candles", dagsDate(3), nil); err != nil {
		t.Fatal(err)
	}
	if n := e.count(`SELECT count(*) FROM candles WHERE interval = '1d'`); n != int64(len(dagsSymbols)) {
		t.Errorf("%d 1d candles after an empty date", n)
	}
}

// sixDays is a short session on each of Monday to Saturday.
func sixDays() []session {
	var ss []session
	for i := range 6 {
		ss = append(ss, session{start: time.Date(2026, 11, 2+i, 14, 30, 0, 0, time.UTC), dur: 10 * time.Minute,
			rate: 10, faults: 0.01, seed: uint64(10 + i)})
	}
	return ss
}

func TestDAGMarketCloseSeveralDays(t *testing.T) {
	t.Parallel()
	e := newDagsEnv(t, Deps{})
	e.simulate(sixDays()...)
	for d := 2; d <= 7; d++ {
		e.run(DAGMarketClose, dagsDate(d), nil)
	}
	if n := e.count(`SELECT count(*) FROM candles WHERE interval = '1d'`); n != 6*int64(len(dagsSymbols)) {
		t.Fatalf("%d 1d candles, want %d", n, 6*len(dagsSymbols))
	}
	// SMA 5 is the mean of the last five daily closes from the fifth day
	// on, and undefined before.
	if n := e.count(`
		WITH w AS (SELECT sma_5, row_number() OVER s AS n, avg(close) OVER (s ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) AS avg5
		           FROM candles WHERE interval = '1d' WINDOW s AS (PARTITION BY symbol ORDER BY bucket))
		SELECT count(*) FROM w WHERE (n < 5) <> (sma_5 IS NULL) OR abs(sma_5 - avg5) > 1e-9 * avg5`); n != 0 {
		t.Errorf("%d 1d candles have an SMA 5 other than the mean of the last five closes", n)
	}
	if n := e.count(`SELECT count(*) FROM candles WHERE interval = '1d' AND sma_5 IS NOT NULL`); n != 2*int64(len(dagsSymbols)) {
		t.Errorf("%d 1d candles have an SMA 5, want those of the last two days", n)
	}
	// EMA 12, seeded with the first close, against the recurrence.
	rows, err := e.pool.Query(context.Background(), `SELECT symbol, close, ema_12 FROM candles WHERE interval = '1d' ORDER BY symbol, bucket`)
	if err != nil {
		t.Fatal(err)
	}
	var (
		sym, prev  string
		cl, ema    float64
		want       float64
		checkedEMA int
	)
	if _, err := pgx.ForEachRow(rows, []any{&sym, &cl, &ema}, func() error {
		if sym != prev {
			want, prev = cl, sym
		} else {
			want += 2.0 / 13 * (cl - want)
		}
		if math.Abs(ema-want) > 1e-9*want {
			t.Errorf("%s ema_12 %v, want %v", sym, ema, want)
		}
		checkedEMA++
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Re-running a middle date changes nothing, and building the dates in
	// reverse order gives the same candles as building them in order.
	forward := e.dump(dump1d)
	e.run(DAGMarketClose, dagsDate(4), nil)
	if got := e.dump(dump1d); !slices.Equal(got, forward) {
		t.Error("re-running 2026-11-04 changed the 1d candles")
	}
	const noUpdatedAt = `SELECT symbol, bucket, open, high, low, close, volume, vwap, trades,
		sma_5, sma_20, ema_12, ema_26, bb_upper, bb_lower, rsi_14, final FROM candles WHERE interval = '1d' ORDER BY symbol, bucket`
	forward = e.dump(noUpdatedAt)
	e.exec(`DELETE FROM candles WHERE interval = '1d'`)
	for d := 7; d >= 2; d-- {
		if err := e.runTask(DAGMarketClose, "daily_candles", dagsDate(d), nil); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.dump(noUpdatedAt); !slices.Equal(got, forward) {
		t.Error("building the dates in reverse order gave other 1d candles")
	}
}

func TestDAGRetention(t *testing.T) {
	t.Parallel()
	e := newDagsEnv(t, Deps{Retention: 24 * time.Hour})
	e.simulate(sixDays()...)
	// Rejected records: half received long ago, half now.
	e.exec(`UPDATE rejected_ticks SET received_at = '2026-11-03 15:00:00+00' WHERE id % 2 = 0`)
	logical := dagsDate(7)
	cutoff := dagsDate(6) // one day before the logical date
	ticksKept := e.count(`SELECT count(*) FROM ticks WHERE ts >= $1`, cutoff)
	ticksOld := e.count(`SELECT count(*) FROM ticks WHERE ts < $1`, cutoff)
	rejKept := e.count(`SELECT count(*) FROM rejected_ticks WHERE received_at >= $1`, cutoff)
	rejOld := e.count(`SELECT count(*) FROM rejected_ticks WHERE received_at < $1`, cutoff)
	candles := e.dump(`SELECT * FROM candles ORDER BY symbol, interval, bucket`)
	if ticksKept == 0 || ticksOld == 0 || rejKept == 0 || rejOld == 0 {
		t.Fatalf("fixture: %d/%d ticks, %d/%d rejected kept/old", ticksKept, ticksOld, rejKept, rejOld)
	}

	// Small batches, so that deleting takes many statements.
	e.run(DAGRetention, logical, map[string]string{"batch_size": "1000"})
	if n := e.count(`SELECT count(*) FROM ticks WHERE ts < $1`, cutoff); n != 0 {
		t.Errorf("%d ticks older than the cutoff remain", n)
	}
	if n := e.count(`SELECT count(*) FROM ticks`); n != ticksKept {
		t.Errorf("%d ticks remain, want the %d since the cutoff", n, ticksKept)
	}
	if n := e.count(`SELECT count(*) FROM rejected_ticks`); n != rejKept {
		t.Errorf("%d rejected records remain, want %d", n, rejKept)
	}
	if got := e.dump(`SELECT * FROM candles ORDER BY symbol, interval, bucket`); !slices.Equal(got, candles) {
		t.Error("retention changed the candles")
	}
	if n := e.count(`SELECT count(*) FROM pg_stat_user_tables WHERE relname IN ('ticks', 'rejected_ticks', 'candles')
		AND last_vacuum IS NOT NULL AND last_analyze IS NOT NULL`); n != 3 {
		t.Errorf("%d of 3 tables vacuumed and analysed", n)
	}
	// Running it again deletes nothing more; a retention parameter
	// overrides the default.
	e.run(DAGRetention, logical, nil)
	if n := e.count(`SELECT count(*) FROM ticks`); n != ticksKept {
		t.Errorf("a re-run left %d ticks, want %d", n, ticksKept)
	}
	// Half an hour before the logical date's midnight: only the last
	// session's ticks remain.
	lastDay := e.count(`SELECT count(*) FROM ticks WHERE ts >= $1`, logical)
	e.run(DAGRetention, logical, map[string]string{"retention": "30m"})
	if n := e.count(`SELECT count(*) FROM ticks`); n != lastDay || n == 0 {
		t.Errorf("a retention of 30m left %d ticks, want the %d of the logical date", n, lastDay)
	}
	// An hourly run with a retention shorter than a day (up's) counts back
	// from its own slot: at 15:35 New York, six hours keep 09:35 on.
	slot := time.Date(2026, 11, 7, 15, 35, 0, 0, dagsNY)
	since := slot.Add(-6 * time.Hour)
	recent := e.count(`SELECT count(*) FROM ticks WHERE ts >= $1`, since)
	if recent == 0 || recent == lastDay {
		t.Fatalf("fixture: %d of the last day's %d ticks after %v", recent, lastDay, since)
	}
	e.run(DAGRetention, slot, map[string]string{"retention": "6h"})
	if n := e.count(`SELECT count(*) FROM ticks`); n != recent {
		t.Errorf("6h at %v left %d ticks, want the %d since %v", slot, n, recent, since)
	}
	if err := e.runTask(DAGRetention, "drop_old_ticks", logical, map[string]string{"batch_size": "0"}); err == nil {
		t.Error("batch_size 0 was accepted")
	}
}

func TestDAGPipelineHealthWithoutBrokers(t *testing.T) {
	t.Parallel()
	e := newDagsEnv(t, Deps{})
	e.simulate(session{start: time.Date(2026, 11, 2, 14, 30, 0, 0, time.UTC), dur: time.Minute, rate: 20, seed: 3})
	logical := time.Date(2026, 11, 25, 12, 5, 0, 0, time.UTC)
	e.run(DAGPipelineHealth, logical, nil)

	var healthy bool
	var doc []byte
	if err := e.pool.QueryRow(context.Background(),
		`SELECT healthy, checks FROM pipeline_health WHERE logical_time = $1`, logical).Scan(&healthy, &doc); err != nil {
		t.Fatal(err)
	}
	checks := e.checks(doc)
	for _, name := range []string{"broker", "topics", "consumer_lag"} {
		if c := checks[name]; !c.Skipped || !c.Passed || !strings.Contains(c.Detail, "skipped") {
			t.Errorf("check %s = %+v, want skipped", name, c)
		}
	}
	// The ticks were just stored: their age is seconds.
	if c := checks["tick_age"]; !c.Passed || c.Skipped || c.Value > 60 || c.Threshold != 300 {
		t.Errorf("tick_age = %+v", c)
	}
	if c := checks["dlq_rate"]; !c.Passed || c.Value != 0 {
		t.Errorf("dlq_rate = %+v", c)
	}
	if !healthy {
		t.Errorf("unhealthy: %s", doc)
	}

	// Stale ticks and a burst of dead letters make an unhealthy result,
	// recorded over the same row, and a failed task that names them.
	e.exec(`UPDATE ticks SET ingested_at = now() - interval '1 hour'`)
	e.exec(`INSERT INTO rejected_ticks (topic, partition, "offset", reason) SELECT 'ticks', 0, g, 'malformed_json' FROM generate_series(1, 10) g`)
	err := e.runChecked(DAGPipelineHealth, logical, nil)
	var verdict *ChecksFailedError
	if !errors.As(err, &verdict) || !strings.Contains(err.Error(), "2 of 5 health checks failed: tick_age 36") ||
		!strings.Contains(err.Error(), "s > 300s; dlq_rate 100% > 5%") {
		t.Errorf("stale and rejecting pipeline: %v", err)
	}
	if err := e.pool.QueryRow(context.Background(),
		`SELECT healthy, checks FROM pipeline_health WHERE logical_time = $1`, logical).Scan(&healthy, &doc); err != nil {
		t.Fatal(err)
	}
	checks = e.checks(doc)
	if healthy || checks["tick_age"].Passed || checks["tick_age"].Value < 3500 || checks["dlq_rate"].Passed {
		t.Errorf("stale and rejecting pipeline: healthy=%v %s", healthy, doc)
	}
	if n := e.count(`SELECT count(*) FROM pipeline_health`); n != 1 {
		t.Errorf("%d health rows for one logical time", n)
	}
}

func TestDAGPipelineHealthAndReplayWithBroker(t *testing.T) {
	t.Parallel()
	b, err := kafka.StartBroker("127.0.0.1:0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	kcfg := kafka.Config{Brokers: b.Addrs(), ClientID: "dags-test"}
	cl, err := kgo.NewClient(kcfg.Opts()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	ctx := context.Background()
	if err := kafka.EnsureTopics(ctx, cl, slog.New(slog.DiscardHandler), kafka.Topics(3)); err != nil {
		t.Fatal(err)
	}
	e := newDagsEnv(t, Deps{Kafka: kcfg, Group: "g", Partitions: 3})
	e.simulate(session{start: time.Date(2026, 11, 2, 14, 30, 0, 0, time.UTC), dur: time.Minute, rate: 20, seed: 4})

	// health runs the check; the row says healthy exactly when the task
	// succeeds.
	health := func(logical time.Time) (bool, map[string]CheckResult) {
		t.Helper()
		verdict := e.runChecked(DAGPipelineHealth, logical, nil)
		var healthy bool
		var doc []byte
		if err := e.pool.QueryRow(ctx, `SELECT healthy, checks FROM pipeline_health WHERE logical_time = $1`, logical).Scan(&healthy, &doc); err != nil {
			t.Fatal(err)
		}
		if healthy != (verdict == nil) {
			t.Errorf("healthy=%v but the task returned %v", healthy, verdict)
		}
		return healthy, e.checks(doc)
	}

	// Replay a small CSV into the ticks topic.
	csv := filepath.Join(t.TempDir(), "ibm.csv")
	if err := os.WriteFile(csv, []byte("Date,Open,High,Low,Close,Adj Close,Volume\n"+
		"2026-10-28,100,102,99,101,101,100000\n"+
		"2026-10-29,101,103,100,102.5,102.5,120000\n"+
		"2026-10-30,102.5,104,101,101.5,101.5,90000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.runTask(DAGBackfill, "recompute", dagsDate(2), map[string]string{"symbol": "IBM", "file": csv}); err != nil {
		t.Fatal(err)
	}
	// A fresh client: the first one cached the topics' metadata from before
	// they were created.
	cl2, err := kgo.NewClient(kcfg.Opts()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl2.Close)
	adm := kadm.NewClient(cl2)
	ends, err := adm.ListEndOffsets(ctx, kafka.TopicTicks)
	if err != nil {
		t.Fatal(err)
	}
	var produced int64
	ends.Each(func(o kadm.ListedOffset) { produced += o.Offset })
	if produced < 3*4 {
		t.Fatalf("%d records in %s after replaying 3 daily bars", produced, kafka.TopicTicks)
	}

	// The group has committed nothing: the lag is unknown, so unhealthy.
	healthy, checks := health(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))
	if healthy || checks["consumer_lag"].Passed || !checks["broker"].Passed || !checks["topics"].Passed || checks["topics"].Value != 3 {
		t.Errorf("before any commit: healthy=%v %+v", healthy, checks)
	}
	if c := checks["consumer_lag"]; c.Summary() != "consumer_lag: "+c.Detail || !strings.Contains(c.Detail, "group g") {
		t.Errorf("an unmeasured lag is summarised as %q", c.Summary())
	}
	// Once the group has consumed everything, it is healthy.
	commit := kadm.Offsets{}
	ends.Each(func(o kadm.ListedOffset) {
		commit.Add(kadm.Offset{Topic: o.Topic, Partition: o.Partition, At: o.Offset, LeaderEpoch: -1})
	})
	if _, err := adm.CommitOffsets(ctx, "g", commit); err != nil {
		t.Fatal(err)
	}
	healthy, checks = health(time.Date(2026, 11, 25, 12, 5, 0, 0, time.UTC))
	if !healthy || checks["consumer_lag"].Value != 0 {
		t.Errorf("after the commit: healthy=%v %+v", healthy, checks)
	}
	// A partition count other than the expected one fails the topics check.
	e2 := &dagsEnv{t: t, pool: e.pool, deps: e.deps, dags: map[string]DAG{}}
	e2.deps.Partitions = 6
	for _, d := range Shipped(e2.deps) {
		e2.dags[d.Name] = d
	}
	if err := e2.runChecked(DAGPipelineHealth, time.Date(2026, 11, 25, 12, 10, 0, 0, time.UTC), nil); err == nil ||
		!strings.Contains(err.Error(), "topics 3 ≠ 6") {
		t.Errorf("3 partitions, 6 expected: %v", err)
	}
	var doc []byte
	if err := e.pool.QueryRow(ctx, `SELECT checks FROM pipeline_health WHERE logical_time = '2026-11-25 12:10:00+00'`).Scan(&doc); err != nil {
		t.Fatal(err)
	}
	if c := e.checks(doc)["topics"]; c.Passed || !strings.Contains(c.Detail, "expected 6") {
		t.Errorf("topics with 3 partitions, 6 expected: %+v", c)
	}

	// A broker that does not answer is an unhealthy result, not an error.
	e3 := &dagsEnv{t: t, pool: e.pool, deps: e.deps, dags: map[string]DAG{}}
	e3.deps.Kafka = kafka.Config{Brokers: []string{"127.0.0.1:1"}}
	for _, d := range Shipped(e3.deps) {
		e3.dags[d.Name] = d
	}
	if err := e3.runChecked(DAGPipelineHealth, time.Date(2026, 11, 25, 12, 15, 0, 0, time.UTC), nil); err == nil ||
		!strings.Contains(err.Error(), "broker: no broker of 127.0.0.1:1 answered") {
		t.Errorf("unreachable broker: %v", err)
	}
	if err := e.pool.QueryRow(ctx, `SELECT checks FROM pipeline_health WHERE logical_time = '2026-11-25 12:15:00+00'`).Scan(&doc); err != nil {
		t.Fatal(err)
	}
	if c := e.checks(doc); c["broker"].Passed || c["topics"].Passed || c["consumer_lag"].Passed {
		t.Errorf("unreachable broker: %s", doc)
	}
}

// dumpStreamCandles lists one symbol's 1m and 5m candles, without final and
// updated_at, and with vwap apart: the stream sums price×size in arrival
// order, SQL in its own, so vwap is compared to 1e-9 relative.
const dumpStreamCandles = `SELECT symbol, interval, bucket, open, high, low, close, volume, trades,
	sma_5, sma_20, ema_12, ema_26, bb_upper, bb_lower, rsi_14 FROM candles
	WHERE symbol = 'AAPL' AND interval IN ('1m', '5m') ORDER BY interval, bucket`

func TestDAGBackfillRecompute(t *testing.T) {
	t.Parallel()
	e := newDagsEnv(t, Deps{})
	e.simulate(session{start: time.Date(2026, 11, 2, 14, 30, 0, 0, time.UTC), dur: 40 * time.Minute, rate: 20, faults: 0.01, seed: 5})
	stream := e.dump(dumpStreamCandles)
	vwaps := e.dump(`SELECT vwap FROM candles WHERE symbol = 'AAPL' AND interval IN ('1m', '5m') ORDER BY interval, bucket`)
	others := e.dump(`SELECT * FROM candles WHERE symbol <> 'AAPL' ORDER BY symbol, interval, bucket`)
	if len(stream) < 40+8 {
		t.Fatalf("only %d AAPL candles", len(stream))
	}

	// Corrupt AAPL's candles: wrong values, a missing 5m candle, and a
	// candle in a minute without trades.
	if n := e.exec(`UPDATE candles SET volume = volume * 2, trades = trades + 1, vwap = vwap * 1.01, close = low,
		sma_5 = NULL, rsi_14 = 1 WHERE symbol = 'AAPL' AND interval = '1m' AND bucket BETWEEN '2026-11-02 14:40:00+00' AND '2026-11-02 14:45:00+00'`); n != 6 {
		t.Fatalf("corrupted %d candles", n)
	}
	e.exec(`DELETE FROM candles WHERE symbol = 'AAPL' AND interval = '5m' AND bucket = '2026-11-02 14:50:00+00'`)
	e.exec(`INSERT INTO candles (symbol, interval, bucket, open, high, low, close, volume, vwap, trades, final)
		VALUES ('AAPL', '1m', '2026-11-02 20:00:00+00', 1, 1, 1, 1, 1, 1, 1, true)`)

	// The range starts on a date without ticks, whose (absent) candles are
	// left as they are.
	if err := e.runTask(DAGBackfill, "recompute", dagsDate(2), map[string]string{
		"symbol": "AAPL", "from": "2026-11-01", "to": "2026-11-02"}); err != nil {
		t.Fatal(err)
	}
	if got := e.dump(dumpStreamCandles); !slices.Equal(got, stream) {
		t.Errorf("rebuilt candles differ from the stream's (%d rows, want %d)", len(got), len(stream))
		for i := range min(len(got), len(stream)) {
			if got[i] != stream[i] {
				t.Errorf("first difference:\n got %s\nwant %s", got[i], stream[i])
				break
			}
		}
	}
	if n := e.count(`
		WITH r AS (SELECT symbol, date_bin(iv.d, ts, timestamptz 'epoch') AS bucket, iv.name AS interval,
		                  sum(price * size) / sum(size) AS vwap
		           FROM ticks CROSS JOIN (VALUES ('1m', interval '1 minute'), ('5m', interval '5 minutes')) AS iv(name, d)
		           WHERE symbol = 'AAPL' GROUP BY 1, 2, 3)
		SELECT count(*) FROM candles c JOIN r USING (symbol, interval, bucket)
		WHERE abs(c.vwap - r.vwap) <= 1e-9 * r.vwap`); n != int64(len(vwaps)) {
		t.Errorf("%d of %d rebuilt vwaps match the ticks", n, len(vwaps))
	}
	if n := e.count(`SELECT count(*) FROM candles WHERE symbol = 'AAPL' AND NOT final`); n != 0 {
		t.Errorf("%d rebuilt candles are not final", n)
	}
	if got := e.dump(`SELECT * FROM candles WHERE symbol <> 'AAPL' ORDER BY symbol, interval, bucket`); !slices.Equal(got, others) {
		t.Error("the backfill of AAPL changed other symbols' candles")
	}
	// And the stream's vwaps, compared to 1e-9 relative.
	var stored []float64
	rows, err := e.pool.Query(context.Background(), `SELECT vwap FROM candles WHERE symbol = 'AAPL' AND interval IN ('1m', '5m') ORDER BY interval, bucket`)
	if err != nil {
		t.Fatal(err)
	}
	if stored, err = pgx.CollectRows(rows, pgx.RowTo[float64]); err != nil {
		t.Fatal(err)
	}
	for i, s := range vwaps {
		var want float64
		if _, err := fmt.Sscanf(strings.TrimSuffix(s, "|"), "%b", &want); err != nil {
			t.Fatal(err)
		}
		if math.Abs(stored[i]-want) > 1e-9*want {
			t.Errorf("candle %d vwap %v, the stream's %v", i, stored[i], want)
		}
	}

	// Parameters that cannot work are errors.
	for _, params := range []map[string]string{
		{},
		{"symbol": "aapl"},
		{"symbol": "AAPL", "from": "2026-11-03", "to": "2026-11-02"},
		{"symbol": "AAPL", "from": "yesterday"},
		{"symbol": "AAPL", "file": "prices.csv"}, // no brokers
	} {
		if err := e.runTask(DAGBackfill, "recompute", dagsDate(2), params); err == nil {
			t.Errorf("params %v: no error", params)
		}
	}
}

// TestDAGMarketCloseMidSession runs market_close during the session, as a
// person triggering it at lunch would: the 1d candles are written as not
// final; the run after the close replaces them with final ones. Trades
// outside the session (the simulator trades around the clock, thinly) are
// not in the day's bar.
func TestDAGMarketCloseMidSession(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 2, 9, 31, 30, 0, dagsNY)
	e := newDagsEnv(t, Deps{Now: func() time.Time { return now }})
	// Half an hour before the open to an hour after the close.
	e.simulate(session{start: time.Date(2026, 11, 2, 14, 0, 0, 0, time.UTC), dur: 8 * time.Hour, rate: 5, seed: 5})
	day := dagsDate(2)
	// The quality checks judge the whole calendar day, which this test does
	// not shape; their verdict is not what it is about.
	ignoreVerdict := func() {
		t.Helper()
		if err := e.runChecked(DAGMarketClose, day, nil); err != nil && !errors.Is(err, ErrChecksFailed) {
			t.Fatal(err)
		}
	}
	ignoreVerdict()
	if n := e.count(`SELECT count(*) FROM candles WHERE interval = '1d' AND NOT final`); n != int64(len(dagsSymbols)) {
		t.Fatalf("%d not-final 1d candles mid-session, want %d", n, len(dagsSymbols))
	}
	if n := e.count(`SELECT count(*) FROM candles WHERE interval = '1d' AND final`); n != 0 {
		t.Fatalf("%d 1d candles final before the close", n)
	}
	now = time.Date(2026, 11, 2, 16, 4, 0, 0, dagsNY) // inside the grace after the close
	ignoreVerdict()
	if n := e.count(`SELECT count(*) FROM candles WHERE interval = '1d' AND final`); n != 0 {
		t.Fatalf("%d 1d candles final four minutes after the close", n)
	}
	now = time.Date(2026, 11, 2, 16, 30, 0, 0, dagsNY)
	ignoreVerdict()
	if n := e.count(`SELECT count(*) FROM candles WHERE interval = '1d' AND final`); n != int64(len(dagsSymbols)) {
		t.Fatalf("%d final 1d candles after the close, want %d", n, len(dagsSymbols))
	}
	session := e.count(`SELECT sum(volume) FROM candles WHERE interval = '1m' AND bucket >= '2026-11-02 14:30:00+00' AND bucket < '2026-11-02 21:00:00+00'`)
	all := e.count(`SELECT sum(volume) FROM candles WHERE interval = '1m'`)
	if v := e.count(`SELECT sum(volume) FROM candles WHERE interval = '1d'`); v != session || v >= all {
		t.Fatalf("1d volume %d; want the session's %d (the whole day's is %d)", v, session, all)
	}
}
