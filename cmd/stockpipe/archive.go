package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/archive"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/market"
)

// The Parquet cold tier (internal/archive): `replay --parquet` sends an
// archive's ticks back through Kafka, and the scheduler's --archive-dir
// gives the retention DAG a way to archive a day before dropping it.

// archiveFlags are replay's flags for an archive.
type archiveFlags struct {
	dir, from, to string
}

func (f *archiveFlags) register(c *command) {
	c.fs.StringVar(&f.dir, "parquet", "", "a Parquet archive directory (as the scheduler's --archive-dir writes it), replayed instead of --file: "+
		"its ticks of the UTC dates --from to --to, with their own symbols, seqs and times, so the time rules judge them as any tick: "+
		"those older than their symbol's newest tick in the pipeline are rejected as late (and seqs stored already are duplicates); "+
		"replay into an empty pipeline, or one where the archive's symbols are not live")
	c.fs.StringVar(&f.from, "from", "", "with --parquet: the first UTC date to replay, YYYY-MM-DD")
	c.fs.StringVar(&f.to, "to", "", "with --parquet: the last UTC date to replay, YYYY-MM-DD (default: --from)")
}

// days parses --from and --to.
func (f *archiveFlags) days() (from, to time.Time, err error) {
	if f.from == "" {
		return from, to, errors.New("--parquet needs --from YYYY-MM-DD (and --to, if more than one day)")
	}
	if from, err = time.Parse(time.DateOnly, f.from); err != nil {
		return from, to, fmt.Errorf("--from %q: want a date, YYYY-MM-DD", f.from)
	}
	to = from
	if f.to != "" {
		if to, err = time.Parse(time.DateOnly, f.to); err != nil {
			return from, to, fmt.Errorf("--to %q: want a date, YYYY-MM-DD", f.to)
		}
	}
	if to.Before(from) {
		return from, to, fmt.Errorf("--to %s is before --from %s", f.to, f.from)
	}
	return from, to, nil
}

// replayParquet sends the archived ticks of the dates asked for to the
// ticks topic, keyed by symbol, each with its own seq and ts. A day's ticks
// are stored by symbol, not in time order, so there is nothing to pace:
// they go as fast as the broker takes them.
func replayParquet(rc *runCtx, kf *kafkaFlags, pr *peer, af *archiveFlags, speed float64, partitions int32) error {
	if speed > 0 {
		return errors.New("--speed does not apply to --parquet: an archive's ticks are stored by symbol, not in time order, and are replayed as fast as possible")
	}
	from, to, err := af.days()
	if err != nil {
		return err
	}
	if st, err := os.Stat(af.dir); err != nil || !st.IsDir() {
		return fmt.Errorf("--parquet %s: not a directory", af.dir)
	}
	var found, missing []string
	for d := from; !d.After(to); d = d.AddDate(0, 0, 1) {
		date := d.Format(time.DateOnly)
		if _, err := os.Stat(archive.Path(af.dir, archive.KindTicks, d)); err == nil {
			found = append(found, date)
		} else {
			missing = append(missing, date)
		}
	}
	if len(found) == 0 {
		return fmt.Errorf("--parquet %s holds no ticks of %s to %s (a day's are in %s)", af.dir, af.from, to.Format(time.DateOnly),
			archive.Path(af.dir, archive.KindTicks, from))
	}
	if err := pr.brokers(rc, kf, true); err != nil {
		return err
	}
	kcfg, err := kf.config(rc, "stockpipe-replay")
	if err != nil {
		return err
	}
	if err := ensureTopics(rc, kcfg, partitions); err != nil {
		return err
	}
	// What the topic holds already, to say when a symbol's archived ticks
	// are behind it.
	ctx, cancel := context.WithTimeout(rc.ctx, 30*time.Second)
	last, err := kafka.LastTicks(ctx, kcfg, kafka.TopicTicks, 20_000)
	cancel()
	if err != nil {
		rc.log.Warn("could not read the ticks topic's tail to check whether the archive's symbols are live", "err", err)
	}
	p, err := kafka.NewProducer(kcfg, kafka.TopicTicks)
	if err != nil {
		return err
	}
	p.Logger = rc.log
	defer p.Close()

	behind := map[string]bool{}
	var buf []byte
	n, runErr := archive.Read(rc.ctx, af.dir, from, to, func(t market.Tick) error {
		if lt, ok := last[t.Symbol]; ok && !t.TS.After(lt.TS) && !behind[t.Symbol] {
			behind[t.Symbol] = true
			if len(behind) == 1 {
				rc.log.Warn(fmt.Sprintf("%s already has ticks in the topic up to %s, newer than archived ones: those will be rejected as late "+
					"(replay into an empty pipeline, or one where the archive's symbols are not live)", t.Symbol, lt.TS.Format(time.RFC3339)))
			}
		}
		buf = t.AppendJSON(buf[:0])
		// Send copies the value, so the buffer is reused.
		return p.Send(rc.ctx, []byte(t.Symbol), buf)
	})
	if errors.Is(runErr, context.Canceled) {
		runErr = nil
	}
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(rc.ctx), 30*time.Second)
	defer fcancel()
	if err := p.Flush(fctx); err != nil && runErr == nil {
		runErr = err
	}
	fmt.Fprintf(rc.stdout, "replayed %s: %d ticks of %d archived days (%s)\n", af.dir, n, len(found), strings.Join(found, ", "))
	if len(missing) > 0 {
		fmt.Fprintf(rc.stdout, "  not archived: %s\n", strings.Join(missing, ", "))
	}
	if len(behind) > 0 {
		fmt.Fprintf(rc.stdout, "  %d symbols already had newer ticks in the topic: their older archived ticks are rejected as late\n", len(behind))
	}
	if runErr != nil {
		return fmt.Errorf("%s: %w", af.dir, runErr)
	}
	return nil
}

// archiver returns what the retention DAG calls to archive a day before
// dropping it (job.Deps.Archive): its ticks and candles written to Parquet
// below dir, and a line in log (if not nil) saying how much. Nil when dir
// is empty (no --archive-dir).
func archiver(pool *pgxpool.Pool, dir string, log *slog.Logger) func(ctx context.Context, day time.Time) error {
	if dir == "" {
		return nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return func(ctx context.Context, day time.Time) error {
		if pool == nil {
			return errors.New("archiving: no database pool")
		}
		res, err := archive.WriteDay(ctx, pool, dir, day)
		if err != nil {
			return err
		}
		log.Info("archived a day to Parquet", "date", res.Day.Format(time.DateOnly),
			"ticks", res.Ticks.Rows, "ticks_bytes", res.Ticks.Bytes, "bytes_per_tick", fmt.Sprintf("%.1f", res.BytesPerTick()),
			"candles", res.Candles.Rows, "candles_bytes", res.Candles.Bytes, "dir", dir)
		return nil
	}
}
