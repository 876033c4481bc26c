package web_test

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/stockpipe/stockpipe/internal/analytics"
	"github.com/stockpipe/stockpipe/internal/candle"
	"github.com/stockpipe/stockpipe/internal/store"
)

// The fixture's three AAPL minutes, 14:30–14:32 UTC on 2 November 2026:
// 09:30–09:32 in New York (EST).
var (
	bar0 = day.Unix()
	bar1 = day.Add(time.Minute).Unix()
	bar2 = day.Add(2 * time.Minute).Unix()
)

// alertFixture adds to the fixture's up jump (14:31:10, on bar1) a down
// jump on bar2 and three undirected or opposite alerts on bar0.
func alertFixture(t *testing.T, f *fixture) {
	t.Helper()
	for _, a := range []struct {
		at            time.Duration
		kind, sev     string
		value, thresh float64
		detail        string
	}{
		{2*time.Minute + 5*time.Second, "price_jump", "medium", -9, -6, "AAPL fell 0.99% (101 → 100) in 10s, 9.0σ of its recent tick-to-tick volatility"},
		{5 * time.Second, "volume_burst", "low", 6, 5, "AAPL traded 600 shares in one trade, 6.0× its typical trade of 100 shares"},
		{15 * time.Second, "spread_blowout", "medium", 9, 8, "AAPL spread widened to 20.0 bp (bid 100, ask 100.2), 9.0× its typical 2.22 bp"},
		{25 * time.Second, "vwap_deviation", "low", -45, -40, "AAPL traded at 99.5, 0.45% below its session VWAP of 99.95"},
	} {
		if _, err := f.pool.Exec(context.Background(), `INSERT INTO anomalies (symbol, ts, kind, severity, value, threshold, detail)
			VALUES ('AAPL', $1, $2, $3, $4, $5, $6)`, day.Add(a.at), a.kind, a.sev, a.value, a.thresh, a.detail); err != nil {
			t.Fatal(err)
		}
	}
}

// chooseZone picks an entry of the page's time zone selector as a reader
// would, firing its change event.
func chooseZone(t *testing.T, ctx context.Context, zone string) {
	t.Helper()
	eval[bool](t, ctx, `(() => { const s = document.querySelector('#zone'); s.value = `+strconv.Quote(zone)+`; s.dispatchEvent(new Event('change', { bubbles: true })); return true; })()`)
}

const tradeTimes = `[...document.querySelectorAll('#trades time')].map((e) => e.textContent)`

// TestBrowserSymbolPageExchangeTime opens AAPL's chart in a UTC browser:
// the axis, the crosshair, the legend, the trades and the anomaly list
// read New York time under a visible zone label; UTC, chosen in the
// selector, shows 14:30 and is remembered; a 1d bar keeps its trading
// date even in a zone where its start falls on the day before.
func TestBrowserSymbolPageExchangeTime(t *testing.T) {
	f := newFixture(t)
	// The 1d bar of 2 November, which begins at midnight New York: 05:00
	// UTC, 19:00 on 1 November in Honolulu.
	daily := time.Date(2026, 11, 2, 0, 0, 0, 0, newYork)
	f.commit(t, &store.Batch{Group: "g", Topic: "ticks", Candles: []analytics.CandleRow{{Symbol: "AAPL", Interval: "1d", Candle: candle.Candle{
		Bucket: daily, Open: 100, High: 102, Low: 99.5, Close: 100.25, Volume: 1000, Turnover: 100400, Trades: 10, Final: true}}}})

	ctx := browser(t)
	timezone(t, ctx, "UTC")
	navigate(t, ctx, f.srv.URL+"/symbol/AAPL?interval=1m&range=all")
	until(t, ctx, "three candles", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.candleCount() === 3`)
	until(t, ctx, "the trades", `document.querySelectorAll('#trades time').length === 10`)
	until(t, ctx, "the anomaly list", `document.querySelector('#sym-anomalies .anomaly-time') !== null`)

	check := func(zone, label, abbr, clock, stamp string) {
		t.Helper()
		if got := eval[string](t, ctx, `document.querySelector('#zone-label').textContent`); got != label {
			t.Errorf("%s: the zone label reads %q, want %q", zone, got, label)
		}
		if got := eval[string](t, ctx, `document.querySelector('#zone').value`); got != zone {
			t.Errorf("the selector shows %q, want %q", got, zone)
		}
		if got := eval[string](t, ctx, `document.querySelector('#trades-zone').textContent`); got != "("+abbr+")" {
			t.Errorf("%s: the trades' time column is marked %q, want (%s)", zone, got, abbr)
		}
		sec := strconv.FormatInt(bar0, 10)
		if got := eval[string](t, ctx, `window.stockpipe.tickLabel(`+sec+`, 3)`); got != clock {
			t.Errorf("%s: the axis labels the 14:30Z bar %q, want %q", zone, got, clock)
		}
		if got := eval[string](t, ctx, `window.stockpipe.crosshairLabel(`+sec+`)`); !strings.HasSuffix(got, " "+clock) {
			t.Errorf("%s: the crosshair labels the 14:30Z bar %q, want … %s", zone, got, clock)
		}
		// The legend shows the last bar, 14:32Z.
		want := clock[:4] + "2"
		if got := eval[string](t, ctx, `document.querySelector('#legend .lg-time').textContent`); !strings.Contains(got, " "+want) {
			t.Errorf("%s: the legend's time is %q, want … %s", zone, got, want)
		}
		// Newest first: the last trade was at 14:32:20Z.
		trades := eval[[]string](t, ctx, tradeTimes)
		if len(trades) == 0 || trades[0] != want+":20.000" {
			t.Errorf("%s: the trades are at %q, want the newest at %s:20.000", zone, trades, want)
		}
		times := eval[[]string](t, ctx, `[...document.querySelectorAll('#sym-anomalies .anomaly-time')].map((e) => e.textContent)`)
		if len(times) != 1 || times[0] != stamp {
			t.Errorf("%s: the anomaly list's times are %q, want [%s]", zone, times, stamp)
		}
	}
	check("exchange", "Times in New York (ET)", "ET", "09:30", "2026-11-02 09:31:10 EST")
	shots(t, ctx, "symbol-exchange-time")

	chooseZone(t, ctx, "utc")
	until(t, ctx, "UTC times", `document.querySelector('#zone-label').textContent === 'Times in UTC'`)
	check("utc", "Times in UTC", "UTC", "14:30", "2026-11-02 14:31:10 UTC")

	// Remembered across a reload.
	navigate(t, ctx, f.srv.URL+"/symbol/AAPL?interval=1m&range=all")
	until(t, ctx, "three candles after a reload", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.candleCount() === 3`)
	until(t, ctx, "the trades after a reload", `document.querySelectorAll('#trades time').length === 10`)
	until(t, ctx, "the anomaly list after a reload", `document.querySelector('#sym-anomalies .anomaly-time') !== null`)
	check("utc", "Times in UTC", "UTC", "14:30", "2026-11-02 14:31:10 UTC")

	// The reader's own zone, west of New York, on a daily chart: the bar
	// of 2 November begins there at 19:00 on the 1st, but is labelled
	// with its trading date.
	timezone(t, ctx, "Pacific/Honolulu")
	navigate(t, ctx, f.srv.URL+"/symbol/AAPL?interval=1d&range=all")
	until(t, ctx, "the 1d bar", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.candleCount() === 1`)
	chooseZone(t, ctx, "local")
	until(t, ctx, "the local zone", `/^Times in your time zone \(Pacific\/Honolulu, HST\)/.test(document.querySelector('#zone-label').textContent)`)
	sec := strconv.FormatInt(daily.Unix(), 10)
	for _, expr := range []string{
		`window.stockpipe.crosshairLabel(` + sec + `)`,
		`window.stockpipe.tickLabel(` + sec + `, 2)`,
		`document.querySelector('#legend .lg-time').textContent`,
	} {
		if got := eval[string](t, ctx, expr); !regexp.MustCompile(`\bNov 2\b`).MatchString(got) {
			t.Errorf("the 1d bar of 2 November reads %q (%s)", got, expr)
		}
	}
	// And intraday, the same zone's clock: 14:30Z is 04:30 in Honolulu.
	navigate(t, ctx, f.srv.URL+"/symbol/AAPL?interval=1m&range=all")
	until(t, ctx, "three candles in Honolulu", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.candleCount() === 3`)
	if got := eval[string](t, ctx, `window.stockpipe.tickLabel(`+strconv.FormatInt(bar0, 10)+`, 3)`); got != "04:30" {
		t.Errorf("in the reader's zone (Honolulu) the axis labels 14:30Z %q, want 04:30", got)
	}
}

type marker struct {
	Time     int64  `json:"time"`
	Position string `json:"position"`
	Shape    string `json:"shape"`
	Color    string `json:"color"`
	Text     string `json:"text"`
}

// TestBrowserSymbolPageAlertMarkers: an up jump is an up arrow under its
// bar in the up colour, a down jump a down arrow over it in the down
// colour, and a bar with three alerts (a volume burst, a wide spread and
// a fall below VWAP) one circle that counts them; kinds read as labels.
func TestBrowserSymbolPageAlertMarkers(t *testing.T) {
	f := newFixture(t)
	alertFixture(t, f)
	ctx := browser(t)
	navigate(t, ctx, f.srv.URL+"/symbol/AAPL?interval=1m&range=all")
	until(t, ctx, "three markers", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.markerCount() === 3`)

	up := eval[string](t, ctx, `window.stockpipe.candleOptions().borderUpColor`)
	down := eval[string](t, ctx, `window.stockpipe.candleOptions().borderDownColor`)
	if up == down {
		t.Fatalf("up and down candles share the colour %s", up)
	}
	want := []marker{
		{bar0, "aboveBar", "circle", "", "3 alerts"},
		{bar1, "belowBar", "arrowUp", up, "Price jump"},
		{bar2, "aboveBar", "arrowDown", down, "Price jump"},
	}
	got := eval[[]marker](t, ctx, `window.stockpipe.markers()`)
	if len(got) != len(want) {
		t.Fatalf("markers %+v, want %+v", got, want)
	}
	for i, w := range want {
		g := got[i]
		if w.Color == "" {
			w.Color = g.Color // the severity's
		}
		if g != w {
			t.Errorf("marker %d is %+v, want %+v", i, g, w)
		}
	}
	if got[0].Color == up || got[0].Color == down {
		t.Errorf("the undirected bar's circle is drawn in a direction's colour %s", got[0].Color)
	}

	until(t, ctx, "the anomaly list", `document.querySelectorAll('#sym-anomalies .anomaly-link').length === 5`)
	links := eval[[]string](t, ctx, `[...document.querySelectorAll('#sym-anomalies .anomaly-link')].map((a) => a.textContent)`)
	wantLinks := []string{"Price jump", "Price jump", "VWAP deviation", "Spread blowout", "Volume burst"}
	if fmt.Sprint(links) != fmt.Sprint(wantLinks) {
		t.Errorf("the anomaly list reads %q, want %q", links, wantLinks)
	}
	shots(t, ctx, "symbol-alert-markers")
}

// relativeLuminance is WCAG 2's, of a colour as #rrggbb.
func relativeLuminance(t *testing.T, hex string) float64 {
	t.Helper()
	if !regexp.MustCompile(`^#[0-9a-fA-F]{6}$`).MatchString(hex) {
		t.Fatalf("colour %q is not #rrggbb", hex)
	}
	var l float64
	for i, w := range []float64{0.2126, 0.7152, 0.0722} {
		v, _ := strconv.ParseUint(hex[1+2*i:3+2*i], 16, 8)
		c := float64(v) / 255
		if c <= 0.04045 {
			c /= 12.92
		} else {
			c = math.Pow((c+0.055)/1.055, 2.4)
		}
		l += w * c
	}
	return l
}

func contrast(t *testing.T, a, b string) float64 {
	t.Helper()
	la, lb := relativeLuminance(t, a), relativeLuminance(t, b)
	return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)
}

// legendC is the legend's close.
const legendC = `[...document.querySelectorAll('#legend .lg-item')].find((e) => e.querySelector('.lg-label').textContent === 'C')?.textContent`

// TestBrowserSymbolPageChartAccessibility: up candles are hollow and down
// candles filled; SMA 20 and the session VWAP differ in luminance; the
// chart takes focus and its arrow keys step a crosshair through the bars,
// with the legend, the marker list and a status line following.
func TestBrowserSymbolPageChartAccessibility(t *testing.T) {
	f := newFixture(t)
	alertFixture(t, f)
	ctx := browser(t)
	timezone(t, ctx, "UTC")
	navigate(t, ctx, f.srv.URL+"/symbol/AAPL?interval=1m&range=all")
	until(t, ctx, "three candles", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.candleCount() === 3 && window.stockpipe.markerCount() === 3`)

	// The bodies' fill, as the canvas paints it: its alpha.
	alpha := func(opt string) float64 {
		return eval[float64](t, ctx, `(() => {
			const c = document.createElement('canvas').getContext('2d');
			c.fillStyle = window.stockpipe.candleOptions().`+opt+`;
			c.fillRect(0, 0, 1, 1);
			return c.getImageData(0, 0, 1, 1).data[3];
		})()`)
	}
	if a := alpha("upColor"); a != 0 {
		t.Errorf("up bodies are filled (alpha %v), want hollow", a)
	}
	if a := alpha("downColor"); a != 255 {
		t.Errorf("down bodies have alpha %v, want filled", a)
	}
	if !eval[bool](t, ctx, `(() => { const o = window.stockpipe.candleOptions(); return o.borderVisible && o.borderUpColor === o.wickUpColor && o.borderUpColor !== o.borderDownColor; })()`) {
		t.Error("up candles have no outline in the up colour")
	}

	sma, vwap := eval[string](t, ctx, `window.stockpipe.lineColor('sma20')`), eval[string](t, ctx, `window.stockpipe.lineColor('vwap')`)
	if c := contrast(t, sma, vwap); c < 2 {
		t.Errorf("SMA 20 (%s) and VWAP (%s) have a contrast ratio of %.2f:1, want 2:1 or more", sma, vwap, c)
	}
	for _, c := range []string{sma, vwap} {
		if r := contrast(t, c, "#0d1117"); r < 3 {
			t.Errorf("the line colour %s has %.2f:1 against the chart's background", c, r)
		}
	}
	// The legend names the VWAP line in the line's colour (the page's
	// own stylesheet).
	if !eval[bool](t, ctx, `document.querySelector('input[data-ind="vwap"]').checked`) {
		if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`input[data-ind="vwap"]`))); err != nil {
			t.Fatal(err)
		}
	}
	until(t, ctx, "the VWAP legend", `document.querySelector('#legend .ind-vwap .lg-label') !== null`)
	r, g, b := hexRGB(vwap)
	if got, want := eval[string](t, ctx, `getComputedStyle(document.querySelector('#legend .ind-vwap .lg-label')).color`), fmt.Sprintf("rgb(%d, %d, %d)", r, g, b); got != want {
		t.Errorf("the legend's VWAP label is %s, the line %s", got, want)
	}

	if got := eval[string](t, ctx, `document.querySelector('#chart').getAttribute('tabindex')`); got != "0" {
		t.Errorf("the chart's tabindex is %q", got)
	}
	if got := eval[string](t, ctx, `document.querySelector('#chart').getAttribute('aria-label')`); !strings.Contains(got, "arrow keys") {
		t.Errorf("the chart's label does not tell of its keys: %q", got)
	}
	until(t, ctx, "the last bar's close", legendC+` === 'C 100.25'`)
	if err := chromedp.Do(ctx, chromedp.Focus(chromedp.CSS(`#chart`))); err != nil {
		t.Fatal(err)
	}
	if !eval[bool](t, ctx, `document.activeElement === document.querySelector('#chart')`) {
		t.Fatal("the chart did not take focus")
	}
	press := func(key string) {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.KeyEvent(key)); err != nil {
			t.Fatal(err)
		}
	}
	press(kb.ArrowLeft)
	until(t, ctx, "the previous bar in the legend", legendC+` === 'C 101.00' && window.stockpipe.selectedTime() === `+strconv.FormatInt(bar1, 10))
	if got := eval[string](t, ctx, `document.querySelector('#legend .lg-time').textContent`); !strings.HasSuffix(got, " 09:31") {
		t.Errorf("the legend's time is %q, want … 09:31", got)
	}
	if got := eval[string](t, ctx, `document.querySelector('#bar-readout').textContent`); !strings.Contains(got, "close 101.00") || !strings.Contains(got, "Price jump (high)") {
		t.Errorf("the status line reads %q", got)
	}
	until(t, ctx, "the bar's alert listed", `!document.querySelector('#marker-tip').hidden && /Price jump · high/.test(document.querySelector('#marker-tip').textContent)`)

	press(kb.ArrowLeft)
	until(t, ctx, "the first bar", legendC+` === 'C 100.50'`)
	if n := eval[int](t, ctx, `document.querySelectorAll('#marker-tip .tip-item').length`); n != 3 {
		t.Errorf("the first bar's list shows %d alerts, want 3", n)
	}
	press(kb.ArrowLeft) // nothing before the first bar
	press(kb.ArrowRight)
	until(t, ctx, "the second bar again", legendC+` === 'C 101.00'`)
	press(kb.End)
	until(t, ctx, "the last bar", legendC+` === 'C 100.25'`)
	press(kb.Escape)
	until(t, ctx, "no bar chosen", `window.stockpipe.selectedTime() === null && document.querySelector('#marker-tip').hidden`)
}

func hexRGB(hex string) (r, g, b uint64) {
	r, _ = strconv.ParseUint(hex[1:3], 16, 8)
	g, _ = strconv.ParseUint(hex[3:5], 16, 8)
	b, _ = strconv.ParseUint(hex[5:7], 16, 8)
	return r, g, b
}

// TestBrowserSymbolSwitcher: the head's "Go to symbol" box lists the
// symbols with data; a lower-case ticker typed and entered opens its chart
// with the interval and range kept; a malformed or unknown one is answered
// beside the box and the page stays.
func TestBrowserSymbolSwitcher(t *testing.T) {
	f := newFixture(t)
	b := &store.Batch{Group: "g", Topic: "ticks"}
	var seq int64
	for m := range 3 {
		b.Candles = append(b.Candles, msftCandle(day.Add(time.Duration(m)*time.Minute), m, &seq, &b.Ticks))
	}
	f.commit(t, b)

	ctx := browser(t)
	navigate(t, ctx, f.srv.URL+"/symbol/AAPL?interval=5m&range=5d")
	until(t, ctx, "the page and the symbol list", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.symbols().length === 2 && document.querySelectorAll('#goto-symbols option').length === 2`)
	if got := eval[string](t, ctx, `document.querySelector('label[for="goto-input"]').textContent`); got != "Go to symbol" {
		t.Errorf("the switcher is labelled %q", got)
	}
	if got := eval[[]string](t, ctx, `[...document.querySelectorAll('#goto-symbols option')].map((o) => o.value)`); fmt.Sprint(got) != "[AAPL MSFT]" {
		t.Errorf("the switcher lists %q, want [AAPL MSFT]", got)
	}

	enter := func(text string) {
		t.Helper()
		eval[bool](t, ctx, `(() => { document.querySelector('#goto-input').value = ''; return true; })()`)
		if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS(`#goto-input`), text+kb.Enter)); err != nil {
			t.Fatal(err)
		}
	}
	for _, bad := range []struct{ text, msg string }{{"1ab", "not a ticker"}, {"zzzz", "No data for ZZZZ"}} {
		enter(bad.text)
		until(t, ctx, "the complaint about "+bad.text, `document.querySelector('#goto-msg').textContent.includes(`+strconv.Quote(bad.msg)+`)`)
		if got := eval[string](t, ctx, `location.pathname`); got != "/symbol/AAPL" {
			t.Fatalf("after entering %q the page is %s", bad.text, got)
		}
		if got := eval[string](t, ctx, `document.querySelector('#goto-input').getAttribute('aria-invalid')`); got != "true" {
			t.Errorf("after entering %q the box is not marked invalid (%q)", bad.text, got)
		}
	}
	shots(t, ctx, "symbol-switcher-unknown")

	enter("msft")
	// The page goes away under a poll: wait for the new document instead.
	if err := chromedp.Do(ctx, chromedp.WaitReady(chromedp.CSS(`body[data-symbol="MSFT"]`))); err != nil {
		t.Fatalf("waiting for MSFT's page: %v", err)
	}
	until(t, ctx, "MSFT's page", `location.pathname === '/symbol/MSFT'`)
	until(t, ctx, "MSFT's chart", `window.stockpipe && window.stockpipe.loaded && document.body.dataset.symbol === 'MSFT'`)
	q := eval[map[string]string](t, ctx, `Object.fromEntries(new URLSearchParams(location.search))`)
	if q["interval"] != "5m" || q["range"] != "5d" {
		t.Errorf("MSFT opened with %v, want interval 5m and range 5d kept", q)
	}
	if !eval[bool](t, ctx, `document.querySelector('button[data-interval="5m"]').getAttribute('aria-pressed') === 'true' && document.querySelector('button[data-range="5d"]').getAttribute('aria-pressed') === 'true'`) {
		t.Error("MSFT's page does not show 5m and 5d chosen")
	}
}

// TestBrowserSymbolFormingOnlyWhileOpen: the fixture's newest 1m candle
// (09:32 New York on 2 November 2026) was never finalised, but its minute
// ended long ago: the legend must not call it forming. A candle whose
// minute is still running is.
func TestBrowserSymbolFormingOnlyWhileOpen(t *testing.T) {
	f := newFixture(t)
	ctx := browser(t)
	navigate(t, ctx, f.srv.URL+"/symbol/AAPL?interval=1m&range=all")
	until(t, ctx, "the last bar's close", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.candleCount() === 3 && `+legendC+` === 'C 100.25'`)
	if last := eval[map[string]any](t, ctx, `window.stockpipe.lastCandle()`); last["final"] != false {
		t.Fatalf("the fixture's last candle is %v, want one not final", last)
	}
	if got := eval[string](t, ctx, `document.querySelector('#legend .lg-time').textContent`); strings.Contains(got, "forming") {
		t.Errorf("the legend shows the unfinished 09:32 candle of 2026-11-02, whose minute closed long ago, as %q", got)
	}

	// A candle of the current minute, not final: forming.
	now := time.Now().UTC().Truncate(time.Minute)
	f.commit(t, &store.Batch{Group: "g", Topic: "ticks", Candles: []analytics.CandleRow{{Symbol: "AAPL", Interval: "1m", Candle: candle.Candle{
		Bucket: now, Open: 100, High: 100, Low: 100, Close: 100, Volume: 100, Turnover: 10000, Trades: 1}}}})
	navigate(t, ctx, f.srv.URL+"/symbol/AAPL?interval=1m&range=all")
	until(t, ctx, "the current minute's candle", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.lastCandle() && window.stockpipe.lastCandle().time === `+strconv.FormatInt(now.Unix(), 10))
	// Its minute may end meanwhile; then the legend rightly drops the word.
	if time.Since(now) < 50*time.Second {
		if got := eval[string](t, ctx, `document.querySelector('#legend .lg-time').textContent`); !strings.Contains(got, "(forming)") {
			t.Errorf("the legend does not call the current minute's candle forming: %q", got)
		}
	}
}

// TestBrowserSymbolTradesPause loads the pipeline with live trades: while
// the trades table is paused its first row stays put and the button counts
// the trades held; resuming shows them.
func TestBrowserSymbolTradesPause(t *testing.T) {
	p := startPipelineWith(t, nil)
	ctx := browser(t)
	navigate(t, ctx, p.baseURL+"/symbol/AAPL?interval=1m&range=1h")
	until(t, ctx, "the trades", `window.stockpipe && window.stockpipe.loaded && document.querySelectorAll('#trades tr').length > 0`)

	lctx, stop := context.WithCancel(context.Background())
	done := p.load(t, lctx, 300)
	t.Cleanup(func() { stop(); <-done })
	first := eval[int64](t, ctx, `window.stockpipe.firstTradeSeq()`)
	until(t, ctx, "live trades in the table", `window.stockpipe.firstTradeSeq() !== `+strconv.FormatInt(first, 10))

	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#trades-pause`))); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "the pause", `document.querySelector('#trades-pause').getAttribute('aria-pressed') === 'true'`)
	paused := eval[int64](t, ctx, `window.stockpipe.firstTradeSeq()`)
	pausedRow := eval[string](t, ctx, `document.querySelector('#trades tr').textContent`)
	// Trades keep arriving while the table holds still: each check waits
	// for more to be held, then looks at the first row.
	held := 0
	for i := range 3 {
		until(t, ctx, fmt.Sprintf("more trades held (%d)", i), `window.stockpipe.tradesHeld() > `+strconv.Itoa(held))
		held = eval[int](t, ctx, `window.stockpipe.tradesHeld()`)
		if got := eval[string](t, ctx, `document.querySelector('#trades tr').textContent`); got != pausedRow {
			t.Fatalf("paused, the first row changed from %q to %q", pausedRow, got)
		}
		if got := eval[int64](t, ctx, `window.stockpipe.firstTradeSeq()`); got != paused {
			t.Fatalf("paused, the first row's seq changed from %d to %d", paused, got)
		}
	}
	until(t, ctx, "the count on the button", `/\b[\d,]+ new$/.test(document.querySelector('#trades-pause').textContent.trim())`)
	shots(t, ctx, "symbol-trades-paused")

	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#trades-pause`))); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "the resumed table", `document.querySelector('#trades-pause').getAttribute('aria-pressed') === 'false' && window.stockpipe.firstTradeSeq() > `+strconv.FormatInt(paused, 10))
	if got := eval[string](t, ctx, `document.querySelector('#trades-new').textContent`); got != "" {
		t.Errorf("after resuming the button still counts %q", got)
	}
	if n := eval[int](t, ctx, `document.querySelectorAll('#trades tr').length`); n > 50 {
		t.Errorf("the table holds %d rows after resuming, more than 50", n)
	}
}

// TestBrowserSymbolLoneDailyCandle: one daily candle, fitted to the chart,
// is drawn at a candle's width, not spread over the chart.
func TestBrowserSymbolLoneDailyCandle(t *testing.T) {
	f := newFixture(t)
	f.commit(t, &store.Batch{Group: "g", Topic: "ticks", Candles: []analytics.CandleRow{{Symbol: "AAPL", Interval: "1d", Candle: candle.Candle{
		Bucket: time.Date(2026, 11, 2, 0, 0, 0, 0, newYork), Open: 100, High: 102, Low: 99.5, Close: 100.25, Volume: 1000, Turnover: 100400, Trades: 10, Final: true}}}})
	ctx := browser(t)
	navigate(t, ctx, f.srv.URL+"/symbol/AAPL?interval=1d&range=all")
	until(t, ctx, "the 1d bar", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.candleCount() === 1 && window.stockpipe.barSpacing() > 0`)
	if w := eval[float64](t, ctx, `document.querySelector('#chart').getBoundingClientRect().width`); w < 400 {
		t.Fatalf("the chart is %v px wide, too narrow for the test to mean anything", w)
	}
	if s := eval[float64](t, ctx, `window.stockpipe.barSpacing()`); s > 60 {
		t.Errorf("the lone daily candle is spaced %.0f px, want at most 60", s)
	}
	// Reset zoom fits again: still capped.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#fit`))); err != nil {
		t.Fatal(err)
	}
	if s := eval[float64](t, ctx, `window.stockpipe.barSpacing()`); s > 60 {
		t.Errorf("after Reset zoom the lone daily candle is spaced %.0f px, want at most 60", s)
	}
	shots(t, ctx, "symbol-lone-daily")
}
