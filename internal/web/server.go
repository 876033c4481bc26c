// Package web is stockpipe's HTTP side: the dashboard pages, the JSON API,
// the Server-Sent Events stream fed by PostgreSQL LISTEN/NOTIFY, and health
// checks.
package web

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/store"
)

//go:embed static templates
var assets embed.FS

// Config configures a Server.
type Config struct {
	Pool *pgxpool.Pool
	// Kafka, if it has brokers, lets the status stream report consumer lag.
	Kafka kafka.Config
	// Group is the processors' consumer group, for lag; default "stockpipe".
	Group   string
	Logger  *slog.Logger
	Version string // appended to asset URLs so browsers refetch after an upgrade
}

// Server serves the dashboard and API.
type Server struct {
	cfg    Config
	log    *slog.Logger
	read   *store.Reader
	hub    *hub
	cache  *candleCache
	pages  *template.Template
	static http.Handler
	mux    *http.ServeMux
}

// New returns a Server. Call Run to feed the live stream.
func New(cfg Config) (*Server, error) {
	if cfg.Pool == nil {
		return nil, errors.New("web: no database pool")
	}
	if cfg.Group == "" {
		cfg.Group = "stockpipe"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	pages, err := template.ParseFS(assets, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("parsing page templates: %w", err)
	}
	static, err := fs.Sub(assets, "static")
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "web"),
		read:   store.NewReader(cfg.Pool),
		hub:    newHub(),
		cache:  newCandleCache(),
		pages:  pages,
		static: http.StripPrefix("/static/", http.FileServerFS(static)),
	}
	s.hub.onCandle = func(sym, iv string) { s.cache.bump(sym + "|" + iv) }
	s.routes()
	return s, nil
}

func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", s.overview)
	m.HandleFunc("GET /symbol/{symbol}", s.symbolPage)
	m.Handle("GET /static/", cacheFor(time.Hour, s.static))
	m.HandleFunc("GET /api/symbols", s.apiSymbols)
	m.HandleFunc("GET /api/candles", s.apiCandles)
	m.HandleFunc("GET /api/ticks", s.apiTicks)
	m.HandleFunc("GET /api/anomalies", s.apiAnomalies)
	m.HandleFunc("GET /api/stream", s.apiStream)
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	m.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API endpoint: "+r.URL.Path)
	})
	s.mux = m
}

// Handler returns the HTTP handler with the security headers every response
// carries.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		s.mux.ServeHTTP(w, r)
	})
}

// Run feeds the live stream from PostgreSQL notifications and publishes
// status once a second, until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	go s.status(ctx)
	return s.listen(ctx)
}

func cacheFor(d time.Duration, h http.Handler) http.Handler {
	v := fmt.Sprintf("public, max-age=%d", int(d.Seconds()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", v)
		h.ServeHTTP(w, r)
	})
}
