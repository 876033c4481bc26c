package web_test

import (
	"context"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/web"
)

// load produces ticks of the pipeline's symbols at about perSecond in all,
// event times now, until ctx ends, and returns how many it sent.
func (p *pipeline) load(t *testing.T, ctx context.Context, perSecond int) <-chan int {
	t.Helper()
	prod, err := kafka.NewProducer(p.kcfg, kafka.TopicTicks)
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]market.Tick{}
	var syms []string
	for s, tk := range p.last {
		last[s] = tk
		syms = append(syms, s)
	}
	done := make(chan int, 1)
	go func() {
		defer prod.Close()
		sent := 0
		defer func() { done <- sent }()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_ = prod.Flush(fctx)
				cancel()
				return
			case <-tick.C:
			}
			for range perSecond / 100 {
				sym := syms[sent%len(syms)]
				prev := last[sym]
				// A random-looking walk of a few cents, so that prices
				// keep changing.
				step := float64((sent*7919)%11-5) / 100
				tk := market.Tick{Symbol: sym, Seq: prev.Seq + 1, TS: time.Now().UTC().Truncate(time.Microsecond),
					Price: max(1, prev.Price+step), Size: 100}
				tk.Bid, tk.Ask = tk.Price-0.01, tk.Price+0.01
				if !tk.TS.After(prev.TS) {
					tk.TS = prev.TS.Add(time.Microsecond)
				}
				last[sym] = tk
				if err := prod.Send(ctx, []byte(sym), tk.AppendJSON(nil)); err != nil {
					return
				}
				sent++
			}
		}
	}()
	return done
}

// TestBrowserOverviewConflated loads the pipeline with a steady stream of
// ticks while the overview is open on a server with the default live rate:
// the prices keep changing and flashing, and the page receives at most
// symbols × rate prices a second (and as many forming candles), not one
// per committed batch.
func TestBrowserOverviewConflated(t *testing.T) {
	const rate = web.DefaultLiveRate
	p := startPipelineWith(t, func(c *web.Config) { c.LiveRate = rate })
	ctx := browser(t)
	navigate(t, ctx, p.baseURL+"/")
	until(t, ctx, "three symbols listed", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.symbols() === 3`)
	until(t, ctx, "a green dot", `document.querySelector('#conn-state').dataset.state === 'live'`)

	lctx, stop := context.WithCancel(context.Background())
	defer stop()
	sent := p.load(t, lctx, 1500)
	// Let the load reach the page, then count over a few seconds.
	until(t, ctx, "live prices", `(window.stockpipe.events.tick || 0) > 0`)
	eval[bool](t, ctx, `window.__start = {at: performance.now(), messages: window.stockpipe.messages, frames: window.stockpipe.frames, events: {...window.stockpipe.events}}, true`)
	prices := func() string {
		return eval[string](t, ctx, `[...document.querySelectorAll('#watchlist .price')].map((c) => c.textContent).join(' ')`)
	}
	changes, flashed := 0, false
	prev := prices()
	for range 25 {
		time.Sleep(200 * time.Millisecond)
		if now := prices(); now != prev {
			changes++
			prev = now
		}
		flashed = flashed || eval[bool](t, ctx, `[...document.querySelectorAll('#watchlist .price')].some((c) => c.getAnimations().length > 0)`)
	}
	type counts struct {
		Seconds  float64        `json:"seconds"`
		Messages int            `json:"messages"`
		Frames   int            `json:"frames"`
		Events   map[string]int `json:"events"`
	}
	got := eval[counts](t, ctx, `(() => {
		const s = window.__start, e = {};
		for (const [k, v] of Object.entries(window.stockpipe.events)) e[k] = v - (s.events[k] || 0);
		return {seconds: (performance.now() - s.at) / 1000, messages: window.stockpipe.messages - s.messages, frames: window.stockpipe.frames - s.frames, events: e};
	})()`)
	stop()
	n := <-sent
	tps := eval[string](t, ctx, `document.querySelector('#tps').textContent`)
	t.Logf("%d ticks produced; over %.1f s the page got %d messages (%v) applied in %d frames; ticks/s shown %s; prices changed in %d of 25 looks",
		n, got.Seconds, got.Messages, got.Events, got.Frames, tps, changes)

	if changes < 10 {
		t.Errorf("the prices changed in %d of 25 looks 200 ms apart under load", changes)
	}
	if !flashed {
		t.Error("no price cell flashed")
	}
	// At most rate updates per symbol per second of prices and of forming
	// candles; a second more for where the span cuts the flushes.
	bound := 3 * rate * (int(got.Seconds) + 1)
	if got.Events["tick"] > bound {
		t.Errorf("%d price updates in %.1f s; at most %d (3 symbols × %d/s)", got.Events["tick"], got.Seconds, bound, rate)
	}
	if got.Events["candle"] > bound+3*2 {
		t.Errorf("%d candle updates in %.1f s; at most %d and the finals", got.Events["candle"], got.Seconds, bound)
	}
	if got.Events["tick"] < 3*int(got.Seconds) {
		t.Errorf("only %d price updates in %.1f s under load", got.Events["tick"], got.Seconds)
	}
	if got.Frames > got.Messages {
		t.Errorf("%d frames applied %d messages", got.Frames, got.Messages)
	}
}
