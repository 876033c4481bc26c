package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/analytics"
	"github.com/stockpipe/stockpipe/internal/candle"
	fx "github.com/stockpipe/stockpipe/internal/fixture"
	"github.com/stockpipe/stockpipe/internal/indicator"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
	"github.com/stockpipe/stockpipe/internal/store"
	"github.com/stockpipe/stockpipe/internal/web"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// day is a Monday; 14:30 UTC is 09:30 in New York.
var day = time.Date(2026, 11, 2, 14, 30, 0, 0, time.UTC)

// fixture is the API serving known rows. (This package's tests import
// internal/fixture as fx: this type has its name.)
type fixture struct {
	pool *pgxpool.Pool
	sink *store.Sink
	srv  *httptest.Server
}

// newFixture migrates a fresh database, stores known rows through the sink
// (AAPL: three 1m candles 14:30–14:32 and their ticks; one anomaly) and
// serves the API with the live stream running.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, nil)
}

// newFixtureWith is newFixture with configure applied to the server's
// Config (Pool set) before the server is made.
func newFixtureWith(t *testing.T, configure func(*web.Config)) *fixture {
	t.Helper()
	ctx := context.Background()
	pool := fx.DB(t, 8)
	f := &fixture{pool: pool, sink: store.NewSink(pool)}
	b := &store.Batch{Group: "g", Topic: "ticks"}
	seq := int64(0)
	for m, prices := range [][]float64{{100, 101, 99.5, 100.5}, {100.5, 102, 101}, {101, 100, 100.25}} {
		var c candle.Candle
		for i, p := range prices {
			seq++
			ts := day.Add(time.Duration(m)*time.Minute + time.Duration(i)*10*time.Second)
			b.Ticks = append(b.Ticks, store.TickRow{Tick: market.Tick{Symbol: "AAPL", TS: ts, Seq: seq, Price: p, Size: 100, Bid: p - 0.01, Ask: p + 0.01}, Offset: seq - 1})
			if i == 0 {
				c = candle.Candle{Bucket: day.Add(time.Duration(m) * time.Minute), Open: p, High: p, Low: p}
			}
			c.High, c.Low, c.Close = max(c.High, p), min(c.Low, p), p
			c.Volume += 100
			c.Turnover += p * 100
			c.Trades++
		}
		c.Final = m < 2
		b.Candles = append(b.Candles, analytics.CandleRow{Symbol: "AAPL", Interval: "1m", Candle: c,
			Ind: indicator.Values{SMA5: 1, Has: 0}})
	}
	b.Offsets = []store.PartitionCommit{{Partition: 0, Expected: -1, Next: seq}}
	f.commit(t, b)
	_, err := pool.Exec(ctx, `INSERT INTO anomalies (symbol, ts, kind, severity, value, threshold, detail)
		VALUES ('AAPL', $1, 'price_jump', 'high', 12.5, 6, 'AAPL rose 1.5% in 10s')`, day.Add(70*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	cfg := web.Config{Pool: pool}
	if configure != nil {
		configure(&cfg)
	}
	srv, err := web.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Run(runCtx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	// LISTEN runs on its own connection, asynchronously: a commit before
	// it would notify nobody, and a live test would wait in vain.
	select {
	case <-srv.Listening():
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not start listening for updates within 30 s")
	}
	f.srv = httptest.NewServer(srv.Handler())
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) commit(t *testing.T, b *store.Batch) {
	t.Helper()
	if _, err := f.sink.Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) get(t *testing.T, path string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.Get(f.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, body
}

func TestSymbolsWatchlist(t *testing.T) {
	f := newFixture(t)
	code, _, body := f.get(t, "/api/symbols")
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	var q []store.Quote
	if err := json.Unmarshal(body, &q); err != nil {
		t.Fatal(err)
	}
	if len(q) != 1 {
		t.Fatalf("got %d quotes, want 1: %s", len(q), body)
	}
	a := q[0]
	if a.Symbol != "AAPL" || a.Last != 100.25 || a.DayOpen != 100 || a.Change != 0.25 || a.Volume != 1000 ||
		a.BucketVolume != 300 || len(a.Spark) != 3 || a.Spark[2] != 100.25 || !a.TS.Equal(day.Add(2*time.Minute+20*time.Second)) {
		t.Fatalf("quote = %+v", a)
	}
}

// TestSymbolsPreviousClose: the watchlist's previous close is the last
// daily bar before the quote's New York day, else the last minute before
// it, and absent when the symbol has no earlier day.
func TestSymbolsPreviousClose(t *testing.T) {
	f := newFixture(t)
	prev := func() *float64 {
		t.Helper()
		_, _, body := f.get(t, "/api/symbols")
		var q []store.Quote
		if err := json.Unmarshal(body, &q); err != nil || len(q) != 1 {
			t.Fatalf("quotes %s: %v", body, err)
		}
		return q[0].PrevClose
	}
	if p := prev(); p != nil {
		t.Fatalf("prev_close %v for a symbol with no earlier day, want null", *p)
	}
	yesterday := day.Add(-24 * time.Hour)
	insert := func(interval string, bucket time.Time, close float64) {
		t.Helper()
		if _, err := f.pool.Exec(context.Background(), `INSERT INTO candles (symbol, interval, bucket, open, high, low, close, volume, trades, final)
			VALUES ('AAPL', $1, $2, $3, $3, $3, $3, 100, 1, true)`, interval, bucket, close); err != nil {
			t.Fatal(err)
		}
	}
	// After-hours minute of the day before: the close when no daily bar.
	insert("1m", yesterday.Add(7*time.Hour), 97.5)
	// A minute earlier today, before the session, is not the previous day.
	insert("1m", day.Add(-time.Hour), 99)
	if p := prev(); p == nil || *p != 97.5 {
		t.Fatalf("prev_close %v, want 97.5 (the day before's last minute)", p)
	}
	// The day before's daily bar (its regular session) wins.
	insert("1d", yesterday.Truncate(24*time.Hour).Add(13*time.Hour+30*time.Minute), 98.25)
	if p := prev(); p == nil || *p != 98.25 {
		t.Fatalf("prev_close %v, want 98.25 (the day before's daily close)", p)
	}
}

func TestCandles(t *testing.T) {
	f := newFixture(t)
	var got struct {
		Symbol, Interval string
		Candles          []store.Candle
	}
	code, _, body := f.get(t, "/api/candles?symbol=AAPL&interval=1m")
	if code != 200 || json.Unmarshal(body, &got) != nil {
		t.Fatalf("status %d: %s", code, body)
	}
	if len(got.Candles) != 3 || got.Candles[0].T != day.Unix() || got.Candles[0].Open != 100 || got.Candles[0].High != 101 ||
		got.Candles[0].Low != 99.5 || got.Candles[0].Close != 100.5 || got.Candles[0].Volume != 400 || !got.Candles[0].Final ||
		got.Candles[2].Final || got.Candles[0].SMA5 != nil {
		t.Fatalf("candles = %+v", got.Candles)
	}
	// The latest N, still ascending.
	if code, _, body = f.get(t, "/api/candles?symbol=AAPL&limit=2"); code != 200 || json.Unmarshal(body, &got) != nil ||
		len(got.Candles) != 2 || got.Candles[1].T != day.Add(2*time.Minute).Unix() {
		t.Fatalf("limit=2: %d %s", code, body)
	}
	from := url.QueryEscape(day.Add(time.Minute).Format(time.RFC3339))
	if code, _, body = f.get(t, "/api/candles?symbol=AAPL&from="+from+"&limit=1"); code != 200 || json.Unmarshal(body, &got) != nil ||
		len(got.Candles) != 1 || got.Candles[0].T != day.Add(time.Minute).Unix() {
		t.Fatalf("from: %d %s", code, body)
	}
	code, hdr, body := f.get(t, "/api/candles?symbol=AAPL&format=csv")
	lines := strings.Split(strings.TrimSpace(string(body)), "\n")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/csv") || len(lines) != 4 ||
		!strings.HasPrefix(lines[1], "2026-11-02T14:30:00Z,100,101,99.5,100.5,400,") {
		t.Fatalf("csv: %d %q", code, body)
	}
}

// TestCandlesCSVInAZone: with tz the CSV gives each bucket in that zone
// with its offset (the same moments as the UTC default), its next page
// keeps the zone, and a zone that is not one is a 400 naming the fix.
func TestCandlesCSVInAZone(t *testing.T) {
	f := newFixture(t)
	code, _, body := f.get(t, "/api/candles?symbol=AAPL&format=csv&tz=America/New_York&limit=2")
	lines := strings.Split(strings.TrimSpace(string(body)), "\n")
	// The newest two: 14:31Z and 14:32Z, 09:31 and 09:32 in New York.
	if code != 200 || len(lines) != 3 || !strings.HasPrefix(lines[1], "2026-11-02T09:31:00-05:00,100.5,102,") ||
		!strings.HasPrefix(lines[2], "2026-11-02T09:32:00-05:00,") {
		t.Fatalf("csv in New York time: %d %q", code, body)
	}
	for _, l := range lines[1:] {
		ts, err := time.Parse(time.RFC3339, strings.SplitN(l, ",", 2)[0])
		if err != nil || ts.Before(day) || !strings.Contains(l, "-05:00,") {
			t.Errorf("row %q: not a New York time with its offset at or after %s (%v)", l, day, err)
		}
	}
	_, hdr, _ := f.get(t, "/api/candles?symbol=AAPL&format=csv&tz=America/New_York&limit=1")
	if link := hdr.Get("Link"); !strings.Contains(link, "tz=America%2FNew_York") {
		t.Errorf("next page %q loses the zone", link)
	}
	for _, bad := range []string{"Mars/Olympus", "Local"} {
		code, _, body := f.get(t, "/api/candles?symbol=AAPL&format=csv&tz="+url.QueryEscape(bad))
		if code != 400 || !strings.Contains(string(body), "IANA time zone") {
			t.Errorf("tz=%s: %d %s, want 400 naming IANA zones", bad, code, body)
		}
	}
	if code, _, body := f.get(t, "/api/candles?symbol=AAPL&tz=UTC"); code != 400 {
		t.Errorf("tz on JSON: %d %s, want 400", code, body)
	}
}

func TestTicksAndAnomalies(t *testing.T) {
	f := newFixture(t)
	var ticks struct{ Ticks []store.Trade }
	code, _, body := f.get(t, "/api/ticks?symbol=AAPL&limit=2")
	if code != 200 || json.Unmarshal(body, &ticks) != nil || len(ticks.Ticks) != 2 || ticks.Ticks[0].Seq != 10 || ticks.Ticks[1].Seq != 9 {
		t.Fatalf("ticks: %d %s", code, body)
	}
	var an struct{ Anomalies []store.Anomaly }
	code, _, body = f.get(t, "/api/anomalies")
	if code != 200 || json.Unmarshal(body, &an) != nil || len(an.Anomalies) != 1 || an.Anomalies[0].Kind != "price_jump" || an.Anomalies[0].Severity != "high" {
		t.Fatalf("anomalies: %d %s", code, body)
	}
	since := url.QueryEscape(day.Add(2 * time.Minute).Format(time.RFC3339))
	code, _, body = f.get(t, "/api/anomalies?symbol=AAPL&since="+since)
	if code != 200 || json.Unmarshal(body, &an) != nil || len(an.Anomalies) != 0 {
		t.Fatalf("anomalies since: %d %s", code, body)
	}
}

func TestBadRequests(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		path string
		code int
		want string
	}{
		{"/api/candles", 400, "symbol is required"},
		{"/api/candles?symbol=MSFT", 404, "unknown symbol"},
		{"/api/ticks?symbol=ZZZZ", 404, "unknown symbol"},
		{"/api/candles?symbol=AAPL&interval=2m", 400, "interval"},
		{"/api/candles?symbol=AAPL&from=yesterday", 400, "from"},
		{"/api/candles?symbol=AAPL&to=2026-13-01T00:00:00Z", 400, "to"},
		{"/api/candles?symbol=AAPL&from=2026-11-03T00:00:00Z&to=2026-11-02T00:00:00Z", 400, "before"},
		{"/api/candles?symbol=AAPL&limit=0", 400, "limit"},
		{"/api/candles?symbol=AAPL&limit=abc", 400, "limit"},
		{"/api/candles?symbol=AAPL&format=xml", 400, "format"},
		{"/api/anomalies?since=-1", 400, "since"},
		{"/api/nosuch", 404, "no such API endpoint"},
		// SQL injection attempts are just bad parameters.
		{"/api/candles?symbol=" + url.QueryEscape("AAPL' OR '1'='1"), 400, "not a ticker"},
		{"/api/candles?symbol=" + url.QueryEscape("AAPL'; DROP TABLE candles;--"), 400, "not a ticker"},
		{"/api/candles?symbol=AAPL&interval=" + url.QueryEscape("1m' OR 1=1--"), 400, "interval"},
		{"/api/candles?symbol=AAPL&from=" + url.QueryEscape("2026-11-02T00:00:00Z'); DELETE FROM ticks;--"), 400, "from"},
		{"/api/anomalies?symbol=" + url.QueryEscape("x UNION SELECT"), 400, "not a ticker"},
	} {
		code, hdr, body := f.get(t, tc.path)
		var e struct{ Error string }
		if code != tc.code || json.Unmarshal(body, &e) != nil || !strings.Contains(e.Error, tc.want) || hdr.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %s; want %d with an error mentioning %q", tc.path, code, body, tc.code, tc.want)
		}
	}
	// The limit is capped, not refused.
	if code, _, body := f.get(t, "/api/candles?symbol=AAPL&limit=99999999"); code != 200 {
		t.Errorf("huge limit: %d %s", code, body)
	}
	var n int
	if err := f.pool.QueryRow(context.Background(), `SELECT count(*) FROM candles`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("candles after the injection attempts: %d, %v", n, err)
	}
}

func TestSecurityHeadersAndPages(t *testing.T) {
	f := newFixture(t)
	for _, p := range []string{"/", "/symbol/AAPL", "/api/symbols", "/healthz"} {
		code, hdr, body := f.get(t, p)
		if code != 200 {
			t.Errorf("%s: %d %s", p, code, body)
		}
		csp := hdr.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP %q", p, csp)
		}
		if hdr.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", p)
		}
	}
	if _, _, body := f.get(t, "/symbol/AAPL"); !strings.Contains(string(body), "AAPL") || strings.Contains(string(body), "<script>") {
		t.Errorf("symbol page lacks the symbol or has an inline script")
	}
}

// TestStreamDeliversCommittedCandle commits a batch through the sink and
// expects its candle on /api/stream, pushed through LISTEN/NOTIFY.
func TestStreamDeliversCommittedCandle(t *testing.T) {
	f := newFixture(t)
	req, _ := http.NewRequest("GET", f.srv.URL+"/api/stream?symbol=AAPL", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	r := bufio.NewReader(resp.Body)
	if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "retry:") {
		t.Fatalf("first line %q", line)
	}
	// A batch for another symbol, then one for AAPL: only AAPL's arrives.
	c := candle.Candle{Bucket: day.Add(3 * time.Minute), Open: 100, High: 100, Low: 100, Close: 100, Volume: 1, Turnover: 100, Trades: 1}
	committed := time.Now()
	f.commit(t, &store.Batch{Group: "g", Topic: "ticks", Candles: []analytics.CandleRow{
		{Symbol: "MSFT", Interval: "1m", Candle: c},
		{Symbol: "AAPL", Interval: "1m", Candle: c},
	}})
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended before the candle: %v", err)
		}
		if line != "event: candle\n" {
			continue
		}
		data, _ := r.ReadString('\n')
		var got store.Candle
		if err := json.Unmarshal([]byte(strings.TrimPrefix(data, "data: ")), &got); err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		if got.Symbol != "AAPL" || got.T != c.Bucket.Unix() {
			t.Fatalf("got %+v", got)
		}
		t.Logf("candle delivered %v after its commit returned", time.Since(committed))
		return
	}
}
