package web

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/store"
)

// burst is a randomized stream of live updates of several symbols, as the
// processor's batches announce them: per round, tick events (now and then
// a late one, older than the symbol's newest), the forming 1m candles they
// move (sometimes the previous bucket's too, as a flush of two open
// windows sends), a final candle when a bucket closes, and anomalies.
type burst struct {
	rng     *rand.Rand
	start   time.Time
	symbols []string
	sym     map[string]*burstSymbol

	// What must arrive, in this order: final candles and anomalies.
	mustArrive []string
}

type burstSymbol struct {
	ts       time.Time // newest trade time so far
	seq      int64
	newest   store.Trade // the newest trade by time
	bucket   int64       // the forming 1m bucket, Unix seconds
	volume   int64       // its volume so far
	prevOpen bool        // the previous bucket still takes late trades
}

func newBurst(seed uint64, symbols []string) *burst {
	b := &burst{rng: rand.New(rand.NewPCG(seed, seed^0x5eed)), start: time.Date(2026, 11, 2, 14, 30, 0, 0, time.UTC),
		symbols: symbols, sym: map[string]*burstSymbol{}}
	for _, s := range symbols {
		b.sym[s] = &burstSymbol{ts: b.start, bucket: b.start.Unix()}
	}
	return b
}

const tickTS = "2006-01-02T15:04:05.000000Z07:00" // as store.payloads formats it

// round returns one notification payload.
func (b *burst) round(t *testing.T) string {
	t.Helper()
	var events []store.Event
	add := func(kind, sym string, v any) { events = append(events, liveEvent(t, v)) }
	var candles, anomalies []store.Event
	addTo := func(list *[]store.Event, kind, sym string, v any) { *list = append(*list, liveEvent(t, v)) }
	for _, sym := range b.symbols {
		s := b.sym[sym]
		if b.rng.Float64() > 0.7 {
			continue
		}
		n := 1 + b.rng.IntN(25)
		late := b.rng.Float64() < 0.1 && s.seq > 0
		var trades []store.Trade // oldest first while built
		ts := s.ts
		if late {
			// Older than the symbol's newest trade, never equal to any.
			ts = s.ts.Add(-time.Duration(500+b.rng.IntN(400)) * time.Microsecond).Add(-time.Duration(3*n) * time.Millisecond)
		}
		for range n {
			ts = ts.Add(time.Duration(1+b.rng.IntN(3)) * time.Millisecond)
			s.seq++
			trades = append(trades, store.Trade{TS: ts, Seq: s.seq, Price: 100 + float64(b.rng.IntN(10000))/100, Size: 100})
		}
		slices.Reverse(trades)
		if !late {
			s.ts = ts
			s.newest = trades[0]
		}
		add("tick", sym, store.TickEvent{Symbol: sym, Price: trades[0].Price, TS: trades[0].TS.Format(tickTS), Count: n,
			Trades: trades[:min(n, maxMergedTrades)]})

		// Its candles: the previous bucket's too while it is open, then
		// the forming one; a bucket closes every 60 trades or so.
		if s.prevOpen && b.rng.Float64() < 0.5 {
			addTo(&candles, "candle", sym, store.Candle{Symbol: sym, Interval: "1m", T: s.bucket - 60, Volume: 1, Close: 1})
		}
		s.volume += int64(n) * 100
		addTo(&candles, "candle", sym, store.Candle{Symbol: sym, Interval: "1m", T: s.bucket, Volume: s.volume, Close: trades[0].Price})
		if s.prevOpen && b.rng.Float64() < 0.3 {
			c := store.Candle{Symbol: sym, Interval: "1m", T: s.bucket - 60, Volume: 2, Close: 1, Final: true}
			addTo(&candles, "candle", sym, c)
			b.mustArrive = append(b.mustArrive, fmt.Sprintf("candle %s %d final", sym, c.T))
			s.prevOpen = false
		}
		if !s.prevOpen && b.rng.Float64() < 0.03 {
			s.bucket += 60
			s.volume = 0
			s.prevOpen = true
		}
	}
	if b.rng.Float64() < 0.05 {
		sym := b.symbols[b.rng.IntN(len(b.symbols))]
		a := store.Anomaly{Symbol: sym, TS: b.sym[sym].ts, Kind: "price_jump", Severity: "high", Detail: fmt.Sprint(len(b.mustArrive))}
		addTo(&anomalies, "anomaly", sym, a)
		b.mustArrive = append(b.mustArrive, "anomaly "+sym+" "+a.Detail)
	}
	events = append(append(events, candles...), anomalies...)
	return strings.Join(store.Encode(events), "")
}

// liveEvent is v's live update, as the processor notifies it.
func liveEvent(t *testing.T, v any) store.Event {
	t.Helper()
	var e store.Event
	var err error
	switch v := v.(type) {
	case store.TickEvent:
		e = store.TickUpdate(&v)
	case store.Candle:
		e = store.CandleUpdate(&v)
	case store.Anomaly:
		e, err = store.AnomalyUpdate(&v)
	default:
		t.Fatalf("no live update for %T", v)
	}
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// received is one event a stream client read, with when.
type received struct {
	at    time.Time
	event string
	data  []byte
}

// readStream reads path's events until ctx ends.
func readStream(ctx context.Context, t *testing.T, url string) (<-chan []received, <-chan struct{}) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %s", url, resp.Status)
	}
	out := make(chan []received, 1)
	connected := make(chan struct{})
	go func() {
		defer resp.Body.Close()
		var got []received
		defer func() { out <- got }()
		r := bufio.NewReaderSize(resp.Body, 1<<20)
		event := ""
		once := sync.Once{}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			once.Do(func() { close(connected) })
			line = strings.TrimSuffix(line, "\n")
			switch {
			case strings.HasPrefix(line, "event: "):
				event = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				got = append(got, received{at: time.Now(), event: event, data: []byte(line[len("data: "):])})
			}
		}
	}()
	return out, connected
}

// TestConflationProperties sends a randomized burst of live updates of
// several symbols to clients of a server with live rate R, and checks
// what each gets: per symbol at most R tick updates in any second, never
// an older price after a newer one, the newest tick last; every final
// candle and every anomaly exactly once and in order, and no state of a
// candle after its final one.
func TestConflationProperties(t *testing.T) {
	const rate = 4
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	s := &Server{hub: newHub(), livePeriod: time.Second / rate, log: slog.New(slog.DiscardHandler)}
	srv := httptest.NewServer(http.HandlerFunc(s.apiStream))
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	paths := []string{
		"/api/stream?ticks=trades&candles=1m&anomalies=1", // a symbol page's (of every symbol)
		"/api/stream?ticks=all&candles=1m&anomalies=1",    // the overview's
		"/api/stream", // everything, as before the parameters
	}
	var results []<-chan []received
	for _, p := range paths {
		out, connected := readStream(ctx, t, srv.URL+p)
		select {
		case <-connected:
		case <-time.After(10 * time.Second):
			t.Fatal("not connected")
		}
		results = append(results, out)
	}
	for s.hub.count() < len(paths) {
		time.Sleep(time.Millisecond)
	}

	b := newBurst(seed, []string{"AAPL", "MSFT", "NVDA", "AMZN", "GOOG"})
	ticks := 0
	began := time.Now()
	for time.Since(began) < 2500*time.Millisecond {
		p := b.round(t)
		ticks += strings.Count(p, `"e":"tick"`)
		if err := s.hub.deliver(p); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Microsecond)
	}
	sent := time.Since(began)
	// Everything pending goes within a period.
	time.Sleep(4 * time.Second / rate)
	cancel()
	t.Logf("%d tick events of %d symbols in %v, %d final candles and anomalies", ticks, len(b.symbols), sent.Round(time.Millisecond), len(b.mustArrive))

	for i, p := range paths {
		got := <-results[i]
		t.Run(strings.TrimPrefix(p, "/api/stream"), func(t *testing.T) {
			checkConflated(t, b, got, rate, p)
		})
	}
}

func checkConflated(t *testing.T, b *burst, got []received, rate int, path string) {
	tickTimes := map[string][]time.Time{}
	lastTick := map[string]store.TickEvent{}
	lastTS := map[string]time.Time{}
	finalSeen := map[string]bool{} // "SYM bucket" whose final state arrived
	var arrived []string
	n := 0
	for _, r := range got {
		switch r.event {
		case "tick":
			n++
			var ev store.TickEvent
			if err := json.Unmarshal(r.data, &ev); err != nil {
				t.Fatalf("tick %s: %v", r.data, err)
			}
			ts, err := time.Parse(time.RFC3339Nano, ev.TS)
			if err != nil {
				t.Fatal(err)
			}
			if ts.Before(lastTS[ev.Symbol]) {
				t.Errorf("%s: a price of %v after one of %v", ev.Symbol, ts, lastTS[ev.Symbol])
			}
			lastTS[ev.Symbol] = ts
			tickTimes[ev.Symbol] = append(tickTimes[ev.Symbol], r.at)
			lastTick[ev.Symbol] = ev
			if strings.Contains(path, "ticks=all") {
				if ev.Trades != nil || strings.Contains(string(r.data), "trades") {
					t.Errorf("a price-only tick event carries trades: %s", r.data)
				}
				continue
			}
			if len(ev.Trades) == 0 || len(ev.Trades) > maxMergedTrades {
				t.Errorf("%s: a tick event with %d trades", ev.Symbol, len(ev.Trades))
				continue
			}
			if !ev.Trades[0].TS.Equal(ts) || ev.Trades[0].Price != ev.Price {
				t.Errorf("%s: price %v at %v, newest trade %+v", ev.Symbol, ev.Price, ts, ev.Trades[0])
			}
			if !slices.IsSortedFunc(ev.Trades, func(a, c store.Trade) int { return newerTrade(&a, &c) }) {
				t.Errorf("%s: trades not newest first", ev.Symbol)
			}
		case "candle":
			var c store.Candle
			if err := json.Unmarshal(r.data, &c); err != nil {
				t.Fatal(err)
			}
			key := fmt.Sprintf("%s %d", c.Symbol, c.T)
			if finalSeen[key] {
				t.Errorf("candle %s: a state after its final one: %s", key, r.data)
			}
			if c.Final {
				finalSeen[key] = true
				arrived = append(arrived, "candle "+key+" final")
			}
		case "anomaly":
			var a store.Anomaly
			if err := json.Unmarshal(r.data, &a); err != nil {
				t.Fatal(err)
			}
			arrived = append(arrived, "anomaly "+a.Symbol+" "+a.Detail)
		}
	}
	if !slices.Equal(arrived, b.mustArrive) {
		t.Errorf("final candles and anomalies: got %d, sent %d; first difference at %d", len(arrived), len(b.mustArrive), firstDiff(arrived, b.mustArrive))
	}
	for _, sym := range b.symbols {
		times := tickTimes[sym]
		// Any R+1 updates of a symbol span at least a second: the
		// server sends them at least 1/R s apart. The allowance is for
		// delivery jitter, measured where they are read.
		const jitter = 100 * time.Millisecond
		for i := 0; i+rate < len(times); i++ {
			if d := times[i+rate].Sub(times[i]); d < time.Second-jitter {
				t.Errorf("%s: %d tick updates within %v", sym, rate+1, d)
				break
			}
		}
		want := b.sym[sym].newest
		last := lastTick[sym]
		if ts, _ := time.Parse(time.RFC3339Nano, last.TS); !ts.Equal(want.TS) || last.Price != want.Price {
			t.Errorf("%s: the last update is %v at %s, the newest tick %v at %v", sym, last.Price, last.TS, want.Price, want.TS)
		}
		if !strings.Contains(path, "ticks=all") && len(last.Trades) > 0 && last.Trades[0].Seq != want.Seq {
			t.Errorf("%s: the last update's newest trade is seq %d, want %d", sym, last.Trades[0].Seq, want.Seq)
		}
	}
	t.Logf("%d tick updates, %d final candles and anomalies, %d events in all", n, len(arrived), len(got))
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestConflationSlowClientBounded: a client that takes nothing (its
// writer stuck on a browser that does not read) holds at most one pending
// update per symbol however many arrive, and is dropped only once the
// events that must all arrive overflow its queue.
func TestConflationSlowClientBounded(t *testing.T) {
	h := newHub()
	sub, err := parseSubscription(map[string][]string{"ticks": {"trades"}, "anomalies": {"1"}})
	if err != nil {
		t.Fatal(err)
	}
	c := h.subscribe(sub, 250*time.Millisecond)
	var symbols []string
	for i := range 100 {
		symbols = append(symbols, fmt.Sprintf("S%04d", i))
	}
	b := newBurst(1, symbols)
	for round := range 150 {
		if err := h.deliver(b.round(t)); err != nil {
			t.Fatal(err)
		}
		if dirty, slots := c.pending(); dirty > len(symbols) || slots > len(symbols) {
			t.Fatalf("round %d: %d pending updates in %d slots for %d symbols", round, dirty, slots, len(symbols))
		}
	}
	c.mu.Lock()
	queued := len(c.queue)
	var trades int
	for _, s := range c.slots {
		trades += len(s.trades)
	}
	c.mu.Unlock()
	dirty, slots := c.pending()
	t.Logf("after 150 rounds of %d symbols: %d pending in %d slots holding %d trades, %d queued", len(symbols), dirty, slots, trades, queued)
	if trades > len(symbols)*maxMergedTrades {
		t.Errorf("the slots hold %d trades", trades)
	}
	select {
	case <-c.gone:
		t.Fatalf("dropped while only conflated updates and %d anomalies arrived", queued)
	default:
	}
	// The anomalies (never dropped) fill its queue: then it goes.
	for i := 0; ; i++ {
		p := store.Encode([]store.Event{liveEvent(t, store.Anomaly{Symbol: "S0001", Kind: "stale", Detail: fmt.Sprint(i)})})
		if err := h.deliver(p[0]); err != nil {
			t.Fatal(err)
		}
		select {
		case <-c.gone:
			if i+queued < clientBuffer {
				t.Errorf("dropped after %d queued events, before its queue of %d was full", i+queued, clientBuffer)
			}
			return
		default:
		}
		if i > 2*clientBuffer {
			t.Fatal("a client whose queue overflowed is not dropped")
		}
	}
}

// TestSubscriptionParameters: the parameters parse as documented, and
// anything else is refused with a one-line message.
func TestSubscriptionParameters(t *testing.T) {
	for _, tc := range []struct {
		query string
		bad   string // part of the message; "" = accepted
	}{
		{"", ""},
		{"symbol=AAPL", ""},
		{"ticks=all&candles=1m", ""},
		{"symbol=AAPL&ticks=trades&candles=1m,5m&anomalies=1", ""},
		{"candles=1m&candles=1d", ""},
		{"candles=all&status=true&pipeline=0&dagruns=1", ""},
		{"tick=all", `unknown parameter "tick"`},
		{"ticks=all&foo=1", `unknown parameter "foo"`},
		{"ticks=some", `ticks "some"`},
		{"ticks=", `ticks ""`},
		{"candles=1m,2m", `candles "1m,2m"`},
		{"candles=", `candles ""`},
		{"anomalies=yes", `anomalies "yes" must be 1 or 0`},
	} {
		q, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		_, err = parseSubscription(q)
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%q: %v", tc.query, err)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad) || strings.Contains(err.Error(), "\n")):
			t.Errorf("%q: error %v, want one line with %q", tc.query, err, tc.bad)
		}
	}
}

// TestConflationTiming follows one client on a made-up clock: a symbol
// whose period has passed goes at once (after the short gather of slots
// falling due together), one sent less than a period ago waits out its
// period and then goes with its newest update.
func TestConflationTiming(t *testing.T) {
	const period = 250 * time.Millisecond
	h := newHub()
	c := newClient(subscription{everything: true, ticks: ticksPrice}, period)
	t0 := time.Date(2026, 11, 2, 14, 30, 0, 0, time.UTC)
	tick := func(sym string, price float64, at time.Duration) *message {
		ts := t0.Add(at).Format(tickTS)
		e := store.TickUpdate(&store.TickEvent{Symbol: sym, Price: price, TS: ts, Count: 1})
		return &message{event: "tick", symbol: sym, tick: h.tickUpdate(&e)}
	}
	offer := func(m *message, at time.Duration) {
		if !c.offer(m, t0.Add(at)) {
			t.Fatal("dropped")
		}
	}
	take := func(at time.Duration, want string, wantWait time.Duration) {
		t.Helper()
		out, wait := c.take(t0.Add(at), nil)
		var got []string
		for _, o := range out {
			var ev store.TickEvent
			_ = json.Unmarshal([]byte(strings.TrimSuffix(strings.SplitN(string(o.frame), "data: ", 2)[1], "\n\n")), &ev)
			got = append(got, fmt.Sprint(ev.Symbol, " ", ev.Price))
		}
		if g := strings.Join(got, ", "); g != want || wait != wantWait {
			t.Errorf("at %v: sent %q, next in %v; want %q, next in %v", at, g, wait, want, wantWait)
		}
	}
	ms := time.Millisecond
	offer(tick("AAPL", 1, 0), 0)
	take(0, "AAPL 1", 0)
	// Another symbol, idle so far: it goes with the next write, 25 ms
	// (period/10) after the last.
	offer(tick("MSFT", 1, 10*ms), 10*ms)
	take(10*ms, "", 15*ms)
	take(25*ms, "MSFT 1", 0)
	// AAPL again within its period: it waits, newest winning.
	offer(tick("AAPL", 2, 30*ms), 30*ms)
	take(30*ms, "", 220*ms)
	offer(tick("AAPL", 3, 100*ms), 100*ms)
	offer(tick("AAPL", 2.5, 90*ms), 110*ms) // a late batch: an older trade
	take(249*ms, "", ms)
	take(250*ms, "AAPL 3", 0)
	// A late batch after a newer price was sent is not sent.
	offer(tick("AAPL", 9, 95*ms), 600*ms)
	take(600*ms, "", 0)
	if dirty, slots := c.pending(); dirty != 0 || slots != 2 {
		t.Errorf("%d pending in %d slots", dirty, slots)
	}
}
