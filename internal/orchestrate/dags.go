package orchestrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // trading dates follow New York's calendar on any machine

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/generate"
	"github.com/stockpipe/stockpipe/internal/indicator"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/store"
)

// Names of the shipped DAGs.
const (
	DAGMarketClose    = "market_close"
	DAGRetention      = "retention"
	DAGPipelineHealth = "pipeline_health"
	DAGBackfill       = "backfill"
)

// CheckResult is one check of a quality report (quality_reports.checks) or
// of a health check (pipeline_health.checks), stored as JSON, and kept with
// the task run that carried it out (task_runs.checks). A check passes when
// Value compares to Threshold as Op says (at most, by default), unless
// Detail says otherwise: a check that could not be carried out fails
// whatever its Value. A skipped check (nothing to check, or no broker
// configured) passes.
type CheckResult struct {
	Name      string  `json:"name"`
	Passed    bool    `json:"passed"`
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
	// Unit is UnitCount (empty), UnitRatio or UnitSeconds.
	Unit string `json:"unit,omitempty"`
	// Op is AtMost (or empty) or Equal.
	Op      string `json:"op,omitempty"`
	Detail  string `json:"detail"`
	Skipped bool   `json:"skipped,omitempty"`
}

// Shipped returns the DAGs stockpipe ships:
//
//   - market_close (weekdays 16:30 New York): daily_candles builds the 1d
//     candles of the trading date from its 1m candles, with indicators;
//     then quality_checks writes the date's quality_reports row (and fails
//     when a check fails) and, beside it, anomaly_summary counts the date's
//     anomalies per symbol and kind into anomaly_summaries.
//   - retention (hourly, at a quarter past): drop_old_ticks deletes ticks and
//     rejected records older than the retention in batches, keeping
//     candles; vacuum_analyze then vacuums and analyses the tables.
//   - pipeline_health (every 5 minutes, UTC): check records the broker,
//     topics, consumer lag, newest tick's age and dead-letter rate in
//     pipeline_health (and fails when a check fails).
//   - backfill (manual): recompute rebuilds one symbol's 1m and 5m candles
//     over a range of dates from the stored ticks, or replays a CSV file
//     into the ticks topic.
//
// Every task may be retried or re-run for the same logical date: each
// writes with upserts or delete-and-rebuild in a transaction, so a re-run
// leaves the same rows.
func Shipped(d Deps) []DAG {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		panic(err) // embedded by time/tzdata
	}
	if d.Retention <= 0 {
		d.Retention = 7 * 24 * time.Hour
	}
	if d.Group == "" {
		d.Group = "stockpipe"
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	s := &shipped{d: d, ny: ny}
	return []DAG{
		{
			Name: DAGMarketClose,
			Description: "After the close: the trading date's 1d candles and their indicators, " +
				"a data-quality report, and a summary of the date's anomalies.",
			Schedule: "30 16 * * 1-5",
			Location: ny,
			Params: map[string]string{
				"max_missing_minutes":   "0",
				"max_seq_regressions":   "0",
				"lateness":              "2s",
				"max_ohlc_errors":       "0",
				"max_candle_mismatches": "0",
				"max_reject_rate":       "0.05",
			},
			Tasks: []Task{
				{Name: "daily_candles", Run: s.dailyCandles, Retries: 2, Timeout: 15 * time.Minute},
				{Name: "quality_checks", Deps: []string{"daily_candles"}, Run: s.qualityChecks, Retries: 2, Timeout: 30 * time.Minute},
				// The summary needs the date's data, not its verdict: it runs
				// whatever the quality checks find.
				{Name: "anomaly_summary", Deps: []string{"daily_candles"}, Run: s.anomalySummary, Retries: 2, Timeout: 10 * time.Minute},
			},
		},
		{
			Name: DAGRetention,
			Description: "Deletes raw ticks and rejected records older than the retention " +
				"(candles are kept), then vacuums and analyses the tables.",
			// Hourly, so that a short retention (up keeps six hours)
			// bounds the tables closely.
			Schedule: "15 * * * *",
			Location: ny,
			Params: map[string]string{
				"retention":  d.Retention.String(),
				"batch_size": "50000",
			},
			Tasks: []Task{
				{Name: "drop_old_ticks", Run: s.dropOldTicks, Retries: 3, Timeout: 2 * time.Hour},
				{Name: "vacuum_analyze", Deps: []string{"drop_old_ticks"}, Run: s.vacuumAnalyze, Retries: 1, Timeout: 2 * time.Hour},
			},
		},
		{
			Name: DAGPipelineHealth,
			Description: "Records whether the broker answers, the topics exist, the processors keep up, " +
				"ticks keep arriving and few records are dead-lettered.",
			Schedule: "*/5 * * * *",
			Location: time.UTC,
			Params: map[string]string{
				"max_lag":      "100000",
				"max_tick_age": "5m",
				"max_dlq_rate": "0.05",
			},
			Tasks: []Task{
				{Name: "check", Run: s.healthCheck, Retries: 1, Timeout: time.Minute},
			},
		},
		{
			Name: DAGBackfill,
			Description: "Rebuilds a symbol's 1m and 5m candles and their indicators from the stored ticks " +
				"for the dates from..to (default: the logical date), or with file replays a CSV through Kafka.",
			Location: ny,
			Params: map[string]string{
				"symbol":    "",
				"from":      "",
				"to":        "",
				"file":      "",
				"skip_bad":  "false",
				"start_seq": "0",
			},
			Tasks: []Task{
				{Name: "recompute", Run: s.backfill, Retries: 1, Timeout: 2 * time.Hour},
			},
		},
	}
}

// shipped holds what the shipped tasks share.
type shipped struct {
	d  Deps
	ny *time.Location
}

func (s *shipped) pool(tc *TaskContext) (*pgxpool.Pool, error) {
	if tc.Pool != nil {
		return tc.Pool, nil
	}
	if s.d.Pool != nil {
		return s.d.Pool, nil
	}
	return nil, errors.New("no database pool")
}

func (s *shipped) log(tc *TaskContext) *slog.Logger {
	if tc.Log != nil {
		return tc.Log
	}
	return slog.New(slog.DiscardHandler)
}

// kafkaConfig is the Deps' Kafka configuration, or the task context's when
// the Deps have no brokers.
func (s *shipped) kafkaConfig(tc *TaskContext) kafka.Config {
	if len(s.d.Kafka.Brokers) > 0 {
		return s.d.Kafka
	}
	return tc.Kafka
}

// tradingDay returns the New York trading date a logical date stands for,
// and the [start, end) of that date. The date is read in the logical date's
// own location, so midnight New York, the same instant in UTC, and midnight
// UTC of the date all name the same trading date.
// sessionGrace is how long after 16:00 New York a session counts as over
// for its 1d candle: the stream's last minute is final a few seconds after
// the close, and a pipeline catching up needs a little more.
const sessionGrace = 5 * time.Minute

// session returns the regular session of the logical date: 09:30 to 16:00
// New York.
func (s *shipped) session(logical time.Time) (open, closing time.Time) {
	y, m, d := logical.Date()
	return time.Date(y, m, d, 9, 30, 0, 0, s.ny), time.Date(y, m, d, 16, 0, 0, 0, s.ny)
}

func (s *shipped) tradingDay(logical time.Time) (day string, start, end time.Time) {
	y, m, d := logical.Date()
	start = time.Date(y, m, d, 0, 0, 0, 0, s.ny)
	end = time.Date(y, m, d+1, 0, 0, 0, 0, s.ny)
	return start.Format(time.DateOnly), start, end
}

// param returns a run parameter, or def when it is absent or empty.
func (s *shipped) param(tc *TaskContext, name, def string) string {
	if v := strings.TrimSpace(tc.Params[name]); v != "" {
		return v
	}
	return def
}

func (s *shipped) paramFloat(tc *TaskContext, name string, def float64) (float64, error) {
	v := s.param(tc, name, "")
	if v == "" {
		return def, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
		return 0, fmt.Errorf("parameter %s=%q is not a non-negative number", name, v)
	}
	return f, nil
}

func (s *shipped) paramInt(tc *TaskContext, name string, def int64) (int64, error) {
	v := s.param(tc, name, "")
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("parameter %s=%q is not a non-negative whole number", name, v)
	}
	return n, nil
}

func (s *shipped) paramDuration(tc *TaskContext, name string, def time.Duration) (time.Duration, error) {
	v := s.param(tc, name, "")
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("parameter %s=%q is not a non-negative duration such as 5m or 168h", name, v)
	}
	return d, nil
}

// ---------------------------------------------------------------------------
// Indicators over a stored series.

// nullableIndicators returns v as the values of the columns sma_5, sma_20,
// ema_12, ema_26, bb_upper, bb_lower and rsi_14, nil where undefined.
func (*shipped) nullableIndicators(v indicator.Values) [7]*float64 {
	opt := func(x float64, bit uint8) *float64 {
		if v.Has&bit == 0 {
			return nil
		}
		return &x
	}
	return [7]*float64{
		opt(v.SMA5, indicator.HasSMA5), opt(v.SMA20, indicator.HasSMA20),
		opt(v.EMA12, indicator.HasEMA12), opt(v.EMA26, indicator.HasEMA26),
		opt(v.BBUpper, indicator.HasBB), opt(v.BBLower, indicator.HasBB),
		opt(v.RSI14, indicator.HasRSI14),
	}
}

func (*shipped) sameNullable(a, b *float64) bool {
	if a == nil || b == nil {
		return a == b
	}
	return math.Float64bits(*a) == math.Float64bits(*b)
}

// syncIndicators pushes the closes of one symbol's candles of one interval
// with from <= bucket < to (nil: unbounded) into set, in bucket order, and,
// when write is set, stores each candle's indicators as they are after its
// close: exactly what the stream computes, since it pushes the same closes
// in the same order into the same indicator.Set. Only rows whose values
// differ are updated. It returns how many rows it read and updated.
func (s *shipped) syncIndicators(ctx context.Context, tx pgx.Tx, symbol, interval string, set *indicator.Set,
	from, to *time.Time, write bool) (read, updated int, err error) {
	rows, err := tx.Query(ctx, `SELECT bucket, close, sma_5, sma_20, ema_12, ema_26, bb_upper, bb_lower, rsi_14 FROM candles
		WHERE symbol = $1 AND interval = $2
		  AND ($3::timestamptz IS NULL OR bucket >= $3) AND ($4::timestamptz IS NULL OR bucket < $4)
		ORDER BY bucket`, symbol, interval, from, to)
	if err != nil {
		return 0, 0, fmt.Errorf("reading %s %s closes: %w", symbol, interval, err)
	}
	var (
		bucket  time.Time
		closeV  float64
		have    [7]*float64
		buckets []time.Time
		cols    [7][]*float64
	)
	_, err = pgx.ForEachRow(rows, []any{&bucket, &closeV, &have[0], &have[1], &have[2], &have[3], &have[4], &have[5], &have[6]}, func() error {
		read++
		set.Push(closeV)
		if !write {
			return nil
		}
		want := s.nullableIndicators(set.Value())
		for i := range want {
			if !s.sameNullable(want[i], have[i]) {
				buckets = append(buckets, bucket)
				for j := range want {
					cols[j] = append(cols[j], want[j])
				}
				break
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("reading %s %s closes: %w", symbol, interval, err)
	}
	if len(buckets) == 0 {
		return read, 0, nil
	}
	tag, err := tx.Exec(ctx, `UPDATE candles c SET
			sma_5 = u.sma_5, sma_20 = u.sma_20, ema_12 = u.ema_12, ema_26 = u.ema_26,
			bb_upper = u.bb_upper, bb_lower = u.bb_lower, rsi_14 = u.rsi_14, updated_at = now()
		FROM unnest($3::timestamptz[], $4::float8[], $5::float8[], $6::float8[], $7::float8[],
		            $8::float8[], $9::float8[], $10::float8[])
		     AS u(bucket, sma_5, sma_20, ema_12, ema_26, bb_upper, bb_lower, rsi_14)
		WHERE c.symbol = $1 AND c.interval = $2 AND c.bucket = u.bucket`,
		symbol, interval, buckets, cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6])
	if err != nil {
		return 0, 0, fmt.Errorf("updating indicators of %d %s %s candles: %w", len(buckets), symbol, interval, err)
	}
	return read, int(tag.RowsAffected()), nil
}

// ---------------------------------------------------------------------------
// market_close

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
func (s *shipped) dailyCandles(ctx context.Context, tc *TaskContext) error {
	pool, err := s.pool(tc)
	if err != nil {
		return err
	}
	log := s.log(tc)
	day, start, _ := s.tradingDay(tc.LogicalDate)
	open, closing := s.session(tc.LogicalDate)
	final := !s.d.Now().Before(closing.Add(sessionGrace))

	var minutes, forming, symbols int64
	if err := pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE NOT final), count(DISTINCT symbol)
		FROM candles WHERE interval = '1m' AND bucket >= $1 AND bucket < $2`, open, closing).Scan(&minutes, &forming, &symbols); err != nil {
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
		// open/close: the first and last 1m candle by bucket; vwap: the
		// volume-weighted mean of the minutes' vwaps, which is the day's
		// Σ price·size / Σ size. Rows that would not change are left alone.
		tag, err := tx.Exec(ctx, `
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
			       excluded.trades, excluded.final)`, start, open, closing, final)
		if err != nil {
			return fmt.Errorf("upserting the 1d candles of %s: %w", day, err)
		}
		changed = tag.RowsAffected()

		var syms []string
		rows, err := tx.Query(ctx, `SELECT symbol FROM candles WHERE interval = '1d' AND bucket = $1 ORDER BY symbol`, start)
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

// qualityChecks checks the trading date's data and writes one
// quality_reports row for it (replacing an earlier run's), and keeps the
// checks with the task run. When a check fails, the report is written all
// the same and the task then fails with a *ChecksFailedError naming the
// failed checks: a run whose data failed its checks must not read as a
// success. That failure is not retried, since a retry would measure the
// same data; failing to read the data or to write the report is an error
// like any other, and retried.
func (s *shipped) qualityChecks(ctx context.Context, tc *TaskContext) error {
	pool, err := s.pool(tc)
	if err != nil {
		return err
	}
	log := s.log(tc)
	day, start, end := s.tradingDay(tc.LogicalDate)

	maxMissing, err := s.paramInt(tc, "max_missing_minutes", 0)
	if err != nil {
		return err
	}
	maxRegress, err := s.paramInt(tc, "max_seq_regressions", 0)
	if err != nil {
		return err
	}
	lateness, err := s.paramDuration(tc, "lateness", 2*time.Second)
	if err != nil {
		return err
	}
	maxOHLC, err := s.paramInt(tc, "max_ohlc_errors", 0)
	if err != nil {
		return err
	}
	maxMismatch, err := s.paramInt(tc, "max_candle_mismatches", 0)
	if err != nil {
		return err
	}
	maxReject, err := s.paramFloat(tc, "max_reject_rate", 0.05)
	if err != nil {
		return err
	}

	var checks []CheckResult

	// Minutes missing inside each symbol's trading span: between its first
	// and last 1m candle of the date, every minute should have a candle.
	{
		rows, err := pool.Query(ctx, `
			SELECT symbol, (extract(epoch FROM max(bucket) - min(bucket)) / 60)::bigint + 1 - count(*)
			FROM candles WHERE interval = '1m' AND bucket >= $1 AND bucket < $2
			GROUP BY symbol ORDER BY 2 DESC, 1`, start, end)
		if err != nil {
			return fmt.Errorf("checking for missing minutes on %s: %w", day, err)
		}
		type gap struct {
			sym string
			n   int64
		}
		gaps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (gap, error) {
			var g gap
			return g, r.Scan(&g.sym, &g.n)
		})
		if err != nil {
			return fmt.Errorf("checking for missing minutes on %s: %w", day, err)
		}
		var total int64
		var worst []string
		for _, g := range gaps {
			total += g.n
			if g.n > 0 && len(worst) < 5 {
				worst = append(worst, fmt.Sprintf("%s %d", g.sym, g.n))
			}
		}
		detail := fmt.Sprintf("%d minute(s) without a 1m candle between a symbol's first and last candle of the day, over %d symbol(s)", total, len(gaps))
		if len(worst) > 0 {
			detail += "; most: " + strings.Join(worst, ", ")
		}
		checks = append(checks, CheckResult{Name: "missing_minutes", Passed: total <= maxMissing,
			Value: float64(total), Threshold: float64(maxMissing), Detail: detail})
	}

	// Seqs that go back in time: a tick whose ts is more than the lateness
	// before that of a lower seq of the same symbol. Duplicate (symbol, seq)
	// pairs cannot be stored at all: the primary key refuses them.
	{
		rows, err := pool.Query(ctx, `
			SELECT symbol, count(*) FROM (
				SELECT symbol, ts, max(ts) OVER (PARTITION BY symbol ORDER BY seq
					ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before
				FROM ticks WHERE ts >= $1 AND ts < $2) t
			WHERE ts < before - $3 * interval '1 microsecond'
			GROUP BY symbol ORDER BY 2 DESC, 1`, start, end, lateness.Microseconds())
		if err != nil {
			return fmt.Errorf("checking seq order on %s: %w", day, err)
		}
		var (
			sym   string
			n     int64
			total int64
			worst []string
		)
		if _, err := pgx.ForEachRow(rows, []any{&sym, &n}, func() error {
			total += n
			if len(worst) < 5 {
				worst = append(worst, fmt.Sprintf("%s %d", sym, n))
			}
			return nil
		}); err != nil {
			return fmt.Errorf("checking seq order on %s: %w", day, err)
		}
		detail := fmt.Sprintf("%d tick(s) more than %v older than a lower seq of the same symbol; "+
			"duplicate (symbol, seq) pairs cannot be stored (primary key)", total, lateness)
		if len(worst) > 0 {
			detail += "; most: " + strings.Join(worst, ", ")
		}
		checks = append(checks, CheckResult{Name: "seq_order", Passed: total <= maxRegress,
			Value: float64(total), Threshold: float64(maxRegress), Detail: detail})
	}

	// Candles whose prices contradict each other. The candles_ohlc
	// constraint rules out most of this; the check guards against the
	// constraint being dropped or bypassed.
	{
		var n, all int64
		if err := pool.QueryRow(ctx, `
			SELECT count(*) FILTER (WHERE high < greatest(open, close) OR low > least(open, close)
			                           OR low > high OR volume < 0 OR trades < 0),
			       count(*)
			FROM candles WHERE bucket >= $1 AND bucket < $2`, start, end).Scan(&n, &all); err != nil {
			return fmt.Errorf("checking OHLC consistency on %s: %w", day, err)
		}
		checks = append(checks, CheckResult{Name: "ohlc_consistency", Passed: n <= maxOHLC,
			Value: float64(n), Threshold: float64(maxOHLC),
			Detail: fmt.Sprintf("%d of %d candle(s) (1m, 5m and 1d) have high below open/close, low above them, low above high or a negative volume", n, all)})
	}

	// Each 1m candle against its minute's ticks. Retention may have removed
	// the date's ticks, entirely or up to some time: only candles from the
	// minute of the date's earliest stored tick on are checked, and none
	// when no tick of the date is stored.
	{
		var (
			first                       *time.Time
			checked, mismatched, orphan int64
		)
		if err := pool.QueryRow(ctx, `
			WITH t AS (
				SELECT symbol, date_bin('1 minute', ts, timestamptz 'epoch') AS bucket,
				       sum(size)::bigint AS volume, count(*) AS trades
				FROM ticks WHERE ts >= $1 AND ts < $2 GROUP BY 1, 2),
			f AS (SELECT min(bucket) AS first FROM t),
			c AS (SELECT symbol, bucket, volume, trades FROM candles, f
			      WHERE interval = '1m' AND bucket >= f.first AND bucket < $2)
			SELECT (SELECT first FROM f),
			       count(c.symbol),
			       count(c.symbol) FILTER (WHERE t.volume IS DISTINCT FROM c.volume OR t.trades IS DISTINCT FROM c.trades),
			       count(*) FILTER (WHERE c.symbol IS NULL)
			FROM t FULL JOIN c ON c.symbol = t.symbol AND c.bucket = t.bucket`, start, end).Scan(&first, &checked, &mismatched, &orphan); err != nil {
			return fmt.Errorf("reconciling candles with ticks on %s: %w", day, err)
		}
		c := CheckResult{Name: "candles_match_ticks", Passed: mismatched <= maxMismatch,
			Value: float64(mismatched), Threshold: float64(maxMismatch)}
		if first == nil {
			c.Skipped, c.Passed = true, true
			c.Detail = "skipped: no ticks of the date are stored (removed by retention, or none arrived)"
		} else {
			c.Detail = fmt.Sprintf("%d of %d 1m candle(s) from %s on differ from their minute's ticks in volume or trade count; "+
				"%d minute(s) of ticks have no candle", mismatched, checked, first.UTC().Format(time.RFC3339), orphan)
		}
		checks = append(checks, c)
	}

	// Share of the date's records that were rejected. Rejected records have
	// no trustworthy event time, so they count by when they were received;
	// ticks count by their event time.
	{
		var rejected, ticks int64
		if err := pool.QueryRow(ctx, `
			SELECT (SELECT count(*) FROM rejected_ticks WHERE received_at >= $1 AND received_at < $2),
			       (SELECT count(*) FROM ticks WHERE ts >= $1 AND ts < $2)`, start, end).Scan(&rejected, &ticks); err != nil {
			return fmt.Errorf("measuring the reject rate on %s: %w", day, err)
		}
		rate := 0.0
		if rejected+ticks > 0 {
			rate = float64(rejected) / float64(rejected+ticks)
		}
		checks = append(checks, CheckResult{Name: "reject_rate", Passed: rate <= maxReject,
			Value: rate, Threshold: maxReject, Unit: UnitRatio,
			Detail: fmt.Sprintf("%d record(s) rejected and %d tick(s) stored on the date", rejected, ticks)})
	}

	failed := verdict("quality", checks)
	doc, err := json.Marshal(checks)
	if err != nil {
		return fmt.Errorf("encoding the quality report of %s: %w", day, err)
	}
	if _, err := pool.Exec(ctx, `
		INSERT INTO quality_reports (date, run_at, passed, checks) VALUES ($1::date, now(), $2, $3)
		ON CONFLICT (date) DO UPDATE SET run_at = excluded.run_at, passed = excluded.passed, checks = excluded.checks`,
		day, failed == nil, doc); err != nil {
		return fmt.Errorf("storing the quality report of %s: %w", day, err)
	}
	tc.RecordChecks(checks)
	if failed != nil {
		return fmt.Errorf("quality report of %s: %w", day, failed)
	}
	log.Info("quality checks passed", "date", day, "checks", len(checks))
	return nil
}

// anomalySummary writes the date's anomaly counts per symbol and kind,
// replacing an earlier run's: rows for pairs that no longer have anomalies
// that date are removed.
func (s *shipped) anomalySummary(ctx context.Context, tc *TaskContext) error {
	pool, err := s.pool(tc)
	if err != nil {
		return err
	}
	day, start, end := s.tradingDay(tc.LogicalDate)
	var upserted, removed, pairs int64
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `
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
			      (excluded.count, excluded.high, excluded.medium, excluded.low, excluded.max_severity)`,
			day, start, end)
		if err != nil {
			return fmt.Errorf("upserting the anomaly summary of %s: %w", day, err)
		}
		upserted = tag.RowsAffected()
		tag, err = tx.Exec(ctx, `
			DELETE FROM anomaly_summaries s WHERE s.date = $1::date AND NOT EXISTS (
				SELECT 1 FROM anomalies a
				WHERE a.symbol = s.symbol AND a.kind = s.kind AND a.ts >= $2 AND a.ts < $3)`, day, start, end)
		if err != nil {
			return fmt.Errorf("removing stale anomaly summaries of %s: %w", day, err)
		}
		removed = tag.RowsAffected()
		return tx.QueryRow(ctx, `SELECT count(*) FROM anomaly_summaries WHERE date = $1::date`, day).Scan(&pairs)
	})
	if err != nil {
		return err
	}
	s.log(tc).Info("anomaly summary written", "date", day, "symbol_kinds", pairs, "changed", upserted, "removed", removed)
	return nil
}

// ---------------------------------------------------------------------------
// retention

// retentionCutoff is the logical date's midnight New York minus the
// retention: whole days are counted on the calendar, so that the cutoff
// stays at midnight across daylight-saving changes.
func (s *shipped) retentionCutoff(tc *TaskContext) (time.Time, time.Duration, error) {
	keep, err := s.paramDuration(tc, "retention", s.d.Retention)
	if err != nil {
		return time.Time{}, 0, err
	}
	if keep <= 0 {
		return time.Time{}, 0, errors.New("retention must be positive")
	}
	// Whole days count from midnight New York, so each of a day's hourly
	// runs keeps the same calendar days; a shorter retention (up's six
	// hours) counts back from the run's own slot.
	if keep%(24*time.Hour) == 0 {
		_, start, _ := s.tradingDay(tc.LogicalDate)
		return start.AddDate(0, 0, -int(keep/(24*time.Hour))), keep, nil
	}
	return tc.LogicalDate.Add(-keep), keep, nil
}

// dropOldTicks deletes ticks with ts, and rejected records with
// received_at, before the cutoff, batch_size rows per statement, each
// statement its own transaction, so no transaction holds millions of row
// locks or keeps vacuum from reclaiming what is already deleted. Candles
// are kept.
//
// Ticks are deleted symbol by symbol through the (symbol, ts) index, oldest
// first: each batch starts where the last one ended in the index, instead
// of scanning the table again past the rows already deleted (which vacuum
// has not yet removed), which would make a large deletion quadratic.
func (s *shipped) dropOldTicks(ctx context.Context, tc *TaskContext) error {
	pool, err := s.pool(tc)
	if err != nil {
		return err
	}
	log := s.log(tc)
	cutoff, keep, err := s.retentionCutoff(tc)
	if err != nil {
		return err
	}
	batch, err := s.paramInt(tc, "batch_size", 50_000)
	if err != nil {
		return err
	}
	if batch == 0 {
		return errors.New("parameter batch_size must be positive")
	}
	log.Info("deleting old raw data", "before", cutoff.UTC().Format(time.RFC3339), "retention", keep, "batch_size", batch)

	began := time.Now()
	var statements int64
	deleteAll := func(what, sql string, args ...any) (total int64, err error) {
		for {
			if err := ctx.Err(); err != nil {
				return total, fmt.Errorf("deleting old %s after %d rows: %w", what, total, err)
			}
			tag, err := pool.Exec(ctx, sql, args...)
			if err != nil {
				return total, fmt.Errorf("deleting old %s after %d rows: %w", what, total, err)
			}
			statements++
			total += tag.RowsAffected()
			if tag.RowsAffected() < batch {
				return total, nil
			}
		}
	}

	// Every symbol with ticks, by a skip scan of the primary key: one index
	// probe per symbol rather than a scan of the table.
	rows, err := pool.Query(ctx, `
		WITH RECURSIVE s AS (
			(SELECT symbol FROM ticks ORDER BY symbol LIMIT 1)
			UNION ALL
			SELECT (SELECT t.symbol FROM ticks t WHERE t.symbol > s.symbol ORDER BY t.symbol LIMIT 1)
			FROM s WHERE s.symbol IS NOT NULL)
		SELECT symbol FROM s WHERE symbol IS NOT NULL`)
	if err != nil {
		return fmt.Errorf("listing the symbols with ticks: %w", err)
	}
	symbols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("listing the symbols with ticks: %w", err)
	}
	var ticks int64
	for _, sym := range symbols {
		n, err := deleteAll("ticks of "+sym, `
			DELETE FROM ticks WHERE symbol = $1 AND seq IN (
				SELECT seq FROM ticks WHERE symbol = $1 AND ts < $2 ORDER BY ts LIMIT $3)`, sym, cutoff, batch)
		ticks += n
		if err != nil {
			return err
		}
	}
	rejected, err := deleteAll("rejected records", `
		DELETE FROM rejected_ticks WHERE id IN (
			SELECT id FROM rejected_ticks WHERE received_at < $1 ORDER BY received_at LIMIT $2)`, cutoff, batch)
	if err != nil {
		return err
	}
	log.Info("old raw data deleted", "ticks", ticks, "symbols", len(symbols), "rejected", rejected,
		"statements", statements, "took", time.Since(began).Round(time.Millisecond))
	return nil
}

// vacuumAnalyze vacuums and analyses the tables retention and the stream
// churn. VACUUM cannot run inside a transaction block, so each is one
// statement on the pool, outside any transaction.
func (s *shipped) vacuumAnalyze(ctx context.Context, tc *TaskContext) error {
	pool, err := s.pool(tc)
	if err != nil {
		return err
	}
	began := time.Now()
	for _, table := range []string{"ticks", "rejected_ticks", "candles"} {
		// The table names are fixed here: nothing to parameterise.
		if _, err := pool.Exec(ctx, "VACUUM (ANALYZE) "+table); err != nil {
			return fmt.Errorf("vacuuming %s: %w", table, err)
		}
	}
	s.log(tc).Info("vacuumed and analysed", "tables", "ticks,rejected_ticks,candles", "took", time.Since(began).Round(time.Millisecond))
	return nil
}

// ---------------------------------------------------------------------------
// pipeline_health

// healthCheck records one pipeline_health row for the run's logical time,
// and keeps the checks with the task run. An unhealthy pipeline is a failed
// run: the row (healthy = false) is written first, then the task fails with
// a *ChecksFailedError naming the failed checks, which is not retried (the
// next scheduled run checks again). Failing to write the row is an error
// that is retried. Each check that cannot be carried out counts as failed,
// with the reason in its detail. With no brokers configured the Kafka
// checks are skipped (and pass).
func (s *shipped) healthCheck(ctx context.Context, tc *TaskContext) error {
	pool, err := s.pool(tc)
	if err != nil {
		return err
	}
	log := s.log(tc)
	maxLag, err := s.paramInt(tc, "max_lag", 100_000)
	if err != nil {
		return err
	}
	maxAge, err := s.paramDuration(tc, "max_tick_age", 5*time.Minute)
	if err != nil {
		return err
	}
	maxDLQ, err := s.paramFloat(tc, "max_dlq_rate", 0.05)
	if err != nil {
		return err
	}

	checks := s.kafkaChecks(ctx, tc, maxLag)

	// Age of the newest tick. ingested_at has no index (it would cost the
	// insert path), so this takes each symbol's newest tick by event time
	// through the (symbol, ts) index and the latest ingested_at among
	// those: the same as max(ingested_at) whenever ticks arrive in event
	// time order, as live ticks do.
	{
		c := CheckResult{Name: "tick_age", Threshold: maxAge.Seconds(), Unit: UnitSeconds}
		var age *float64
		var last *time.Time
		err := pool.QueryRow(ctx, `
			SELECT extract(epoch FROM now() - max(t.ingested_at))::float8, max(t.ingested_at)
			FROM symbols s CROSS JOIN LATERAL (
				SELECT ingested_at FROM ticks WHERE symbol = s.symbol ORDER BY ts DESC LIMIT 1) t`).Scan(&age, &last)
		switch {
		case err != nil:
			c.Detail = "could not read the newest tick: " + err.Error()
		case age == nil:
			c.Detail = "no ticks stored"
		default:
			c.Value = math.Max(*age, 0)
			c.Passed = c.Value <= c.Threshold
			c.Detail = fmt.Sprintf("newest tick stored at %s, %.1fs ago", last.UTC().Format(time.RFC3339), c.Value)
		}
		checks = append(checks, c)
	}

	// Dead letters in the last 5 minutes against all records in them.
	// Ticks count by event time (ts, BRIN-indexed), which for live ticks is
	// within a minute of arrival; a replay of history stores ticks with old
	// event times, and while it runs any rejection counts against few
	// ticks.
	{
		c := CheckResult{Name: "dlq_rate", Threshold: maxDLQ, Unit: UnitRatio}
		var rejected, ticks int64
		err := pool.QueryRow(ctx, `
			SELECT (SELECT count(*) FROM rejected_ticks WHERE received_at > now() - interval '5 minutes'),
			       (SELECT count(*) FROM ticks WHERE ts > now() - interval '5 minutes')`).Scan(&rejected, &ticks)
		if err != nil {
			c.Detail = "could not count dead letters: " + err.Error()
		} else {
			if rejected+ticks > 0 {
				c.Value = float64(rejected) / float64(rejected+ticks)
			}
			c.Passed = c.Value <= c.Threshold
			c.Detail = fmt.Sprintf("%d record(s) rejected and %d tick(s) stored in the last 5 minutes", rejected, ticks)
		}
		checks = append(checks, c)
	}

	failed := verdict("health", checks)
	doc, err := json.Marshal(checks)
	if err != nil {
		return fmt.Errorf("encoding the health checks: %w", err)
	}
	if _, err := pool.Exec(ctx, `
		INSERT INTO pipeline_health (logical_time, checked_at, healthy, checks) VALUES ($1, now(), $2, $3)
		ON CONFLICT (logical_time) DO UPDATE SET
			checked_at = excluded.checked_at, healthy = excluded.healthy, checks = excluded.checks`,
		tc.LogicalDate, failed == nil, doc); err != nil {
		return fmt.Errorf("recording the health check: %w", err)
	}
	tc.RecordChecks(checks)
	if failed != nil {
		return fmt.Errorf("pipeline health at %s: %w", tc.LogicalDate.UTC().Format(time.RFC3339), failed)
	}
	log.Info("pipeline healthy", "checks", len(checks))
	return nil
}

// kafkaChecks returns the broker, topics and consumer_lag checks.
func (s *shipped) kafkaChecks(ctx context.Context, tc *TaskContext, maxLag int64) []CheckResult {
	const timeout = 10 * time.Second
	broker := CheckResult{Name: "broker", Threshold: timeout.Seconds(), Unit: UnitSeconds}
	topics := CheckResult{Name: "topics", Threshold: float64(s.d.Partitions)}
	if s.d.Partitions > 0 {
		// Without an expected count any count passes; with one, only it.
		topics.Op = Equal
	}
	lag := CheckResult{Name: "consumer_lag", Threshold: float64(maxLag)}
	cfg := s.kafkaConfig(tc)
	if len(cfg.Brokers) == 0 {
		for _, c := range []*CheckResult{&broker, &topics, &lag} {
			c.Passed, c.Skipped, c.Detail = true, true, "skipped: no brokers configured"
		}
		return []CheckResult{broker, topics, lag}
	}
	cl, err := kgo.NewClient(cfg.Opts()...)
	if err != nil {
		broker.Detail = "creating a Kafka client: " + err.Error()
		topics.Detail, lag.Detail = "broker unreachable", "broker unreachable"
		return []CheckResult{broker, topics, lag}
	}
	defer cl.Close()

	pctx, cancel := context.WithTimeout(ctx, timeout)
	began := time.Now()
	err = cl.Ping(pctx)
	cancel()
	broker.Value = time.Since(began).Seconds()
	if err != nil {
		broker.Detail = fmt.Sprintf("no broker of %s answered: %v", strings.Join(cfg.Brokers, ","), err)
		topics.Detail, lag.Detail = "broker unreachable", "broker unreachable"
		return []CheckResult{broker, topics, lag}
	}
	broker.Passed = true
	broker.Detail = fmt.Sprintf("a broker of %s answered in %.0fms", strings.Join(cfg.Brokers, ","), broker.Value*1000)

	adm := kadm.NewClient(cl)
	tctx, cancel := context.WithTimeout(ctx, timeout)
	details, err := adm.ListTopics(tctx, kafka.TopicTicks, kafka.TopicDLQ)
	cancel()
	if err != nil {
		topics.Detail = "listing topics: " + err.Error()
	} else {
		var problems []string
		for _, name := range []string{kafka.TopicTicks, kafka.TopicDLQ} {
			d, ok := details[name]
			if !ok || d.Err != nil {
				reason := "missing"
				if ok {
					reason = d.Err.Error()
				}
				problems = append(problems, fmt.Sprintf("topic %s: %s", name, reason))
				continue
			}
			if name == kafka.TopicTicks {
				n := int32(len(d.Partitions))
				topics.Value = float64(n)
				if s.d.Partitions > 0 && n != s.d.Partitions {
					problems = append(problems, fmt.Sprintf("topic %s has %d partitions, expected %d", name, n, s.d.Partitions))
				}
			}
		}
		topics.Passed = len(problems) == 0
		if topics.Passed {
			topics.Detail = fmt.Sprintf("%s (%d partitions) and %s exist", kafka.TopicTicks, int(topics.Value), kafka.TopicDLQ)
		} else {
			topics.Detail = strings.Join(problems, "; ")
		}
	}

	lctx, cancel := context.WithTimeout(ctx, timeout)
	lags, err := adm.Lag(lctx, s.d.Group)
	cancel()
	l, ok := lags[s.d.Group]
	switch {
	case err != nil:
		lag.Detail = fmt.Sprintf("measuring the lag of group %s: %v", s.d.Group, err)
	case !ok:
		lag.Detail = fmt.Sprintf("group %s was not described", s.d.Group)
	case l.Error() != nil:
		lag.Detail = fmt.Sprintf("measuring the lag of group %s: %v", s.d.Group, l.Error())
	case l.State == "Dead" || len(l.Lag[kafka.TopicTicks]) == 0:
		lag.Detail = fmt.Sprintf("group %s has no committed offsets in %s (state %s)", s.d.Group, kafka.TopicTicks, l.State)
	default:
		var unknown int
		for _, p := range l.Lag[kafka.TopicTicks] {
			if p.Err != nil || p.Lag < 0 {
				unknown++
			}
		}
		lag.Value = float64(l.Lag.TotalByTopic()[kafka.TopicTicks].Lag)
		lag.Passed = unknown == 0 && lag.Value <= lag.Threshold
		lag.Detail = fmt.Sprintf("group %s (state %s, %d member(s)) is %d record(s) behind on %s",
			s.d.Group, l.State, len(l.Members), int64(lag.Value), kafka.TopicTicks)
		if unknown > 0 {
			lag.Detail += fmt.Sprintf("; lag unknown for %d partition(s)", unknown)
		}
	}
	return []CheckResult{broker, topics, lag}
}

// ---------------------------------------------------------------------------
// backfill

// backfill runs the backfill DAG's one task: a replay of the file
// parameter if given, a rebuild from stored ticks otherwise.
func (s *shipped) backfill(ctx context.Context, tc *TaskContext) error {
	symbol := s.param(tc, "symbol", "")
	if symbol == "" {
		return errors.New("parameter symbol is required (for example symbol=AAPL)")
	}
	if !market.ValidSymbol(symbol) {
		return fmt.Errorf("parameter symbol=%q is not a ticker (1-12 of A-Z 0-9 . -, starting with a letter)", symbol)
	}
	if file := s.param(tc, "file", ""); file != "" {
		return s.replayFile(ctx, tc, symbol, file)
	}
	return s.recompute(ctx, tc, symbol)
}

// backfillRange returns the first and last trading date of the run: from
// and to as YYYY-MM-DD (New York dates), each defaulting to the other, both
// to the logical date.
func (s *shipped) backfillRange(tc *TaskContext) (first, last time.Time, err error) {
	_, logical, _ := s.tradingDay(tc.LogicalDate)
	parse := func(name string) (time.Time, bool, error) {
		v := s.param(tc, name, "")
		if v == "" {
			return time.Time{}, false, nil
		}
		t, err := time.ParseInLocation(time.DateOnly, v, s.ny)
		if err != nil {
			return time.Time{}, false, fmt.Errorf("parameter %s=%q is not a date such as 2026-11-02", name, v)
		}
		return t, true, nil
	}
	from, hasFrom, err := parse("from")
	if err != nil {
		return first, last, err
	}
	to, hasTo, err := parse("to")
	if err != nil {
		return first, last, err
	}
	switch {
	case !hasFrom && !hasTo:
		from, to = logical, logical
	case !hasFrom:
		from = to
	case !hasTo:
		to = from
	}
	if to.Before(from) {
		return first, last, fmt.Errorf("parameter to=%s is before from=%s", to.Format(time.DateOnly), from.Format(time.DateOnly))
	}
	if to.Sub(from) > 3660*24*time.Hour {
		return first, last, errors.New("backfill range is longer than ten years")
	}
	return from, to, nil
}

// recompute rebuilds the symbol's 1m and 5m candles of each date in the
// range from its stored ticks, the way the stream builds them: open and
// close are the first and last trade by (ts, seq), vwap is
// Σ price·size / Σ size, and every rebuilt candle is final. A date with no
// stored ticks of the symbol (removed by retention) keeps its candles.
//
// Indicators are then recomputed over the symbol's whole series: the closes
// before the range warm them up, and the range's candles get the values the
// stream gives for the same closes. Each date is one transaction, so the
// candles of a date are never seen half rebuilt.
//
// What this does not touch: the stream's live state for the symbol (its
// open candles and indicator sets in consumer_offsets.state), and the
// candles after the range, which keep their values. If the rebuilt closes
// differ from the stored ones, the indicators of later candles (and of the
// stream's next candles) still follow the old closes, and differ from a
// full recomputation until they have rolled past the changed closes; run
// the backfill up to the newest date to bring them all in line. The 1d
// candles of the range are not rebuilt either: re-run market_close for
// those dates. Rebuilding the current day of a live symbol races with the
// stream, which goes on upserting the candles it has open.
func (s *shipped) recompute(ctx context.Context, tc *TaskContext, symbol string) error {
	pool, err := s.pool(tc)
	if err != nil {
		return err
	}
	log := s.log(tc)
	from, to, err := s.backfillRange(tc)
	if err != nil {
		return err
	}
	log.Info("rebuilding candles from ticks", "symbol", symbol,
		"from", from.Format(time.DateOnly), "to", to.Format(time.DateOnly))

	intervals := [...]string{"1m", "5m"}
	var sets [len(intervals)]indicator.Set
	var warm int
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for i, iv := range intervals {
			sets[i] = indicator.NewSet()
			n, _, err := s.syncIndicators(ctx, tx, symbol, iv, &sets[i], nil, &from, false)
			if err != nil {
				return fmt.Errorf("warming up indicators: %w", err)
			}
			warm += n
		}
		return nil
	})
	if err != nil {
		return err
	}

	var rebuilt, skipped, candles, indUpdated int
	for day := from; !day.After(to); day = day.AddDate(0, 0, 1) {
		start, end := day, day.AddDate(0, 0, 1)
		next := sets
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			var has bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM ticks WHERE symbol = $1 AND ts >= $2 AND ts < $3)`,
				symbol, start, end).Scan(&has); err != nil {
				return fmt.Errorf("looking for ticks of %s on %s: %w", symbol, day.Format(time.DateOnly), err)
			}
			if has {
				if _, err := tx.Exec(ctx, `DELETE FROM candles
					WHERE symbol = $1 AND interval IN ('1m', '5m') AND bucket >= $2 AND bucket < $3`,
					symbol, start, end); err != nil {
					return fmt.Errorf("deleting the candles of %s on %s: %w", symbol, day.Format(time.DateOnly), err)
				}
				tag, err := tx.Exec(ctx, `
					INSERT INTO candles (symbol, interval, bucket, open, high, low, close, volume, vwap, trades, final)
					SELECT symbol, iv.name, date_bin(iv.d, ts, timestamptz 'epoch'),
					       (array_agg(price ORDER BY ts, seq))[1], max(price), min(price),
					       (array_agg(price ORDER BY ts DESC, seq DESC))[1],
					       sum(size)::bigint, sum(price * size) / sum(size)::float8, count(*), true
					FROM ticks CROSS JOIN (VALUES ('1m', interval '1 minute'), ('5m', interval '5 minutes')) AS iv(name, d)
					WHERE symbol = $1 AND ts >= $2 AND ts < $3
					GROUP BY 1, 2, 3
					ON CONFLICT (symbol, interval, bucket) DO UPDATE SET
						open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
						volume = excluded.volume, vwap = excluded.vwap, trades = excluded.trades,
						final = true, updated_at = now()`, symbol, start, end)
				if err != nil {
					return fmt.Errorf("rebuilding the candles of %s on %s: %w", symbol, day.Format(time.DateOnly), err)
				}
				candles += int(tag.RowsAffected())
			}
			for i, iv := range intervals {
				_, u, err := s.syncIndicators(ctx, tx, symbol, iv, &next[i], &start, &end, true)
				if err != nil {
					return fmt.Errorf("recomputing indicators: %w", err)
				}
				indUpdated += u
			}
			// The date's candles and the indicators may have changed:
			// tell cached readers, on commit of this date's transaction.
			for _, iv := range intervals {
				if err := store.NotifyCandlesChanged(ctx, tx, iv, []string{symbol}); err != nil {
					return err
				}
			}
			if has {
				rebuilt++
			} else {
				skipped++
			}
			return nil
		})
		if err != nil {
			return err
		}
		sets = next
	}
	log.Info("candles rebuilt", "symbol", symbol, "dates_rebuilt", rebuilt, "dates_without_ticks", skipped,
		"candles", candles, "warmup_closes", warm, "indicator_rows_updated", indUpdated)
	if rebuilt == 0 {
		log.Warn("no stored ticks in the range: candles kept as they were", "symbol", symbol)
	}
	return nil
}

// replayFile replays an OHLCV CSV file as the symbol's ticks into the ticks
// topic, for the processors to store like any other ticks. Its seqs start
// after start_seq (default 0, so from 1): replaying a file again gives the
// same seqs, which the processors drop as duplicates. Replaying history into
// a symbol that is live is rejected as late by the processors.
func (s *shipped) replayFile(ctx context.Context, tc *TaskContext, symbol, path string) error {
	log := s.log(tc)
	cfg := s.kafkaConfig(tc)
	if len(cfg.Brokers) == 0 {
		return errors.New("replaying a file needs Kafka, and no brokers are configured")
	}
	skipBad, err := strconv.ParseBool(s.param(tc, "skip_bad", "false"))
	if err != nil {
		return fmt.Errorf("parameter skip_bad=%q is not true or false", s.param(tc, "skip_bad", ""))
	}
	startSeq, err := s.paramInt(tc, "start_seq", 0)
	if err != nil {
		return err
	}
	f, err := OpenReplayFile(s.d.ReplayDir, path)
	if err != nil {
		return &PermanentError{Err: err}
	}
	defer f.Close()
	rp, err := generate.NewReplay(f, generate.ReplayConfig{Symbol: symbol, SkipBad: skipBad, StartSeq: startSeq})
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	p, err := kafka.NewProducer(cfg, kafka.TopicTicks)
	if err != nil {
		return err
	}
	defer p.Close()
	log.Info("replaying file into Kafka", "file", path, "symbol", symbol, "topic", kafka.TopicTicks)
	var sent int64
	for {
		rec, ok, err := rp.Next()
		if err != nil {
			return fmt.Errorf("replaying %s after %d ticks: %w", path, sent, err)
		}
		if !ok {
			break
		}
		if err := p.Send(ctx, rec.Key, rec.Value); err != nil {
			return fmt.Errorf("producing the replay of %s after %d ticks: %w", path, sent, err)
		}
		sent++
	}
	if err := p.Flush(ctx); err != nil {
		return fmt.Errorf("producing the replay of %s: %w", path, err)
	}
	st := rp.Stats()
	log.Info("file replayed", "symbol", symbol, "rows_read", st.RowsRead, "bars", st.BarsUsed,
		"rows_skipped", st.RowsSkipped, "ticks", st.TicksEmitted, "acknowledged", p.Acked(), "padded_bars", st.PaddedBars)
	return nil
}
