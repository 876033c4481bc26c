package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/orchestrate"
	"github.com/stockpipe/stockpipe/internal/pgembed"
	"github.com/stockpipe/stockpipe/internal/store"
	"github.com/stockpipe/stockpipe/internal/stream"
	"github.com/stockpipe/stockpipe/internal/telemetry"
	"github.com/stockpipe/stockpipe/internal/web"
)

func upCommand() *command {
	c := newCommand("up", "run everything in one process: broker, PostgreSQL, generator and processor",
		"stockpipe up --data-dir ./data --rate 2000")
	dataDir := c.fs.String("data-dir", "./data", "where the embedded broker and PostgreSQL keep their data")
	var kf kafkaFlags
	kf.register(c.fs, "use this Kafka cluster instead of the embedded broker")
	url := c.fs.String("database-url", "", "use this PostgreSQL instead of the embedded one (or DATABASE_URL)")
	var hf httpFlags
	hf.register(c)
	listen := c.fs.String("broker-listen", "127.0.0.1:9092", "address of the embedded broker (a free port is used if this one is taken)")
	partitions := c.fs.Int("partitions", 6, "partitions of the ticks topic when it is created")
	var g genFlags
	g.register(c, 2000)
	var pf processFlags
	pf.register(c)
	var sf schedFlags
	sf.register(c, false)
	c.run = func(rc *runCtx) error {
		sf.partitions = *partitions
		g.speed, g.resume = 1, true
		if err := g.check(); err != nil {
			return err
		}
		if err := hf.check(); err != nil {
			return err
		}
		return runUp(rc, *dataDir, &kf, *url, *listen, &hf, int32(*partitions), &g, &pf, &sf)
	}
	return c
}

func runUp(rc *runCtx, dataDir string, kf *kafkaFlags, dbURL, listen string, hf *httpFlags, partitions int32, g *genFlags, pf *processFlags, sf *schedFlags) error {
	metrics := telemetry.New()
	started := time.Now()
	if dbURL == "" {
		pg, err := pgembed.Start(rc.ctx, pgembed.Config{Dir: filepath.Join(dataDir, "postgres"), Logger: rc.log})
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
		dbURL = pg.URL()
	}
	var kcfg kafka.Config
	if kf.brokers == "" {
		b, err := startBroker(rc, listen, dataDir, partitions)
		if err != nil && isAddrInUse(err) {
			rc.log.Warn("broker address taken; using a free port", "address", listen)
			host, _, _ := net.SplitHostPort(listen)
			b, err = startBroker(rc, net.JoinHostPort(host, "0"), dataDir, partitions)
		}
		if err != nil {
			return err
		}
		defer b.Close()
		kcfg = kafka.Config{Brokers: b.Addrs(), ClientID: "stockpipe-up"}
	} else {
		var err error
		if kcfg, err = kf.config("stockpipe-up"); err != nil {
			return err
		}
		if err := ensureTopics(rc, kcfg, partitions); err != nil {
			return err
		}
	}
	pool, err := openDB(rc, dbURL, 24)
	if err != nil {
		return err
	}
	defer pool.Close()

	sim, closeTruth, err := g.simulator(rc, kcfg)
	if err != nil {
		return err
	}
	defer closeTruth()

	pcfg := pf.config()
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

	scfg := sf.config(pool, kcfg, pcfg.Group, rc.log)
	sched, err := orchestrate.NewClient(scfg)
	if err != nil {
		return err
	}
	ln, err := listenHTTP(hf.addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(rc.stdout, "stockpipe is up (%s)\n  dashboard: http://%s/\n  database:  %s\n  broker:    %s\n  press Ctrl-C to stop\n",
		time.Since(started).Round(time.Millisecond), ln.Addr(), store.Redact(dbURL), kcfg.Brokers[0])

	var (
		wg       sync.WaitGroup
		produced int64
		genErr   error
		procErr  error
		webErr   error
		schedErr error
	)
	wg.Go(func() { schedErr = runScheduler(rc, scfg) })
	ready := []web.Check{brokerCheck(kcfg), {Name: "processor", Check: func(context.Context) error {
		if proc.Assigned() == 0 {
			return errors.New("the processor owns no partitions yet")
		}
		return nil
	}}}
	wg.Go(func() {
		webErr = serveHTTP(rc, web.Config{Pool: pool, Kafka: kcfg, Group: pcfg.Group, Metrics: metrics,
			AuthToken: hf.token, RequireToken: !hf.loopback(), Ready: ready, Scheduler: sched}, ln)
	})
	wg.Go(func() { procErr = proc.Run(rc.ctx) })
	wg.Go(func() { produced, genErr = produce(rc, kcfg, sim, g.pace(rc), metrics) })
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
	wg.Wait()
	stop()
	rc.log.Info("stopped", "produced", produced, "stored", proc.Stats().Stored)
	return errors.Join(genErr, procErr, webErr, schedErr)
}

func isAddrInUse(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "listen"
}
