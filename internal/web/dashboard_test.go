package web_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/store"
	"github.com/stockpipe/stockpipe/internal/web"
)

func TestSymbolPageRedirectsToUpperCase(t *testing.T) {
	f := newFixture(t)
	cl := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct{ path, location string }{
		{"/symbol/aapl", "/symbol/AAPL"},
		{"/symbol/Aapl?interval=5m&range=1h", "/symbol/AAPL?interval=5m&range=1h"},
		{"/symbol/brk.b", "/symbol/BRK.B"},
	} {
		resp, err := cl.Get(f.srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != tc.location {
			t.Errorf("GET %s: %d to %q, want 301 to %q", tc.path, resp.StatusCode, resp.Header.Get("Location"), tc.location)
		}
	}
	// Following the redirect lands on the page; what no case change makes
	// a ticker is still not found.
	if code, _, body := f.get(t, "/symbol/aapl"); code != 200 || !strings.Contains(string(body), `data-symbol="AAPL"`) {
		t.Errorf("/symbol/aapl followed: %d", code)
	}
	for _, p := range []string{"/symbol/1abc", "/symbol/a_b"} {
		if code, _, _ := f.get(t, p); code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", p, code)
		}
	}
}

var footerText = regexp.MustCompile(`(?s)<footer class="site-footer">(.*?)</footer>`)
var tags = regexp.MustCompile(`<[^>]*>`)

// footer returns the visible text of a page's footer.
func footer(t *testing.T, f *fixture, path string) string {
	t.Helper()
	code, _, body := f.get(t, path)
	m := footerText.FindSubmatch(body)
	if code != 200 || m == nil {
		t.Fatalf("%s: %d, footer found: %v", path, code, m != nil)
	}
	return strings.Join(strings.Fields(tags.ReplaceAllString(string(m[1]), "")), " ")
}

func TestFooterShowsVersionAndMenuNamesDAGs(t *testing.T) {
	f := newFixtureWith(t, func(c *web.Config) { c.Version = "v9.8.7-test" })
	for _, p := range []string{"/", "/symbol/AAPL", "/pipeline", "/dags", "/dags/run/1"} {
		if got := footer(t, f, p); got != "stockpipe v9.8.7-test" {
			t.Errorf("%s: footer %q, want %q", p, got, "stockpipe v9.8.7-test")
		}
		// The menu names what /dags shows.
		_, _, body := f.get(t, p)
		if !regexp.MustCompile(`<a href="/dags"[^>]*>DAGs</a>`).Match(body) {
			t.Errorf("%s: the menu's link to /dags is not labelled DAGs", p)
		}
	}
	if got := footer(t, newFixture(t), "/"); got != "stockpipe dev" {
		t.Errorf("without a version: footer %q, want %q", got, "stockpipe dev")
	}
}

// TestAPIRoundsFloatNoise stores values whose binary sums carry noise and
// expects the API and the CSV to print them as the decimals they are.
func TestAPIRoundsFloatNoise(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// 270.10200000000003 is what (270.1 + 270.104 + …) / 5 comes to in
	// float64; PostgreSQL stores the double as given.
	if _, err := f.pool.Exec(ctx, `UPDATE candles SET sma_5 = '270.10200000000003'::float8, rsi_14 = '55.55555555555556'::float8
		WHERE symbol = 'AAPL' AND bucket = $1`, day); err != nil {
		t.Fatal(err)
	}
	// The latest trade at 100.26 against the day's open of 100: in float64
	// the change is 0.2600000000000051.
	if last, open := 100.26, 100.0; last-open == 0.26 {
		t.Fatalf("100.26 - 100 = %v has no noise; the test needs other values", last-open)
	}
	ts := day.Add(2*time.Minute + 30*time.Second)
	f.commit(t, &store.Batch{Group: "g", Topic: "ticks", Ticks: []store.TickRow{{Tick: market.Tick{Symbol: "AAPL", TS: ts, Seq: 11,
		Price: 100.26, Size: 100, Bid: 100.25, Ask: 100.27}, Offset: 10}}})

	_, _, body := f.get(t, "/api/candles?symbol=AAPL&interval=1m")
	for _, want := range []string{`"sma_5":270.102,`, `"rsi_14":55.555556,`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/api/candles lacks %s: %s", want, body)
		}
	}
	_, _, csv := f.get(t, "/api/candles?symbol=AAPL&interval=1m&format=csv")
	lines := strings.Split(strings.TrimSpace(string(csv)), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[1], "2026-11-02T14:30:00Z,") ||
		!strings.Contains(lines[1], ",270.102,") || !strings.Contains(lines[1], ",55.555556,") {
		t.Errorf("CSV does not agree with the JSON: %q", lines)
	}
	_, _, body = f.get(t, "/api/symbols")
	for _, want := range []string{`"last":100.26,`, `"day_open":100,`, `"change":0.26,`, `"change_pct":0.26,`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/api/symbols lacks %s: %s", want, body)
		}
	}
	// Rounding to six places keeps what the database holds when it has no
	// more digits than that: the stored prices come back exactly.
	var got struct{ Candles []store.Candle }
	if _, _, body = f.get(t, "/api/candles?symbol=AAPL&interval=1m"); json.Unmarshal(body, &got) != nil || len(got.Candles) != 3 {
		t.Fatalf("candles: %s", body)
	}
	rows, err := f.pool.Query(ctx, `SELECT open, high, low, close FROM candles WHERE symbol = 'AAPL' AND interval = '1m' ORDER BY bucket`)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; rows.Next(); i++ {
		var o, h, l, c float64
		if err := rows.Scan(&o, &h, &l, &c); err != nil {
			t.Fatal(err)
		}
		if g := got.Candles[i]; g.Open != o || g.High != h || g.Low != l || g.Close != c {
			t.Errorf("candle %d: API %v/%v/%v/%v, database %v/%v/%v/%v", i, g.Open, g.High, g.Low, g.Close, o, h, l, c)
		}
	}
	rows.Close()
}

// apiStatus is /api/status as the pages read it.
type apiStatus struct {
	OK          bool              `json:"ok"`
	Database    string            `json:"database"`
	Broker      *string           `json:"broker"`
	LiveUpdates string            `json:"live_updates"`
	Checks      map[string]string `json:"checks"`
}

func TestStatusReportsEachComponent(t *testing.T) {
	f := newFixtureWith(t, func(c *web.Config) {
		c.Ready = []web.Check{{Name: "processor", Check: func(context.Context) error { return errors.New("owns no partitions") }}}
	})
	code, _, body := f.get(t, "/api/status")
	var st apiStatus
	if code != 200 || json.Unmarshal(body, &st) != nil {
		t.Fatalf("/api/status: %d %s", code, body)
	}
	// No brokers configured: no broker to report.
	if st.OK || st.Database != "ok" || st.Broker != nil || st.LiveUpdates != "ok" || st.Checks["processor"] != "error: owns no partitions" {
		t.Fatalf("/api/status = %s", body)
	}
	var fine apiStatus
	if code, _, body = newFixture(t).get(t, "/api/status"); code != 200 || json.Unmarshal(body, &fine) != nil || !fine.OK || len(fine.Checks) != 0 {
		t.Fatalf("/api/status with nothing wrong: %d %s", code, body)
	}
}

// pipelineState is the part of /api/pipeline these tests read.
type pipelineState struct {
	GeneratedAt time.Time `json:"generated_at"`
	Tables      []struct {
		Name      string `json:"name"`
		Rows      int64  `json:"rows"`
		RowsExact bool   `json:"rows_exact"`
	} `json:"tables"`
	FailedRuns *int64 `json:"dag_runs_failed_24h"`
	DataDir    *struct {
		Path       string    `json:"path"`
		SizeBytes  int64     `json:"size_bytes"`
		SizedAt    time.Time `json:"sized_at"`
		FreeBytes  int64     `json:"free_bytes"`
		TotalBytes int64     `json:"total_bytes"`
		Low        bool      `json:"low"`
		Error      string    `json:"error"`
	} `json:"data_dir"`
}

// dataDirFixture is a directory holding 300,000 bytes that do not compress.
func dataDirFixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, n := range map[string]int{"a": 100_000, "sub/b": 200_000} {
		if err := os.WriteFile(filepath.Join(dir, name), randomBytes(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// insertRuns stores DAG runs, three of which failed within 24 hours, and
// anomalies to make five.
func insertRunsAndAnomalies(t *testing.T, f *fixture) {
	t.Helper()
	ctx := context.Background()
	if _, err := f.pool.Exec(ctx, `INSERT INTO dag_runs (dag, logical_date, state, created_at, started_at, finished_at) VALUES
		('market_close', '2026-11-01', 'failed',  now() - interval '2 hours',  now() - interval '2 hours',  now() - interval '1 hour'),
		('market_close', '2026-11-02', 'failed',  now() - interval '30 hours', now() - interval '30 hours', now() - interval '23 hours'),
		('backfill',     '2026-11-03', 'failed',  now() - interval '2 hours',  NULL, NULL),
		('retention',    '2026-11-01', 'failed',  now() - interval '26 hours', now() - interval '26 hours', now() - interval '25 hours'),
		('retention',    '2026-11-02', 'success', now() - interval '2 hours',  now() - interval '2 hours',  now() - interval '1 hour')`); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if _, err := f.pool.Exec(ctx, `INSERT INTO anomalies (symbol, ts, kind, severity, value, threshold, detail)
			VALUES ('AAPL', $1, 'volume_burst', 'low', 5, 4, 'test')`, day.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPipelineCountsAndDisk checks the pipeline's table rows against the
// rows inserted (no ANALYZE has run: the planner would say 0), the failed
// DAG runs of the last 24 hours, and the data directory's size and free
// space against the test's own statfs.
func TestPipelineCountsAndDisk(t *testing.T) {
	dir := dataDirFixture(t)
	f := newFixtureWith(t, func(c *web.Config) { c.DataDir = dir })
	insertRunsAndAnomalies(t, f)

	var p pipelineState
	if code, _, body := f.get(t, "/api/pipeline?fresh=1"); code != 200 || json.Unmarshal(body, &p) != nil {
		t.Fatalf("/api/pipeline: %d %s", code, body)
	}
	rows := map[string]int64{}
	for _, tb := range p.Tables {
		if !tb.RowsExact {
			t.Errorf("table %s: rows not exact in a test database", tb.Name)
		}
		rows[tb.Name] = tb.Rows
	}
	if rows["anomalies"] != 5 || rows["symbols"] != 1 || rows["ticks"] != 10 || rows["candles"] != 3 {
		t.Errorf("table rows %v, want anomalies 5, symbols 1, ticks 10, candles 3", rows)
	}
	if p.FailedRuns == nil || *p.FailedRuns != 3 {
		t.Errorf("dag_runs_failed_24h = %v, want 3", p.FailedRuns)
	}

	d := p.DataDir
	if d == nil || d.Path != dir || d.Error != "" {
		t.Fatalf("data_dir = %+v", d)
	}
	// Allocated blocks: at least the bytes written, at most a few blocks
	// more per file and directory.
	if d.SizeBytes < 300_000 || d.SizeBytes > 300_000+128<<10 {
		t.Errorf("data directory size %d, want about 300,000", d.SizeBytes)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free, total := int64(st.Bavail)*int64(st.Bsize), int64(st.Blocks)*int64(st.Bsize)
	// Others write to the same disk meanwhile.
	if d.TotalBytes != total || d.FreeBytes < free-1<<30 || d.FreeBytes > free+1<<30 {
		t.Errorf("free %d of %d, statfs says %d of %d", d.FreeBytes, d.TotalBytes, free, total)
	}
	if want := d.FreeBytes < 5e9 || float64(d.FreeBytes) < 0.1*float64(d.TotalBytes); d.Low != want {
		t.Errorf("low = %v with %d free of %d", d.Low, d.FreeBytes, d.TotalBytes)
	}

	// The size is not walked again within 30 s: a new file shows later.
	if err := os.WriteFile(filepath.Join(dir, "c"), randomBytes(1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	var again pipelineState
	if code, _, body := f.get(t, "/api/pipeline?fresh=1"); code != 200 || json.Unmarshal(body, &again) != nil || again.DataDir == nil {
		t.Fatalf("/api/pipeline: %d %s", code, body)
	}
	if again.GeneratedAt.Sub(d.SizedAt) < 25*time.Second &&
		(again.DataDir.SizeBytes != d.SizeBytes || !again.DataDir.SizedAt.Equal(d.SizedAt)) {
		t.Errorf("the data directory was walked again within seconds: %d at %v, then %d at %v",
			d.SizeBytes, d.SizedAt, again.DataDir.SizeBytes, again.DataDir.SizedAt)
	}

	// Without a data directory the server says nothing about one.
	var none pipelineState
	if _, _, body := newFixture(t).get(t, "/api/pipeline?fresh=1"); json.Unmarshal(body, &none) != nil || none.DataDir != nil {
		t.Errorf("data_dir without a DataDir: %s", body)
	}
}
