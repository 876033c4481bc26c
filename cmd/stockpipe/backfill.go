package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/stockpipe/stockpipe/internal/feed"
	"github.com/stockpipe/stockpipe/internal/feed/alpaca"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/market"
)

func backfillCommand() *command {
	c := newCommand("backfill", "pull a provider's historical trades (alpaca) into the ticks topic",
		"APCA_API_KEY_ID=… APCA_API_SECRET_KEY=… stockpipe backfill alpaca --brokers 127.0.0.1:9092 --symbols AAPL --from 2026-11-02 --to 2026-11-03")
	c.usage = "alpaca [flags]"
	c.positional = true
	var kf kafkaFlags
	kf.register(c.fs, "Kafka brokers, host:port[,host:port…]")
	var bf backfillFlags
	bf.register(c)
	partitions := c.fs.Int("partitions", 6, "partitions of the ticks topic if it has to be created")
	var pr peer
	pr.register(c)
	c.run = func(rc *runCtx) error {
		if len(c.args) != 1 || strings.ToLower(c.args[0]) != sourceAlpaca {
			return errors.New("name the provider: stockpipe backfill alpaca … (the one with historical trades)")
		}
		job, err := bf.check()
		if err != nil {
			return err
		}
		if err := pr.brokers(rc, &kf, true); err != nil {
			return err
		}
		kcfg, err := kf.config(rc, "stockpipe-backfill")
		if err != nil {
			return err
		}
		if err := ensureTopics(rc, kcfg, int32(*partitions)); err != nil {
			return err
		}
		_, err = backfillAlpaca(rc, kcfg, job)
		return err
	}
	return c
}

// backfillFlags are backfill's command line.
type backfillFlags struct {
	ff       feedFlags
	from, to string
	quotes   bool
	ownName  bool
}

func (b *backfillFlags) register(c *command) {
	b.ff.register(c, true, false)
	c.fs.StringVar(&b.from, "from", "", "first New York date to pull, YYYY-MM-DD (required)")
	c.fs.StringVar(&b.to, "to", "", "last New York date to pull, YYYY-MM-DD (default: --from)")
	c.fs.BoolVar(&b.quotes, "quotes", false, "also pull quotes, so each trade carries the bid/ask in force (several times the requests)")
	c.fs.BoolVar(&b.ownName, "own-name", false, "store each symbol's history under a name of its own (AAPL as AAPL.H), for a symbol that is live: older ticks under a live name are late")
}

// backfillJob is a checked backfill request.
type backfillJob struct {
	ff       feedFlags
	symbols  []string
	from, to time.Time // [from, to) in UTC
	quotes   bool
	ownName  bool
}

// check validates the flags before anything connects.
func (b *backfillFlags) check() (backfillJob, error) {
	syms, err := parseSymbols(b.ff.symbols)
	if err != nil {
		return backfillJob{}, err
	}
	if b.ff.key == "" || b.ff.secret == "" {
		return backfillJob{}, errors.New("alpaca needs an API key: set APCA_API_KEY_ID and APCA_API_SECRET_KEY (or --key and --secret); a free one comes with an account at https://alpaca.markets")
	}
	if b.from == "" {
		return backfillJob{}, errors.New("--from is required: the first New York date to pull, e.g. --from 2026-11-02")
	}
	from, err := time.ParseInLocation(time.DateOnly, b.from, market.NewYork)
	if err != nil {
		return backfillJob{}, fmt.Errorf("--from %q is not a date such as 2026-11-02", b.from)
	}
	to := from
	if b.to != "" {
		if to, err = time.ParseInLocation(time.DateOnly, b.to, market.NewYork); err != nil {
			return backfillJob{}, fmt.Errorf("--to %q is not a date such as 2026-11-03", b.to)
		}
	}
	if to.Before(from) {
		return backfillJob{}, fmt.Errorf("--to %s is before --from %s", b.to, b.from)
	}
	end := to.AddDate(0, 0, 1)
	if now := time.Now(); end.After(now) {
		end = now // nothing after the present; the live feed has the rest
	}
	return backfillJob{ff: b.ff, symbols: syms, from: from.UTC(), to: end.UTC(), quotes: b.quotes, ownName: b.ownName}, nil
}

// backfillAlpaca pulls each symbol's trades of [from, to) into the ticks
// topic. It resumes: a symbol whose ticks in the topic already reach into
// the range continues after its newest one, with its seq, so running it
// again after an interruption sends nothing twice.
func backfillAlpaca(rc *runCtx, kcfg kafka.Config, job backfillJob) (int64, error) {
	ctx, cancel := context.WithTimeout(rc.ctx, 30*time.Second)
	last, err := kafka.LastTicks(ctx, kcfg, kafka.TopicTicks, 20_000)
	cancel()
	if err != nil {
		return 0, err
	}
	p, err := kafka.NewProducer(kcfg, kafka.TopicTicks)
	if err != nil {
		return 0, err
	}
	p.Logger = rc.log
	defer p.Close()
	hist := alpaca.NewHistory(alpaca.HistoryConfig{URL: job.ff.url, Key: job.ff.key, Secret: job.ff.secret, Feed: job.ff.feed, Logger: rc.log})
	var total int64
	for _, sym := range job.symbols {
		name := sym
		if job.ownName {
			name = market.HistoryName(sym)
		}
		from := job.from
		seq := int64(0)
		if t, ok := last[name]; ok {
			seq = t.Seq
			if !t.TS.Before(job.to) {
				rc.log.Warn(fmt.Sprintf("%s's ticks in the topic already reach %s, past the range: nothing to pull; history older than a symbol's newest tick is late — pull it under a name of its own with --own-name",
					name, t.TS.Format(time.RFC3339)))
				continue
			}
			if !t.TS.Before(from) {
				from = t.TS.Add(time.Nanosecond)
				rc.log.Info("resuming after the symbol's newest tick in the topic", "symbol", name, "from", from.Format(time.RFC3339Nano))
			}
		}
		out := &tickOut{ctx: rc.ctx, a: feed.NewAssembler(map[string]int64{name: seq}), send: p.Send}
		var h feed.Handler = out
		if name != sym {
			h = renamed{to: name, h: out}
		}
		n, err := hist.Trades(rc.ctx, sym, from, job.to, job.quotes, h)
		total += out.sent
		rc.log.Info("pulled historical trades", "symbol", sym, "as", name, "trades", n, "ticks", out.sent)
		if err != nil {
			return total, fmt.Errorf("pulling %s's trades: %w", sym, err)
		}
	}
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(rc.ctx), 30*time.Second)
	defer fcancel()
	if err := p.Flush(fctx); err != nil {
		return total, err
	}
	fmt.Fprintf(rc.stdout, "backfilled %d ticks of %s from %s to %s\n", total, strings.Join(job.symbols, ","),
		job.from.In(market.NewYork).Format(time.DateOnly), job.to.In(market.NewYork).Add(-time.Nanosecond).Format(time.DateOnly))
	return total, nil
}

// alpacaPuller is the backfill DAG's way to pull historical trades, when
// the scheduler's environment holds an Alpaca key (Alpaca's own
// variables; APCA_API_DATA_URL, the SDK's, points it elsewhere) and it
// has brokers to send them to; nil otherwise.
func alpacaPuller(kcfg kafka.Config) func(context.Context, *slog.Logger, string, string, time.Time, time.Time) (int64, error) {
	key, secret := os.Getenv("APCA_API_KEY_ID"), os.Getenv("APCA_API_SECRET_KEY")
	if key == "" || secret == "" || len(kcfg.Brokers) == 0 {
		return nil
	}
	ff := feedFlags{key: key, secret: secret, url: os.Getenv("APCA_API_DATA_URL"), feed: "iex"}
	return func(ctx context.Context, log *slog.Logger, source, symbol string, from, to time.Time) (int64, error) {
		if source != sourceAlpaca {
			return 0, fmt.Errorf("unknown source %q", source)
		}
		if now := time.Now(); to.After(now) {
			to = now
		}
		rc := &runCtx{ctx: ctx, log: log, stdout: io.Discard, stderr: io.Discard}
		return backfillAlpaca(rc, kcfg, backfillJob{ff: ff, symbols: []string{symbol}, from: from, to: to})
	}
}

// renamed hands trades and quotes on under another symbol.
type renamed struct {
	to string
	h  feed.Handler
}

func (r renamed) Trade(t feed.Trade) error { t.Symbol = r.to; return r.h.Trade(t) }
func (r renamed) Quote(q feed.Quote) error { q.Symbol = r.to; return r.h.Quote(q) }
