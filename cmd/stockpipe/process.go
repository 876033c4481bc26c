package main

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/stockpipe/stockpipe/internal/analytics"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/store"
	"github.com/stockpipe/stockpipe/internal/stream"
	"github.com/stockpipe/stockpipe/internal/telemetry"
	"github.com/stockpipe/stockpipe/internal/web"
)

// processFlags are the processor's tuning flags, shared by process and up.
type processFlags struct {
	group     string
	batchSize int
	batchWait time.Duration
	maxFuture time.Duration
	session   time.Duration
	instance  string
	lateness  time.Duration
	idle      time.Duration
	ckpt      time.Duration
	seqJump   int64
}

func (p *processFlags) register(c *command) {
	c.fs.StringVar(&p.group, "group", "stockpipe", "consumer group name; processors in one group share the partitions")
	c.fs.IntVar(&p.batchSize, "batch-size", 10_000, "records per database transaction at most")
	c.fs.DurationVar(&p.batchWait, "batch-wait", defaultBatchWait, "how much longer a batch may wait to fill once it has records (0: none; the next batch fills while one commits)")
	c.fs.DurationVar(&p.session, "session-timeout", 10*time.Second, "how long the group waits for a silent processor before moving its partitions")
	c.fs.StringVar(&p.instance, "instance-id", "", "static group membership: a processor restarted with the same ID gets its partitions back at once (IDs must be unique among live processors)")
	c.fs.DurationVar(&p.lateness, "lateness", 2*time.Second, "how far behind a symbol's newest event time a tick may arrive; later ticks are rejected as late")
	c.fs.DurationVar(&p.idle, "idle-timeout", 10*time.Second, "seal (mark final) the candles of a symbol silent this long while the other symbols of its partition tick on; a later on-time tick still amends them")
	c.fs.DurationVar(&p.ckpt, "checkpoint-every", 10*time.Second, "how often each partition's analytics state is saved; a restart replays the records since (stored already, nothing twice)")
	c.fs.DurationVar(&p.maxFuture, "max-future", time.Minute, "reject ticks whose ts is further ahead of this machine's clock")
	c.fs.Int64Var(&p.seqJump, "max-seq-jump", 10_000_000, "reject (seq_jump) a tick whose seq is this much past its symbol's highest")
}

func (p *processFlags) config() stream.Config {
	rules := market.DefaultRules()
	rules.MaxFuture = p.maxFuture
	return stream.Config{Group: p.group, BatchSize: p.batchSize, BatchWait: p.batchWait, Rules: rules,
		SessionTimeout: p.session, InstanceID: p.instance, CheckpointEvery: p.ckpt,
		Analytics: analytics.Config{Lateness: p.lateness, IdleTimeout: p.idle, MaxSeqJump: p.seqJump}}
}

func processCommand() *command {
	c := newCommand("process", "consume ticks and store them in PostgreSQL exactly once",
		"stockpipe process --brokers 127.0.0.1:9092 --database-url postgres://stockpipe@127.0.0.1:5432/stockpipe")
	var kf kafkaFlags
	kf.register(c.fs, "Kafka brokers, host:port[,host:port…]")
	url := c.fs.String("database-url", "", "PostgreSQL URL (or DATABASE_URL)")
	var pf processFlags
	pf.register(c)
	opsAddr := c.fs.String("http", "", "serve /metrics, /healthz and /readyz on this address (e.g. 127.0.0.1:8051), and /debug/pprof/ if it is a loopback one; off by default")
	var pr peer
	pr.register(c)
	c.run = func(rc *runCtx) error {
		if err := pr.brokers(rc, &kf, true); err != nil {
			return err
		}
		kcfg, err := kf.config(rc, "stockpipe-process")
		if err != nil {
			return err
		}
		dbURL, err := pr.databaseURL(rc, *url)
		if err != nil {
			return err
		}
		pool, err := openDB(rc, dbURL, 4)
		if err != nil {
			return err
		}
		defer pool.Close()
		cfg := pf.config()
		cfg.Kafka = kcfg
		cfg.Logger = rc.log
		cfg.Metrics = telemetry.New()
		p, err := stream.New(cfg, store.NewSink(pool))
		if err != nil {
			return err
		}
		if *opsAddr != "" {
			stopOps, err := serveOps(rc, *opsAddr, cfg.Metrics, []web.Check{
				{Name: "database", Check: func(ctx context.Context) error { return pool.Ping(ctx) }},
				{Name: "processor", Check: func(context.Context) error {
					if p.Assigned() == 0 {
						return errors.New("owns no partitions yet")
					}
					return nil
				}},
			})
			if err != nil {
				return err
			}
			defer stopOps()
		}
		stop := logEvery(rc, 5*time.Second, func() { logProcessor(rc, p.Stats()) })
		defer stop()
		defer limitMemory(rc, p.Symbols)()
		return p.Run(rc.ctx)
	}
	return c
}

// defaultBatchWait is --batch-wait's default: at 20,000 ticks/s on two
// cores, 5 ms halved the commits and cut p99 tick→commit from ~40 to ~30 ms
// (loadtest --rate 20000 --batch-wait 0 vs 5ms).
const defaultBatchWait = 5 * time.Millisecond

func logProcessor(rc *runCtx, s stream.Stats) {
	rc.log.Info("processor", "consumed", s.Consumed, "stored", s.Stored, "duplicates", s.Duplicates,
		"rejected", s.Rejected, "late", s.Late, "anomalies", s.Anomalies, "batches", s.Batches)
}

// logEvery calls fn every d until the returned stop is called.
func logEvery(rc *runCtx, d time.Duration, fn func()) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-rc.ctx.Done():
				return
			case <-t.C:
				fn()
			}
		}
	}()
	return func() {
		close(done)
		<-finished
		fn()
	}
}

// serveOps serves the ops endpoints of a process without a dashboard
// (web.OpsHandler), with profiles on a loopback address only.
func serveOps(rc *runCtx, addr string, m *telemetry.Metrics, ready []web.Check) (stop func(), err error) {
	ln, err := listenHTTP(addr)
	if err != nil {
		return nil, err
	}
	loopback := false
	if host, _, err := net.SplitHostPort(ln.Addr().String()); err == nil {
		ip := net.ParseIP(host)
		loopback = ip != nil && ip.IsLoopback()
	}
	hs := web.OpsServer(web.OpsHandler(web.Ops{Metrics: m, Ready: ready, Profiling: loopback}))
	go func() { _ = hs.Serve(ln) }()
	rc.log.Info("serving metrics and health checks", "address", ln.Addr().String())
	return func() { _ = hs.Close() }, nil
}
