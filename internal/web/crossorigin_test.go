//go:build linux

package web_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/dag"
	fx "github.com/stockpipe/stockpipe/internal/fixture"
	"github.com/stockpipe/stockpipe/internal/job"
	"github.com/stockpipe/stockpipe/internal/web"
)

// guardEnv is a server bound to loopback as `stockpipe up` runs it on a
// laptop: no token, the shipped DAGs behind an insert-only client, a replay
// directory, and a file outside it that must never be opened.
type guardEnv struct {
	hs      *httptest.Server
	pool    *pgxpool.Pool
	replay  string // the replay directory
	secret  string // a file outside it
	watch   *openWatch
	baseURL string
}

func newGuardEnv(t *testing.T, mod func(*web.Config)) *guardEnv {
	t.Helper()
	ctx := context.Background()
	pool := fx.DB(t, 4)
	log := slog.New(slog.DiscardHandler)
	tmp := t.TempDir()
	e := &guardEnv{pool: pool, replay: filepath.Join(tmp, "replay"), secret: filepath.Join(tmp, "outside", "secret.csv")}
	for _, d := range []string{e.replay, filepath.Dir(e.secret)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	csv := "Date,Open,High,Low,Close,Adj Close,Volume\n2026-11-02,1,2,0.5,1.5,1.5,1000\n"
	if err := os.WriteFile(filepath.Join(e.replay, "good.csv"), []byte(csv), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.secret, []byte(csv), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(e.secret, filepath.Join(e.replay, "link.csv")); err != nil {
		t.Fatal(err)
	}
	e.watch = watchOpens(t, e.secret)
	client, err := dag.NewClient(dag.Config{Pool: pool, Logger: log,
		DAGs: job.Shipped(job.Deps{Pool: pool, ReplayDir: e.replay})})
	if err != nil {
		t.Fatal(err)
	}
	cfg := web.Config{Pool: pool, Scheduler: client, Logger: log, RestrictHosts: true, ReplayDir: e.replay}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := web.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = srv.Run(rctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	e.hs = httptest.NewServer(srv.Handler())
	t.Cleanup(e.hs.Close)
	e.baseURL = e.hs.URL
	return e
}

func (e *guardEnv) runs(t *testing.T) int64 {
	t.Helper()
	var n int64
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM dag_runs`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// do sends a request with the given headers ("Host" sets the Host header)
// and returns the status and body.
func (e *guardEnv) do(t *testing.T, method, path, body string, headers map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.baseURL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if path == "/api/stream" {
		return resp.StatusCode, "" // a stream that was let through never ends
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestCrossSiteRequestsRefused sends, to every state-changing route, what
// a page on another site can make a browser send — the two curl
// commands among them — and checks each is refused with no run created,
// while the server's own pages and non-browser clients still get through.
func TestCrossSiteRequestsRefused(t *testing.T) {
	e := newGuardEnv(t, nil)
	self := e.baseURL
	routes := []string{"/api/dags/market_close/trigger", "/api/dags/retention/trigger",
		"/api/dags/pipeline_health/trigger", "/api/dags/backfill/trigger"}
	refused := []struct {
		name    string
		body    string
		headers map[string]string
		want    int
	}{
		{"the issue's backfill of /etc/passwd", `{"params":{"file":"/etc/passwd","symbol":"PWN"}}`,
			map[string]string{"Content-Type": "text/plain", "Origin": "http://evil.example"}, http.StatusForbidden},
		{"the issue's retention of 1s", `{"params":{"retention":"1s"}}`,
			map[string]string{"Content-Type": "text/plain", "Origin": "http://evil.example"}, http.StatusForbidden},
		{"cross-origin JSON", `{}`, map[string]string{"Content-Type": "application/json", "Origin": "http://evil.example"}, http.StatusForbidden},
		{"cross-site fetch metadata", `{}`, map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"same-site other origin", `{}`, map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.2:1"}, http.StatusForbidden},
		{"a simple form post", "params=x", map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Sec-Fetch-Site": "same-origin"}, http.StatusUnsupportedMediaType},
		{"text/plain from the own origin", `{}`, map[string]string{"Content-Type": "text/plain", "Sec-Fetch-Site": "same-origin", "Origin": self}, http.StatusUnsupportedMediaType},
	}
	for _, route := range routes {
		for _, tc := range refused {
			if code, body := e.do(t, http.MethodPost, route, tc.body, tc.headers); code != tc.want {
				t.Errorf("%s to %s: %d %s, want %d", tc.name, route, code, body, tc.want)
			}
		}
	}
	if n := e.runs(t); n != 0 {
		t.Fatalf("%d runs created by refused requests", n)
	}
	// The server's own page (what the /dags button sends) and a client
	// with no Origin (curl, scripts) are let through. (The backfill's
	// symbol is required: without one the trigger is refused, 400, before
	// any run exists.)
	for _, route := range routes {
		params := ""
		if route == "/api/dags/backfill/trigger" {
			params = `,"params":{"symbol":"AAPL"}`
		}
		own := map[string]string{"Content-Type": "application/json", "Origin": self, "Sec-Fetch-Site": "same-origin"}
		if code, body := e.do(t, http.MethodPost, route, `{"date":"2026-11-02"`+params+`}`, own); code != http.StatusAccepted {
			t.Errorf("same-origin trigger of %s: %d %s", route, code, body)
		}
		if code, body := e.do(t, http.MethodPost, route, `{"date":"2026-11-03"`+params+`}`, map[string]string{"Content-Type": "application/json"}); code != http.StatusAccepted {
			t.Errorf("trigger of %s without Origin: %d %s", route, code, body)
		}
	}
	if n := e.runs(t); n != int64(2*len(routes)) {
		t.Fatalf("%d runs, want %d", n, 2*len(routes))
	}
	e.watch.none(t)
}

// TestDNSRebindingRefused sends requests that name another host, as a page
// of a hostile name resolving to 127.0.0.1 makes the browser do: the
// loopback-bound server answers none of them, the event stream included,
// and answers its own names and the listed ones.
func TestDNSRebindingRefused(t *testing.T) {
	e := newGuardEnv(t, func(c *web.Config) { c.AllowedHosts = []string{"dash.example"} })
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(e.baseURL, "http://"))
	paths := []string{"/", "/api/symbols", "/api/pipeline", "/api/anomalies", "/api/dags", "/api/stream", "/dags", "/static/app.css"}
	for _, p := range paths {
		for _, host := range []string{"evil.example:" + port, "evil.example", "127.0.0.1.evil.example:" + port, "localhost.evil.example:" + port} {
			if code, body := e.do(t, http.MethodGet, p, "", map[string]string{"Host": host}); code != http.StatusMisdirectedRequest {
				t.Errorf("GET %s with Host %s: %d %.80s, want 421", p, host, code, body)
			}
		}
		for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "LOCALHOST:" + port, "[::1]:" + port, "127.0.0.2:" + port, "dash.example:" + port} {
			if code, body := e.do(t, http.MethodGet, p, "", map[string]string{"Host": host}); code != http.StatusOK {
				t.Errorf("GET %s with Host %s: %d %.80s, want 200", p, host, code, body)
			}
		}
	}
	code, _ := e.do(t, http.MethodPost, "/api/dags/retention/trigger", `{}`,
		map[string]string{"Host": "evil.example:" + port, "Origin": "http://evil.example:" + port, "Sec-Fetch-Site": "same-origin", "Content-Type": "application/json"})
	if code != http.StatusMisdirectedRequest || e.runs(t) != 0 {
		t.Fatalf("a rebound page's trigger: %d, %d runs", code, e.runs(t))
	}
}

// TestBackfillFileOnlyBelowReplayDir names files for the backfill from the
// web: only one below the replay directory is accepted; one outside it,
// reached with "..", or through a symbolic link that leads out is refused
// before a run exists, and the file outside is never opened.
func TestBackfillFileOnlyBelowReplayDir(t *testing.T) {
	e := newGuardEnv(t, nil)
	trigger := func(file string) (int, string) {
		return e.do(t, http.MethodPost, "/api/dags/backfill/trigger", `{"params":{"symbol":"HIST","file":`+quote(file)+`}}`,
			map[string]string{"Content-Type": "application/json"})
	}
	for _, bad := range []string{e.secret, "../outside/secret.csv", "link.csv", "./../outside/secret.csv", filepath.Join(e.replay, "..", "outside", "secret.csv")} {
		if code, body := trigger(bad); code != http.StatusForbidden || !strings.Contains(body, "outside the replay directory") {
			t.Errorf("file %q: %d %s, want 403 naming the replay directory", bad, code, body)
		}
	}
	if code, body := trigger("missing.csv"); code != http.StatusBadRequest {
		t.Errorf("a missing file: %d %s", code, body)
	}
	if n := e.runs(t); n != 0 {
		t.Fatalf("%d runs created for refused files", n)
	}
	e.watch.none(t)
	for _, good := range []string{"good.csv", filepath.Join(e.replay, "good.csv")} {
		if code, body := trigger(good); code != http.StatusAccepted {
			t.Errorf("file %q below the replay directory: %d %s", good, code, body)
		}
	}
	// Without a replay directory the web may name no file at all.
	bare := newGuardEnv(t, func(c *web.Config) { c.ReplayDir = "" })
	code, body := bare.do(t, http.MethodPost, "/api/dags/backfill/trigger", `{"params":{"symbol":"HIST","file":"good.csv"}}`,
		map[string]string{"Content-Type": "application/json"})
	if code != http.StatusForbidden || !strings.Contains(body, "--replay-dir") || bare.runs(t) != 0 {
		t.Fatalf("a file without a replay directory: %d %s", code, body)
	}
}

// TestWebParamsCheckedBeforeARun checks the other parameters the web may
// not set freely: unknown names, and a retention under an hour without the
// server's token.
func TestWebParamsCheckedBeforeARun(t *testing.T) {
	e := newGuardEnv(t, nil)
	post := func(route, body string, headers map[string]string) int {
		h := map[string]string{"Content-Type": "application/json"}
		for k, v := range headers {
			h[k] = v
		}
		code, _ := e.do(t, http.MethodPost, route, body, h)
		return code
	}
	if code := post("/api/dags/retention/trigger", `{"params":{"retention":"1s"}}`, nil); code != http.StatusForbidden {
		t.Errorf("retention 1s without a token: %d", code)
	}
	if code := post("/api/dags/retention/trigger", `{"params":{"retention":"banana"}}`, nil); code != http.StatusBadRequest {
		t.Errorf("retention banana: %d", code)
	}
	if code := post("/api/dags/market_close/trigger", `{"params":{"max_reject_rat":"0.2"}}`, nil); code != http.StatusBadRequest {
		t.Errorf("a misspelt parameter: %d", code)
	}
	if n := e.runs(t); n != 0 {
		t.Fatalf("%d runs created by refused parameters", n)
	}
	if code := post("/api/dags/retention/trigger", `{"params":{"retention":"2h"}}`, nil); code != http.StatusAccepted {
		t.Errorf("retention 2h: %d", code)
	}
	tok := newGuardEnv(t, func(c *web.Config) { c.AuthToken = "s3cret" })
	code, _ := tok.do(t, http.MethodPost, "/api/dags/retention/trigger", `{"params":{"retention":"1s"}}`,
		map[string]string{"Content-Type": "application/json", "Authorization": "bearer s3cret"})
	if code != http.StatusAccepted || tok.runs(t) != 1 {
		t.Errorf("retention 1s with the token (lower-case scheme): %d", code)
	}
}

func quote(s string) string {
	return `"` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `"`, `\"`) + `"`
}

// openWatch reports every open of one file, through inotify: "nothing
// opened" is checked, not assumed.
type openWatch struct {
	fd   int
	path string
}

func watchOpens(t *testing.T, path string) *openWatch {
	t.Helper()
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if _, err := syscall.InotifyAddWatch(fd, path, syscall.IN_OPEN|syscall.IN_ACCESS); err != nil {
		t.Fatal(err)
	}
	return &openWatch{fd: fd, path: path}
}

// none fails the test if the file was opened since the watch began.
func (w *openWatch) none(t *testing.T) {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := syscall.Read(w.fd, buf)
	if err == syscall.EAGAIN {
		return
	}
	t.Fatalf("%s was opened or read (%d bytes of inotify events, %v)", w.path, n, err)
}
