package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/datadir"
	"github.com/stockpipe/stockpipe/internal/feed"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/pgembed"
	"github.com/stockpipe/stockpipe/internal/store"
	"github.com/stockpipe/stockpipe/internal/stream"
	"github.com/stockpipe/stockpipe/internal/telemetry"
	"github.com/stockpipe/stockpipe/internal/web"
)

// upPGPort is the embedded PostgreSQL's port under up, so that the
// database URL in the README and in a person's notes stays valid.
const upPGPort = 54329

// upRetention is how long up keeps raw ticks (and the broker its records)
// unless told otherwise: candles are kept for good, so charts look back
// over every day; raw ticks for six hours keep a laptop running make run
// for days within the bound the README states.
const upRetention = 6 * time.Hour

func upCommand() *command {
	c := newCommand("up", "run everything in one process: broker, PostgreSQL, generator and processor",
		"stockpipe up --data-dir ./data --rate 2000")
	var cfg upConfig
	c.fs.StringVar(&cfg.dataDir, "data-dir", "./data", "where the embedded broker and PostgreSQL keep their data; one stockpipe up (or broker) per directory")
	cfg.kf.register(c.fs, "use this Kafka cluster instead of the embedded broker")
	c.fs.StringVar(&cfg.dbURL, "database-url", "", "use this PostgreSQL instead of the embedded one (or DATABASE_URL)")
	cfg.hf.register(c)
	c.fs.StringVar(&cfg.listen, "broker-listen", "127.0.0.1:9092", "address of the embedded broker (a free port is used if this one is taken)")
	c.fs.IntVar(&cfg.pgPort, "pg-port", upPGPort, "port of the embedded PostgreSQL on 127.0.0.1 (a free one is used, with a warning, if this one is taken)")
	c.fs.IntVar(&cfg.partitions, "partitions", 6, "partitions of the ticks topic when it is created")
	cfg.minFree = 5e9
	c.fs.Var(&cfg.minFree, "min-free-disk", "warn when the disk of --data-dir has less free space than this (e.g. 5GB)")
	cfg.g.register(c, 2000)
	c.fs.StringVar(&cfg.source, "source", sourceSimulator, "where ticks come from: simulator, or a live feed, alpaca or finnhub (then --symbols names what to subscribe to)")
	cfg.ff.register(c, false, true)
	cfg.pf.register(c)
	cfg.sf.register(c, false)
	c.run = func(rc *runCtx) error {
		cfg.sf.partitions = cfg.partitions
		cfg.g.speed, cfg.g.resume = 1, true
		if !c.given("retention") {
			cfg.sf.retention = upRetention
		}
		switch cfg.source {
		case sourceSimulator:
			if err := cfg.g.check(); err != nil {
				return err
			}
		case sourceAlpaca, sourceFinnhub:
			syms, err := parseSymbols(cfg.g.symbols)
			if err != nil {
				return err
			}
			if _, err := cfg.ff.connector(rc, cfg.source, syms, nil); err != nil {
				return err
			}
			cfg.syms = syms
		default:
			return fmt.Errorf("--source %q: use simulator, alpaca or finnhub", cfg.source)
		}
		if err := cfg.hf.check(); err != nil {
			return err
		}
		return runUp(rc, &cfg)
	}
	return c
}

// upConfig is up's command line.
type upConfig struct {
	dataDir    string
	kf         kafkaFlags
	dbURL      string
	hf         httpFlags
	listen     string
	pgPort     int
	partitions int
	minFree    byteSize
	g          genFlags
	source     string
	ff         feedFlags
	syms       []string // a live source's symbols
	pf         processFlags
	sf         schedFlags
}

func runUp(rc *runCtx, cfg *upConfig) error {
	// Nothing is touched before the data directory is ours: a second up
	// on it must leave the first one's broker and database alone.
	lock, err := datadir.Acquire(cfg.dataDir, "up")
	if err != nil {
		return err
	}
	defer releaseLock(rc, lock)

	// A component that fails stops the whole pipeline, with its reason.
	ctx, fail := context.WithCancelCause(rc.ctx)
	defer fail(nil)
	urc := *rc
	urc.ctx = ctx
	rc = &urc

	metrics := telemetry.New()
	started := time.Now()
	dbURL := cfg.dbURL
	if dbURL == "" {
		pg, err := pgembed.Start(rc.ctx, pgembed.Config{Dir: filepath.Join(cfg.dataDir, "postgres"), Port: cfg.pgPort,
			PortFallback: true, Logger: rc.log})
		if err != nil {
			return err
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(rc.ctx), 10*time.Second)
			defer cancel()
			if err := pg.Stop(ctx); err != nil {
				rc.log.Error("stopping PostgreSQL", "err", err)
			}
		}()
		go func() {
			if err := pg.Supervise(rc.ctx, time.Second); err != nil {
				rc.log.Error("stopping: the embedded PostgreSQL is gone", "err", err)
				fail(err)
			}
		}()
		dbURL = pg.URL()
	} else if env := rc.cmd.source("database-url"); env != "" {
		rc.dbFrom = env
		rc.log.Warn(fmt.Sprintf("using the database from %s instead of the embedded PostgreSQL; unset %s (or pass --database-url '') to run the embedded one", env, env),
			"url", store.Redact(dbURL))
	}
	var kcfg kafka.Config
	if cfg.kf.brokers == "" {
		// The broker keeps records as long as the database keeps ticks,
		// which bounds the data directory's size (see the README).
		b, err := startBroker(rc, cfg.listen, cfg.dataDir, int32(cfg.partitions), cfg.sf.retention)
		if err != nil && isAddrInUse(err) {
			rc.log.Warn("broker address taken; using a free port", "address", cfg.listen)
			host, _, _ := net.SplitHostPort(cfg.listen)
			b, err = startBroker(rc, net.JoinHostPort(host, "0"), cfg.dataDir, int32(cfg.partitions), cfg.sf.retention)
		}
		if err != nil {
			return err
		}
		defer b.Close()
		kcfg = kafka.Config{Brokers: b.Addrs(), ClientID: "stockpipe-up", Logger: rc.log}
	} else {
		if env := rc.cmd.source("brokers"); env != "" {
			rc.log.Warn(fmt.Sprintf("using the Kafka brokers from %s instead of the embedded broker; unset %s to run the embedded one", env, env),
				"brokers", cfg.kf.brokers)
		}
		if kcfg, err = cfg.kf.config(rc, "stockpipe-up"); err != nil {
			return err
		}
		if err := ensureTopics(rc, kcfg, int32(cfg.partitions)); err != nil {
			return err
		}
	}
	pool, err := openDB(rc, dbURL, 24)
	if err != nil {
		return err
	}
	defer pool.Close()

	// The ticks' source: the simulator, or a live feed.
	var source component
	var feedStats *feed.Stats
	var produced int64
	if cfg.source == sourceSimulator {
		sim, closeTruth, err := cfg.g.simulator(rc, kcfg)
		if err != nil {
			return err
		}
		defer func() { _ = closeTruth() }() // up writes no ground truth
		source = component{"generator", func(rc *runCtx) (err error) {
			produced, err = produce(rc, kcfg, sim, cfg.g.pace(rc), metrics)
			return err
		}}
	} else {
		feedStats = feed.NewStats(cfg.source)
		source = component{cfg.source + " feed", func(rc *runCtx) error {
			return ingest(rc, kcfg, cfg.source, &cfg.ff, cfg.syms, feedStats, metrics)
		}}
	}

	pcfg := cfg.pf.config()
	if pcfg.InstanceID == "" {
		// One processor per up: after a crash it takes its partitions
		// back at once rather than waiting out the session timeout.
		host, _ := os.Hostname()
		pcfg.InstanceID = "stockpipe-up-" + host
	}
	pcfg.Kafka = kcfg
	pcfg.Logger = rc.log
	pcfg.Metrics = metrics
	proc, err := stream.New(pcfg, store.NewSink(pool))
	if err != nil {
		return err
	}

	scfg := cfg.sf.config(pool, kcfg, pcfg.Group, rc.log)
	scfg.Metrics = metrics // stockpipe_dag_runs_total on the dashboard's /metrics
	sched, err := dag.NewClient(scfg)
	if err != nil {
		return err
	}
	ln, err := listenHTTP(cfg.hf.addr)
	if err != nil {
		return err
	}
	dashboard := "http://" + ln.Addr().String() + "/"
	if err := lock.WriteEndpoints(datadir.Endpoints{PID: os.Getpid(), Command: "up", DatabaseURL: dbURL,
		Brokers: kcfg.Brokers, Dashboard: dashboard, StartedAt: started.UTC()}); err != nil {
		ln.Close()
		return err
	}
	fmt.Fprintf(rc.stdout, "stockpipe is up (%s)\n  dashboard: %s\n  database:  %s\n  broker:    %s\n  press Ctrl-C to stop\n",
		time.Since(started).Round(time.Millisecond), dashboard, store.Redact(dbURL), kcfg.Brokers[0])

	ready := []web.Check{brokerCheck(kcfg), {Name: "processor", Check: func(context.Context) error {
		if proc.Assigned() == 0 {
			return errors.New("the processor owns no partitions yet")
		}
		return nil
	}}}
	var last stream.Stats
	lastAt := time.Now()
	stop := logEvery(rc, 5*time.Second, func() {
		s := proc.Stats()
		now := time.Now()
		rate := float64(s.Stored-last.Stored) / now.Sub(lastAt).Seconds()
		last, lastAt = s, now
		rc.log.Info("pipeline", "stored", s.Stored, "ticks_per_s", int(rate), "rejected", s.Rejected,
			"duplicates", s.Duplicates, "anomalies", s.Anomalies, "partitions", proc.Assigned())
	})
	if feedStats != nil {
		stopFeedLog := logEvery(rc, 5*time.Second, feedLogger(rc, feedStats, time.Now))
		defer stopFeedLog()
	}
	wcfg := cfg.hf.apply(web.Config{Pool: pool, Kafka: kcfg, Group: pcfg.Group, Metrics: metrics,
		Ready: ready, Scheduler: sched, DataDir: cfg.dataDir, ReplayDir: cfg.sf.replayDir})
	if feedStats != nil {
		wcfg.Feeds = func() []feed.Snapshot { return []feed.Snapshot{feedStats.Snapshot()} }
	}
	err = runComponents(rc, []component{
		{"scheduler", func(rc *runCtx) error { return runScheduler(rc, scfg) }},
		{"dashboard", func(rc *runCtx) error {
			return serveHTTP(rc, wcfg, ln)
		}},
		{"processor", func(rc *runCtx) error { return proc.Run(rc.ctx) }},
		source,
		{"disk watch", func(rc *runCtx) error { watchDisk(rc, cfg.dataDir, int64(cfg.minFree), cfg.g.rate); return nil }},
	})
	stop()
	rc.log.Info("stopped", "produced", produced, "stored", proc.Stats().Stored)
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// component is one part of up that runs until up stops.
type component struct {
	name string
	run  func(rc *runCtx) error
}

// runComponents runs the components until rc.ctx ends or one of them fails
// — returns an error, or returns at all while the others run on, which
// none is meant to do. The first failure is logged with the component's
// name and stops the others, and runComponents returns it; up then exits
// non-zero rather than run on without, say, its scheduler.
func runComponents(rc *runCtx, cs []component) error {
	g, gctx := errgroup.WithContext(rc.ctx)
	crc := *rc
	crc.ctx = gctx
	for _, c := range cs {
		g.Go(func() error {
			err := c.run(&crc)
			if gctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
				return nil // stopping, as asked
			}
			if err == nil {
				err = errors.New("stopped unexpectedly")
			}
			err = fmt.Errorf("%s: %w", c.name, err)
			rc.log.Error("a part of the pipeline failed; stopping everything", "component", c.name, "err", err)
			return err
		})
	}
	return g.Wait()
}

// upBytesPerTick is what a stored tick costs on disk under up: about 175
// bytes of table and indexes and 180 of the broker's log, measured at the
// default rate (the README's disk section).
const upBytesPerTick = 360

// watchDisk warns while the disk holding dir has less than minFree bytes
// free: a pipeline that fills the disk stops with PostgreSQL refusing
// writes, which is worse to recover from than a warning heeded early.
func watchDisk(rc *runCtx, dir string, minFree int64, rate float64) {
	var warned time.Time
	check := func() {
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			rc.log.Debug("could not read the free disk space", "dir", dir, "err", err)
			return
		}
		free := int64(st.Bavail) * int64(st.Bsize)
		if free >= minFree {
			warned = time.Time{}
			return
		}
		if !warned.IsZero() && time.Since(warned) < 10*time.Minute {
			return
		}
		warned = time.Now()
		perHour := int64(rate * 3600 * upBytesPerTick)
		rc.log.Warn(fmt.Sprintf("disk nearly full: %s free under %s (warning below --min-free-disk %s); at --rate %g this pipeline writes about %s an hour: free space, lower --rate or --retention, or move --data-dir",
			humanBytes(free), dir, byteSize(minFree), rate, humanBytes(perHour)))
	}
	check()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-rc.ctx.Done():
			return
		case <-t.C:
			check()
		}
	}
}

func isAddrInUse(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "listen"
}
