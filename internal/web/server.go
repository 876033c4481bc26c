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
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/feed"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/store"
	"github.com/stockpipe/stockpipe/internal/telemetry"
)

//go:embed static templates
var assets embed.FS

// Config configures a Server.
type Config struct {
	Pool *pgxpool.Pool
	// Kafka, if it has brokers, lets the status stream report consumer lag.
	Kafka kafka.Config
	// Group is the processors' consumer group, for lag; default "stockpipe".
	Group  string
	Logger *slog.Logger
	// Version is shown in every page's footer ("stockpipe <version>") and
	// appended to asset URLs so browsers refetch after an upgrade;
	// default "dev".
	Version string
	// DataDir, if set, is the directory holding the server's data (up's
	// --data-dir): the pipeline page shows its size and the free space on
	// its disk. Empty shows neither.
	DataDir string
	// Metrics, if set, is served on /metrics and records HTTP requests.
	Metrics *telemetry.Metrics
	// AuthToken, if set, must accompany every state-changing request as
	// "Authorization: Bearer <token>".
	AuthToken string
	// RequireToken refuses state-changing requests when no AuthToken is
	// set; the command sets it when the server is reachable beyond
	// loopback.
	RequireToken bool
	// RestrictHosts answers only requests whose Host header is a loopback
	// address, localhost or one of AllowedHosts (421 otherwise), against
	// DNS rebinding; the command sets it when the server is bound to
	// loopback or AllowedHosts is given.
	RestrictHosts bool
	// AllowedHosts are further names the server answers to (without the
	// port), e.g. the name a reverse proxy forwards.
	AllowedHosts []string
	// ReplayDir is the directory below which a DAG triggered from the web
	// may name a file to replay (the backfill DAG's file parameter); empty
	// means the web may name none.
	ReplayDir string
	// Feeds, if set, reports the live market-data connectors running in
	// this process, for the connector panel on /pipeline.
	Feeds func() []feed.Snapshot
	// Ready are the checks /readyz runs besides the database's.
	Ready []Check
	// Scheduler, if set, backs /dags and the DAG API (a client suffices:
	// runs are executed by scheduler nodes).
	Scheduler *dag.Scheduler
	// Timeouts bound how long a client may hold a connection; zero fields
	// take the defaults. They apply to the server HTTPServer returns.
	Timeouts Timeouts
	// LiveRate is how many updates per symbol per second each browser gets
	// of a symbol's price and of each of its forming candles: of those
	// arriving within 1/LiveRate s, the newest is sent and the others are
	// dropped. Final candles, anomalies and every other event always
	// arrive, in order. 0 sends every update; serve and up default to
	// DefaultLiveRate.
	LiveRate int
}

// Timeouts bound how long a client may take over its part of a connection.
// There is no write timeout: the event stream is long-lived, and its
// handler sets a deadline per write instead.
type Timeouts struct {
	// ReadHeader bounds reading the request line and headers: a client
	// sending them a byte at a time (slowloris) is cut off. Default 5 s.
	ReadHeader time.Duration
	// Read bounds reading a whole request, body included. Default 10 s.
	Read time.Duration
	// Idle bounds a kept-alive connection between requests. Default 60 s.
	Idle time.Duration
}

// Default timeouts, and the bound on the request line and headers: more
// than any browser sends, small enough that many clients cannot pin much
// memory. Larger requests are answered 431.
const (
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 10 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	MaxHeaderBytes           = 16 << 10
)

func (t Timeouts) withDefaults() Timeouts {
	if t.ReadHeader <= 0 {
		t.ReadHeader = DefaultReadHeaderTimeout
	}
	if t.Read <= 0 {
		t.Read = DefaultReadTimeout
	}
	if t.Idle <= 0 {
		t.Idle = DefaultIdleTimeout
	}
	return t
}

// HTTPServer returns an http.Server serving Handler with the configured
// timeouts and MaxHeaderBytes; call its Serve with a listener.
func (s *Server) HTTPServer() *http.Server {
	t := s.cfg.Timeouts.withDefaults()
	return &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		IdleTimeout:       t.Idle,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
}

// Server serves the dashboard and API.
type Server struct {
	cfg   Config
	log   *slog.Logger
	read  *store.Reader
	hub   *hub
	cache *candleCache
	mon   *monitor
	adm   *kadm.Client // nil without brokers
	admCl *kgo.Client

	sampling sync.Mutex // one pipeline sample at a time
	disk     *diskUsage // nil without a DataDir
	stat     statusCache
	live     atomic.Bool // the live stream's LISTEN is in place
	// csrf refuses state-changing requests from other origins' pages
	// (Sec-Fetch-Site, else Origin against Host): net/http's own check.
	csrf *http.CrossOriginProtection

	livePeriod    time.Duration // least time between conflated updates of a symbol; 0 none
	listening     chan struct{} // closed once the live stream's LISTEN is in place
	listeningOnce sync.Once
	pages         *template.Template
	static        http.Handler
	mux           *http.ServeMux
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
	if cfg.LiveRate < 0 {
		return nil, fmt.Errorf("web: live rate %d: must be 0 (every update) or more", cfg.LiveRate)
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
		csrf:  http.NewCrossOriginProtection(),
		cfg:   cfg,
		log:   cfg.Logger.With("component", "web"),
		read:  store.NewReader(cfg.Pool),
		hub:   newHub(),
		cache: newCandleCache(),
		mon:   &monitor{},

		listening: make(chan struct{}),
		pages:     pages,
		static:    http.StripPrefix("/static/", http.FileServerFS(static)),
	}
	if cfg.DataDir != "" {
		s.disk = &diskUsage{dir: cfg.DataDir}
	}
	if cfg.LiveRate > 0 {
		s.livePeriod = time.Second / time.Duration(cfg.LiveRate)
	}
	s.hub.onCandle = func(sym, iv string) { s.cache.bump(sym + "|" + iv) }
	s.hub.onBatch = s.mon.batch
	if len(cfg.Kafka.Brokers) > 0 {
		cl, err := kgo.NewClient(cfg.Kafka.Opts()...)
		if err != nil {
			return nil, fmt.Errorf("creating Kafka admin client: %w", err)
		}
		s.admCl, s.adm = cl, kadm.NewClient(cl)
	}
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
	m.HandleFunc("GET /api/pipeline", s.apiPipeline)
	m.HandleFunc("GET /api/status", s.apiStatus)
	m.HandleFunc("GET /api/dags", s.apiDAGs)
	m.HandleFunc("GET /api/dags/runs", s.apiDAGRuns)
	m.HandleFunc("GET /api/dags/runs/{id}", s.apiDAGRun)
	m.HandleFunc("POST /api/dags/{name}/trigger", s.apiTrigger)
	m.HandleFunc("GET /dags", s.dagsPage)
	m.HandleFunc("GET /dags/run/{id}", s.runPage)
	m.HandleFunc("GET /pipeline", func(w http.ResponseWriter, _ *http.Request) {
		s.render(w, http.StatusOK, "pipeline.html", struct{ Title, Version string }{"stockpipe — pipeline", s.cfg.Version})
	})
	addHealth(m, s.cfg.Metrics, s.readyz)
	m.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API endpoint: "+r.URL.Path)
	})
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.notFound(w, "There is no page at "+r.URL.Path+".")
	})
	s.mux = m
}

// Listening is closed once the server receives live updates: batches
// committed after that reach its stream.
func (s *Server) Listening() <-chan struct{} { return s.listening }

// Run feeds the live stream from PostgreSQL notifications and publishes
// status once a second, until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	if s.admCl != nil {
		defer s.admCl.Close()
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.status(ctx) })
	wg.Go(func() { s.pipelineLoop(ctx, s.adm) })
	wg.Go(func() { s.watchRuns(ctx) })
	return s.listen(ctx)
}

func cacheFor(d time.Duration, h http.Handler) http.Handler {
	v := fmt.Sprintf("public, max-age=%d", int(d.Seconds()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", v)
		h.ServeHTTP(w, r)
	})
}
