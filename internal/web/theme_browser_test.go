package web_test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// colorScheme makes the page's system preference (prefers-color-scheme)
// "light" or "dark", whatever the machine's: headless Chromium reports
// light.
func colorScheme(t *testing.T, ctx context.Context, scheme string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
		})
		return err
	})); err != nil {
		t.Fatal(err)
	}
}

var cssRGB = regexp.MustCompile(`^rgba?\((\d+), (\d+), (\d+)(?:, ([\d.]+))?\)$`)

// hexOf turns an opaque computed colour, rgb(r, g, b), into #rrggbb.
func hexOf(t *testing.T, css string) string {
	t.Helper()
	m := cssRGB.FindStringSubmatch(css)
	if m == nil {
		t.Fatalf("colour %q is not rgb()", css)
	}
	if m[4] != "" && m[4] != "1" {
		t.Fatalf("colour %q is not opaque", css)
	}
	var v [3]uint64
	for i := range v {
		v[i], _ = strconv.ParseUint(m[1+i], 10, 8)
	}
	return fmt.Sprintf("#%02x%02x%02x", v[0], v[1], v[2])
}

const (
	themeSwitch   = `document.querySelector('#theme-toggle')`
	themeAttr     = `(document.documentElement.dataset.theme || '')`
	switchPressed = themeSwitch + `.getAttribute('aria-pressed')`
	bodyBG        = `getComputedStyle(document.body).backgroundColor`
	bodyText      = `getComputedStyle(document.body).color`
	storedTheme   = `(localStorage.getItem('stockpipe.theme') || '')`
)

// cssVar is a theme variable as the page resolves it.
func cssVar(name string) string {
	return `getComputedStyle(document.documentElement).getPropertyValue('` + name + `').trim()`
}

func clickSwitch(t *testing.T, ctx context.Context) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#theme-toggle`))); err != nil {
		t.Fatal(err)
	}
}

// checkLightPage: the page shows the light theme, the body's background
// is light and its text and the theme's text colours read on it and on
// the panels (WCAG 2: 4.5:1 for text, 3:1 for the up and down colours).
func checkLightPage(t *testing.T, ctx context.Context, where string) {
	t.Helper()
	bg, fg := hexOf(t, eval[string](t, ctx, bodyBG)), hexOf(t, eval[string](t, ctx, bodyText))
	if l := relativeLuminance(t, bg); l <= 0.8 {
		t.Errorf("%s: the body's background %s has a luminance of %.3f, want above 0.8", where, bg, l)
	}
	if c := contrast(t, fg, bg); c < 4.5 {
		t.Errorf("%s: body text %s on %s has %.2f:1, want 4.5:1", where, fg, bg, c)
	} else {
		t.Logf("%s: body text %s on %s: %.2f:1", where, fg, bg, c)
	}
	panel := eval[string](t, ctx, cssVar("--panel"))
	for _, v := range []struct {
		name string
		min  float64
	}{{"--text", 4.5}, {"--muted", 4.5}, {"--link", 4.5}, {"--up", 3}, {"--down", 3}} {
		c := eval[string](t, ctx, cssVar(v.name))
		for _, on := range []string{bg, panel} {
			if r := contrast(t, c, on); r < v.min {
				t.Errorf("%s: %s %s on %s has %.2f:1, want %.1f:1", where, v.name, c, on, r, v.min)
			} else {
				t.Logf("%s: %s %s on %s: %.2f:1", where, v.name, c, on, r)
			}
		}
	}
}

// TestBrowserThemeSwitch: the header's switch turns the overview light
// (the body's background light, its text 4.5:1 on it), and the choice
// is remembered across a reload and on the other pages, one without a
// page script among them, where the switch turns it back.
func TestBrowserThemeSwitch(t *testing.T) {
	f := newFixture(t)
	ctx := browser(t)
	colorScheme(t, ctx, "dark")
	navigate(t, ctx, f.srv.URL+"/")
	until(t, ctx, "the overview", `window.stockpipe && window.stockpipe.loaded`)
	until(t, ctx, "the theme switch", `!`+themeSwitch+`.hidden`)
	if got := eval[string](t, ctx, themeAttr); got != "" {
		t.Errorf("data-theme is %q before any choice", got)
	}
	if got := eval[string](t, ctx, switchPressed); got != "false" {
		t.Errorf("the switch is pressed (%s) in the dark theme", got)
	}
	if got := eval[string](t, ctx, themeSwitch+`.textContent.trim()`); got != "Light theme" {
		t.Errorf("the switch is labelled %q", got)
	}
	if l := relativeLuminance(t, hexOf(t, eval[string](t, ctx, bodyBG))); l > 0.1 {
		t.Errorf("the dark theme's background has a luminance of %.3f", l)
	}

	clickSwitch(t, ctx)
	if got := eval[string](t, ctx, themeAttr); got != "light" {
		t.Fatalf("data-theme is %q after the switch", got)
	}
	if got := eval[string](t, ctx, switchPressed); got != "true" {
		t.Errorf("the switch is not pressed (%s) in the light theme", got)
	}
	if got := eval[string](t, ctx, storedTheme); got != "light" {
		t.Errorf("the stored choice is %q", got)
	}
	checkLightPage(t, ctx, "overview")
	// The sparklines are canvases: they must be redrawn in the light
	// theme's colour of their change, not keep the dark one.
	until(t, ctx, "the sparkline redrawn in the light theme's colour",
		`((c) => c !== null && c.dataset.colour === getComputedStyle(document.documentElement).getPropertyValue({up: '--up', down: '--down', flat: '--muted'}[c.dataset.dir]).trim())(document.querySelector('#watchlist canvas.spark'))`)
	shots(t, ctx, "overview-light")

	if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "the overview again", `window.stockpipe && window.stockpipe.loaded && !`+themeSwitch+`.hidden`)
	if got := eval[string](t, ctx, themeAttr); got != "light" {
		t.Errorf("data-theme is %q after a reload", got)
	}
	checkLightPage(t, ctx, "overview, reloaded")

	navigate(t, ctx, f.srv.URL+"/symbol/AAPL")
	until(t, ctx, "the symbol page", `window.stockpipe && window.stockpipe.loaded && !`+themeSwitch+`.hidden`)
	if got, pressed := eval[string](t, ctx, themeAttr), eval[string](t, ctx, switchPressed); got != "light" || pressed != "true" {
		t.Errorf("on the symbol page data-theme is %q and the switch pressed %s", got, pressed)
	}
	checkLightPage(t, ctx, "symbol page")

	// The not-found page loads no page script of its own.
	navigate(t, ctx, f.srv.URL+"/no-such-page")
	until(t, ctx, "the switch on the not-found page", `!`+themeSwitch+`.hidden`)
	if got := eval[string](t, ctx, themeAttr); got != "light" {
		t.Errorf("on the not-found page data-theme is %q", got)
	}
	clickSwitch(t, ctx)
	if got, stored := eval[string](t, ctx, themeAttr), eval[string](t, ctx, storedTheme); got != "dark" || stored != "dark" {
		t.Errorf("after switching back data-theme is %q, the stored choice %q", got, stored)
	}
	if l := relativeLuminance(t, hexOf(t, eval[string](t, ctx, bodyBG))); l > 0.1 {
		t.Errorf("switched back, the background has a luminance of %.3f", l)
	}
}

const (
	chartBG    = `window.stockpipe.chartBackground()`
	chartText  = `window.stockpipe.chartTextColor()`
	candleUp   = `window.stockpipe.candleOptions().borderUpColor`
	candleDown = `window.stockpipe.candleOptions().borderDownColor`
)

// TestBrowserThemeChart: the symbol chart, drawn on a canvas, follows the
// switch both ways: its background, text, candles, indicator lines (SMA 20
// and the session VWAP 2:1 apart), volume bars and markers.
func TestBrowserThemeChart(t *testing.T) {
	f := newFixture(t)
	ctx := browser(t)
	colorScheme(t, ctx, "dark")
	navigate(t, ctx, f.srv.URL+"/symbol/AAPL?interval=1m&range=all")
	until(t, ctx, "three candles and a marker", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.candleCount() === 3 && window.stockpipe.markerCount() === 1`)
	dark := eval[string](t, ctx, chartBG)
	if dark != "#0d1117" {
		t.Errorf("the dark chart's background is %q", dark)
	}
	darkVolume := eval[[]string](t, ctx, `window.stockpipe.volumeColors()`)
	// Show the VWAP line, so the legend names it.
	if !eval[bool](t, ctx, `document.querySelector('input[data-ind="vwap"]').checked`) {
		if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`input[data-ind="vwap"]`))); err != nil {
			t.Fatal(err)
		}
	}

	clickSwitch(t, ctx)
	until(t, ctx, "the chart to turn light", chartBG+` !== '#0d1117'`)
	bg := eval[string](t, ctx, chartBG)
	if l := relativeLuminance(t, bg); l <= 0.8 {
		t.Errorf("the light chart's background %s has a luminance of %.3f", bg, l)
	}
	if want := eval[string](t, ctx, cssVar("--chart-bg")); bg != want {
		t.Errorf("the chart's background is %s, the theme's %s", bg, want)
	}
	text := eval[string](t, ctx, chartText)
	if c := contrast(t, text, bg); c < 4.5 {
		t.Errorf("the chart's text %s has %.2f:1 on %s", text, c, bg)
	}
	for _, v := range []struct{ what, expr string }{{"up candles", candleUp}, {"down candles", candleDown}} {
		c := eval[string](t, ctx, v.expr)
		if r := contrast(t, c, bg); r < 3 {
			t.Errorf("%s %s have %.2f:1 on the light chart", v.what, c, r)
		} else {
			t.Logf("%s %s on %s: %.2f:1", v.what, c, bg, r)
		}
	}
	sma, vwap := eval[string](t, ctx, `window.stockpipe.lineColor('sma20')`), eval[string](t, ctx, `window.stockpipe.lineColor('vwap')`)
	if c := contrast(t, sma, vwap); c < 2 {
		t.Errorf("in the light theme SMA 20 (%s) and VWAP (%s) are %.2f:1 apart, want 2:1", sma, vwap, c)
	} else {
		t.Logf("SMA 20 %s and VWAP %s: %.2f:1", sma, vwap, c)
	}
	for _, c := range []string{sma, vwap} {
		if r := contrast(t, c, bg); r < 3 {
			t.Errorf("the line colour %s has %.2f:1 on the light chart", c, r)
		}
	}
	until(t, ctx, "the VWAP legend", `document.querySelector('#legend .ind-vwap .lg-label') !== null`)
	if got := hexOf(t, eval[string](t, ctx, `getComputedStyle(document.querySelector('#legend .ind-vwap .lg-label')).color`)); got != vwap {
		t.Errorf("the legend's VWAP label is %s, the line %s", got, vwap)
	}
	if got := eval[[]string](t, ctx, `window.stockpipe.volumeColors()`); len(got) != 3 || fmt.Sprint(got) == fmt.Sprint(darkVolume) {
		t.Errorf("the volume bars are %q in the light theme, %q in the dark", got, darkVolume)
	}
	// The fixture's anomaly rose: an up arrow in the up candles' colour.
	if got, up := eval[string](t, ctx, `window.stockpipe.markers()[0].color`), eval[string](t, ctx, candleUp); got != up {
		t.Errorf("the marker is %s, the up candles %s", got, up)
	}
	shots(t, ctx, "symbol-light")

	clickSwitch(t, ctx)
	until(t, ctx, "the chart to turn dark again", chartBG+` === '#0d1117'`)
	if got := eval[string](t, ctx, `window.stockpipe.lineColor('vwap')`); got == vwap {
		t.Errorf("the VWAP line kept its light colour %s", got)
	}
	if got := eval[[]string](t, ctx, `window.stockpipe.volumeColors()`); fmt.Sprint(got) != fmt.Sprint(darkVolume) {
		t.Errorf("the volume bars are %q back in the dark theme, were %q", got, darkVolume)
	}
}

// lightRuleMismatch lists, for each variable of the explicit light theme
// (:root[data-theme="light"]), where the page's resolved value differs
// from it, and how many variables it has.
const lightRuleMismatch = `(() => {
	let rule = null;
	for (const sheet of document.styleSheets) {
		for (const r of sheet.cssRules) if (r.selectorText === ':root[data-theme="light"]') rule = r;
	}
	if (!rule) return { n: 0, diff: ['no light rule'] };
	const cs = getComputedStyle(document.documentElement);
	const diff = [];
	let n = 0;
	for (let i = 0; i < rule.style.length; i++) {
		const name = rule.style.item(i);
		if (!name.startsWith('--')) continue;
		n++;
		const want = rule.style.getPropertyValue(name).trim();
		const got = cs.getPropertyValue(name).trim();
		if (got !== want) diff.push(name + ': ' + got + ' != ' + want);
	}
	return { n, diff };
})()`

// TestBrowserThemeFollowsSystem: with no choice stored, a system asking
// for light gets the light theme's colours, all of them, and the chart
// follows the system when it changes; a stored choice wins over it.
func TestBrowserThemeFollowsSystem(t *testing.T) {
	f := newFixture(t)
	ctx := browser(t)
	colorScheme(t, ctx, "light")
	navigate(t, ctx, f.srv.URL+"/")
	until(t, ctx, "the overview", `window.stockpipe && window.stockpipe.loaded && !`+themeSwitch+`.hidden`)
	if got, stored := eval[string](t, ctx, themeAttr), eval[string](t, ctx, storedTheme); got != "" || stored != "" {
		t.Errorf("with no choice made data-theme is %q, the stored choice %q", got, stored)
	}
	if got := eval[string](t, ctx, switchPressed); got != "true" {
		t.Errorf("the switch is not pressed (%s) in the system's light theme", got)
	}
	checkLightPage(t, ctx, "overview, system light")
	type mismatch struct {
		N    int      `json:"n"`
		Diff []string `json:"diff"`
	}
	if m := eval[mismatch](t, ctx, lightRuleMismatch); m.N < 40 || len(m.Diff) > 0 {
		t.Errorf("the system's light theme differs from the chosen one (%d variables): %q", m.N, m.Diff)
	}

	navigate(t, ctx, f.srv.URL+"/symbol/AAPL?interval=1m&range=all")
	until(t, ctx, "three candles", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.candleCount() === 3`)
	bg := eval[string](t, ctx, chartBG)
	if l := relativeLuminance(t, bg); l <= 0.8 {
		t.Errorf("the chart's background %s has a luminance of %.3f under a light system", bg, l)
	}

	// The system turns dark (an evening schedule): the page follows.
	colorScheme(t, ctx, "dark")
	until(t, ctx, "the chart to follow the system", chartBG+` === '#0d1117'`)
	if got := eval[string](t, ctx, switchPressed); got != "false" {
		t.Errorf("the switch is pressed (%s) once the system is dark", got)
	}

	// A choice made stays whatever the system says.
	clickSwitch(t, ctx)
	until(t, ctx, "the chart to turn light", chartBG+` === `+strconv.Quote(bg))
	colorScheme(t, ctx, "light")
	colorScheme(t, ctx, "dark")
	if got := eval[string](t, ctx, themeAttr); got != "light" {
		t.Errorf("the chosen theme is %q after the system changed", got)
	}
	if got := eval[string](t, ctx, chartBG); got != bg {
		t.Errorf("the chart's background is %s, chosen light %s", got, bg)
	}
}

// TestBrowserThemePipelineCharts: the pipeline page's charts are canvases
// too; switching the theme redraws them in its colours.
func TestBrowserThemePipelineCharts(t *testing.T) {
	f := newFixture(t)
	ctx := browser(t)
	colorScheme(t, ctx, "dark")
	navigate(t, ctx, f.srv.URL+"/pipeline")
	backgrounds := `window.stockpipe.chartBackgrounds().join(' ')`
	chartBG := `getComputedStyle(document.documentElement).getPropertyValue('--chart-bg').trim()`
	until(t, ctx, "the charts drawn", `window.stockpipe && window.stockpipe.chartBackgrounds && window.stockpipe.chartBackgrounds().length > 0`)
	dark := eval[string](t, ctx, chartBG)
	until(t, ctx, "the dark charts", `window.stockpipe.chartBackgrounds().every((c) => c === `+chartBG+`)`)
	clickSwitch(t, ctx)
	until(t, ctx, "the charts redrawn light", `window.stockpipe.chartBackgrounds().every((c) => c === `+chartBG+`) && `+chartBG+` !== `+strconv.Quote(dark))
	if l := relativeLuminance(t, eval[string](t, ctx, chartBG)); l < 0.8 {
		t.Errorf("the light charts' background has a luminance of %.3f (%s)", l, eval[string](t, ctx, backgrounds))
	}
}
