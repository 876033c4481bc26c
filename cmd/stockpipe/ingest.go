package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/stockpipe/stockpipe/internal/feed"
	"github.com/stockpipe/stockpipe/internal/feed/alpaca"
	"github.com/stockpipe/stockpipe/internal/feed/finnhub"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/telemetry"
)

// The live sources ingest (and up --source) knows.
const (
	sourceAlpaca    = "alpaca"
	sourceFinnhub   = "finnhub"
	sourceSimulator = "simulator"
)

// feedFlags configure a live market-data source; shared by ingest and up.
type feedFlags struct {
	symbols string
	feed    string
	url     string
	key     string
	secret  string
	token   string
	record  string
}

// register adds the source's flags. up has its own --symbols (the
// simulator's), which then names the feed's symbols too; backfill records
// nothing.
func (f *feedFlags) register(c *command, withSymbols, live bool) {
	if withSymbols {
		c.fs.StringVar(&f.symbols, "symbols", "", "comma-separated tickers to subscribe to, e.g. AAPL,MSFT,NVDA (required)")
	}
	c.fs.StringVar(&f.feed, "feed", "iex", "alpaca: the data feed, iex (free plan) or sip (all US exchanges, paid plan)")
	c.fs.StringVar(&f.url, "url", "", "the provider's stream endpoint instead of its public one (a sandbox, a test server)")
	c.fs.StringVar(&f.key, "key", "", "alpaca: API key id (or APCA_API_KEY_ID)")
	c.fs.StringVar(&f.secret, "secret", "", "alpaca: API secret key (or APCA_API_SECRET_KEY)")
	c.fs.StringVar(&f.token, "token", "", "finnhub: API token (or FINNHUB_TOKEN)")
	if !live {
		return
	}
	c.fs.StringVar(&f.record, "record", "", "also write every message that arrives, with its arrival time, to this file (replay it with stockpipe replay --recording)")
}

// parseSymbols checks a --symbols list of a live source.
func parseSymbols(list string) ([]string, error) {
	if strings.TrimSpace(list) == "" {
		return nil, errors.New("--symbols is required for a live source: name the tickers to subscribe to, e.g. --symbols AAPL,MSFT,NVDA")
	}
	var syms []string
	seen := map[string]bool{}
	for _, s := range splitList(list) {
		s = strings.ToUpper(s)
		if !market.ValidSymbol(s) {
			return nil, fmt.Errorf("--symbols: %q is not a ticker (1-%d of A-Z 0-9 . -, starting with a letter)", s, market.MaxSymbolLen)
		}
		if !seen[s] {
			seen[s] = true
			syms = append(syms, s)
		}
	}
	return syms, nil
}

// connector checks the flags of source and builds its connector.
func (f *feedFlags) connector(rc *runCtx, source string, syms []string, rec *feed.Recorder) (feed.Connector, error) {
	switch source {
	case sourceAlpaca:
		if f.key == "" || f.secret == "" {
			return nil, errors.New("alpaca needs an API key: set APCA_API_KEY_ID and APCA_API_SECRET_KEY (or --key and --secret); a free one comes with an account at https://alpaca.markets")
		}
		if f.feed != "iex" && f.feed != "sip" {
			return nil, fmt.Errorf("--feed %q: alpaca's stock feeds are iex (free plan) and sip (paid plan)", f.feed)
		}
		return alpaca.NewStream(alpaca.StreamConfig{URL: f.url, Feed: f.feed, Key: f.key, Secret: f.secret,
			Symbols: syms, Recorder: rec, Logger: rc.log}), nil
	case sourceFinnhub:
		if f.token == "" {
			return nil, errors.New("finnhub needs an API token: set FINNHUB_TOKEN (or --token); a free one comes with an account at https://finnhub.io/register")
		}
		return finnhub.New(finnhub.Config{URL: f.url, Token: f.token, Symbols: syms, Recorder: rec, Logger: rc.log}), nil
	}
	return nil, fmt.Errorf("unknown source %q: use alpaca or finnhub", source)
}

// decoders read a recording's messages, by source.
var decoders = map[string]feed.Decoder{sourceAlpaca: alpaca.Decode, sourceFinnhub: finnhub.Decode}

func ingestCommand() *command {
	c := newCommand("ingest", "stream a live market-data feed (alpaca or finnhub) into the ticks topic",
		"APCA_API_KEY_ID=… APCA_API_SECRET_KEY=… stockpipe ingest alpaca --brokers 127.0.0.1:9092 --symbols AAPL,MSFT")
	c.usage = "<alpaca|finnhub> [flags]"
	c.positional = true
	var kf kafkaFlags
	kf.register(c.fs, "Kafka brokers, host:port[,host:port…]")
	var ff feedFlags
	ff.register(c, true, true)
	partitions := c.fs.Int("partitions", 6, "partitions of the ticks topic if it has to be created")
	var pr peer
	pr.register(c)
	c.run = func(rc *runCtx) error {
		if len(c.args) != 1 {
			return errors.New("name the source: stockpipe ingest alpaca … or stockpipe ingest finnhub …")
		}
		source := strings.ToLower(c.args[0])
		syms, err := parseSymbols(ff.symbols)
		if err != nil {
			return err
		}
		if _, err := ff.connector(rc, source, syms, nil); err != nil {
			return err // flags checked before anything connects
		}
		if err := pr.brokers(rc, &kf, true); err != nil {
			return err
		}
		kcfg, err := kf.config(rc, "stockpipe-ingest-"+source)
		if err != nil {
			return err
		}
		if err := ensureTopics(rc, kcfg, int32(*partitions)); err != nil {
			return err
		}
		st := feed.NewStats(source)
		stop := logEvery(rc, 5*time.Second, feedLogger(rc, st, time.Now))
		defer stop()
		return ingest(rc, kcfg, source, &ff, syms, st, nil)
	}
	return c
}

// ingest streams source into the ticks topic until rc.ctx ends or the
// provider refuses for good. Each symbol's seq continues from the topic's
// tail, so a restarted connector's ticks are new ticks, not duplicates.
func ingest(rc *runCtx, kcfg kafka.Config, source string, ff *feedFlags, syms []string, st *feed.Stats, m *telemetry.Metrics) error {
	var rec *feed.Recorder
	if ff.record != "" {
		f, err := os.OpenFile(ff.record, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("--record: %w", err)
		}
		defer f.Close()
		rec = feed.NewRecorder(f)
		defer func() {
			if err := rec.Close(); err != nil {
				rc.log.Error("--record", "err", err)
			}
		}()
	}
	conn, err := ff.connector(rc, source, syms, rec)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(rc.ctx, 30*time.Second)
	last, err := kafka.LastTicks(ctx, kcfg, kafka.TopicTicks, 20_000)
	cancel()
	if err != nil {
		return err
	}
	seqs := make(map[string]int64)
	for _, s := range syms {
		if t, ok := last[s]; ok {
			seqs[s] = t.Seq
		}
	}
	if len(seqs) > 0 {
		rc.log.Info("continuing the symbols' seqs from the ticks topic", "symbols", len(seqs))
	}
	p, err := kafka.NewProducer(kcfg, kafka.TopicTicks)
	if err != nil {
		return err
	}
	p.Metrics = m
	p.Logger = rc.log
	defer p.Close()
	out := &tickOut{ctx: rc.ctx, a: feed.NewAssembler(seqs), send: p.Send}
	rc.log.Info("connecting to the market-data feed", "source", source, "symbols", strings.Join(syms, ","))
	runErr := conn.Run(rc.ctx, out, st)
	st.SetState(feed.StateStopped)
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(rc.ctx), 30*time.Second)
	defer fcancel()
	if err := p.Flush(fctx); err != nil && runErr == nil {
		runErr = err
	}
	rc.log.Info("feed stopped", "source", source, "ticks", out.sent, "resends_dropped", out.a.Dropped())
	return runErr
}

// tickOut turns a connector's trades into ticks on the ticks topic.
type tickOut struct {
	ctx  context.Context
	a    *feed.Assembler
	send func(ctx context.Context, key, value []byte) error
	buf  []byte
	sent int64
}

func (o *tickOut) Quote(q feed.Quote) error {
	o.a.Quote(q)
	return nil
}

func (o *tickOut) Trade(tr feed.Trade) error {
	t, ok := o.a.Trade(tr)
	if !ok {
		return nil
	}
	o.buf = t.AppendJSON(o.buf[:0])
	// Send copies the value, so the buffer is reused.
	if err := o.send(o.ctx, []byte(t.Symbol), o.buf); err != nil {
		return err
	}
	o.sent++
	return nil
}

// feedLogger returns the feed's line of the 5-second log, which also says
// once per closed period that the market is closed when nothing arrives.
func feedLogger(rc *runCtx, st *feed.Stats, clock func() time.Time) func() {
	var last feed.Snapshot
	lastAt := clock()
	closedSaid := false
	return func() {
		s := st.Snapshot()
		now := clock()
		rate := float64(s.Messages-last.Messages) / now.Sub(lastAt).Seconds()
		last, lastAt = s, now
		age := "never"
		if !s.LastMessage.IsZero() {
			age = now.Sub(s.LastMessage).Round(100 * time.Millisecond).String()
		}
		rc.log.Info("feed", "source", s.Source, "state", s.State, "messages_per_s", int(rate), "last_message_age", age,
			"reconnects", s.Reconnects, "errors", s.Errors)
		open := market.RegularSession(now)
		switch {
		case open:
			closedSaid = false
		case !closedSaid && s.State == feed.StateConnected && rate == 0:
			closedSaid = true
			rc.log.Info("the US market is outside its regular session (9:30-16:00 New York, weekdays): connected and waiting for trades")
		}
	}
}
