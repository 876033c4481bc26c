package job

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stockpipe/stockpipe/internal/dag"
)

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
	// A fifth of the ticks without a quote, as a trade-only feed sends
	// them: no check may count them as bad data.
	if n := e.exec(`UPDATE ticks SET bid = NULL, ask = NULL WHERE seq % 5 = 0`); n == 0 {
		t.Fatal("no ticks left without a quote")
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
	var verdict *dag.ChecksFailedError
	if !errors.As(err, &verdict) {
		t.Fatalf("quality checks over planted faults returned %v, want a *dag.ChecksFailedError", err)
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
	if err := e.runChecked(DAGMarketClose, day, nil); !errors.Is(err, dag.ErrChecksFailed) {
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
		if err := e.runChecked(DAGMarketClose, day, nil); err != nil && !errors.Is(err, dag.ErrChecksFailed) {
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
