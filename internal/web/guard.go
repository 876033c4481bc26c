package web

import (
	"context"
	"crypto/subtle"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Check is one readiness condition for /readyz.
type Check struct {
	Name  string
	Check func(ctx context.Context) error
}

// maxBody bounds request bodies; stockpipe's requests carry little or none.
const maxBody = 1 << 20

// safeMethod reports methods that change nothing and need no token.
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// Handler returns the HTTP handler: security headers on every response, a
// bound on request bodies, the Host header check (DNS rebinding), the
// cross-origin check and JSON-only bodies on state-changing requests, the
// token on them when one is configured, and request metrics.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		if !s.hostAllowed(r.Host) {
			writeError(w, http.StatusMisdirectedRequest, "this server does not answer to the name "+strconv.Quote(r.Host)+
				": open it as http://127.0.0.1 or http://localhost, or list the name with --allowed-hosts")
			s.countRequest("wrong_host", http.StatusMisdirectedRequest, 0)
			return
		}
		if !safeMethod(r.Method) {
			if err := s.csrf.Check(r); err != nil {
				writeError(w, http.StatusForbidden, "cross-origin request refused: state-changing requests are accepted only from this server's own pages (or from clients that send no Origin, such as curl)")
				s.countRequest("cross_origin", http.StatusForbidden, 0)
				return
			}
			if hasBody(r) && !isJSON(r.Header.Get("Content-Type")) {
				writeError(w, http.StatusUnsupportedMediaType, "the body must be JSON, sent with Content-Type: application/json")
				s.countRequest("not_json", http.StatusUnsupportedMediaType, 0)
				return
			}
		}
		if !safeMethod(r.Method) && !s.authorized(r) {
			h.Set("WWW-Authenticate", `Bearer realm="stockpipe"`)
			writeError(w, http.StatusUnauthorized, "this request changes state and needs the server's token: send 'Authorization: Bearer <token>' (see --auth-token)")
			s.countRequest("unauthorized", http.StatusUnauthorized, 0)
			return
		}
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		start := time.Now()
		s.mux.ServeHTTP(rec, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		took := time.Since(start)
		if route == "GET /api/stream" {
			took = 0 // a stream lasts as long as the browser stays
		}
		s.countRequest(route, rec.code, took)
	})
}

func (s *Server) authorized(r *http.Request) bool {
	if s.cfg.AuthToken == "" {
		return !s.cfg.RequireToken
	}
	return s.hasToken(r)
}

// hasToken reports whether r carries the server's token. The scheme is
// case-insensitive (RFC 9110).
func (s *Server) hasToken(r *http.Request) bool {
	if s.cfg.AuthToken == "" {
		return false
	}
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return ok && strings.EqualFold(scheme, "Bearer") &&
		subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(s.cfg.AuthToken)) == 1
}

// hostAllowed reports whether the Host header names this server. A server
// bound to loopback answers only to loopback addresses, localhost and the
// names listed in Config.AllowedHosts: a page of any other name that
// resolves to 127.0.0.1 (DNS rebinding) would otherwise be same-origin with
// the API and could read it.
func (s *Server) hostAllowed(host string) bool {
	if !s.cfg.RestrictHosts {
		return true
	}
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	name = strings.ToLower(strings.TrimSuffix(strings.Trim(name, "[]"), "."))
	if name == "localhost" {
		return true
	}
	if ip := net.ParseIP(name); ip != nil && ip.IsLoopback() {
		return true
	}
	for _, a := range s.cfg.AllowedHosts {
		if strings.EqualFold(strings.TrimSuffix(a, "."), name) {
			return true
		}
	}
	return false
}

// hasBody reports whether a request carries a body.
func hasBody(r *http.Request) bool {
	return r.ContentLength > 0 || r.ContentLength < 0 && len(r.TransferEncoding) > 0
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

func (s *Server) countRequest(route string, code int, took time.Duration) {
	m := s.cfg.Metrics
	if m == nil {
		return
	}
	m.HTTP.WithLabelValues(route, strconv.Itoa(code)).Inc()
	if took > 0 {
		m.HTTPTime.WithLabelValues(route).Observe(took.Seconds())
	}
}

// statusRecorder remembers the status code; Unwrap lets
// http.ResponseController reach the real writer's Flush and deadlines.
type statusRecorder struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.code, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// readyz answers 200 when the database answers and every configured check
// passes, 503 otherwise, with each check's result.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	readyz(w, r, append([]Check{{Name: "database", Check: s.read.Ping}}, s.cfg.Ready...))
}
