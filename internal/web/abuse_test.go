package web_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/stockpipe/stockpipe/internal/analytics"
	"github.com/stockpipe/stockpipe/internal/candle"
	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/store"
	"github.com/stockpipe/stockpipe/internal/telemetry"
	"github.com/stockpipe/stockpipe/internal/web"
)

// TestThousandStreamClients connects 1,000 event-stream clients at once,
// commits a batch, checks every client receives it, disconnects them all,
// and checks the server's goroutines return to where they were.
func TestThousandStreamClients(t *testing.T) {
	f := newFixture(t)
	tr := &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: 10}
	client := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	settle := func() int {
		// Goroutines of closed connections take a moment to exit; wait
		// until the count stops falling.
		n := runtime.NumGoroutine()
		for range 50 {
			time.Sleep(20 * time.Millisecond)
			m := runtime.NumGoroutine()
			if m >= n {
				return m
			}
			n = m
		}
		return n
	}
	before := settle()

	const clients = 1000
	ctx, cancel := context.WithCancel(context.Background())
	var ready, got sync.WaitGroup
	ready.Add(clients)
	got.Add(clients)
	errs := make(chan error, clients)
	for range clients {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", f.srv.URL+"/api/stream?symbol=AAPL", nil)
			resp, err := client.Do(req)
			if err != nil {
				errs <- err
				ready.Done()
				got.Done()
				return
			}
			defer resp.Body.Close()
			r := bufio.NewReader(resp.Body)
			_, _ = r.ReadString('\n') // retry:, sent once subscribed
			ready.Done()
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					errs <- err
					got.Done()
					return
				}
				if strings.HasPrefix(line, "event: candle") {
					got.Done()
					<-ctx.Done()
					return
				}
			}
		}()
	}
	ready.Wait()
	c := candle.Candle{Bucket: day.Add(5 * time.Minute), Open: 1, High: 1, Low: 1, Close: 1, Volume: 1, Turnover: 1, Trades: 1}
	f.commit(t, &store.Batch{Group: "g", Topic: "ticks", Candles: []analytics.CandleRow{{Symbol: "AAPL", Interval: "1m", Candle: c}}})
	done := make(chan struct{})
	go func() { got.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("not every client received the candle within 30 s")
	}
	cancel()
	close(errs)
	for err := range errs {
		if !strings.Contains(err.Error(), "context canceled") {
			t.Errorf("client: %v", err)
		}
	}
	tr.CloseIdleConnections()
	after := awaitGoroutines(t, before+20, 30*time.Second)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("goroutines before %d, after %d; heap in use %d MiB", before, after, ms.HeapInuse>>20)
}

// abuseEnv is a server configured as serve runs it (its own http.Server,
// timeouts and header limit, a scheduler for the DAG routes, metrics) over
// the fixture's data.
type abuseEnv struct {
	*fixture
	base    string // http://host:port
	addr    string
	metrics *telemetry.Metrics
}

func newAbuseEnv(t *testing.T, timeouts web.Timeouts) *abuseEnv {
	t.Helper()
	f := newFixture(t)
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	dags := []dag.DAG{{Name: "demo", Schedule: "30 16 * * 1-5", Tasks: []dag.Task{
		{Name: "only", Run: func(context.Context, *dag.TaskContext) error { return nil }},
	}}}
	sched, err := dag.NewClient(dag.Config{Pool: f.pool, DAGs: dags, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	m := telemetry.New()
	srv, err := web.New(web.Config{Pool: f.pool, Scheduler: sched, Metrics: m, Logger: log, Timeouts: timeouts})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() { _ = srv.Run(rctx); close(ran) }()
	t.Cleanup(func() { cancel(); <-ran })
	select {
	case <-srv.Listening():
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not start listening for live updates")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := srv.HTTPServer()
	served := make(chan struct{})
	go func() { _ = hs.Serve(ln); close(served) }()
	t.Cleanup(func() { _ = hs.Close(); <-served })
	return &abuseEnv{fixture: f, base: "http://" + ln.Addr().String(), addr: ln.Addr().String(), metrics: m}
}

// awaitGoroutines waits until at most max goroutines run, and returns the
// count; connections' goroutines take a moment to exit after a close.
func awaitGoroutines(t *testing.T, max int, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n := runtime.NumGoroutine()
		if n <= max {
			return n
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines after %v, want at most %d; they are:\n%.20000s", n, timeout, max, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tableCounts counts the rows of every table the API reads, to show that
// no request changed them.
func tableCounts(t *testing.T, pool *pgxpool.Pool) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, table := range []string{"ticks", "candles", "anomalies", "rejected_ticks", "consumer_offsets", "dag_runs"} {
		var n int64
		if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatalf("table %s: %v", table, err)
		}
		out[table] = n
	}
	return out
}

// TestAbuseSlowloris: a client sending its headers a byte every 100 ms is
// cut off by the header timeout, before it has sent them.
func TestAbuseSlowloris(t *testing.T) {
	const headerTimeout = 500 * time.Millisecond
	e := newAbuseEnv(t, web.Timeouts{ReadHeader: headerTimeout})
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: stockpipe\r\nX-Slow: "); err != nil {
		t.Fatal(err)
	}
	// Trickle a header that would take a minute to finish.
	var trickled atomic.Int64
	stop := make(chan struct{})
	trickler := make(chan struct{})
	go func() {
		defer close(trickler)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for range 600 {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := conn.Write([]byte("a")); err != nil {
				return
			}
			trickled.Add(1)
		}
	}()
	defer func() { close(stop); <-trickler }()
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(conn)
	took := time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server kept the slow connection open for 20 s (%d bytes trickled)", trickled.Load())
	}
	if strings.Contains(string(got), "200 OK") {
		t.Fatalf("the server answered the unfinished request: %q", got)
	}
	// The server's clock starts when it begins reading, a moment before
	// or after ours.
	if took < headerTimeout/2 || took > headerTimeout+5*time.Second {
		t.Errorf("cut off after %v, want about the header timeout %v", took, headerTimeout)
	}
	t.Logf("cut off after %v having trickled %d bytes (%v, %q)", took.Round(time.Millisecond), trickled.Load(), err, got)
}

// TestAbuseOversizedRequests: huge or absurd parameters, URLs and headers
// are answered 4xx (or, for a limit, capped), never 5xx.
func TestAbuseOversizedRequests(t *testing.T) {
	e := newAbuseEnv(t, web.Timeouts{})
	long := strings.Repeat("A", 10<<10)
	repeated := "/api/candles?" + strings.TrimSuffix(strings.Repeat("symbol=AAPL&", 100), "&")
	var junk strings.Builder
	junk.WriteString("/api/ticks?symbol=AAPL")
	for i := range 100 {
		fmt.Fprintf(&junk, "&p%d=%d", i, i)
	}
	for _, tc := range []struct {
		path   string
		header string // a header of this many bytes, if set
		want   int    // 0: any 4xx
	}{
		{path: "/api/candles?symbol=" + long, want: 400},
		{path: "/api/ticks?symbol=" + long, want: 400},
		{path: "/api/anomalies?symbol=" + long, want: 400},
		{path: "/api/stream?symbol=" + long, want: 400},
		{path: "/symbol/" + long, want: 404},
		{path: "/api/candles?symbol=AAPL&interval=" + long, want: 400},
		{path: "/api/candles?symbol=AAPL&format=" + long, want: 400},
		{path: "/api/candles?symbol=AAPL&from=" + long, want: 400},
		{path: "/api/candles?symbol=AAPL&limit=" + strings.Repeat("9", 5000), want: 400},
		{path: "/api/candles?symbol=AAPL&from=99999-01-01T00:00:00Z", want: 400},
		{path: "/api/candles?symbol=AAPL&to=99999-12-31T23:59:59Z", want: 400},
		{path: "/api/candles?symbol=AAPL&from=99999999999999", want: 400},
		{path: "/api/candles?symbol=AAPL&from=-99999999999999", want: 400},
		{path: "/api/candles?symbol=AAPL&from=9999-12-31T23:59:59Z&to=0000-01-01T00:00:00Z", want: 400},
		{path: "/api/anomalies?since=99999-01-01T00:00:00Z", want: 400},
		{path: "/api/dags/runs/" + strings.Repeat("9", 100), want: 400},
		{path: "/api/dags/runs?dag=" + long, want: 404},
		{path: "/dags/run/" + strings.Repeat("9", 100), want: 404},
		{path: "/api/candles?symbol=AAPL&x=" + strings.Repeat("x", 64<<10), want: http.StatusRequestHeaderFieldsTooLarge},
		{path: "/healthz", header: strings.Repeat("h", 20<<10), want: http.StatusRequestHeaderFieldsTooLarge},
		// Asking for more than the most is capped, not refused.
		{path: "/api/ticks?symbol=AAPL&limit=1000000000000", want: 200},
		{path: "/api/candles?symbol=AAPL&limit=1000000000000", want: 200},
		{path: "/api/anomalies?limit=1000000000000", want: 200},
		{path: "/api/dags/runs?limit=1000000000000", want: 200},
		{path: "/api/candles?symbol=AAPL&from=9999-12-31T23:59:59Z", want: 200},
		{path: "/api/candles?symbol=AAPL&from=0000-01-01T00:00:00Z", want: 200},
		{path: repeated, want: 200},
		{path: junk.String(), want: 200},
	} {
		req, err := http.NewRequest("GET", e.base+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc.header != "" {
			req.Header.Set("X-Big", tc.header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("%.80s: %v", tc.path, err)
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%.80s (header %d bytes): %d %.200s; want %d", tc.path, len(tc.header), resp.StatusCode, body, tc.want)
		}
	}
}

// sqlPayloads are classic injection strings, plus bytes that upset naive
// quoting.
var sqlPayloads = []string{
	`' OR '1'='1`,
	`'; DROP TABLE ticks; --`,
	`AAPL'; DELETE FROM candles WHERE '1'='1`,
	`1; TRUNCATE anomalies`,
	`1 UNION SELECT usename, passwd FROM pg_shadow --`,
	`") OR 1=1 --`,
	`$$; DROP TABLE consumer_offsets; $$`,
	`'||pg_sleep(5)||'`,
	`1) OR (SELECT pg_sleep(5)) IS NULL --`,
	"A\x00'; DROP TABLE ticks; --",
	`%27%20OR%201%3D1`,
	`\'; DROP TABLE rejected_ticks; --`,
	`1e309`,
	`-1`,
	`ＡＡＰＬ`,
}

// TestAbuseSQLInjection sends every payload in every parameter of every GET
// route: each is answered 2xx or 4xx, never 5xx, and no table changes.
func TestAbuseSQLInjection(t *testing.T) {
	e := newAbuseEnv(t, web.Timeouts{})
	before := tableCounts(t, e.pool)
	routes := []struct {
		path   string
		params map[string]string // the valid values; each is replaced in turn
	}{
		{"/api/symbols", map[string]string{"x": "1"}},
		{"/api/candles", map[string]string{"symbol": "AAPL", "interval": "1m", "format": "json", "from": "2026-11-02T14:30:00Z", "to": "2026-11-02T15:00:00Z", "limit": "10"}},
		{"/api/candles", map[string]string{"symbol": "AAPL", "format": "csv", "limit": "10"}},
		{"/api/ticks", map[string]string{"symbol": "AAPL", "limit": "10"}},
		{"/api/anomalies", map[string]string{"symbol": "AAPL", "since": "2026-11-02T14:30:00Z", "limit": "10"}},
		{"/api/stream", map[string]string{"symbol": "AAPL"}},
		{"/api/pipeline", map[string]string{"fresh": "1"}},
		{"/api/dags", map[string]string{"x": "1"}},
		{"/api/dags/runs", map[string]string{"dag": "demo", "limit": "10"}},
		{"/symbol/AAPL", map[string]string{"interval": "1m", "range": "1d", "at": "2026-11-02T14:30:00Z"}},
		{"/readyz", map[string]string{"x": "1"}},
		{"/healthz", map[string]string{"x": "1"}},
		{"/metrics", map[string]string{"x": "1"}},
	}
	// Path segments too.
	pathRoutes := []string{"/symbol/%s", "/api/dags/runs/%s", "/dags/run/%s", "/api/%s", "/static/%s"}
	// A client that gives up: an injected delay would show as a timeout.
	client := &http.Client{Timeout: 10 * time.Second}
	check := func(u string) {
		t.Helper()
		resp, err := client.Get(u)
		if err != nil {
			t.Errorf("%s: %v", u, err)
			return
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Errorf("%s: %d %s", u, resp.StatusCode, body)
		}
	}
	requests := 0
	for _, r := range routes {
		for name := range r.params {
			for _, payload := range sqlPayloads {
				q := url.Values{}
				for k, v := range r.params {
					q.Set(k, v)
				}
				q.Set(name, payload)
				if r.path == "/api/stream" && market.ValidSymbol(payload) {
					continue // a valid symbol opens a stream that never ends
				}
				check(e.base + r.path + "?" + q.Encode())
				requests++
			}
		}
	}
	for _, pr := range pathRoutes {
		for _, payload := range sqlPayloads {
			check(e.base + fmt.Sprintf(pr, url.PathEscape(payload)))
			requests++
		}
	}
	after := tableCounts(t, e.pool)
	if !maps.Equal(before, after) {
		t.Errorf("rows per table changed: before %v, after %v", before, after)
	}
	t.Logf("%d requests; rows per table %v", requests, after)
}

// TestAbuseSlowStreamReader: an event-stream client that never reads is
// dropped once the server cannot write to it, and its handler ends.
func TestAbuseSlowStreamReader(t *testing.T) {
	e := newAbuseEnv(t, web.Timeouts{})
	baseline := runtime.NumGoroutine()
	finished := func() float64 {
		return testutil.ToFloat64(e.metrics.HTTP.WithLabelValues("GET /api/stream", "200"))
	}
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A small receive window, so the server's writes back up soon.
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	if _, err := io.WriteString(conn, "GET /api/stream HTTP/1.1\r\nHost: stockpipe\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Read the response head, so the stream is known to be subscribed,
	// and nothing after.
	br := bufio.NewReaderSize(conn, 64)
	status, err := br.ReadString('\n')
	if err != nil || !strings.Contains(status, "200") {
		t.Fatalf("stream response: %q, %v", status, err)
	}
	// Publish until the events outgrow what the kernel buffers for the
	// connection (the server's send buffer grows to a few MiB) plus the
	// client's queue in the server: only then is the client slow.
	published := 0
	for batch := 0; batch < 60 && finished() < 1; batch++ {
		b := &store.Batch{Group: "g", Topic: "ticks"}
		for i := range 1000 {
			c := candle.Candle{Bucket: day.Add(time.Duration(10+batch*1000+i) * time.Minute), Open: 1, High: 1, Low: 1, Close: 1, Volume: 1, Turnover: 1, Trades: 1}
			b.Candles = append(b.Candles, analytics.CandleRow{Symbol: "AAPL", Interval: "1m", Candle: c})
		}
		e.commit(t, b)
		published += len(b.Candles)
	}
	// The handler's write deadline (10 s) ends it; allow for a slow machine.
	deadline := time.Now().Add(60 * time.Second)
	for finished() < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the handler of a stream client that never reads is still running 60 s after %d events", published)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("dropped after %d events", published)
	conn.Close()
	awaitGoroutines(t, baseline+2, 30*time.Second)
}

// TestAbuseBurstBoundsMemoryAndGoroutines sends a burst of abusive requests
// from many connections at once, streams included: afterwards the heap is
// back near where it was and every connection's goroutine has ended.
func TestAbuseBurstBoundsMemoryAndGoroutines(t *testing.T) {
	e := newAbuseEnv(t, web.Timeouts{ReadHeader: time.Second, Idle: 2 * time.Second})
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	// Warm up: the first requests build caches and templates that stay.
	for _, p := range []string{"/", "/symbol/AAPL", "/api/candles?symbol=AAPL", "/api/symbols"} {
		if resp, err := client.Get(e.base + p); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	tr.CloseIdleConnections()
	baseline := runtime.NumGoroutine()
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heapBefore := ms.HeapInuse

	long := strings.Repeat("A", 10<<10)
	paths := []string{
		"/api/candles?symbol=" + long,
		"/api/candles?symbol=AAPL&limit=1000000000000",
		"/api/candles?symbol=AAPL&x=" + strings.Repeat("x", 64<<10),
		"/api/ticks?symbol=AAPL&limit=1000000000000",
		"/api/anomalies?since=99999-01-01T00:00:00Z",
		"/api/candles?symbol=" + url.QueryEscape(sqlPayloads[1]),
		"/symbol/AAPL?at=" + url.QueryEscape(sqlPayloads[0]),
		"/api/dags/runs?limit=1000000000000",
		"/api/candles?symbol=AAPL&format=csv",
	}
	const workers, perWorker = 32, 40
	var wg sync.WaitGroup
	var fivexx atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				if (w+i)%10 == 0 {
					// A stream opened and abandoned at once.
					rctx, rcancel := context.WithCancel(ctx)
					req, _ := http.NewRequestWithContext(rctx, "GET", e.base+"/api/stream?symbol=AAPL", nil)
					if resp, err := client.Do(req); err == nil {
						resp.Body.Close()
					}
					rcancel()
					continue
				}
				req, _ := http.NewRequestWithContext(ctx, "GET", e.base+paths[(w+i)%len(paths)], nil)
				if i%7 == 0 {
					req.Header.Set("X-Big", strings.Repeat("h", 20<<10))
				}
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode >= 500 {
					fivexx.Add(1)
				}
			}
		})
	}
	wg.Wait()
	cancel()
	tr.CloseIdleConnections()
	if n := fivexx.Load(); n > 0 {
		t.Errorf("%d of %d requests answered 5xx", n, workers*perWorker)
	}
	// A little slack: the pool may hold a connection more or fewer.
	after := awaitGoroutines(t, baseline+2, 30*time.Second)
	runtime.GC()
	runtime.ReadMemStats(&ms)
	grew := int64(ms.HeapInuse) - int64(heapBefore)
	if grew > 64<<20 {
		t.Errorf("heap in use grew %d MiB over a burst of %d requests", grew>>20, workers*perWorker)
	}
	t.Logf("goroutines %d before, %d after; heap in use grew %d KiB", baseline, after, grew>>10)
}

// TestAbuseServerDefaults: a server configured with no timeouts gets the
// production ones, not Go's unlimited defaults.
func TestAbuseServerDefaults(t *testing.T) {
	f := newFixture(t)
	srv, err := web.New(web.Config{Pool: f.pool})
	if err != nil {
		t.Fatal(err)
	}
	hs := srv.HTTPServer()
	if hs.ReadHeaderTimeout != web.DefaultReadHeaderTimeout || hs.ReadTimeout != web.DefaultReadTimeout ||
		hs.IdleTimeout != web.DefaultIdleTimeout || hs.MaxHeaderBytes != web.MaxHeaderBytes || hs.WriteTimeout != 0 {
		t.Errorf("default server: read header %v, read %v, idle %v, write %v, max header %d",
			hs.ReadHeaderTimeout, hs.ReadTimeout, hs.IdleTimeout, hs.WriteTimeout, hs.MaxHeaderBytes)
	}
}
