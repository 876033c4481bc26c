package job

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/indicator"
	"github.com/stockpipe/stockpipe/internal/store"
)

// market_close: after the close, the trading date's 1d candles and their
// indicators (daily_candles), then a data-quality report (quality_checks)
// and, beside it, a summary of the date's anomalies (anomaly_summary).

// marketCloseDAG declares market_close. Its parameters are the quality
// checks' thresholds (and the lateness the seq check allows).
func (s *shipped) marketCloseDAG() dag.DAG {
	return dag.DAG{
		Name: DAGMarketClose,
		Description: "After the close: the trading date's 1d candles and their indicators, " +
			"a data-quality report, and a summary of the date's anomalies.",
		Schedule: "30 16 * * 1-5",
		Location: s.ny,
		Params: []dag.Param{
			{Name: "max_missing_minutes", Type: dag.Integer, Default: "0", Min: "0",
				Doc: "minutes without a 1m candle inside a symbol's trading span that the quality report accepts"},
			{Name: "max_seq_regressions", Type: dag.Integer, Default: "0", Min: "0",
				Doc: "ticks more than lateness older than a lower seq of their symbol that the report accepts"},
			{Name: "lateness", Type: dag.Duration, Default: "2s", Min: "0s",
				Doc: "how far a tick's time may go back against a lower seq before it counts as a seq regression"},
			{Name: "max_ohlc_errors", Type: dag.Integer, Default: "0", Min: "0",
				Doc: "candles with contradictory prices or a negative volume that the report accepts"},
			{Name: "max_candle_mismatches", Type: dag.Integer, Default: "0", Min: "0",
				Doc: "1m candles whose volume or trade count differs from their minute's ticks that the report accepts"},
			{Name: "max_reject_rate", Type: dag.Number, Default: "0.05", Min: "0", Max: "1",
				Doc: "share of the date's records that may have been rejected"},
		},
		Tasks: []dag.Task{
			{Name: "daily_candles", Run: s.dailyCandles, Retries: 2, Timeout: 15 * time.Minute},
			{Name: "quality_checks", Deps: []string{"daily_candles"}, Run: s.qualityReport, Retries: 2, Timeout: 30 * time.Minute},
			// The summary needs the date's data, not its verdict: it runs
			// whatever the quality checks find.
			{Name: "anomaly_summary", Deps: []string{"daily_candles"}, Run: s.anomalySummary, Retries: 2, Timeout: 10 * time.Minute},
		},
	}
}

const (
	// sqlCountMinutes counts the 1m candles of the session [$1, $2), those
	// not final, and their symbols.
	sqlCountMinutes = `SELECT count(*), count(*) FILTER (WHERE NOT final), count(DISTINCT symbol)
		FROM candles WHERE interval = '1m' AND bucket >= $1 AND bucket < $2`
	// sqlUpsertDailyCandles writes the 1d candle at $1 of every symbol from
	// its 1m candles in the session [$2, $3), final or not ($4). open and
	// close are the first and last 1m candle by bucket; vwap the
	// volume-weighted mean of the minutes' vwaps, which is the day's
	// Σ price·size / Σ size. Rows that would not change are left alone.
	sqlUpsertDailyCandles = `
		INSERT INTO candles (symbol, interval, bucket, open, high, low, close, volume, vwap, trades, final)
		SELECT symbol, '1d', $1::timestamptz,
		       (array_agg(open ORDER BY bucket))[1], max(high), min(low),
		       (array_agg(close ORDER BY bucket DESC))[1],
		       sum(volume)::bigint,
		       coalesce(sum(vwap * volume) FILTER (WHERE vwap IS NOT NULL)
		                / nullif(sum(volume) FILTER (WHERE vwap IS NOT NULL), 0)::float8,
		                (array_agg(close ORDER BY bucket DESC))[1]),
		       sum(trades)::bigint, $4
		FROM candles
		WHERE interval = '1m' AND bucket >= $2 AND bucket < $3
		GROUP BY symbol
		ON CONFLICT (symbol, interval, bucket) DO UPDATE SET
			open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
			volume = excluded.volume, vwap = excluded.vwap, trades = excluded.trades,
			final = excluded.final, updated_at = now()
		WHERE (candles.open, candles.high, candles.low, candles.close, candles.volume, candles.vwap,
		       candles.trades, candles.final)
		      IS DISTINCT FROM
		      (excluded.open, excluded.high, excluded.low, excluded.close, excluded.volume, excluded.vwap,
		       excluded.trades, excluded.final)`
	// sqlDailySymbols lists the symbols with a 1d candle at $1.
	sqlDailySymbols = `SELECT symbol FROM candles WHERE interval = '1d' AND bucket = $1 ORDER BY symbol`
	// sqlStoreQualityReport writes the date's report over an earlier run's.
	sqlStoreQualityReport = `
		INSERT INTO quality_reports (date, run_at, passed, checks) VALUES ($1::date, now(), $2, $3)
		ON CONFLICT (date) DO UPDATE SET run_at = excluded.run_at, passed = excluded.passed, checks = excluded.checks`
	// sqlUpsertAnomalySummary counts the anomalies of [$2, $3) per symbol
	// and kind into date $1's rows, leaving unchanged ones alone.
	sqlUpsertAnomalySummary = `
		INSERT INTO anomaly_summaries (date, symbol, kind, count, high, medium, low, max_severity)
		SELECT $1::date, symbol, kind, count(*),
		       count(*) FILTER (WHERE severity = 'high'),
		       count(*) FILTER (WHERE severity = 'medium'),
		       count(*) FILTER (WHERE severity = 'low'),
		       CASE WHEN bool_or(severity = 'high') THEN 'high'
		            WHEN bool_or(severity = 'medium') THEN 'medium' ELSE 'low' END
		FROM anomalies WHERE ts >= $2 AND ts < $3
		GROUP BY symbol, kind
		ON CONFLICT (date, symbol, kind) DO UPDATE SET
			count = excluded.count, high = excluded.high, medium = excluded.medium,
			low = excluded.low, max_severity = excluded.max_severity
		WHERE (anomaly_summaries.count, anomaly_summaries.high, anomaly_summaries.medium,
		       anomaly_summaries.low, anomaly_summaries.max_severity)
		      IS DISTINCT FROM
		      (excluded.count, excluded.high, excluded.medium, excluded.low, excluded.max_severity)`
	// sqlDeleteStaleAnomalySummaries removes date $1's rows for pairs
	// without anomalies in [$2, $3) any more.
	sqlDeleteStaleAnomalySummaries = `
		DELETE FROM anomaly_summaries s WHERE s.date = $1::date AND NOT EXISTS (
			SELECT 1 FROM anomalies a
			WHERE a.symbol = s.symbol AND a.kind = s.kind AND a.ts >= $2 AND a.ts < $3)`
	// sqlCountAnomalySummaries counts date $1's rows.
	sqlCountAnomalySummaries = `SELECT count(*) FROM anomaly_summaries WHERE date = $1::date`
)

// dailyCandles builds the trading date's 1d candle of every symbol with 1m
// candles in the date's regular session (09:30–16:00 New York, what the
// daily bars of exchanges and data vendors cover; trades outside it are in
// the 1m and 5m candles only), then brings the 1d indicators of those
// symbols up to date. The indicators are recomputed over each symbol's
// whole daily series, not only up to this date, so that running an earlier
// date after later ones (a late backfill) leaves the later days' indicators
// right too.
//
// A 1d candle is final only when the session ended at least sessionGrace
// ago: a run during the session (by hand, or a backfill of today) writes
// it with final = false, from the minutes so far, and the run after the
// close replaces it. All 1m candles of the session count, also ones not
// yet final: a symbol whose partition went quiet after the close keeps its
// last candle forming until the next tick, and its trades are still the
// day's.
func (s *shipped) dailyCandles(ctx context.Context, tc *dag.TaskContext) error {
	pool, err := s.pool(tc)
	if err != nil {
		return err
	}
	log := s.log(tc)
	day, start, _ := s.tradingDay(tc.LogicalDate)
	open, closing := s.session(tc.LogicalDate)
	final := !s.d.Now().Before(closing.Add(sessionGrace))

	var minutes, forming, symbols int64
	if err := pool.QueryRow(ctx, sqlCountMinutes, open, closing).Scan(&minutes, &forming, &symbols); err != nil {
		return fmt.Errorf("counting the 1m candles of %s: %w", day, err)
	}
	log.Info("building 1d candles", "date", day, "symbols", symbols, "minute_candles", minutes, "not_final", forming)
	if minutes == 0 {
		log.Info("no 1m candles in the date's session (a holiday, or no data): nothing to build", "date", day)
		return nil
	}
	if !final {
		log.Warn(fmt.Sprintf("the session of %s has not closed yet (16:00 New York): its 1d candles are written as not final, from the minutes so far; the run after the close replaces them", day))
	}

	var changed int64
	var indRead, indUpdated int
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, sqlUpsertDailyCandles, start, open, closing, final)
		if err != nil {
			return fmt.Errorf("upserting the 1d candles of %s: %w", day, err)
		}
		changed = tag.RowsAffected()

		var syms []string
		rows, err := tx.Query(ctx, sqlDailySymbols, start)
		if err != nil {
			return fmt.Errorf("listing the symbols of %s: %w", day, err)
		}
		if syms, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return fmt.Errorf("listing the symbols of %s: %w", day, err)
		}
		for _, sym := range syms {
			set := indicator.NewSet()
			r, u, err := s.syncIndicators(ctx, tx, sym, "1d", &set, nil, nil, true)
			if err != nil {
				return fmt.Errorf("1d indicators: %w", err)
			}
			indRead += r
			indUpdated += u
		}
		// Readers that cache candles (serve's /api/candles) learn of the
		// new daily bars when this transaction commits, not before.
		if err := store.NotifyCandlesChanged(ctx, tx, "1d", syms); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	log.Info("1d candles built", "date", day, "final", final, "candles_changed", changed, "daily_rows_read", indRead, "indicator_rows_updated", indUpdated)
	return nil
}

// qualityCheck is one check of the quality report. Adding a check is
// adding a row to qualityChecks: its query measures, its threshold
// parameter (which the DAG declares) judges, its detail explains.
type qualityCheck struct {
	name string
	// threshold names the run parameter the measured value must not
	// exceed (an integer or number parameter).
	threshold string
	unit      string // dag.UnitCount or dag.UnitRatio
	// query measures the trading date [$1, $2), with the values of args as
	// $3, …, in one row: first the measured value (float8, or NULL when
	// there is nothing to check, which skips the check), then the values
	// detail writes.
	query string
	args  []string
	// detail is a fmt format of the query's values after the measured
	// one, followed by the values of args.
	detail string
	// skipped is the detail of a skipped check.
	skipped string
}

// qualityChecks are the checks of the market_close report, in the order
// the report lists them.
var qualityChecks = []qualityCheck{
	{
		// Minutes missing inside each symbol's trading span: between its
		// first and last 1m candle of the date, every minute should have a
		// candle. The five symbols missing most are named.
		name: "missing_minutes", threshold: "max_missing_minutes", unit: dag.UnitCount,
		query: `
			WITH g AS (
				SELECT symbol, (extract(epoch FROM max(bucket) - min(bucket)) / 60)::bigint + 1 - count(*) AS n
				FROM candles WHERE interval = '1m' AND bucket >= $1 AND bucket < $2
				GROUP BY symbol),
			most AS (SELECT symbol, n FROM g WHERE n > 0 ORDER BY n DESC, symbol LIMIT 5)
			SELECT coalesce(sum(n), 0)::float8, coalesce(sum(n), 0)::bigint, count(*),
			       coalesce('; most: ' || (SELECT string_agg(symbol || ' ' || n, ', ' ORDER BY n DESC, symbol) FROM most), '')
			FROM g`,
		detail: "%d minute(s) without a 1m candle between a symbol's first and last candle of the day, over %d symbol(s)%s",
	},
	{
		// Seqs that go back in time: a tick whose ts is more than the
		// lateness before that of a lower seq of the same symbol. A seq
		// stored twice with different ts (ticks' key is (symbol, ts, seq):
		// a producer's bug, once the processor no longer remembers the
		// seq) may count here too.
		name: "seq_order", threshold: "max_seq_regressions", unit: dag.UnitCount,
		query: `
			WITH r AS (
				SELECT symbol, count(*) AS n FROM (
					SELECT symbol, ts, max(ts) OVER (PARTITION BY symbol ORDER BY seq
						ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before
					FROM ticks WHERE ts >= $1 AND ts < $2) t
				WHERE ts < before - $3::interval
				GROUP BY symbol),
			most AS (SELECT symbol, n FROM r ORDER BY n DESC, symbol LIMIT 5)
			SELECT coalesce(sum(n), 0)::float8, coalesce(sum(n), 0)::bigint,
			       coalesce('; most: ' || (SELECT string_agg(symbol || ' ' || n, ', ' ORDER BY n DESC, symbol) FROM most), '')
			FROM r`,
		args: []string{"lateness"},
		detail: "%[1]d tick(s) more than %[3]v older than a lower seq of the same symbol; " +
			"a seq stored again with another ts may count (the primary key is (symbol, ts, seq))%[2]s",
	},
	{
		// Candles whose prices contradict each other. The candles_ohlc
		// constraint rules out most of this; the check guards against the
		// constraint being dropped or bypassed.
		name: "ohlc_consistency", threshold: "max_ohlc_errors", unit: dag.UnitCount,
		query: `
			SELECT n::float8, n, total FROM (
				SELECT count(*) FILTER (WHERE high < greatest(open, close) OR low > least(open, close)
				                           OR low > high OR volume < 0 OR trades < 0) AS n,
				       count(*) AS total
				FROM candles WHERE bucket >= $1 AND bucket < $2) c`,
		detail: "%d of %d candle(s) (1m, 5m and 1d) have high below open/close, low above them, low above high or a negative volume",
	},
	{
		// Each 1m candle against its minute's ticks. Retention may have
		// removed the date's ticks, entirely or up to some time: only
		// candles from the minute of the date's earliest stored tick on are
		// checked, and none (the check is skipped) when no tick of the date
		// is stored.
		name: "candles_match_ticks", threshold: "max_candle_mismatches", unit: dag.UnitCount,
		query: `
			WITH t AS (
				SELECT symbol, date_bin('1 minute', ts, timestamptz 'epoch') AS bucket,
				       sum(size)::bigint AS volume, count(*) AS trades
				FROM ticks WHERE ts >= $1 AND ts < $2 GROUP BY 1, 2),
			f AS (SELECT min(bucket) AS first FROM t),
			c AS (SELECT symbol, bucket, volume, trades FROM candles, f
			      WHERE interval = '1m' AND bucket >= f.first AND bucket < $2),
			m AS (
				SELECT (SELECT first FROM f) AS first,
				       count(c.symbol) AS checked,
				       count(c.symbol) FILTER (WHERE t.volume IS DISTINCT FROM c.volume OR t.trades IS DISTINCT FROM c.trades) AS mismatched,
				       count(*) FILTER (WHERE c.symbol IS NULL) AS orphan
				FROM t FULL JOIN c ON c.symbol = t.symbol AND c.bucket = t.bucket)
			SELECT CASE WHEN first IS NOT NULL THEN mismatched::float8 END, mismatched, checked,
			       coalesce(to_char(first AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), ''), orphan
			FROM m`,
		detail: "%d of %d 1m candle(s) from %s on differ from their minute's ticks in volume or trade count; " +
			"%d minute(s) of ticks have no candle",
		skipped: "skipped: no ticks of the date are stored (removed by retention, or none arrived)",
	},
	{
		// Share of the date's records that were rejected. Rejected records
		// have no trustworthy event time, so they count by when they were
		// received; ticks count by their event time.
		name: "reject_rate", threshold: "max_reject_rate", unit: dag.UnitRatio,
		query: `
			SELECT CASE WHEN r + t > 0 THEN r::float8 / (r + t)::float8 ELSE 0 END, r, t FROM (
				SELECT (SELECT count(*) FROM rejected_ticks WHERE received_at >= $1 AND received_at < $2) AS r,
				       (SELECT count(*) FROM ticks WHERE ts >= $1 AND ts < $2) AS t) c`,
		detail: "%d record(s) rejected and %d tick(s) stored on the date",
	},
}

// measure carries out the check over [start, end) with the run's
// parameters.
func (q qualityCheck) measure(ctx context.Context, pool *pgxpool.Pool, p dag.Params, start, end time.Time) (dag.CheckResult, error) {
	c := dag.CheckResult{Name: q.name, Threshold: p.Float(q.threshold), Unit: q.unit}
	args := []any{start, end}
	var extra []any
	for _, name := range q.args {
		extra = append(extra, p.Value(name))
	}
	rows, err := pool.Query(ctx, q.query, append(args, extra...)...)
	if err != nil {
		return c, err
	}
	vals, err := pgx.CollectExactlyOneRow(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
	if err != nil {
		return c, err
	}
	switch v := vals[0].(type) {
	case nil:
		c.Passed, c.Skipped, c.Detail = true, true, q.skipped
		return c, nil
	case float64:
		c.Value = v
	default:
		return c, fmt.Errorf("the query measured a %T, not a float8", vals[0])
	}
	c.Passed = c.Value <= c.Threshold
	c.Detail = fmt.Sprintf(q.detail, append(vals[1:], extra...)...)
	return c, nil
}

// qualityReport carries out qualityChecks over the trading date's data and
// writes one quality_reports row for it (replacing an earlier run's), and
// keeps the checks with the task run. When a check fails, the report is written all
// the same and the task then fails with a *dag.ChecksFailedError naming
// the failed checks: a run whose data failed its checks must not read as a
// success. That failure is not retried, since a retry would measure the
// same data; failing to read the data or to write the report is an error
// like any other, and retried.
func (s *shipped) qualityReport(ctx context.Context, tc *dag.TaskContext) error {
	pool, err := s.pool(tc)
	if err != nil {
		return err
	}
	day, start, end := s.tradingDay(tc.LogicalDate)
	checks := make([]dag.CheckResult, 0, len(qualityChecks))
	for _, q := range qualityChecks {
		c, err := q.measure(ctx, pool, tc.Params, start, end)
		if err != nil {
			return fmt.Errorf("checking %s on %s: %w", q.name, day, err)
		}
		checks = append(checks, c)
	}
	failed := dag.Verdict("quality", checks)
	doc, err := json.Marshal(checks)
	if err != nil {
		return fmt.Errorf("encoding the quality report of %s: %w", day, err)
	}
	if _, err := pool.Exec(ctx, sqlStoreQualityReport, day, failed == nil, doc); err != nil {
		return fmt.Errorf("storing the quality report of %s: %w", day, err)
	}
	tc.RecordChecks(checks)
	if failed != nil {
		return fmt.Errorf("quality report of %s: %w", day, failed)
	}
	s.log(tc).Info("quality checks passed", "date", day, "checks", len(checks))
	return nil
}

// anomalySummary writes the date's anomaly counts per symbol and kind,
// replacing an earlier run's: rows for pairs that no longer have anomalies
// that date are removed.
func (s *shipped) anomalySummary(ctx context.Context, tc *dag.TaskContext) error {
	pool, err := s.pool(tc)
	if err != nil {
		return err
	}
	day, start, end := s.tradingDay(tc.LogicalDate)
	var upserted, removed, pairs int64
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, sqlUpsertAnomalySummary, day, start, end)
		if err != nil {
			return fmt.Errorf("upserting the anomaly summary of %s: %w", day, err)
		}
		upserted = tag.RowsAffected()
		tag, err = tx.Exec(ctx, sqlDeleteStaleAnomalySummaries, day, start, end)
		if err != nil {
			return fmt.Errorf("removing stale anomaly summaries of %s: %w", day, err)
		}
		removed = tag.RowsAffected()
		return tx.QueryRow(ctx, sqlCountAnomalySummaries, day).Scan(&pairs)
	})
	if err != nil {
		return err
	}
	s.log(tc).Info("anomaly summary written", "date", day, "symbol_kinds", pairs, "changed", upserted, "removed", removed)
	return nil
}
