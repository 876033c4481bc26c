package job

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/feed"
	"github.com/stockpipe/stockpipe/internal/generate"
	"github.com/stockpipe/stockpipe/internal/indicator"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/store"
)

// backfill (manual): recompute rebuilds a symbol's 1m and 5m candles and
// their indicators from the stored ticks over a range of dates, or, given a
// file, replays that CSV through Kafka as the symbol's ticks.

// symbolType is a ticker, as the stream accepts them.
var symbolType = dag.TextType("symbol", "AAPL or BRK.B: 1-12 of A-Z 0-9 . -, starting with a letter", market.ValidSymbol[string])

// backfillDAG declares backfill. It has no schedule: its runs are
// operators' requests.
func (s *shipped) backfillDAG() dag.DAG {
	return dag.DAG{
		Name: DAGBackfill,
		Description: "Rebuilds a symbol's 1m and 5m candles and their indicators from the stored ticks " +
			"for the dates from..to (default: the logical date), or with file replays a CSV through Kafka.",
		Location: s.ny,
		Params: []dag.Param{
			{Name: "symbol", Type: symbolType, Required: true,
				Doc: "the symbol whose candles are rebuilt, or whose ticks the file holds"},
			{Name: "from", Type: dag.Date,
				Doc: "first New York date to rebuild (default: to, or the run's logical date)"},
			{Name: "to", Type: dag.Date,
				Doc: "last New York date to rebuild (default: from, or the run's logical date)"},
			{Name: "file", Type: dag.FilePath,
				Doc: "an OHLCV CSV to replay into the ticks topic instead (needs Kafka; below --replay-dir if set)"},
			{Name: "skip_bad", Type: dag.Boolean, Default: "false",
				Doc: "with file: skip rows that cannot be read instead of failing"},
			{Name: "start_seq", Type: dag.Integer, Default: "0", Min: "0",
				Doc: "with file: the replayed ticks' seqs start after this"},
			{Name: "source", Type: sourceType,
				Doc: "pull the symbol's real trades of from..to from this provider into the ticks topic instead (alpaca; the scheduler needs APCA_API_KEY_ID and APCA_API_SECRET_KEY)"},
		},
		Validate: func(p dag.Params) error {
			if p.Has("source") && p.Has("file") {
				return dag.BadParam("source", "parameters source and file both given: a backfill either pulls from a provider or replays a file")
			}
			from, hasFrom := p.Date("from", s.ny)
			to, hasTo := p.Date("to", s.ny)
			if !hasFrom || !hasTo {
				return nil // the missing end defaults to the other
			}
			return checkRange(from, to)
		},
		Tasks: []dag.Task{
			{Name: "recompute", Run: s.backfill, Retries: 1, Timeout: 2 * time.Hour},
		},
	}
}

const (
	// sqlHasTicks reports whether symbol $1 has ticks in [$2, $3).
	sqlHasTicks = `SELECT EXISTS (SELECT 1 FROM ticks WHERE symbol = $1 AND ts >= $2 AND ts < $3)`
	// sqlDeleteMinuteCandles deletes symbol $1's 1m and 5m candles in
	// [$2, $3).
	sqlDeleteMinuteCandles = `DELETE FROM candles
		WHERE symbol = $1 AND interval IN ('1m', '5m') AND bucket >= $2 AND bucket < $3`
	// sqlRebuildMinuteCandles builds symbol $1's 1m and 5m candles of
	// [$2, $3) from its ticks, the way the stream builds them: open and
	// close are the first and last trade by (ts, seq), vwap is
	// Σ price·size / Σ size, and every rebuilt candle is final.
	sqlRebuildMinuteCandles = `
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
			final = true, updated_at = now()`
)

// backfill runs the backfill DAG's one task: a replay of the file
// parameter if given, a rebuild from stored ticks otherwise.
func (s *shipped) backfill(ctx context.Context, tc *dag.TaskContext) error {
	symbol := tc.Params.String("symbol") // required, and a ticker: checked when triggered
	if file := tc.Params.String("file"); file != "" {
		return s.replayFile(ctx, tc, symbol, file)
	}
	if source := tc.Params.String("source"); source != "" {
		return s.pullTrades(ctx, tc, source, symbol)
	}
	return s.recompute(ctx, tc, symbol)
}

// sourceType is a provider of historical trades.
var sourceType = dag.TextType("source", "alpaca", func(s string) bool { return s == "alpaca" })

// pullTrades pulls the symbol's trades of the run's dates from source
// into the ticks topic; the stream then builds their candles, indicators
// and anomalies as for live ticks.
func (s *shipped) pullTrades(ctx context.Context, tc *dag.TaskContext, source, symbol string) error {
	if s.d.PullTrades == nil {
		return dag.Permanent(fmt.Errorf("this scheduler cannot pull from %s: start it with APCA_API_KEY_ID and APCA_API_SECRET_KEY set", source))
	}
	from, to, err := s.backfillRange(tc)
	if err != nil {
		return err
	}
	n, err := s.d.PullTrades(ctx, s.log(tc), source, symbol, from, to.AddDate(0, 0, 1))
	if err != nil {
		err = fmt.Errorf("pulling %s's trades from %s: %w", symbol, source, err)
		if fatal := (*feed.FatalError)(nil); errors.As(err, &fatal) {
			return dag.Permanent(err) // bad credentials do not get better by retrying
		}
		return err
	}
	s.log(tc).Info("pulled historical trades into the ticks topic", "symbol", symbol, "source", source, "ticks", n,
		"from", from.Format(time.DateOnly), "to", to.Format(time.DateOnly))
	return nil
}

// backfillRange returns the first and last trading date of the run: from
// and to (New York dates), each defaulting to the other, both to the
// logical date. The range was checked when the run was triggered
// (checkRange); it is checked again, as a permanent error, for a run whose
// logical date makes the default side of a one-sided range fall outside
// it.
func (s *shipped) backfillRange(tc *dag.TaskContext) (first, last time.Time, err error) {
	_, logical, _ := s.tradingDay(tc.LogicalDate)
	from, hasFrom := tc.Params.Date("from", s.ny)
	to, hasTo := tc.Params.Date("to", s.ny)
	switch {
	case !hasFrom && !hasTo:
		from, to = logical, logical
	case !hasFrom:
		from = to
	case !hasTo:
		to = from
	}
	if err := checkRange(from, to); err != nil {
		return first, last, dag.Permanent(err)
	}
	return from, to, nil
}

// maxBackfillRange is the longest range one backfill rebuilds.
const maxBackfillRange = 3660 * 24 * time.Hour

// checkRange refuses a range that ends before it starts or is longer than
// maxBackfillRange.
func checkRange(from, to time.Time) error {
	if to.Before(from) {
		return dag.BadParam("to", "parameter to=%s is before from=%s", to.Format(time.DateOnly), from.Format(time.DateOnly))
	}
	if to.Sub(from) > maxBackfillRange {
		return dag.BadParam("to", "the backfill range from=%s to=%s is longer than ten years", from.Format(time.DateOnly), to.Format(time.DateOnly))
	}
	return nil
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
func (s *shipped) recompute(ctx context.Context, tc *dag.TaskContext, symbol string) error {
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
			if err := tx.QueryRow(ctx, sqlHasTicks, symbol, start, end).Scan(&has); err != nil {
				return fmt.Errorf("looking for ticks of %s on %s: %w", symbol, day.Format(time.DateOnly), err)
			}
			if has {
				if _, err := tx.Exec(ctx, sqlDeleteMinuteCandles, symbol, start, end); err != nil {
					return fmt.Errorf("deleting the candles of %s on %s: %w", symbol, day.Format(time.DateOnly), err)
				}
				tag, err := tx.Exec(ctx, sqlRebuildMinuteCandles, symbol, start, end)
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
func (s *shipped) replayFile(ctx context.Context, tc *dag.TaskContext, symbol, path string) error {
	log := s.log(tc)
	cfg := s.d.Kafka
	if len(cfg.Brokers) == 0 {
		// Retried: another scheduler node, one with brokers, may take it.
		return errors.New("replaying a file needs Kafka, and no brokers are configured")
	}
	skipBad := tc.Params.Bool("skip_bad")
	startSeq := tc.Params.Int("start_seq")
	f, err := OpenReplayFile(s.d.ReplayDir, path)
	if err != nil {
		return dag.Permanent(err)
	}
	defer f.Close()
	rp, err := generate.NewReplay(f, generate.ReplayConfig{Symbol: symbol, SkipBad: skipBad, StartSeq: startSeq})
	if err != nil {
		// The file is not one a replay can read: reading it again would
		// find the same.
		return dag.Permanent(fmt.Errorf("reading %s: %w", path, err))
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
			// A row the replay cannot read (skip_bad=true skips such rows):
			// bad input, not a passing fault.
			return dag.Permanent(fmt.Errorf("replaying %s after %d ticks: %w", path, sent, err))
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
