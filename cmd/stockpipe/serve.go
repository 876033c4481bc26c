package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/telemetry"
	"github.com/stockpipe/stockpipe/internal/web"
)

func serveCommand() *command {
	c := newCommand("serve", "serve the live dashboard and JSON API",
		"stockpipe serve --database-url postgres://stockpipe@127.0.0.1:5432/stockpipe --brokers 127.0.0.1:9092")
	url := c.fs.String("database-url", "", "PostgreSQL URL (or DATABASE_URL)")
	var kf kafkaFlags
	kf.register(c.fs, "Kafka brokers, for consumer lag on the dashboard (optional)")
	var hf httpFlags
	hf.register(c)
	group := c.fs.String("group", "stockpipe", "the processors' consumer group, for lag")
	var sf schedFlags
	sf.register(c, true)
	var pr peer
	pr.register(c)
	c.run = func(rc *runCtx) error {
		if err := hf.check(); err != nil {
			return err
		}
		if err := pr.brokers(rc, &kf, false); err != nil {
			return err
		}
		dbURL, err := pr.databaseURL(rc, *url)
		if err != nil {
			return err
		}
		var kcfg kafka.Config
		if kf.brokers != "" {
			if kcfg, err = kf.config(rc, "stockpipe-serve"); err != nil {
				return err
			}
		}
		pool, err := openDB(rc, dbURL, 16)
		if err != nil {
			return err
		}
		defer pool.Close()
		ln, err := listenHTTP(hf.addr)
		if err != nil {
			return err
		}
		fmt.Fprintf(rc.stdout, "dashboard: http://%s/\n", ln.Addr())
		var ready []web.Check
		if len(kcfg.Brokers) > 0 {
			ready = append(ready, brokerCheck(kcfg))
		}
		sched, err := dag.NewClient(sf.config(pool, kcfg, *group, rc.log))
		if err != nil {
			return err
		}
		return serveHTTP(rc, hf.apply(web.Config{Pool: pool, Kafka: kcfg, Group: *group, Metrics: telemetry.New(),
			Ready: ready, Scheduler: sched, ReplayDir: sf.replayDir}), ln)
	}
	return c
}

func listenHTTP(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http %s: %w (pick another address, e.g. --http 127.0.0.1:8051)", addr, err)
	}
	return ln, nil
}

// httpFlags configure an HTTP listener and its protection.
type httpFlags struct {
	addr         string
	token        string
	insecure     bool
	allowedHosts string
	liveRate     int
}

func (h *httpFlags) register(c *command) {
	c.fs.StringVar(&h.addr, "http", "127.0.0.1:8050", "address to serve the dashboard and API on")
	c.fs.StringVar(&h.token, "auth-token", "", "token required on every state-changing request (Authorization: Bearer …); needed to serve beyond loopback")
	c.fs.BoolVar(&h.insecure, "insecure", false, "allow serving beyond loopback without --auth-token")
	c.fs.StringVar(&h.allowedHosts, "allowed-hosts", "", "host names the dashboard answers to besides loopback addresses and localhost (comma-separated; e.g. the name a reverse proxy forwards); given, they are enforced on any bind")
	c.fs.IntVar(&h.liveRate, "live-rate", web.DefaultLiveRate, "live updates per symbol per second a browser gets (0 = every one)")
}

// apply sets the web configuration's access rules from the flags: the
// token, and the Host check against DNS rebinding, on whenever the server
// is bound to loopback or names are listed.
func (h *httpFlags) apply(cfg web.Config) web.Config {
	cfg.AuthToken = h.token
	cfg.RequireToken = !h.loopback()
	cfg.AllowedHosts = splitList(h.allowedHosts)
	cfg.RestrictHosts = h.loopback() || len(cfg.AllowedHosts) > 0
	cfg.LiveRate = h.liveRate
	return cfg
}

// loopback reports whether the address only accepts local connections.
func (h *httpFlags) loopback() bool {
	host, _, err := net.SplitHostPort(h.addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// check refuses to expose the server beyond loopback without a token.
func (h *httpFlags) check() error {
	if _, _, err := net.SplitHostPort(h.addr); err != nil {
		return fmt.Errorf("--http %q is not host:port (for example 127.0.0.1:8050)", h.addr)
	}
	if h.liveRate < 0 {
		return fmt.Errorf("--live-rate %d: give updates per symbol per second, or 0 for every one", h.liveRate)
	}
	if !h.loopback() && h.token == "" && !h.insecure {
		return fmt.Errorf("--http %s is reachable beyond this machine: set --auth-token (or STOCKPIPE_AUTH_TOKEN), or pass --insecure to serve without one", h.addr)
	}
	return nil
}

// brokerCheck is a readiness check that the brokers answer.
func brokerCheck(kcfg kafka.Config) web.Check {
	return web.Check{Name: "broker", Check: func(ctx context.Context) error {
		cl, err := kgo.NewClient(kcfg.Opts()...)
		if err != nil {
			return err
		}
		defer cl.Close()
		return cl.Ping(ctx)
	}}
}

// serveHTTP runs the dashboard on ln until rc.ctx ends.
func serveHTTP(rc *runCtx, cfg web.Config, ln net.Listener) error {
	cfg.Logger, cfg.Version = rc.log, version()
	srv, err := web.New(cfg)
	if err != nil {
		ln.Close()
		return err
	}
	// Timeouts and header limits are the web package's, tested there.
	hs := srv.HTTPServer()
	ctx, cancel := context.WithCancel(rc.ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Run(ctx) })
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		cancel()
		wg.Wait()
		return fmt.Errorf("serving HTTP: %w", err)
	}
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer scancel()
	// Event streams never finish on their own; Shutdown's deadline ends them.
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		rc.log.Warn("stopping HTTP server", "err", err)
	}
	_ = hs.Close()
	wg.Wait()
	return nil
}
