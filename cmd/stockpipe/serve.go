package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/web"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func serveCommand() *command {
	c := newCommand("serve", "serve the live dashboard and JSON API",
		"stockpipe serve --database-url postgres://stockpipe@127.0.0.1:5432/stockpipe --brokers 127.0.0.1:9092")
	url := c.fs.String("database-url", "", "PostgreSQL URL (or DATABASE_URL)")
	var kf kafkaFlags
	kf.register(c.fs, "Kafka brokers, for consumer lag on the dashboard (optional)")
	addr := c.fs.String("http", "127.0.0.1:8050", "address to serve HTTP on")
	group := c.fs.String("group", "stockpipe", "the processors' consumer group, for lag")
	c.run = func(rc *runCtx) error {
		var kcfg kafka.Config
		if kf.brokers != "" {
			var err error
			if kcfg, err = kf.config("stockpipe-serve"); err != nil {
				return err
			}
		}
		pool, err := openDB(rc, *url, 16)
		if err != nil {
			return err
		}
		defer pool.Close()
		ln, err := listenHTTP(*addr)
		if err != nil {
			return err
		}
		fmt.Fprintf(rc.stdout, "dashboard: http://%s/\n", ln.Addr())
		return serveHTTP(rc, pool, kcfg, *group, ln)
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

// serveHTTP runs the dashboard on ln until rc.ctx ends.
func serveHTTP(rc *runCtx, pool *pgxpool.Pool, kcfg kafka.Config, group string, ln net.Listener) error {
	srv, err := web.New(web.Config{Pool: pool, Kafka: kcfg, Group: group, Logger: rc.log, Version: version})
	if err != nil {
		ln.Close()
		return err
	}
	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		// No WriteTimeout: the event stream is long-lived; its handler
		// sets a deadline per write instead.
	}
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
