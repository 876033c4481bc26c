package stream_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stockpipe/stockpipe/internal/anomaly"
	"github.com/stockpipe/stockpipe/internal/generate"
	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
	"github.com/stockpipe/stockpipe/internal/store"
)

// candlesFromTicksSQL recomputes every 1m and 5m candle from the stored ticks
// and counts the candles rows that differ from it (or exist on one side
// only). VWAP is compared to 1e-9 relative: the stream sums price×size in
// arrival order, SQL in its own.
const candlesFromTicksSQL = `
WITH r AS (
	SELECT symbol, iv.name AS interval, date_bin(iv.d, ts, timestamptz 'epoch') AS bucket,
	       (array_agg(price ORDER BY ts, seq))[1] AS open, max(price) AS high, min(price) AS low,
	       (array_agg(price ORDER BY ts DESC, seq DESC))[1] AS close,
	       sum(size) AS volume, count(*) AS trades, sum(price * size) / sum(size) AS vwap
	FROM ticks CROSS JOIN (VALUES ('1m', interval '1 minute'), ('5m', interval '5 minutes')) AS iv(name, d)
	GROUP BY 1, 2, 3)
SELECT count(*) FROM r FULL JOIN (SELECT * FROM candles WHERE interval IN ('1m', '5m')) c USING (symbol, interval, bucket)
WHERE r.open IS NULL OR c.open IS NULL
   OR r.open <> c.open OR r.high <> c.high OR r.low <> c.low OR r.close <> c.close
   OR r.volume <> c.volume OR r.trades <> c.trades OR abs(r.vwap - c.vwap) > 1e-9 * r.vwap`

// windowIndicatorsSQL recomputes SMA 5/20 and the Bollinger band (SMA 20 ±
// 2 population standard deviations) over each interval's closes with window
// functions, and counts the rows that differ.
const windowIndicatorsSQL = `
WITH w AS (
	SELECT sma_5, sma_20, bb_upper, bb_lower,
	       row_number() OVER s AS n,
	       avg(close) OVER (s ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) AS s5,
	       avg(close) OVER (s ROWS BETWEEN 19 PRECEDING AND CURRENT ROW) AS s20,
	       stddev_pop(close) OVER (s ROWS BETWEEN 19 PRECEDING AND CURRENT ROW) AS sd20
	FROM candles WHERE interval IN ('1m', '5m')
	WINDOW s AS (PARTITION BY symbol, interval ORDER BY bucket))
SELECT count(*) FROM w WHERE
	(n < 5) <> (sma_5 IS NULL) OR (n < 20) <> (sma_20 IS NULL) OR (n < 20) <> (bb_upper IS NULL)
	OR abs(sma_5 - s5) > 1e-9 * s5 OR abs(sma_20 - s20) > 1e-9 * s20
	OR abs(bb_upper - (s20 + 2 * sd20)) > 1e-9 * s20 OR abs(bb_lower - (s20 - 2 * sd20)) > 1e-9 * s20`

// checkRecursiveIndicators recomputes EMA 12/26 (alpha 2/(n+1), seeded with
// the first close) and RSI 14 (Wilder) naively from each interval's closes,
// independently of the indicator package, and compares them with the rows.
func (e *env) checkRecursiveIndicators() {
	e.t.Helper()
	rows, err := e.pool.Query(context.Background(), `SELECT symbol, interval, close, ema_12, ema_26, rsi_14
		FROM candles WHERE interval IN ('1m', '5m') ORDER BY symbol, interval, bucket`)
	if err != nil {
		e.t.Fatal(err)
	}
	type row struct {
		sym, iv       string
		close         float64
		e12, e26, rsi *float64
	}
	var all []row
	var r row
	if _, err := pgx.ForEachRow(rows, []any{&r.sym, &r.iv, &r.close, &r.e12, &r.e26, &r.rsi}, func() error {
		all = append(all, r)
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	bad := 0
	check := func(what string, got *float64, want float64, ok bool) {
		switch {
		case !ok && got != nil, ok && got == nil:
			bad++
			if bad < 5 {
				e.t.Errorf("%s: got %v, want defined=%v", what, got, ok)
			}
		case ok && math.Abs(*got-want) > 1e-9*math.Max(1, math.Abs(want)):
			bad++
			if bad < 5 {
				e.t.Errorf("%s: got %v, want %v", what, *got, want)
			}
		}
	}
	for i := 0; i < len(all); {
		j := i
		for j < len(all) && all[j].sym == all[i].sym && all[j].iv == all[i].iv {
			j++
		}
		series := all[i:j]
		var e12, e26 float64
		var gains, losses []float64
		var ag, al float64
		for k, r := range series {
			if k == 0 {
				e12, e26 = r.close, r.close
			} else {
				e12 += 2.0 / 13 * (r.close - e12)
				e26 += 2.0 / 27 * (r.close - e26)
				d := r.close - series[k-1].close
				gains = append(gains, math.Max(d, 0))
				losses = append(losses, math.Max(-d, 0))
			}
			n := len(gains)
			if n == 14 {
				ag, al = sum(gains)/14, sum(losses)/14
			} else if n > 14 {
				ag = (ag*13 + gains[n-1]) / 14
				al = (al*13 + losses[n-1]) / 14
			}
			rsi := 100.0
			if al != 0 {
				rsi = 100 - 100/(1+ag/al)
			} else if ag == 0 {
				rsi = 50
			}
			what := fmt.Sprintf("%s %s #%d", r.sym, r.iv, k)
			check(what+" ema_12", r.e12, e12, true)
			check(what+" ema_26", r.e26, e26, true)
			check(what+" rsi_14", r.rsi, rsi, n >= 14)
		}
		i = j
	}
	if bad > 0 {
		e.t.Errorf("%d indicator values differ from the naive recomputation", bad)
	}
}

func sum(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s
}

func TestCandlesAndIndicatorsMatchRecomputation(t *testing.T) {
	e := newEnv(t)
	// Forty simulated minutes of the default universe with faults, so that
	// out-of-order and late ticks are in play.
	st := e.produce(generate.SimConfig{
		Symbols: generate.DefaultUniverse(), Rate: 100, Count: 240_000, Seed: 5,
		Start: simStart, Faults: 0.02, AnomalyRate: 10,
	})
	stop := e.processor("g1")
	e.waitFor("all records committed", 2*time.Minute, func() bool { return e.committed("g1") == st.Records })
	ps := stop()
	t.Logf("simulator %+v; processor %+v", st, ps)
	e.checkStored(st)
	if n := e.count(`SELECT count(*) FROM candles WHERE interval = '1m'`); n < 30*30 {
		t.Fatalf("only %d 1m candles", n)
	}
	if n := e.count(`SELECT count(*) FROM candles WHERE final`); n == 0 {
		t.Fatal("no candle was finalised")
	}
	if n := e.count(candlesFromTicksSQL); n != 0 {
		t.Errorf("%d candles differ from a recomputation from the ticks table", n)
	}
	if n := e.count(windowIndicatorsSQL); n != 0 {
		t.Errorf("%d candles have SMA or Bollinger values that differ from a window-function recomputation", n)
	}
	e.checkRecursiveIndicators()
	// Only the newest one or two candles of a symbol and interval may still
	// be forming.
	if n := e.count(`SELECT count(*) FROM (SELECT symbol, interval FROM candles WHERE NOT final GROUP BY 1, 2 HAVING count(*) > 2) x`); n != 0 {
		t.Errorf("%d series have more than two forming candles", n)
	}
}

func (e *env) dump(query string) []string { return pgtest.Rows(e.t, e.pool, query) }

const (
	dumpCandles = `SELECT symbol, interval, bucket, open, high, low, close, volume, vwap, trades,
		sma_5, sma_20, ema_12, ema_26, bb_upper, bb_lower, rsi_14, final FROM candles ORDER BY 1, 2, 3`
	dumpAnomalies = `SELECT symbol, ts, kind, severity, value, threshold, detail FROM anomalies ORDER BY 1, 2, 3`
	dumpTicks     = `SELECT symbol, seq, ts, price, size, bid, ask FROM ticks ORDER BY 1, 2`
)

// TestInterruptedRunEqualsCleanRun stops the processor at random points,
// resumes it from PostgreSQL each time, and requires the same candles,
// anomalies and ticks as one uninterrupted run over the same topic.
func TestInterruptedRunEqualsCleanRun(t *testing.T) {
	clean := newEnv(t)
	st := clean.produce(generate.SimConfig{
		Symbols: generate.DefaultUniverse(), Rate: 200, Count: 120_000, Seed: 9,
		Start: simStart, Faults: 0.02, AnomalyRate: 20,
	})
	stop := clean.processor("g1")
	clean.waitFor("clean run", 2*time.Minute, func() bool { return clean.committed("g1") == st.Records })
	stop()

	interrupted := clean.withNewDatabase()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 5 {
		target := int64(float64(st.Records) * (float64(i) + rng.Float64()) / 6)
		stop := interrupted.processor("g2")
		interrupted.waitFor(fmt.Sprintf("run %d to pass %d", i, target), time.Minute, func() bool { return interrupted.committed("g2") >= target })
		stop()
	}
	stop = interrupted.processor("g2")
	interrupted.waitFor("last run", 2*time.Minute, func() bool { return interrupted.committed("g2") == st.Records })
	stop()

	for _, q := range []string{dumpTicks, dumpCandles, dumpAnomalies} {
		a, b := clean.dump(q), interrupted.dump(q)
		if len(a) == 0 {
			t.Fatalf("clean run stored nothing for %s", q)
		}
		if !reflect.DeepEqual(a, b) {
			diff := 0
			for i := range min(len(a), len(b)) {
				if a[i] != b[i] {
					if diff < 3 {
						t.Errorf("first differences:\n clean       %s\n interrupted %s", a[i], b[i])
					}
					diff++
				}
			}
			t.Errorf("%s: clean run has %d rows, interrupted run %d, %d differ", strings.Fields(q)[1], len(a), len(b), diff)
		}
	}
	if n := clean.count(`SELECT count(*) FROM anomalies`); n == 0 {
		t.Error("no anomalies detected; the comparison proves little")
	}
}

// TestDetectionQuality scores the stored anomalies against the simulator's
// ground truth, end to end through Kafka and PostgreSQL.
func TestDetectionQuality(t *testing.T) {
	e := newEnv(t)
	var truth strings.Builder
	st := e.produce(generate.SimConfig{
		Symbols: generate.DefaultUniverse(), Rate: 300, Count: 150_000, Seed: 21,
		Start: simStart, AnomalyRate: 30, Truth: &truth,
	})
	stop := e.processor("g1")
	e.waitFor("all records committed", 2*time.Minute, func() bool { return e.committed("g1") == st.Records })
	stop()
	truthRows, err := generate.ReadTruth(strings.NewReader(truth.String()))
	if err != nil {
		t.Fatal(err)
	}
	var injected []anomaly.Labeled
	for _, a := range truthRows {
		injected = append(injected, anomaly.Labeled{Symbol: a.Symbol, Kind: anomaly.Kind(a.Kind), TS: a.TS})
	}
	detected, err := store.NewReader(e.pool).Detections(context.Background(), nil, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range anomaly.Score(injected, detected, 2*time.Second) {
		t.Logf("%-15s injected %3d detected %3d matched %3d precision %.3f recall %.3f", s.Kind, s.Truth, s.Detected, s.Matched, s.Precision, s.Recall)
		if s.Kind == anomaly.KindPriceJump || s.Kind == anomaly.KindVolumeBurst {
			if s.Truth < 20 {
				t.Errorf("%s: only %d injected, too few to judge", s.Kind, s.Truth)
			}
			if s.Precision < 0.9 || s.Recall < 0.9 {
				t.Errorf("%s: precision %.3f recall %.3f, want both ≥ 0.9", s.Kind, s.Precision, s.Recall)
			}
		}
	}
}
