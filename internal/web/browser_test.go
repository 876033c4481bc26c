package web_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/twmb/franz-go/pkg/kgo"

	fx "github.com/stockpipe/stockpipe/internal/fixture"
	"github.com/stockpipe/stockpipe/internal/generate"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/store"
	"github.com/stockpipe/stockpipe/internal/stream"
	"github.com/stockpipe/stockpipe/internal/web"
)

// pipeline is a real broker, processor and dashboard for browser tests.
type pipeline struct {
	kcfg      kafka.Config
	baseURL   string
	committed func() int64
	last      map[string]market.Tick
}

func startPipeline(t *testing.T) *pipeline {
	t.Helper()
	return startPipelineWith(t, nil)
}

// startPipelineWith is startPipeline with configure applied to the web
// server's Config before the server is made.
func startPipelineWith(t *testing.T, configure func(*web.Config)) *pipeline {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	dataDir := t.TempDir()
	_, kcfg := fx.Broker(t, dataDir, 3)
	pool := fx.DB(t, 16)
	// Stop the processor and the live stream before the database goes.
	t.Cleanup(func() { cancel(); wg.Wait() })
	proc, err := stream.New(stream.Config{Kafka: kcfg, Logger: log}, store.NewSink(pool))
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { _ = proc.Run(ctx) })
	wcfg := web.Config{Pool: pool, Kafka: kcfg, Logger: log, DataDir: dataDir, RestrictHosts: true}
	if configure != nil {
		configure(&wcfg)
	}
	srv, err := web.New(wcfg)
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { _ = srv.Run(ctx) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })

	// Twenty minutes of three symbols ending about now, with plenty of
	// anomalies so that the chart has markers.
	syms, _ := generate.LookupSymbols([]string{"AAPL", "MSFT", "NVDA"})
	sim, err := generate.NewSimulator(generate.SimConfig{Symbols: syms, Rate: 20, Count: 24_000, Seed: 1,
		Start: time.Now().Add(-21 * time.Minute).UTC(), AnomalyRate: 120})
	if err != nil {
		t.Fatal(err)
	}
	p := &pipeline{kcfg: kcfg, baseURL: "http://" + ln.Addr().String(), last: map[string]market.Tick{}}
	prod, err := kafka.NewProducer(kcfg, kafka.TopicTicks)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	dec := market.NewDecoder()
	if _, err := generate.Run(ctx, sim, generate.Pace{}, func(ctx context.Context, r generate.Record) error {
		var tk market.Tick
		if dec.Decode(r.Value, &tk) == nil {
			p.last[tk.Symbol] = tk
		}
		return prod.Send(ctx, r.Key, r.Value)
	}); err != nil {
		t.Fatal(err)
	}
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	p.committed = func() int64 {
		var n int64
		_ = pool.QueryRow(ctx, `SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets`).Scan(&n)
		return n
	}
	deadline := time.Now().Add(time.Minute)
	for p.committed() < 24_000 {
		if time.Now().After(deadline) {
			t.Fatal("the processor did not catch up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

// trade produces one hand-made trade of sym after the simulated ones.
func (p *pipeline) trade(t *testing.T, sym string, price float64) {
	t.Helper()
	p.produce(t, sym, price, true)
}

// tradeOnly is trade without a quote, as a trade-only feed sends it. It
// returns the trade's seq.
func (p *pipeline) tradeOnly(t *testing.T, sym string, price float64) int64 {
	t.Helper()
	return p.produce(t, sym, price, false)
}

func (p *pipeline) produce(t *testing.T, sym string, price float64, quote bool) int64 {
	t.Helper()
	last := p.last[sym]
	tk := market.Tick{Symbol: sym, Seq: last.Seq + 1, TS: time.Now().UTC().Truncate(time.Microsecond),
		Price: price, Size: 100}
	if quote {
		tk.Bid, tk.Ask = price-0.01, price+0.01
	}
	if tk.TS.Before(last.TS) {
		tk.TS = last.TS.Add(time.Millisecond)
	}
	p.last[sym] = tk
	cl, err := kgo.NewClient(p.kcfg.Opts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	rec := &kgo.Record{Topic: kafka.TopicTicks, Key: []byte(sym), Value: tk.AppendJSON(nil)}
	if err := cl.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return tk.Seq
}

// browser starts headless Chromium (Debian's package) for one test.
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("browser tests need Chromium: apt-get install chromium (the CI script installs it)")
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 800),
		// This machine has no network beyond loopback; keep Chromium from trying.
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
		// Headless Chromium reports a light system theme; the tests of
		// colours are written for the dark one, which the theme tests
		// switch away from themselves.
		chromedp.Flag("force-dark-mode", true),
	)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	ctx, cancel3 := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancel3)
	return ctx
}

// until polls a JavaScript condition in the page.
func until(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Fatalf("waiting for %s (%s): %v", what, expr, err)
	}
}

func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := filepath.Join("..", "..", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestBrowserOverviewLive(t *testing.T) {
	p := startPipeline(t)
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(p.baseURL+"/")); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "three symbols listed", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.symbols() === 3`)
	for _, sym := range []string{"AAPL", "MSFT", "NVDA"} {
		price := eval[string](t, ctx, `document.querySelector('#watchlist tr[data-symbol="`+sym+`"] .price').textContent.trim()`)
		if _, err := strconv.ParseFloat(price, 64); err != nil {
			t.Errorf("%s shows price %q", sym, price)
		}
	}
	until(t, ctx, "anomaly feed filled", `document.querySelectorAll('#anomalies li').length > 0`)
	until(t, ctx, "a green dot", `document.querySelector('#conn-state').dataset.state === 'live'`)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 720)); err != nil {
		t.Fatal(err)
	}
	screenshot(t, ctx, "overview")

	// A new trade changes the price in place, without a reload.
	eval[bool](t, ctx, `window.__noReload = true`)
	before := eval[string](t, ctx, `document.querySelector('#watchlist tr[data-symbol="AAPL"] .price').textContent.trim()`)
	target := p.last["AAPL"].Price * 1.05
	sent := time.Now()
	p.trade(t, "AAPL", float64(int(target*100))/100)
	until(t, ctx, "AAPL's price to change", `document.querySelector('#watchlist tr[data-symbol="AAPL"] .price').textContent.trim() !== `+strconv.Quote(before))
	t.Logf("price changed in the browser %v after the trade was produced", time.Since(sent))
	if !eval[bool](t, ctx, `window.__noReload === true`) {
		t.Fatal("the page reloaded")
	}
	until(t, ctx, "status strip live", `document.querySelector('#tps').textContent.trim() !== ''`)

	// A phone-sized screen.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844)); err != nil {
		t.Fatal(err)
	}
	if w := eval[float64](t, ctx, `document.documentElement.scrollWidth`); w > 400 {
		t.Errorf("the overview is %v px wide on a 390 px screen", w)
	}
	screenshot(t, ctx, "overview-phone")
}

func TestBrowserSymbolPage(t *testing.T) {
	p := startPipeline(t)
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(p.baseURL+"/symbol/AAPL?interval=1m&range=1h")); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "candles drawn", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.candleCount() >= 15`)
	n1m := eval[int](t, ctx, `window.stockpipe.candleCount()`)
	until(t, ctx, "anomaly markers", `window.stockpipe.markerCount() > 0`)
	until(t, ctx, "trades table", `document.querySelectorAll('#trades tr').length > 0`)
	until(t, ctx, "the change on the day", `/^(▲ \+|▼ −)?\d+\.\d+ \([+−]?\d+\.\d\d%\)$/.test(document.querySelector('#last-change').textContent)`)
	// Twenty minutes of candles: RSI(14) is drawn and needs no note.
	if !eval[bool](t, ctx, `document.querySelector('#rsi-note').hidden`) {
		t.Error("the RSI note shows with more than 15 candles")
	}
	shots(t, ctx, "symbol-1m")
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 720)); err != nil {
		t.Fatal(err)
	}

	// The forming candle moves live.
	lastClose := eval[float64](t, ctx, `window.stockpipe.lastCandle().close`)
	p.trade(t, "AAPL", float64(int(lastClose*1.02*100))/100)
	until(t, ctx, "the forming candle to move", `window.stockpipe.lastCandle().close !== `+fmt.Sprint(lastClose))

	// A trade without a quote (a trade-only feed's) goes through Kafka,
	// the processor and PostgreSQL like any other, and its row shows
	// dashes for bid and ask: live, and read back after a reload.
	quotes := func(seq int64) string {
		return `[...document.querySelectorAll('#trades tr[data-seq="` + strconv.FormatInt(seq, 10) + `"] td.col-quote')].map((td) => td.textContent.trim() + (td.title ? ' (' + td.title + ')' : '')).join(' | ')`
	}
	const noQuote = "– (no quote: the feed sent this trade without one) | – (no quote: the feed sent this trade without one)"
	seq := p.tradeOnly(t, "AAPL", float64(int(lastClose*1.01*100))/100)
	until(t, ctx, "the trade without a quote listed", `document.querySelector('#trades tr[data-seq="`+strconv.FormatInt(seq, 10)+`"]') !== null`)
	if got := eval[string](t, ctx, quotes(seq)); got != noQuote {
		t.Errorf("live, the trade without a quote shows bid and ask as %q, want %q", got, noQuote)
	}
	if got := eval[string](t, ctx, quotes(seq-1)); !regexp.MustCompile(`^\d+\.\d\d \| \d+\.\d\d$`).MatchString(got) {
		t.Errorf("the quoted trade before it shows bid and ask as %q", got)
	}
	if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "the trades after a reload", `window.stockpipe && window.stockpipe.loaded && document.querySelector('#trades tr[data-seq="`+strconv.FormatInt(seq, 10)+`"]') !== null`)
	if got := eval[string](t, ctx, quotes(seq)); got != noQuote {
		t.Errorf("after a reload, the trade without a quote shows bid and ask as %q, want %q", got, noQuote)
	}

	// Switching interval redraws with five-minute candles.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`button[data-interval="5m"]`))); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "5m candles", `window.stockpipe.interval === '5m' && window.stockpipe.loaded && window.stockpipe.candleCount() > 0`)
	if n5m := eval[int](t, ctx, `window.stockpipe.candleCount()`); n5m >= n1m || n5m < 3 {
		t.Errorf("5m shows %d candles, 1m showed %d", n5m, n1m)
	}
	if eval[string](t, ctx, `document.querySelector('button[data-interval="5m"]').getAttribute('aria-pressed')`) != "true" {
		t.Error("the 5m button is not marked pressed")
	}
	// Indicator toggles are keyboard-reachable checkboxes.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`input[data-ind="bb"]`))); err != nil {
		t.Fatal(err)
	}
	screenshot(t, ctx, "symbol-5m")

	// An unknown symbol says so instead of drawing nothing.
	if err := chromedp.Do(ctx, chromedp.Navigate(p.baseURL+"/symbol/ZZZZ")); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "an error shown", `!document.querySelector('#error').hidden && /unknown symbol/i.test(document.querySelector('#error').textContent)`)
}
