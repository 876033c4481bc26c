package web

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/stockpipe/stockpipe/internal/telemetry"
)

// Ops configures OpsHandler.
type Ops struct {
	// Metrics, if set, is served on /metrics.
	Metrics *telemetry.Metrics
	// Ready are the checks /readyz runs; it answers 200 when all pass.
	Ready []Check
	// Profiling serves /debug/pprof/: only for a loopback address, since
	// profiles show internals and cost CPU.
	Profiling bool
}

// OpsHandler serves the health checks and metrics of a process without a
// dashboard (stockpipe process --http): /healthz, /readyz and /metrics as
// the dashboard serves them, and /debug/pprof/ if asked.
func OpsHandler(o Ops) http.Handler {
	m := http.NewServeMux()
	addHealth(m, o.Metrics, func(w http.ResponseWriter, r *http.Request) { readyz(w, r, o.Ready) })
	if o.Profiling {
		m.HandleFunc("GET /debug/pprof/", pprof.Index)
		m.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		m.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		m.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return m
}

// OpsServer wraps an ops handler in a server with the dashboard's limits.
func OpsServer(h http.Handler) *http.Server {
	t := Timeouts{}.withDefaults()
	return &http.Server{Handler: h, ReadHeaderTimeout: t.ReadHeader, ReadTimeout: t.Read,
		WriteTimeout: 30 * time.Second, IdleTimeout: t.Idle, MaxHeaderBytes: MaxHeaderBytes}
}

// addHealth adds /healthz, /readyz and, with metrics, /metrics to m.
func addHealth(m *http.ServeMux, metrics *telemetry.Metrics, ready http.HandlerFunc) {
	m.HandleFunc("GET /readyz", ready)
	if metrics != nil {
		m.Handle("GET /metrics", metrics.Handler())
	}
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
}

// readyz runs checks and answers 200 with each one's result when all pass,
// 503 otherwise.
func readyz(w http.ResponseWriter, r *http.Request, checks []Check) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	res := map[string]string{}
	ready := true
	for _, c := range checks {
		if err := c.Check(ctx); err != nil {
			res[c.Name] = err.Error()
			ready = false
		} else {
			res[c.Name] = "ok"
		}
	}
	code := http.StatusOK
	if !ready {
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(struct {
		Ready  bool              `json:"ready"`
		Checks map[string]string `json:"checks"`
	}{ready, res})
}
