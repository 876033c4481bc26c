package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stockpipe/stockpipe/internal/analytics"
	"github.com/stockpipe/stockpipe/internal/candle"
	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/job"
	"github.com/stockpipe/stockpipe/internal/store"
)

// newYork is where trading dates and sessions are.
var newYork = func() *time.Location {
	loc, err := time.LoadLocation("America/New_York")
	if err != nil {
		panic(err)
	}
	return loc
}()

type candlesAnswer struct {
	Symbol   string         `json:"symbol"`
	Interval string         `json:"interval"`
	Candles  []store.Candle `json:"candles"`
}

// candlesJSON fetches a JSON /api/candles answer.
func (f *fixture) candlesJSON(t *testing.T, path string) candlesAnswer {
	t.Helper()
	code, _, body := f.get(t, path)
	var a candlesAnswer
	if code != 200 || json.Unmarshal(body, &a) != nil {
		t.Fatalf("%s: %d %s", path, code, body)
	}
	return a
}

// awaitCandles asks path until its answer satisfies ok, for at most 15 s
// (the server's LISTEN may have to reconnect first, with a backoff), and
// returns that answer. Each try is a real request; the pause between
// tries only keeps the loop from spinning.
func (f *fixture) awaitCandles(t *testing.T, what, path string, ok func([]store.Candle) bool) []store.Candle {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		a := f.candlesJSON(t, path)
		if ok(a.Candles) {
			return a.Candles
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s still answers %+v after 15 s", what, path, a.Candles)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// runTask runs one task of a shipped DAG as the scheduler would, with
// the clock at now (which decides whether a session is over).
func runTask(t *testing.T, f *fixture, name, task string, logical, now time.Time, params map[string]string) {
	t.Helper()
	for _, d := range job.Shipped(job.Deps{Pool: f.pool, Now: func() time.Time { return now }}) {
		if d.Name != name {
			continue
		}
		typed, err := d.ParseParams(params)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, tk := range d.Tasks {
			if tk.Name != task {
				continue
			}
			tc := &dag.TaskContext{DAG: name, RunID: 1, LogicalDate: logical, Params: typed, Pool: f.pool}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := tk.Run(ctx, tc); err != nil {
				t.Fatalf("%s.%s: %v", name, task, err)
			}
			return
		}
	}
	t.Fatalf("no task %s.%s", name, task)
}

// TestCandlesCacheSeesMarketClose: the JSON answer for 1d is cached while
// there are no daily candles; market_close's daily_candles then writes
// one, and the next answers must show it (they showed [] until a restart),
// and an open stream is told.
func TestCandlesCacheSeesMarketClose(t *testing.T) {
	f := newFixture(t)
	const path = "/api/candles?symbol=AAPL&interval=1d"
	for range 2 { // the second is answered from the cache
		if a := f.candlesJSON(t, path); len(a.Candles) != 0 {
			t.Fatalf("1d candles before market_close: %+v", a.Candles)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", f.srv.URL+"/api/stream?symbol=AAPL", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "retry:") {
		t.Fatalf("first line %q", line)
	}

	date := time.Date(2026, 11, 2, 0, 0, 0, 0, newYork)
	runTask(t, f, job.DAGMarketClose, "daily_candles", date, date.Add(20*time.Hour), nil)

	got := f.awaitCandles(t, "the day's candle", path, func(c []store.Candle) bool { return len(c) > 0 })
	// The fixture's three minutes: 100 … 100.25, 1,000 shares.
	if len(got) != 1 || got[0].T != date.Unix() || got[0].Open != 100 || got[0].High != 102 || got[0].Low != 99.5 ||
		got[0].Close != 100.25 || got[0].Volume != 1000 || !got[0].Final {
		t.Fatalf("1d candles after market_close: %+v", got)
	}

	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("the stream ended before a candles_changed event: %v", err)
		}
		if line != "event: candles_changed\n" {
			continue
		}
		data, _ := r.ReadString('\n')
		var ev store.CandlesChanged
		if err := json.Unmarshal([]byte(strings.TrimPrefix(data, "data: ")), &ev); err != nil || ev != (store.CandlesChanged{Symbol: "AAPL", Interval: "1d"}) {
			t.Fatalf("candles_changed %q: %v", data, err)
		}
		break
	}
}

// TestCandlesCacheSeesBackfill: a 1m candle went missing; with the 1m and
// 5m answers cached, the backfill's recompute rebuilds them from the
// ticks, and the next answers must show the rebuilt candles.
func TestCandlesCacheSeesBackfill(t *testing.T) {
	f := newFixture(t)
	if _, err := f.pool.Exec(context.Background(), `DELETE FROM candles WHERE symbol = 'AAPL' AND interval = '1m' AND bucket = $1`,
		day.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	const path1m = "/api/candles?symbol=AAPL&interval=1m"
	const path5m = "/api/candles?symbol=AAPL&interval=5m"
	for range 2 {
		if a := f.candlesJSON(t, path1m); len(a.Candles) != 2 {
			t.Fatalf("1m before the backfill: %+v", a.Candles)
		}
		if a := f.candlesJSON(t, path5m); len(a.Candles) != 0 {
			t.Fatalf("5m before the backfill: %+v", a.Candles)
		}
	}

	date := time.Date(2026, 11, 2, 0, 0, 0, 0, newYork)
	runTask(t, f, job.DAGBackfill, "recompute", date, time.Now(),
		map[string]string{"symbol": "AAPL", "from": "2026-11-02", "to": "2026-11-02"})

	got := f.awaitCandles(t, "the rebuilt minute", path1m, func(c []store.Candle) bool { return len(c) != 2 })
	if len(got) != 3 || got[1].T != day.Add(time.Minute).Unix() || got[1].Open != 100.5 || got[1].High != 102 ||
		got[1].Close != 101 || got[1].Volume != 300 || !got[2].Final {
		t.Fatalf("1m after the backfill: %+v", got)
	}
	got = f.awaitCandles(t, "the rebuilt 5m candle", path5m, func(c []store.Candle) bool { return len(c) != 0 })
	if len(got) != 1 || got[0].T != day.Unix() || got[0].Volume != 1000 || got[0].Close != 100.25 {
		t.Fatalf("5m after the backfill: %+v", got)
	}
}

// TestCandlesCacheDroppedOnReconnect: a change committed while the server
// is not listening notifies nobody (here: one that notifies nobody at
// all); when the server's LISTEN comes back, cached answers must be
// dropped, since they may predate such changes.
func TestCandlesCacheDroppedOnReconnect(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const path = "/api/candles?symbol=AAPL&interval=1m"
	if a := f.candlesJSON(t, path); len(a.Candles) != 3 || a.Candles[0].Close != 100.5 {
		t.Fatalf("before: %+v", a.Candles)
	}
	if _, err := f.pool.Exec(ctx, `UPDATE candles SET close = 100.75 WHERE symbol = 'AAPL' AND interval = '1m' AND bucket = $1`, day); err != nil {
		t.Fatal(err)
	}
	// Cached: nothing announced the update.
	if a := f.candlesJSON(t, path); a.Candles[0].Close != 100.5 {
		t.Fatalf("the answer was not cached: %+v", a.Candles)
	}

	listener := func() (pids []int32) {
		rows, err := f.pool.Query(ctx, `SELECT pid FROM pg_stat_activity
			WHERE datname = current_database() AND query = 'LISTEN '||$1`, store.Channel)
		if err != nil {
			t.Fatal(err)
		}
		pids, err = pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			t.Fatal(err)
		}
		return pids
	}
	old := listener()
	if len(old) != 1 {
		t.Fatalf("listening backends: %v", old)
	}
	if _, err := f.pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, old[0]); err != nil {
		t.Fatal(err)
	}
	f.awaitCandles(t, "a fresh answer after the server listens again", path,
		func(c []store.Candle) bool { return len(c) == 3 && c[0].Close == 100.75 })
	if now := listener(); len(now) != 1 || now[0] == old[0] {
		t.Errorf("listening backends after the reconnection: %v (before: %v)", now, old)
	}
}

// TestCandlesChangedNotification sends candles_changed the way the
// scheduler does, for many symbols (more than one notification's worth)
// and for every symbol of an interval.
func TestCandlesChangedNotification(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	path1m := "/api/candles?symbol=AAPL&interval=1m"
	path1d := "/api/candles?symbol=AAPL&interval=1d"
	f.candlesJSON(t, path1m)
	f.candlesJSON(t, path1d)

	syms := make([]string, 0, 2001)
	for i := range 2000 {
		syms = append(syms, fmt.Sprintf("SYM%04d", i))
	}
	syms = append(syms, "AAPL") // in the last notification
	err := pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE candles SET close = 100.75 WHERE symbol = 'AAPL' AND interval = '1m' AND bucket = $1`, day); err != nil {
			return err
		}
		return store.NotifyCandlesChanged(ctx, tx, "1m", syms)
	})
	if err != nil {
		t.Fatal(err)
	}
	f.awaitCandles(t, "the 1m change", path1m, func(c []store.Candle) bool { return len(c) == 3 && c[0].Close == 100.75 })

	err = pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO candles (symbol, interval, bucket, open, high, low, close, volume, vwap, trades, final)
			VALUES ('AAPL', '1d', $1, 100, 102, 99.5, 100.25, 1000, 100.5, 10, true)`, time.Date(2026, 11, 2, 0, 0, 0, 0, newYork)); err != nil {
			return err
		}
		return store.NotifyCandlesChanged(ctx, tx, "1d", nil) // every symbol
	})
	if err != nil {
		t.Fatal(err)
	}
	f.awaitCandles(t, "the 1d change", path1d, func(c []store.Candle) bool { return len(c) == 1 })
}

// fullDay stores one simulated regular session of IBM: 390 1m candles,
// 09:30 to 15:59 New York on 3 November 2026, and returns their buckets.
func fullDay(t *testing.T, f *fixture) []int64 {
	t.Helper()
	open := time.Date(2026, 11, 3, 9, 30, 0, 0, newYork)
	b := &store.Batch{Group: "g", Topic: "ticks"}
	var want []int64
	for m := range 390 {
		p := 150 + float64(m%17)/4
		bucket := open.Add(time.Duration(m) * time.Minute)
		b.Candles = append(b.Candles, analytics.CandleRow{Symbol: "IBM", Interval: "1m", Candle: candle.Candle{
			Bucket: bucket, Open: p, High: p + 0.5, Low: p - 0.5, Close: p, Volume: 100, Turnover: 100 * p, Trades: 1, Final: true}})
		want = append(want, bucket.Unix())
	}
	f.commit(t, b)
	return want
}

var nextRe = regexp.MustCompile(`^<(/api/candles\?[^>]+)>; rel="next"$`)

// page is one answer of a paged walk.
type page struct {
	buckets []int64
	next    string // the rel="next" link, "" when the answer says it is complete
}

// walk follows rel="next" links from path and returns the pages.
func walk(t *testing.T, f *fixture, path string, csv bool) []page {
	t.Helper()
	var pages []page
	for path != "" {
		if len(pages) > 20 {
			t.Fatalf("more than 20 pages; last %s", path)
		}
		code, hdr, body := f.get(t, path)
		if code != 200 {
			t.Fatalf("%s: %d %s", path, code, body)
		}
		var p page
		if csv {
			lines := strings.Split(strings.TrimSpace(string(body)), "\n")
			if !strings.HasPrefix(lines[0], "bucket,") {
				t.Fatalf("%s: %q", path, body)
			}
			for _, l := range lines[1:] {
				ts, err := time.Parse(time.RFC3339, l[:strings.IndexByte(l, ',')])
				if err != nil {
					t.Fatal(err)
				}
				p.buckets = append(p.buckets, ts.Unix())
			}
		} else {
			var a candlesAnswer
			if err := json.Unmarshal(body, &a); err != nil || a.Symbol != "IBM" || a.Interval != "1m" {
				t.Fatalf("%s: %s (%v)", path, body, err)
			}
			for _, c := range a.Candles {
				p.buckets = append(p.buckets, c.T)
			}
		}
		if links := hdr.Values("Link"); len(links) > 0 {
			m := nextRe.FindStringSubmatch(links[0])
			if len(links) != 1 || m == nil {
				t.Fatalf("%s: Link %q", path, links)
			}
			p.next = m[1]
		}
		pages = append(pages, p)
		path = p.next
	}
	return pages
}

func pageSizes(pages []page) []int {
	var n []int
	for _, p := range pages {
		n = append(n, len(p.buckets))
	}
	return n
}

// TestCandlesPagingForward pages through a full day of 390 1m candles with
// from, a fixed to and a limit: every candle once, in order, and only the
// last page says it is complete — also when it is full.
func TestCandlesPagingForward(t *testing.T) {
	f := newFixture(t)
	want := fullDay(t, f)
	from := url.QueryEscape(time.Unix(want[0], 0).UTC().Format(time.RFC3339))
	to := url.QueryEscape(time.Date(2026, 11, 3, 16, 0, 0, 0, newYork).UTC().Format(time.RFC3339))
	for _, tc := range []struct {
		limit int
		csv   bool
		sizes []int
	}{
		{100, false, []int{100, 100, 100, 90}},
		{130, false, []int{130, 130, 130}}, // the last page is full, and still the last
		{100, true, []int{100, 100, 100, 90}},
		{1000, false, []int{390}},
	} {
		path := fmt.Sprintf("/api/candles?symbol=IBM&interval=1m&from=%s&to=%s&limit=%d", from, to, tc.limit)
		if tc.csv {
			path += "&format=csv"
		}
		pages := walk(t, f, path, tc.csv)
		if got := pageSizes(pages); !slices.Equal(got, tc.sizes) {
			t.Errorf("limit %d csv %v: pages of %v candles, want %v", tc.limit, tc.csv, got, tc.sizes)
		}
		var all []int64
		for i, p := range pages {
			if (p.next == "") != (i == len(pages)-1) {
				t.Errorf("limit %d csv %v: page %d of %d has next %q", tc.limit, tc.csv, i+1, len(pages), p.next)
			}
			if tc.csv && p.next != "" && !strings.Contains(p.next, "format=csv") {
				t.Errorf("the next CSV page is not CSV: %s", p.next)
			}
			all = append(all, p.buckets...)
		}
		if !slices.Equal(all, want) {
			t.Errorf("limit %d csv %v: %d candles, not the day's 390 in order once each", tc.limit, tc.csv, len(all))
		}
	}
	// The first page alone is the oldest 100 of the window, not the newest.
	if a := f.candlesJSON(t, fmt.Sprintf("/api/candles?symbol=IBM&interval=1m&from=%s&to=%s&limit=100", from, to)); len(a.Candles) != 100 ||
		a.Candles[0].T != want[0] || a.Candles[99].T != want[99] {
		t.Errorf("first page from %d to %d", a.Candles[0].T, a.Candles[len(a.Candles)-1].T)
	}
}

// TestCandlesPagingBackward pages from the newest candle back: with to,
// and with neither from nor to (the latest), each page ascending.
func TestCandlesPagingBackward(t *testing.T) {
	f := newFixture(t)
	want := fullDay(t, f)
	to := url.QueryEscape(time.Unix(want[len(want)-1], 0).UTC().Format(time.RFC3339))
	for _, tc := range []struct {
		path  string
		sizes []int
	}{
		{"/api/candles?symbol=IBM&interval=1m&limit=100&to=" + to, []int{100, 100, 100, 90}},
		{"/api/candles?symbol=IBM&interval=1m&limit=130", []int{130, 130, 130}},
	} {
		pages := walk(t, f, tc.path, false)
		if got := pageSizes(pages); !slices.Equal(got, tc.sizes) {
			t.Errorf("%s: pages of %v candles, want %v", tc.path, got, tc.sizes)
		}
		var all []int64
		for i := len(pages) - 1; i >= 0; i-- {
			p := pages[i]
			if (p.next == "") != (i == len(pages)-1) {
				t.Errorf("%s: page %d of %d has next %q", tc.path, i+1, len(pages), p.next)
			}
			if p.next != "" && strings.Contains(p.next, "from=") {
				t.Errorf("a backward page links forward: %s", p.next)
			}
			all = append(all, p.buckets...)
		}
		if !slices.Equal(all, want) {
			t.Errorf("%s: %d candles, not the day's 390 in order once each", tc.path, len(all))
		}
	}
}
