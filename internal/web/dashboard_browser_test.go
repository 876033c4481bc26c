package web_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/stockpipe/stockpipe/internal/analytics"
	"github.com/stockpipe/stockpipe/internal/candle"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
	"github.com/stockpipe/stockpipe/internal/store"
	"github.com/stockpipe/stockpipe/internal/web"
)

func navigate(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatal(err)
	}
}

// untilWithin is until with its own timeout.
func untilWithin(t *testing.T, ctx context.Context, d time.Duration, what, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(d))); err != nil {
		t.Fatalf("waiting for %s (%s): %v", what, expr, err)
	}
}

// timezone makes the page's clock read in the given IANA zone.
func timezone(t *testing.T, ctx context.Context, tz string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: tz})
		return err
	})); err != nil {
		t.Fatal(err)
	}
}

// shots saves the page at 1280×720 as name and at 390×844 as name-phone,
// and leaves the phone size in place.
func shots(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 720)); err != nil {
		t.Fatal(err)
	}
	screenshot(t, ctx, name)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844)); err != nil {
		t.Fatal(err)
	}
	screenshot(t, ctx, name+"-phone")
}

const dotState = `document.querySelector('#conn-state').dataset.state`
const dotText = `document.querySelector('#conn-state').textContent.trim()`
const dotColour = `getComputedStyle(document.querySelector('#conn-state'), '::before').backgroundColor`

// TestBrowserStatusDotFollowsDatabase stops PostgreSQL under an open page:
// the stream stays connected, but the dot must turn red and say why; a
// page opened meanwhile shows the same; when PostgreSQL is back the dot is
// green again and the page reloads what it could not load.
func TestBrowserStatusDotFollowsDatabase(t *testing.T) {
	f := newFixture(t)
	ctx := browser(t)
	navigate(t, ctx, f.srv.URL+"/")
	until(t, ctx, "the watchlist", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.symbols() === 1`)
	until(t, ctx, "a green dot", dotState+` === 'live' && `+dotText+` === 'live'`)
	if got := eval[string](t, ctx, dotColour); got != "rgb(63, 185, 80)" {
		t.Errorf("the live dot is drawn in %s, not green", got)
	}

	cluster := pgtest.Cluster(t)
	if err := cluster.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	restarted := false
	// The cluster is shared with the package's other tests (and this
	// test's database is dropped after this runs).
	t.Cleanup(func() {
		if !restarted {
			if err := cluster.Restart(context.Background()); err != nil {
				t.Errorf("restarting PostgreSQL: %v", err)
			}
		}
	})
	until(t, ctx, "a red dot on the open page", dotState+` === 'down' && `+dotText+` === 'database unreachable'`)
	if s := eval[string](t, ctx, `document.querySelector('#conn-state').title`); s == "" {
		t.Error("the red dot gives no detail in its title")
	}

	// The case first reported: a page opened while the database is down.
	navigate(t, ctx, f.srv.URL+"/")
	until(t, ctx, "the load error", `!document.querySelector('#error').hidden && /Could not load the watchlist/.test(document.querySelector('#error').textContent)`)
	until(t, ctx, "a red dot on the new page", dotState+` === 'down' && `+dotText+` === 'database unreachable'`)
	if !eval[bool](t, ctx, `document.querySelector('#empty').hidden`) {
		t.Error("the page says it waits for ticks while it could not read the watchlist")
	}
	if got := eval[string](t, ctx, dotColour); got != "rgb(255, 123, 114)" {
		t.Errorf("the dot is drawn in %s, not the down colour", got)
	}
	shots(t, ctx, "overview-database-down")

	if err := cluster.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	restarted = true
	// The server reconnects its LISTEN with a backoff of up to 5 s, and
	// the page asks every 5 s.
	untilWithin(t, ctx, 45*time.Second, "a green dot again", dotState+` === 'live' && `+dotText+` === 'live'`)
	until(t, ctx, "the watchlist reloaded", `document.querySelector('#error').hidden && window.stockpipe.symbols() === 1`)
}

// TestBrowserAnomalyTimesShowDateAndZone reads the fixture's anomaly
// (14:31:10 UTC on 2 November 2026) in a New York browser.
func TestBrowserAnomalyTimesShowDateAndZone(t *testing.T) {
	f := newFixture(t)
	ctx := browser(t)
	timezone(t, ctx, "America/New_York")
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	at := day.Add(70 * time.Second)
	want := at.In(ny).Format("2006-01-02 15:04:05 MST") // 2026-11-02 09:31:10 EST
	for _, page := range []struct{ path, list string }{
		{"/", "#anomalies"},
		{"/symbol/AAPL?interval=1m&range=all", "#sym-anomalies"},
	} {
		navigate(t, ctx, f.srv.URL+page.path)
		sel := strconv.Quote(page.list + " .anomaly-time")
		until(t, ctx, "the anomaly on "+page.path, `document.querySelector(`+sel+`) !== null`)
		if got := eval[string](t, ctx, `document.querySelector(`+sel+`).textContent`); got != want {
			t.Errorf("%s: anomaly time %q, want %q", page.path, got, want)
		}
		if got := eval[string](t, ctx, `document.querySelector(`+sel+`).dateTime`); got != at.Format(time.RFC3339) {
			t.Errorf("%s: datetime attribute %q", page.path, got)
		}
	}
}

// TestBrowserSymbolHeaderChangeAndRSINote checks the symbol page's change
// on the day and the RSI pane's note, first as loaded, then as committed
// batches arrive.
func TestBrowserSymbolHeaderChangeAndRSINote(t *testing.T) {
	f := newFixture(t)
	ctx := browser(t)
	navigate(t, ctx, f.srv.URL+"/symbol/AAPL?interval=1m&range=all")
	until(t, ctx, "three candles", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.candleCount() === 3`)

	// Last 100.25 against the day's first trade at 100.
	until(t, ctx, "the change on the day", `document.querySelector('#last-change').textContent === '▲ +0.25 (+0.25%)'`)
	if !eval[bool](t, ctx, `document.querySelector('#last-change').classList.contains('up')`) ||
		eval[string](t, ctx, `document.querySelector('#last-price').textContent`) != "100.25" {
		t.Error("the header's price or the change's colour is wrong")
	}

	const note = `document.querySelector('#rsi-note')`
	until(t, ctx, "the RSI note", `!`+note+`.hidden && `+note+`.textContent === 'RSI(14) needs 15 candles; 3 so far.'`)
	// The note sits in the RSI pane, not over the candles.
	inPane := `(() => {
		const p = window.stockpipe.rsiPaneRect();
		const n = ` + note + `.getBoundingClientRect();
		const y = (n.top + n.bottom) / 2;
		return p !== null && p.bottom - p.top > 20 && y > p.top && y < p.bottom;
	})()`
	until(t, ctx, "the note inside the RSI pane", inPane)
	shots(t, ctx, "symbol-few-candles")
	until(t, ctx, "the note inside the RSI pane on a phone", inPane)

	// A trade at 99.50 in a fourth minute: down on the day, one more candle.
	bucket := day.Add(3 * time.Minute)
	f.commit(t, &store.Batch{Group: "g", Topic: "ticks",
		Ticks: []store.TickRow{{Tick: market.Tick{Symbol: "AAPL", TS: bucket.Add(5 * time.Second), Seq: 11, Price: 99.5, Size: 100,
			Bid: 99.49, Ask: 99.51}, Offset: 10}},
		Candles: []analytics.CandleRow{{Symbol: "AAPL", Interval: "1m", Candle: candle.Candle{Bucket: bucket,
			Open: 99.5, High: 99.5, Low: 99.5, Close: 99.5, Volume: 100, Turnover: 9950, Trades: 1}}},
	})
	until(t, ctx, "the change to follow the trade", `document.querySelector('#last-change').textContent === '▼ −0.50 (−0.50%)'`)
	if !eval[bool](t, ctx, `document.querySelector('#last-change').classList.contains('down')`) {
		t.Error("a fall on the day is not coloured down")
	}
	until(t, ctx, "the note to count the new candle", note+`.textContent === 'RSI(14) needs 15 candles; 4 so far.'`)
}

// TestBrowserPipelineRowsAndTiles opens /pipeline on the fixture: exact row
// counts, the failed DAG runs linking to /dags, and the data directory.
func TestBrowserPipelineRowsAndTiles(t *testing.T) {
	dir := dataDirFixture(t)
	f := newFixtureWith(t, func(c *web.Config) { c.DataDir = dir })
	insertRunsAndAnomalies(t, f)
	ctx := browser(t)
	navigate(t, ctx, f.srv.URL+"/pipeline")
	until(t, ctx, "the page loaded", `window.stockpipe && window.stockpipe.loaded === true`)
	rows := func(table string) string {
		return `document.querySelector('#tables tr[data-table="` + table + `"] td.rows')`
	}
	// The page may first show a sample taken before the inserts.
	until(t, ctx, "five anomalies", rows("anomalies")+`?.textContent === '5' && `+rows("anomalies")+`.dataset.exact === 'true'`)
	if got := eval[string](t, ctx, rows("symbols")+`.textContent`); got != "1" {
		t.Errorf("symbols shows %q rows, want 1", got)
	}
	if got := eval[string](t, ctx, `document.querySelector('#tables thead th:last-child').textContent`); got != "Rows" {
		t.Errorf("the rows column is headed %q", got)
	}

	until(t, ctx, "three failed runs", `document.querySelector('#failed-runs-count').textContent === '3'`)
	if got := eval[string](t, ctx, `new URL(document.querySelector('#failed-runs').href).pathname`); got != "/dags" {
		t.Errorf("the failed runs link to %q", got)
	}

	var p pipelineState
	if _, _, body := f.get(t, "/api/pipeline"); json.Unmarshal(body, &p) != nil || p.DataDir == nil {
		t.Fatalf("/api/pipeline: %s", body)
	}
	until(t, ctx, "the data directory", `!document.querySelector('#disk-size').hidden && !document.querySelector('#disk-free').hidden &&
		/^\d+(\.\d)? KiB$/.test(document.querySelector('#disk-size-value').textContent) &&
		/ of .*\(\d+%\)/.test(document.querySelector('#disk-free-value').textContent)`)
	if got := eval[string](t, ctx, `document.querySelector('#disk-free').dataset.low`); got != strconv.FormatBool(p.DataDir.Low) {
		t.Errorf("the page marks low = %s, the API says %v", got, p.DataDir.Low)
	}
	shots(t, ctx, "pipeline-counts")
	if w := eval[float64](t, ctx, `document.documentElement.scrollWidth`); w > 400 {
		t.Errorf("the pipeline page is %v px wide on a 390 px screen", w)
	}
}
