package web_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/stockpipe/stockpipe/internal/anomaly"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/store"
	"github.com/stockpipe/stockpipe/internal/web"
)

// TestBrowserOverviewFPS loads a pipeline of 30 symbols at
// STOCKPIPE_FPS_RATE ticks a second (2000 unless set) on a server with the
// default live rate, and counts the overview's animation frames over 3 s:
// the page must keep at least 30 a second.
func TestBrowserOverviewFPS(t *testing.T) {
	rate := 2000
	if v := os.Getenv("STOCKPIPE_FPS_RATE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 100 {
			t.Fatalf("STOCKPIPE_FPS_RATE=%q: want a whole number of ticks a second, at least 100", v)
		}
		rate = n
	}
	p := startPipelineWith(t, func(c *web.Config) { c.LiveRate = web.DefaultLiveRate })
	// The pipeline seeds three symbols; the load walks whatever p.last
	// holds, so 27 more start from here.
	for i := range 27 {
		sym := fmt.Sprintf("ZZ%c%c", 'A'+i/26, 'A'+i%26)
		p.last[sym] = market.Tick{Symbol: sym, TS: time.Now().Add(-time.Minute).UTC(), Price: 50 + float64(i)}
	}
	ctx := browser(t)
	navigate(t, ctx, p.baseURL+"/")
	until(t, ctx, "the page loaded", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.symbols() === 3`)

	lctx, stop := context.WithCancel(context.Background())
	defer stop()
	started := time.Now()
	sent := p.load(t, lctx, rate)
	until(t, ctx, "30 symbols listed", `window.stockpipe.symbols() === 30`)
	until(t, ctx, "live prices", `(window.stockpipe.events.tick || 0) > 30`)

	eval[bool](t, ctx, `(() => {
		const s = {frames: 0, worst: 0, prev: 0, stop: false, at: performance.now(),
			messages: window.stockpipe.messages, bytes: window.stockpipe.bytes};
		window.__fps = s;
		const step = (now) => {
			if (s.stop) return;
			if (s.prev) s.worst = Math.max(s.worst, now - s.prev);
			s.prev = now;
			s.frames++;
			requestAnimationFrame(step);
		};
		requestAnimationFrame(step);
		return true;
	})()`)
	// The waiting is what is measured.
	time.Sleep(3 * time.Second)
	type fps struct {
		Seconds  float64 `json:"seconds"`
		Frames   int     `json:"frames"`
		Worst    float64 `json:"worst"`
		Messages int     `json:"messages"`
		Bytes    int     `json:"bytes"`
	}
	got := eval[fps](t, ctx, `(() => {
		const s = window.__fps;
		s.stop = true;
		return {seconds: (performance.now() - s.at) / 1000, frames: s.frames, worst: s.worst,
			messages: window.stockpipe.messages - s.messages, bytes: window.stockpipe.bytes - s.bytes};
	})()`)
	stop()
	n := <-sent
	elapsed := time.Since(started).Seconds()
	rateFPS := float64(got.Frames) / got.Seconds
	t.Logf("load asked %d ticks/s, produced %d in %.1f s (%.0f/s); over %.2f s the page drew %d frames (%.1f fps, worst gap %.1f ms) and received %.1f events/s, %.0f bytes/s of event data",
		rate, n, elapsed, float64(n)/elapsed, got.Seconds, got.Frames, rateFPS, got.Worst,
		float64(got.Messages)/got.Seconds, float64(got.Bytes)/got.Seconds)
	if rateFPS < 30 {
		t.Errorf("%.1f fps under load, want at least 30", rateFPS)
	}
	if got.Messages == 0 || got.Bytes < got.Messages*20 {
		t.Errorf("%d events of %d bytes received under load", got.Messages, got.Bytes)
	}
}

// ageSeconds reads the status strip's "Last tick … ago" as seconds.
const ageSeconds = `(() => {
	const t = document.querySelector('#age').textContent.trim();
	let m = /^(\d+(?:\.\d+)?) s ago$/.exec(t);
	if (m) return Number(m[1]);
	m = /^(\d+) min (\d+) s ago$/.exec(t);
	if (m) return 60 * Number(m[1]) + Number(m[2]);
	return -1;
})()`

func row(sym string) string {
	return `document.querySelector('#watchlist tr[data-symbol="` + sym + `"]')`
}

// staleShown is whether sym's row is marked stale, by class and by a badge
// that can be seen.
func staleShown(sym string) string {
	return `(() => {
		const tr = ` + row(sym) + `;
		const b = tr && tr.querySelector('.stale-badge');
		return !!b && tr.classList.contains('stale') && !b.hidden && b.textContent === 'stale' && getComputedStyle(b).display !== 'none';
	})()`
}

// TestBrowserOverviewFreshness loads ticks, stops, and checks that the rows
// turn stale after the threshold (2 s here) and come back when trades do;
// the age column moves once a second, not with every tick.
func TestBrowserOverviewFreshness(t *testing.T) {
	p := startPipeline(t)
	ctx := browser(t)
	navigate(t, ctx, p.baseURL+"/?stale=2")
	until(t, ctx, "three symbols listed", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.symbols() === 3`)
	// The simulated trades ended a minute or so ago.
	for _, sym := range []string{"AAPL", "MSFT", "NVDA"} {
		until(t, ctx, sym+" stale before the load", staleShown(sym))
	}

	lctx, stop := context.WithCancel(context.Background())
	defer stop()
	sent := p.load(t, lctx, 300)
	for _, sym := range []string{"AAPL", "MSFT", "NVDA"} {
		until(t, ctx, sym+" live under load", `!`+staleShown(sym)+` && !`+row(sym)+`.classList.contains('stale')`)
	}
	age := row("AAPL") + `.querySelector('.age time')`
	if got := eval[string](t, ctx, age+`.textContent`); got != "0s" && got != "1s" && got != "2s" {
		t.Errorf("AAPL's last trade shows as %q ago under load", got)
	}
	// The tooltip names the moment in full, with its zone.
	title := eval[string](t, ctx, age+`.title`)
	if !regexp.MustCompile(`^Last trade \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+$`).MatchString(title) {
		t.Errorf("the age's tooltip is %q", title)
	}
	// Ticks arrive several times a second; the age text changes once.
	eval[bool](t, ctx, `(() => {
		window.__ageWrites = 0;
		window.__ageObs = new MutationObserver((m) => { window.__ageWrites += m.length; });
		window.__ageObs.observe(`+age+`, {childList: true, characterData: true, subtree: true});
		window.__ticksAt = window.stockpipe.events.tick || 0;
		return true;
	})()`)
	time.Sleep(2 * time.Second) // what is measured: writes over two seconds
	writes := eval[int](t, ctx, `window.__ageObs.disconnect(), window.__ageWrites`)
	ticks := eval[int](t, ctx, `(window.stockpipe.events.tick || 0) - window.__ticksAt`)
	t.Logf("the age cell was written %d times in 2 s while %d tick events arrived", writes, ticks)
	if writes > 4 {
		t.Errorf("the age cell was written %d times in 2 s, want about once a second", writes)
	}

	stop()
	n := <-sent
	for _, sym := range []string{"AAPL", "MSFT", "NVDA"} {
		untilWithin(t, ctx, 15*time.Second, sym+" stale after the load stopped", staleShown(sym))
	}
	screenshot(t, ctx, "overview-stale")
	// The load kept its own seqs: continue past all it could have sent.
	last := p.last["AAPL"]
	last.Seq += int64(n)
	p.last["AAPL"] = last
	p.trade(t, "AAPL", last.Price+0.01)
	until(t, ctx, "AAPL live again", `!`+row("AAPL")+`.classList.contains('stale') && `+row("AAPL")+`.querySelector('.stale-badge').hidden`)
	if !eval[bool](t, ctx, staleShown("MSFT")) {
		t.Error("MSFT, still silent, lost its stale mark")
	}
}

// TestBrowserOverviewStripDisconnected reads a trade of now, then takes the
// server away: the status strip turns grey and its "Last tick … ago" keeps
// counting instead of freezing on its last value. The fixture's AAPL,
// silent for weeks, is marked stale under the default threshold of 60 s
// until a trade of now arrives.
func TestBrowserOverviewStripDisconnected(t *testing.T) {
	f := newFixture(t)
	ctx := browser(t)
	navigate(t, ctx, f.srv.URL+"/")
	until(t, ctx, "the watchlist", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.symbols() === 1`)
	until(t, ctx, "a green dot", dotState+` === 'live'`)
	until(t, ctx, "AAPL marked stale", staleShown("AAPL"))
	if got := eval[string](t, ctx, row("AAPL")+`.querySelector('.age time').textContent`); !regexp.MustCompile(`^\d+d$`).MatchString(got) {
		t.Errorf("a trade of weeks ago shows as %q ago", got)
	}

	now := time.Now().UTC().Truncate(time.Microsecond)
	f.commit(t, &store.Batch{Group: "g", Topic: "ticks",
		Ticks: []store.TickRow{{Tick: market.Tick{Symbol: "AAPL", TS: now, Seq: 11, Price: 100.5, Size: 100,
			Bid: 100.49, Ask: 100.51}, Offset: 10}}})
	until(t, ctx, "AAPL live", `!`+row("AAPL")+`.classList.contains('stale') && `+row("AAPL")+`.querySelector('.stale-badge').hidden`)
	until(t, ctx, "a last tick of seconds ago", ageSeconds+` >= 0 && `+ageSeconds+` < 5`)
	if eval[bool](t, ctx, `document.querySelector('#status').classList.contains('stale')`) {
		t.Fatal("the strip is marked stale while the stream is open")
	}
	live := eval[string](t, ctx, `getComputedStyle(document.querySelector('#tps')).color`)

	// No new connection can be made, and the open ones are cut.
	f.srv.Listener.Close()
	f.srv.CloseClientConnections()
	until(t, ctx, "the strip marked disconnected", `document.querySelector('#status').classList.contains('stale') && document.querySelector('#status').dataset.state === 'disconnected'`)
	if got := eval[string](t, ctx, `getComputedStyle(document.querySelector('#tps')).color`); got == live {
		t.Errorf("the strip's values keep their live colour %s while disconnected", got)
	}
	first := eval[float64](t, ctx, ageSeconds)
	untilWithin(t, ctx, 10*time.Second, "the age to keep counting", ageSeconds+` >= `+strconv.FormatFloat(first+2, 'f', 2, 64))
	if got := eval[float64](t, ctx, ageSeconds); got < time.Since(now).Seconds()-2.5 {
		t.Errorf("the last tick shows as %.2f s ago, %.2f s after it", got, time.Since(now).Seconds())
	}
	screenshot(t, ctx, "overview-disconnected")
}

// pct reads the Change % cells of the visible rows in their order.
const pctCells = `[...document.querySelectorAll('#watchlist tr')].filter((tr) => !tr.hidden).map((tr) => {
	const t = tr.querySelector('.change-pct').textContent.replace(/[▲▼\s+%]/g, '').replace('−', '-');
	return {symbol: tr.dataset.symbol, pct: t === '–' ? null : Number(t)};
})`

type pctCell struct {
	Symbol string   `json:"symbol"`
	Pct    *float64 `json:"pct"`
}

// sortedBy reports whether cells are in order of their values, the largest
// first if desc, with no value last.
func sortedBy(cells []pctCell, desc bool) bool {
	for i := 1; i < len(cells); i++ {
		a, b := cells[i-1].Pct, cells[i].Pct
		switch {
		case b == nil:
		case a == nil:
			return false
		case desc && *a < *b, !desc && *a > *b:
			return false
		}
	}
	return true
}

func visibleSymbols(t *testing.T, ctx context.Context) string {
	t.Helper()
	return eval[string](t, ctx, `[...document.querySelectorAll('#watchlist tr')].filter((tr) => !tr.hidden).map((tr) => tr.dataset.symbol).join(' ')`)
}

// TestBrowserOverviewWatchlistTools sorts the watchlist by its headers,
// keeps the sort as prices move, filters it, moves between rows with the
// keyboard, and checks that the sparklines take the change's colour.
func TestBrowserOverviewWatchlistTools(t *testing.T) {
	p := startPipeline(t)
	// Two more symbols: AAL up 10% on its day, BAAC down 5%.
	for _, tr := range []struct {
		sym    string
		prices []float64
	}{{"AAL", []float64{10, 11}}, {"BAAC", []float64{20, 19}}} {
		for _, price := range tr.prices {
			p.trade(t, tr.sym, price)
		}
	}
	// And one clearly down on the day, one clearly up.
	p.trade(t, "NVDA", float64(int(p.last["NVDA"].Price*60))/100)
	p.trade(t, "MSFT", float64(int(p.last["MSFT"].Price*130))/100)
	deadline := time.Now().Add(30 * time.Second)
	for p.committed() < 24_006 {
		if time.Now().After(deadline) {
			t.Fatal("the processor did not take the trades")
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx := browser(t)
	navigate(t, ctx, p.baseURL+"/")
	until(t, ctx, "five symbols listed", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.symbols() === 5`)
	if got := visibleSymbols(t, ctx); got != "AAL AAPL BAAC MSFT NVDA" {
		t.Errorf("the watchlist opens in the order %q, want by symbol", got)
	}
	if got := eval[string](t, ctx, `document.querySelector('button[data-sort="symbol"]').closest('th').getAttribute('aria-sort')`); got != "ascending" {
		t.Errorf("the symbol header's aria-sort is %q", got)
	}

	// Change %, largest first, then reversed.
	click := func(sel string) {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(sel))); err != nil {
			t.Fatal(err)
		}
	}
	pctTh := `document.querySelector('button[data-sort="pct"]').closest('th')`
	click(`button[data-sort="pct"]`)
	until(t, ctx, "Change % sorted descending", pctTh+`.getAttribute('aria-sort') === 'descending'`)
	cells := eval[[]pctCell](t, ctx, pctCells)
	if !sortedBy(cells, true) || len(cells) != 5 {
		t.Errorf("sorted by Change %% descending, the rows read %+v", cells)
	}
	if cells[0].Symbol != "MSFT" || cells[4].Symbol != "NVDA" {
		t.Errorf("MSFT (+30%%) should lead and NVDA (−40%%) close: %q", visibleSymbols(t, ctx))
	}
	if n := eval[int](t, ctx, `document.querySelectorAll('.watchlist thead th[aria-sort]').length`); n != 1 {
		t.Errorf("%d headers carry aria-sort", n)
	}
	// The headers are buttons: the keyboard reverses the sort too.
	eval[bool](t, ctx, `document.querySelector('button[data-sort="pct"]').focus(), true`)
	if err := chromedp.Do(ctx, chromedp.KeyEvent(kb.Enter)); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "Change % sorted ascending", pctTh+`.getAttribute('aria-sort') === 'ascending'`)
	if cells := eval[[]pctCell](t, ctx, pctCells); !sortedBy(cells, false) {
		t.Errorf("sorted by Change %% ascending, the rows read %+v", cells)
	}
	click(`button[data-sort="pct"]`)
	until(t, ctx, "Change % sorted descending again", pctTh+`.getAttribute('aria-sort') === 'descending'`)

	// A price that moves a row moves it in the sorted table.
	p.trade(t, "AAL", 20) // +100% on its day
	until(t, ctx, "AAL to rise to the top", `document.querySelector('#watchlist tr').dataset.symbol === 'AAL'`)
	if cells := eval[[]pctCell](t, ctx, pctCells); !sortedBy(cells, true) {
		t.Errorf("after a live update, the rows read %+v", cells)
	}

	// The sparklines take the colour of the change beside them.
	for _, sym := range []string{"MSFT", "NVDA"} {
		type spark struct {
			Dir, Cell, Colour, CellColour, Pixel string
		}
		got := eval[spark](t, ctx, `(() => {
			const tr = `+row(sym)+`;
			const c = tr.querySelector('canvas.spark');
			const cell = tr.querySelector('.change-pct');
			const probe = document.createElement('span');
			probe.style.color = c.dataset.colour;
			document.body.append(probe);
			const colour = getComputedStyle(probe).color;
			probe.remove();
			// A fully opaque pixel of the line is drawn in the stroke colour.
			const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
			let pixel = '';
			for (let i = 0; i < px.length; i += 4) {
				if (px[i + 3] === 255) { pixel = 'rgb(' + px[i] + ', ' + px[i + 1] + ', ' + px[i + 2] + ')'; break; }
			}
			return {Dir: c.dataset.dir, Cell: ['up', 'down', 'flat'].find((d) => cell.classList.contains(d)) || '',
				Colour: colour, CellColour: getComputedStyle(cell).color, Pixel: pixel};
		})()`)
		want := map[string]string{"MSFT": "up", "NVDA": "down"}[sym]
		if got.Dir != want || got.Cell != want || got.Colour != got.CellColour || got.Pixel != got.CellColour {
			t.Errorf("%s: sparkline %s in %s (pixel %s), change cell %s in %s; want both %s", sym, got.Dir, got.Colour, got.Pixel, got.Cell, got.CellColour, want)
		}
	}

	// Filtering: "aa" keeps the symbols holding it, whatever the case.
	if err := chromedp.Do(ctx, chromedp.SendKeys(`#filter`, "aa")); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "the filter applied", `document.querySelectorAll('#watchlist tr:not([hidden])').length === 3`)
	got := strings.Fields(visibleSymbols(t, ctx))
	slices.Sort(got)
	if strings.Join(got, " ") != "AAL AAPL BAAC" {
		t.Errorf("filter \"aa\" shows %v", got)
	}
	for _, sym := range []string{"MSFT", "NVDA"} {
		if eval[bool](t, ctx, row(sym)+`.getBoundingClientRect().height > 0`) {
			t.Errorf("%s shows under the filter \"aa\"", sym)
		}
	}

	// The arrow keys move between the visible rows.
	visible := `[...document.querySelectorAll('#watchlist tr')].filter((tr) => !tr.hidden)`
	eval[bool](t, ctx, visible+`[0].focus(), true`)
	if err := chromedp.Do(ctx, chromedp.KeyEvent(kb.ArrowDown)); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "the focus on the second visible row", `document.activeElement === `+visible+`[1]`)
	if err := chromedp.Do(ctx, chromedp.KeyEvent(kb.ArrowDown)); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "the focus on the third visible row", `document.activeElement === `+visible+`[2]`)
	if err := chromedp.Do(ctx, chromedp.KeyEvent(kb.ArrowUp)); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "the focus back on the second", `document.activeElement === `+visible+`[1]`)
	if n := eval[int](t, ctx, `document.querySelectorAll('#watchlist tr[tabindex="0"]').length`); n != 1 {
		t.Errorf("%d rows in the tab order, want one", n)
	}

	// Escape clears the filter.
	eval[bool](t, ctx, `document.querySelector('#filter').focus(), true`)
	if err := chromedp.Do(ctx, chromedp.KeyEvent(kb.Escape)); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "every row back", `document.querySelectorAll('#watchlist tr:not([hidden])').length === 5 && document.querySelector('#filter').value === ''`)

	// Enter on a row opens its symbol's page.
	eval[bool](t, ctx, row("BAAC")+`.focus(), true`)
	if err := chromedp.Do(ctx, chromedp.KeyEvent(kb.Enter)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.WaitReady(`body[data-page="symbol"]`)); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "BAAC's page", `location.pathname === '/symbol/BAAC'`)
}

// TestBrowserOverviewAnomalyFilters fills the feed with anomalies of every
// severity: LOW ones are hidden by default and counted, and the severity
// and kind filters change what is listed, live ones included.
func TestBrowserOverviewAnomalyFilters(t *testing.T) {
	f := newFixture(t)
	// The fixture has one HIGH price_jump at 14:31:10.
	ins := func(at time.Duration, kind, sev string) {
		t.Helper()
		if _, err := f.pool.Exec(context.Background(), `INSERT INTO anomalies (symbol, ts, kind, severity, value, threshold, detail)
			VALUES ('AAPL', $1, $2, $3, 5, 4, 'test')`, day.Add(at), kind, sev); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 12 {
		ins(time.Duration(i)*time.Second, "volume_burst", "low")
	}
	ins(20*time.Second, "spread_blowout", "medium")
	ins(21*time.Second, "volume_burst", "medium")
	ins(22*time.Second, "volume_burst", "high")

	ctx := browser(t)
	navigate(t, ctx, f.srv.URL+"/")
	until(t, ctx, "the feed", `window.stockpipe && window.stockpipe.loaded && document.querySelectorAll('#anomalies li').length === 16`)
	shown := func() string {
		return eval[string](t, ctx, `[...document.querySelectorAll('#anomalies li')].filter((li) => li.getBoundingClientRect().height > 0).map((li) => li.dataset.severity + ':' + li.dataset.kind).sort().join(' ')`)
	}
	note := `document.querySelector('#anomalies-hidden').textContent`
	check := func(what, wantShown, wantNote string) {
		t.Helper()
		until(t, ctx, what, note+` === `+strconv.Quote(wantNote))
		if got := shown(); got != wantShown {
			t.Errorf("%s: listed %q, want %q", what, got, wantShown)
		}
	}
	check("LOW hidden by default", "high:price_jump high:volume_burst medium:spread_blowout medium:volume_burst", "12 low hidden")
	if got := eval[string](t, ctx, `[...document.querySelectorAll('#kind-filter option')].map((o) => o.value).join(' ')`); got != " price_jump spread_blowout volume_burst" {
		t.Errorf("the kind filter offers %q", got)
	}

	selectValue := func(sel, v string) {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.SetValue(sel, v)); err != nil {
			t.Fatal(err)
		}
		eval[bool](t, ctx, `document.querySelector(`+strconv.Quote(sel)+`).dispatchEvent(new Event('change')), true`)
	}
	selectValue("#kind-filter", "volume_burst")
	check("volume bursts of MEDIUM and up", "high:volume_burst medium:volume_burst", "12 low, 1 medium, 1 high hidden")
	selectValue("#sev-filter", "high")
	check("HIGH volume bursts", "high:volume_burst", "12 low, 2 medium, 1 high hidden")
	selectValue("#kind-filter", "")
	check("HIGH only", "high:price_jump high:volume_burst", "12 low, 2 medium hidden")
	selectValue("#sev-filter", "low")
	until(t, ctx, "everything listed", note+` === ''`)
	if n := strings.Count(shown(), ":"); n != 16 {
		t.Errorf("with every severity, %d of 16 anomalies listed", n)
	}

	// Back to the default; a live LOW anomaly adds to the count, a live
	// MEDIUM one is listed.
	selectValue("#sev-filter", "medium")
	check("the default again", "high:price_jump high:volume_burst medium:spread_blowout medium:volume_burst", "12 low hidden")
	f.commit(t, &store.Batch{Group: "g", Topic: "ticks", Anomalies: []anomaly.Anomaly{
		{Symbol: "AAPL", TS: day.Add(30 * time.Second), Kind: "volume_burst", Severity: anomaly.SeverityLow, Value: 5, Threshold: 4, Detail: "live low"},
		{Symbol: "AAPL", TS: day.Add(31 * time.Second), Kind: "band_break", Severity: anomaly.SeverityMedium, Value: 5, Threshold: 4, Detail: "live medium"},
	}})
	check("the live anomalies", "high:price_jump high:volume_burst medium:band_break medium:spread_blowout medium:volume_burst", "13 low hidden")
	screenshot(t, ctx, "overview-anomaly-filters")

	// One symbol's alerts: MSFT's appears in the symbol filter as it
	// arrives, and choosing it hides AAPL's.
	f.commit(t, &store.Batch{Group: "g", Topic: "ticks", Anomalies: []anomaly.Anomaly{
		{Symbol: "MSFT", TS: day.Add(32 * time.Second), Kind: "price_jump", Severity: anomaly.SeverityMedium, Value: 5, Threshold: 4, Detail: "msft"},
	}})
	until(t, ctx, "MSFT in the symbol filter", `[...document.querySelectorAll('#sym-filter option')].map((o) => o.value).join(' ') === ' AAPL MSFT'`)
	selectValue("#sym-filter", "MSFT")
	check("MSFT only", "medium:price_jump", "13 low, 3 medium, 2 high hidden")
	if got := eval[string](t, ctx, `[...document.querySelectorAll('#anomalies li')].filter((li) => !li.hidden).map((li) => li.dataset.symbol).join(' ')`); got != "MSFT" {
		t.Errorf("with the MSFT filter the feed lists %q", got)
	}
}

// TestBrowserOverviewChangeSincePreviousClose: beside the change since the
// open, each row shows the change since the previous trading day's close,
// and a symbol without an earlier day shows none rather than a made-up one.
func TestBrowserOverviewChangeSincePreviousClose(t *testing.T) {
	f := newFixture(t)
	ctx := browser(t)
	navigate(t, ctx, f.srv.URL+"/")
	until(t, ctx, "the watchlist", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.symbols() === 1`)
	cell := `document.querySelector('#watchlist tr[data-symbol="AAPL"] .change-prev')`
	if got := eval[string](t, ctx, cell+`.textContent`); got != "–" {
		t.Errorf("vs close %q without an earlier day, want –", got)
	}
	// The day before's daily bar closed at 80.2: AAPL's last 100.25 is +25.00%.
	if _, err := f.pool.Exec(context.Background(), `INSERT INTO candles (symbol, interval, bucket, open, high, low, close, volume, trades, final)
		VALUES ('AAPL', '1d', $1, 80, 81, 79, 80.2, 1000, 10, true)`, day.Add(-24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	navigate(t, ctx, f.srv.URL+"/")
	until(t, ctx, "the change since the previous close", `((c) => c !== null && c.textContent.includes('25.00'))(`+cell+`)`)
	if cls := eval[string](t, ctx, cell+`.className`); !strings.Contains(cls, "up") {
		t.Errorf("vs close cell classes %q, want up", cls)
	}
}

// TestBrowserOverviewAnnouncesOnlyChanges: the status strip's numbers move
// every second, so it is not a live region; a screen reader hears the
// connection's state, once per change.
func TestBrowserOverviewAnnouncesOnlyChanges(t *testing.T) {
	f := newFixture(t)
	ctx := browser(t)
	navigate(t, ctx, f.srv.URL+"/")
	until(t, ctx, "a green dot", `window.stockpipe && window.stockpipe.loaded && document.querySelector('#conn-state').dataset.state === 'live'`)
	if eval[bool](t, ctx, `document.querySelector('#status').hasAttribute('aria-live') || document.querySelector('#status').closest('[aria-live]') !== null`) {
		t.Error("the status strip is (inside) a live region: every second's numbers would be read out")
	}
	until(t, ctx, "the state announced", `document.querySelector('#announce').textContent === 'Live data: live'`)
	// Count the region's changes while a few status events (once a second)
	// update the strip.
	eval[bool](t, ctx, `window.__announced = 0, new MutationObserver(() => window.__announced++).observe(document.querySelector('#announce'), {childList: true, characterData: true, subtree: true}), true`)
	time.Sleep(2500 * time.Millisecond) // the span being checked, not a synchronisation
	if n := eval[int](t, ctx, `window.__announced`); n != 0 {
		t.Errorf("the live region changed %d times in 2.5 s of an unchanged connection", n)
	}
}
