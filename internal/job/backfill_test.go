package job

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stockpipe/stockpipe/internal/dag"
)

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

	// Parameters that cannot work are errors: those the DAG's declarations
	// refuse (before any run exists, when triggered), and a file replay
	// without brokers.
	for _, c := range []struct {
		params map[string]string
		param  string // the parameter the refusal names; "" for the task's error
	}{
		{map[string]string{}, "symbol"},
		{map[string]string{"symbol": "aapl"}, "symbol"},
		{map[string]string{"symbol": "AAPL", "from": "2026-11-03", "to": "2026-11-02"}, "to"},
		{map[string]string{"symbol": "AAPL", "from": "yesterday"}, "from"},
		{map[string]string{"symbol": "AAPL", "from": "2000-01-03", "to": "2026-11-02"}, "to"}, // over ten years
		{map[string]string{"symbol": "AAPL", "file": "prices.csv"}, ""},                       // no brokers
	} {
		err := e.runTask(DAGBackfill, "recompute", dagsDate(2), c.params)
		var pe *dag.ParamError
		if err == nil || errors.As(err, &pe) != (c.param != "") || (pe != nil && pe.Param != c.param) {
			t.Errorf("params %v: %v, want an error naming %q", c.params, err, c.param)
		}
	}
}
