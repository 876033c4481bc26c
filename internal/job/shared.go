// Package job holds the DAGs stockpipe ships, one file each, its SQL
// beside it: marketclose.go (1d candles, the quality report, the anomaly
// summary), retention.go (old raw data deleted), health.go (the pipeline's
// health) and backfill.go (candles rebuilt from ticks, or a CSV replayed).
// This file has what they share: their names, what they need from the
// process (Deps), the trading calendar and indicator bookkeeping. The
// engine that runs them is internal/dag, which knows nothing of markets.
package job

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"
	_ "time/tzdata" // trading dates follow New York's calendar on any machine

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/indicator"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/market"
)

// Names of the shipped DAGs.
const (
	DAGMarketClose    = "market_close"
	DAGRetention      = "retention"
	DAGPipelineHealth = "pipeline_health"
	DAGBackfill       = "backfill"
)

// Deps are what the shipped DAGs need from the process.
type Deps struct {
	Pool *pgxpool.Pool
	// Kafka is the brokers' configuration, for the health checks and file
	// replays; zero when none are configured.
	Kafka kafka.Config
	// Group is the processors' consumer group, for lag checks.
	Group string
	// Partitions is the expected partition count of the ticks topic.
	Partitions int32
	// Retention is how long raw ticks are kept; default 7 days.
	Retention time.Duration
	// Now is the clock the DAGs judge by whether a trading session is
	// over; nil means time.Now.
	Now func() time.Time
	// ReplayDir, if set, is the directory below which the backfill DAG's
	// file parameter must lie (see OpenReplayFile).
	ReplayDir string
	// PullTrades, if set, pulls a symbol's historical trades of [from, to)
	// from source (a provider, "alpaca") into the ticks topic and returns
	// how many ticks it sent, for the backfill DAG's source parameter. Nil
	// when the scheduler has no provider credentials.
	PullTrades func(ctx context.Context, log *slog.Logger, source, symbol string, from, to time.Time) (int64, error)
	// Archive, if set, writes the UTC day of day (its date read in day's
	// own location) of ticks and its candles to the Parquet cold tier
	// (archive.WriteDay under the scheduler's --archive-dir), verified
	// against the database; an error means the day is not archived, so
	// retention must not drop it. Re-running it for a day replaces that
	// day's files. Nil when no --archive-dir is set: days are dropped
	// without an archive.
	Archive func(ctx context.Context, day time.Time) error
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
func Shipped(d Deps) []dag.DAG {
	ny := market.NewYork
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
	return []dag.DAG{s.marketCloseDAG(), s.retentionDAG(), s.healthDAG(), s.backfillDAG()}
}

// shipped holds what the shipped tasks share.
type shipped struct {
	d  Deps
	ny *time.Location
}

// pool is the task's database pool, or the Deps' one.
func (s *shipped) pool(tc *dag.TaskContext) (*pgxpool.Pool, error) {
	if tc.Pool != nil {
		return tc.Pool, nil
	}
	if s.d.Pool != nil {
		return s.d.Pool, nil
	}
	return nil, dag.Permanent(errors.New("no database pool"))
}

// log is the task's logger, or one that discards.
func (s *shipped) log(tc *dag.TaskContext) *slog.Logger {
	if tc.Log != nil {
		return tc.Log
	}
	return slog.New(slog.DiscardHandler)
}

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

// tradingDay returns the New York trading date a logical date stands for,
// and the [start, end) of that date. The date is read in the logical date's
// own location, so midnight New York, the same instant in UTC, and midnight
// UTC of the date all name the same trading date.
func (s *shipped) tradingDay(logical time.Time) (day string, start, end time.Time) {
	y, m, d := logical.Date()
	start = time.Date(y, m, d, 0, 0, 0, 0, s.ny)
	end = time.Date(y, m, d+1, 0, 0, 0, 0, s.ny)
	return start.Format(time.DateOnly), start, end
}

// ---------------------------------------------------------------------------
// Indicators over a stored series, for market_close (1d) and backfill (1m,
// 5m).

const (
	// sqlSeriesCloses reads one symbol's candles of one interval in bucket
	// order, with the indicators stored with them, over [$3, $4) (NULL:
	// unbounded).
	sqlSeriesCloses = `SELECT bucket, close, sma_5, sma_20, ema_12, ema_26, bb_upper, bb_lower, rsi_14 FROM candles
		WHERE symbol = $1 AND interval = $2
		  AND ($3::timestamptz IS NULL OR bucket >= $3) AND ($4::timestamptz IS NULL OR bucket < $4)
		ORDER BY bucket`
	// sqlUpdateIndicators writes the indicators of the candles at the given
	// buckets, one array per column.
	sqlUpdateIndicators = `UPDATE candles c SET
			sma_5 = u.sma_5, sma_20 = u.sma_20, ema_12 = u.ema_12, ema_26 = u.ema_26,
			bb_upper = u.bb_upper, bb_lower = u.bb_lower, rsi_14 = u.rsi_14, updated_at = now()
		FROM unnest($3::timestamptz[], $4::float8[], $5::float8[], $6::float8[], $7::float8[],
		            $8::float8[], $9::float8[], $10::float8[])
		     AS u(bucket, sma_5, sma_20, ema_12, ema_26, bb_upper, bb_lower, rsi_14)
		WHERE c.symbol = $1 AND c.interval = $2 AND c.bucket = u.bucket`
)

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

// sameNullable reports whether two column values are the same, bit for
// bit, NULL equal to NULL.
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
	rows, err := tx.Query(ctx, sqlSeriesCloses, symbol, interval, from, to)
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
	tag, err := tx.Exec(ctx, sqlUpdateIndicators,
		symbol, interval, buckets, cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6])
	if err != nil {
		return 0, 0, fmt.Errorf("updating indicators of %d %s %s candles: %w", len(buckets), symbol, interval, err)
	}
	return read, int(tag.RowsAffected()), nil
}
