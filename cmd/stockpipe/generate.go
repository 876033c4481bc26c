package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/stockpipe/stockpipe/internal/generate"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/telemetry"
)

// genFlags configure the market simulator; shared by generate and up.
type genFlags struct {
	rate        float64
	count       int64
	seed        uint64
	symbols     string
	faults      float64
	anomalyRate float64
	truth       string
	start       string
	speed       float64
	resume      bool
}

func (g *genFlags) register(c *command, defaultRate float64) {
	c.fs.Float64Var(&g.rate, "rate", defaultRate, "ticks per second across all symbols (per simulated second with --start)")
	c.fs.StringVar(&g.symbols, "symbols", "", "comma-separated tickers (default: a universe of 30 large US stocks)")
	c.fs.Float64Var(&g.faults, "faults", 0, "probability 0..0.5 that a record is a fault: duplicate, out-of-order, late, malformed or invalid")
	c.fs.Float64Var(&g.anomalyRate, "anomaly-rate", 2, "labelled anomalies (price jumps, volume bursts, spread blow-outs) per symbol per simulated hour")
}

func (g *genFlags) registerBatch(c *command) {
	c.fs.Int64Var(&g.count, "count", 0, "stop after this many records (0 = run until interrupted)")
	c.fs.Uint64Var(&g.seed, "seed", 0, "random seed; the same seed and flags give the same ticks (0 = from the clock)")
	c.fs.StringVar(&g.truth, "truth", "", "write the injected anomalies (ground truth) as JSON lines to this file")
	c.fs.StringVar(&g.start, "start", "", "simulated start time, RFC 3339 (default: now, in real time)")
	c.fs.Float64Var(&g.speed, "speed", 1, "simulated seconds per wall-clock second; 0 = as fast as possible")
	c.fs.BoolVar(&g.resume, "resume", true, "continue each symbol's seq and price from the end of the ticks topic")
}

// check reports flag values that cannot work, before anything connects.
func (g *genFlags) check() error {
	if g.rate <= 0 {
		return errors.New("--rate must be above 0")
	}
	if g.faults < 0 || g.faults > 0.5 {
		return errors.New("--faults must be between 0 and 0.5")
	}
	if g.speed < 0 {
		return errors.New("--speed must be 0 (as fast as possible) or above")
	}
	if g.symbols != "" {
		if _, err := generate.LookupSymbols(splitList(g.symbols)); err != nil {
			return fmt.Errorf("--symbols: %w", err)
		}
	}
	return nil
}

// pace holds the simulation to the present: a run from the past at a speed
// above real time catches up and continues in real time.
func (g *genFlags) pace(rc *runCtx) generate.Pace {
	return generate.Pace{Speed: g.speed, NotAhead: true, CaughtUp: func(ts time.Time) {
		rc.log.Info("the simulation has caught up with the present; continuing in real time", "ts", ts.Format(time.RFC3339Nano))
	}}
}

// simulator builds the simulator, continuing from the topic's tail when
// resuming.
func (g *genFlags) simulator(rc *runCtx, kcfg kafka.Config) (*generate.Simulator, func() error, error) {
	if err := g.check(); err != nil {
		return nil, nil, err
	}
	syms := generate.DefaultUniverse()
	if g.symbols != "" {
		var err error
		if syms, err = generate.LookupSymbols(splitList(g.symbols)); err != nil {
			return nil, nil, fmt.Errorf("--symbols: %w", err)
		}
	}
	now := time.Now().UTC()
	start, explicit := now, false
	if g.start != "" && g.start != "now" {
		t, err := time.Parse(time.RFC3339Nano, g.start)
		if err != nil {
			return nil, nil, fmt.Errorf("--start %q is not an RFC 3339 time such as 2026-11-25T14:30:00Z", g.start)
		}
		if t.After(now.Add(time.Minute)) {
			return nil, nil, fmt.Errorf("--start %s is in the future; the processor rejects ticks more than --max-future ahead of its clock: pass a time in the past, or leave --start out for the present", g.start)
		}
		start, explicit = t.UTC(), true
	}
	seed := g.seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	cfg := generate.SimConfig{
		Symbols: syms, Rate: g.rate, Count: g.count, Seed: seed, Start: start,
		Faults: g.faults, AnomalyRate: g.anomalyRate,
	}
	if g.resume {
		ctx, cancel := context.WithTimeout(rc.ctx, 30*time.Second)
		last, err := kafka.LastTicks(ctx, kcfg, kafka.TopicTicks, 20_000)
		cancel()
		if err != nil {
			return nil, nil, err
		}
		if err := resumeFrom(rc, &cfg, last, explicit); err != nil {
			return nil, nil, err
		}
	}
	if g.count > 0 && g.speed != 1 {
		// At a speed other than real time the run's event time may pass
		// the present; Run then holds it to the wall clock (Pace.NotAhead).
		end := cfg.Start.Add(time.Duration(float64(g.count) / g.rate * float64(time.Second)))
		if end.After(now) {
			rc.log.Warn("this run's event time would pass the present; from there it continues in real time, since the processor rejects ticks from the future",
				"from", cfg.Start.Format(time.RFC3339), "would_reach", end.Format(time.RFC3339))
		}
	}
	closeTruth := func() error { return nil }
	if g.truth != "" {
		f, err := os.Create(g.truth)
		if err != nil {
			return nil, nil, fmt.Errorf("--truth: %w", err)
		}
		cfg.Truth = f
		closeTruth = f.Close
	}
	sim, err := generate.NewSimulator(cfg)
	if err != nil {
		_ = closeTruth() // the simulator's error is the one to report
		return nil, nil, err
	}
	return sim, closeTruth, nil
}

func generateCommand() *command {
	c := newCommand("generate", "simulate market ticks into the ticks topic",
		"stockpipe generate --brokers 127.0.0.1:9092 --count 100000 --seed 7 --faults 0.01 --truth truth.jsonl")
	var kf kafkaFlags
	kf.register(c.fs, "Kafka brokers, host:port[,host:port…]")
	var g genFlags
	g.register(c, 2000)
	g.registerBatch(c)
	partitions := c.fs.Int("partitions", 6, "partitions of the ticks topic if it has to be created")
	var pr peer
	pr.register(c)
	c.run = func(rc *runCtx) error {
		if err := pr.brokers(rc, &kf, true); err != nil {
			return err
		}
		kcfg, err := kf.config(rc, "stockpipe-generate")
		if err != nil {
			return err
		}
		if err := g.check(); err != nil {
			return err
		}
		if err := ensureTopics(rc, kcfg, int32(*partitions)); err != nil {
			return err
		}
		sim, closeTruth, err := g.simulator(rc, kcfg)
		if err != nil {
			return err
		}
		n, err := produce(rc, kcfg, sim, g.pace(rc), nil)
		if cerr := closeTruth(); err == nil && cerr != nil {
			err = fmt.Errorf("writing --truth: %w", cerr)
		}
		s := sim.Stats()
		rc.log.Info("generator done", "records", n, "valid", s.Valid, "duplicates", s.Duplicates,
			"out_of_order", s.OutOfOrder, "late", s.Late, "malformed", s.Malformed, "invalid", s.Invalid, "anomalies", s.Anomalies)
		fmt.Fprintf(rc.stdout, "produced %d records (%d valid ticks, %d duplicates of which %d late, %d out of order, %d late, %d malformed, %d invalid; %d anomalies injected)\n",
			n, s.Valid, s.Duplicates, s.LateDuplicates, s.OutOfOrder, s.Late, s.Malformed, s.Invalid, s.Anomalies)
		return err
	}
	return c
}

// resumeFrom continues the symbols about to be generated from the ticks
// topic's tail (last): each one's seq and price, and event time after its
// newest tick. Symbols in the topic that this run does not generate play no
// part. When that moves the start past an explicit --start, it says so.
func resumeFrom(rc *runCtx, cfg *generate.SimConfig, last map[string]market.Tick, explicit bool) error {
	var newest market.Tick
	for _, sym := range cfg.Symbols {
		t, ok := last[sym.Name]
		if !ok {
			continue
		}
		if cfg.Resume == nil {
			cfg.Resume = make(map[string]generate.Resume)
		}
		cfg.Resume[sym.Name] = generate.Resume{Seq: t.Seq, Price: t.Price}
		if t.TS.After(newest.TS) {
			newest = t
		}
	}
	if len(cfg.Resume) == 0 {
		return nil
	}
	rc.log.Info("continuing symbols from the ticks topic", "symbols", len(cfg.Resume))
	if !newest.TS.Before(cfg.Start) {
		// Keep event time moving forward for the continued symbols, or
		// their new ticks would be behind their old ones and rejected as
		// late.
		from := newest.TS.Add(time.Millisecond)
		if explicit {
			rc.log.Warn(fmt.Sprintf("--start %s is before %s's newest tick in the topic (%s): starting at %s, or its new ticks would be late; "+
				"to simulate that day, use symbols the topic does not hold yet (--symbols), or --resume=false",
				cfg.Start.Format(time.RFC3339), newest.Symbol, newest.TS.Format(time.RFC3339Nano), from.Format(time.RFC3339Nano)))
		}
		cfg.Start = from
	}
	return nil
}

// produce runs src into the ticks topic and waits until the broker has
// acknowledged everything sent. An interrupt stops the source but still
// flushes what was queued.
func produce(rc *runCtx, kcfg kafka.Config, src generate.Source, pace generate.Pace, m *telemetry.Metrics) (int64, error) {
	p, err := kafka.NewProducer(kcfg, kafka.TopicTicks)
	if err != nil {
		return 0, err
	}
	p.Metrics = m
	p.Logger = rc.log
	defer p.Close()
	n, runErr := generate.Run(rc.ctx, src, pace, func(ctx context.Context, r generate.Record) error {
		return p.Send(ctx, r.Key, r.Value)
	})
	if errors.Is(runErr, context.Canceled) {
		runErr = nil
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(rc.ctx), 30*time.Second)
	defer cancel()
	if err := p.Flush(fctx); err != nil {
		return p.Acked(), err
	}
	return n, runErr
}
