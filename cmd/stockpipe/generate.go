package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/stockpipe/stockpipe/internal/generate"
	"github.com/stockpipe/stockpipe/internal/kafka"
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
	start := time.Now().UTC()
	if g.start != "" && g.start != "now" {
		t, err := time.Parse(time.RFC3339Nano, g.start)
		if err != nil {
			return nil, nil, fmt.Errorf("--start %q is not an RFC 3339 time such as 2026-11-25T14:30:00Z", g.start)
		}
		start = t.UTC()
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
		if len(last) > 0 {
			cfg.Resume = make(map[string]generate.Resume, len(last))
			for sym, t := range last {
				cfg.Resume[sym] = generate.Resume{Seq: t.Seq, Price: t.Price}
				// Keep event time moving forward for a symbol that is
				// continued, or its new ticks would be behind its old ones.
				if t.TS.After(cfg.Start) {
					cfg.Start = t.TS.Add(time.Millisecond)
				}
			}
			rc.log.Info("continuing symbols from the ticks topic", "symbols", len(last))
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
		closeTruth()
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
	c.run = func(rc *runCtx) error {
		kcfg, err := kf.config("stockpipe-generate")
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
		n, err := produce(rc, kcfg, sim, g.speed, nil)
		if cerr := closeTruth(); err == nil && cerr != nil {
			err = fmt.Errorf("writing --truth: %w", cerr)
		}
		s := sim.Stats()
		rc.log.Info("generator done", "records", n, "valid", s.Valid, "duplicates", s.Duplicates,
			"out_of_order", s.OutOfOrder, "late", s.Late, "malformed", s.Malformed, "invalid", s.Invalid, "anomalies", s.Anomalies)
		fmt.Fprintf(rc.stdout, "produced %d records (%d valid ticks, %d duplicates, %d out of order, %d late, %d malformed, %d invalid; %d anomalies injected)\n",
			n, s.Valid, s.Duplicates, s.OutOfOrder, s.Late, s.Malformed, s.Invalid, s.Anomalies)
		return err
	}
	return c
}

// produce runs src into the ticks topic and waits until the broker has
// acknowledged everything sent. An interrupt stops the source but still
// flushes what was queued.
func produce(rc *runCtx, kcfg kafka.Config, src generate.Source, speed float64, m *telemetry.Metrics) (int64, error) {
	p, err := kafka.NewProducer(kcfg, kafka.TopicTicks)
	if err != nil {
		return 0, err
	}
	p.Metrics = m
	p.Logger = rc.log
	defer p.Close()
	n, runErr := generate.Run(rc.ctx, src, speed, func(ctx context.Context, r generate.Record) error {
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
