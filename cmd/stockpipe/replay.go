package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/stockpipe/stockpipe/internal/feed"
	"github.com/stockpipe/stockpipe/internal/generate"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/market"
)

func replayCommand() *command {
	c := newCommand("replay", "replay a historical OHLCV CSV (Yahoo Finance / yfinance format), a recorded live session, or a Parquet archive, as ticks",
		"stockpipe replay --brokers 127.0.0.1:9092 --file AAPL.csv --speed 0")
	var kf kafkaFlags
	kf.register(c.fs, "Kafka brokers, host:port[,host:port…]")
	file := c.fs.String("file", "", "CSV file with Date (or Datetime),Open,High,Low,Close[,Adj Close],Volume")
	recording := c.fs.String("recording", "", "a live session written by ingest --record (or up --record), replayed instead of --file")
	var af archiveFlags
	af.register(c)
	symbol := c.fs.String("symbol", "", "ticker for the file's rows (default: the file name's stem in upper case)")
	speed := c.fs.Float64("speed", 0, "simulated seconds per wall-clock second; 0 = as fast as possible")
	skipBad := c.fs.Bool("skip-bad", false, "skip and count bad rows instead of stopping at the first")
	interval := c.fs.Duration("interval", 0, "bar length of an intraday file (default: the most common gap between its rows)")
	partitions := c.fs.Int("partitions", 6, "partitions of the ticks topic if it has to be created")
	var pr peer
	pr.register(c)
	c.run = func(rc *runCtx) error {
		var given []string
		for _, f := range []struct{ name, value string }{{"--file", *file}, {"--recording", *recording}, {"--parquet", af.dir}} {
			if f.value != "" {
				given = append(given, f.name)
			}
		}
		if len(given) == 0 {
			return errors.New("--file is required (a CSV exported from Yahoo Finance or yfinance), or --recording (a session written by --record), " +
				"or --parquet (an archive directory, with --from and --to)")
		}
		if len(given) > 1 {
			return fmt.Errorf("%s given together: replay one at a time", strings.Join(given, " and "))
		}
		if *speed < 0 {
			return errors.New("--speed must be 0 (as fast as possible) or above")
		}
		if af.dir != "" {
			return replayParquet(rc, &kf, &pr, &af, *speed, int32(*partitions))
		}
		if *recording != "" {
			return replayRecording(rc, &kf, &pr, *recording, *speed, int32(*partitions))
		}
		if err := pr.brokers(rc, &kf, true); err != nil {
			return err
		}
		kcfg, err := kf.config(rc, "stockpipe-replay")
		if err != nil {
			return err
		}
		f, err := os.Open(*file)
		if err != nil {
			return fmt.Errorf("--file: %w", err)
		}
		defer f.Close()
		sym := strings.ToUpper(*symbol)
		if sym == "" {
			sym = generate.SymbolFromPath(*file)
		}
		src, err := generate.NewReplay(f, generate.ReplayConfig{Symbol: sym, SkipBad: *skipBad, Interval: *interval})
		if err != nil {
			return fmt.Errorf("%s: %w", *file, err)
		}
		if err := ensureTopics(rc, kcfg, int32(*partitions)); err != nil {
			return err
		}
		warnIfLive(rc, kcfg, sym)
		n, err := produce(rc, kcfg, src, generate.Pace{Speed: *speed}, nil)
		st := src.Stats()
		fmt.Fprintf(rc.stdout, "replayed %s as %s: %d ticks from %d bars, %d bad rows skipped\n", *file, sym, n, st.BarsUsed, st.RowsSkipped)
		for _, s := range st.Skips {
			fmt.Fprintf(rc.stdout, "  skipped line %d: %s\n", s.Line, s.Reason)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", *file, err)
		}
		return nil
	}
	return c
}

// warnIfLive says, before anything is sent, when the symbol already has
// ticks in the topic: bars older than its newest tick are behind its
// watermark and will be rejected as late.
func warnIfLive(rc *runCtx, kcfg kafka.Config, sym string) {
	ctx, cancel := context.WithTimeout(rc.ctx, 30*time.Second)
	defer cancel()
	last, err := kafka.LastTicks(ctx, kcfg, kafka.TopicTicks, 20_000)
	if err != nil {
		rc.log.Warn("could not read the ticks topic's tail to check whether the symbol is live", "symbol", sym, "err", err)
		return
	}
	if t, ok := last[sym]; ok {
		rc.log.Warn(fmt.Sprintf("%s already has ticks in the topic, up to %s: bars older than that will be rejected as late; "+
			"to keep this history, replay it under a name of its own (--symbol %s)", sym, t.TS.Format(time.RFC3339), market.HistoryName(sym)))
	}
}

// replayRecording sends a recorded live session through the same assembly
// as the live connector: the same messages give the same ticks, seqs
// continuing from the topic's tail as they did live. With speed > 0 the
// messages are spaced as they arrived (speed times faster).
func replayRecording(rc *runCtx, kf *kafkaFlags, pr *peer, path string, speed float64, partitions int32) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("--recording: %w", err)
	}
	defer f.Close()
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
	ctx, cancel := context.WithTimeout(rc.ctx, 30*time.Second)
	last, err := kafka.LastTicks(ctx, kcfg, kafka.TopicTicks, 20_000)
	cancel()
	if err != nil {
		return err
	}
	seqs := make(map[string]int64, len(last))
	for s, t := range last {
		seqs[s] = t.Seq
	}
	p, err := kafka.NewProducer(kcfg, kafka.TopicTicks)
	if err != nil {
		return err
	}
	p.Logger = rc.log
	defer p.Close()
	out := &tickOut{ctx: rc.ctx, a: feed.NewAssembler(seqs), send: p.Send}
	var first, wallStart time.Time
	pace := func(at time.Time) error {
		if speed <= 0 {
			return rc.ctx.Err()
		}
		if first.IsZero() {
			first, wallStart = at, time.Now()
			return nil
		}
		due := wallStart.Add(time.Duration(float64(at.Sub(first)) / speed))
		if d := time.Until(due); d > time.Millisecond {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-rc.ctx.Done():
				return rc.ctx.Err()
			case <-t.C:
			}
		}
		return nil
	}
	msgs, skipped, runErr := feed.ReadRecording(f, decoders, out, pace)
	if errors.Is(runErr, context.Canceled) {
		runErr = nil
	}
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(rc.ctx), 30*time.Second)
	defer fcancel()
	if err := p.Flush(fctx); err != nil && runErr == nil {
		runErr = err
	}
	fmt.Fprintf(rc.stdout, "replayed %s: %d messages, %d ticks, %d resends dropped, %d messages not understood\n",
		path, msgs, out.sent, out.a.Dropped(), skipped)
	if runErr != nil {
		return fmt.Errorf("%s: %w", path, runErr)
	}
	return nil
}
