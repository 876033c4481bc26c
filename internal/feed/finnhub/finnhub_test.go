package finnhub_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/feed"
	"github.com/stockpipe/stockpipe/internal/feed/fake"
	"github.com/stockpipe/stockpipe/internal/feed/finnhub"
)

// token is the fake's key; it must never show in a log line or an error.
const token = "tok-SECRET-c4f3"

var t0 = time.Date(2026, 11, 2, 14, 30, 0, 123_000_000, time.UTC)

// handler collects what a connector delivers.
type handler struct {
	mu     sync.Mutex
	trades []feed.Trade
	quotes int
	fail   error // returned by Trade when set
}

func (h *handler) Trade(t feed.Trade) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.trades = append(h.trades, t)
	return h.fail
}

func (h *handler) Quote(feed.Quote) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.quotes++
	return nil
}

func (h *handler) got() []feed.Trade {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.trades)
}

// logBuffer is a log destination safe to read while the connector writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// count is how many log lines contain all of parts.
func (l *logBuffer) count(parts ...string) int {
	n := 0
	for line := range strings.Lines(l.String()) {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

// waitFor polls cond until it holds, failing the test after 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// running is a connector's Run in a goroutine.
type running struct {
	st     *feed.Stats
	log    *logBuffer
	cancel context.CancelFunc
	done   chan struct{} // closed when Run has returned err
	err    error
}

// stop cancels Run and returns what it returned, failing the test if it
// takes more than 5 s.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		return r.err
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5 s of its context ending")
		return nil
	}
}

// start runs a connector to f with cfg (URL, Token and Logger filled in
// when empty), stopping it when the test ends.
func start(t *testing.T, f *fake.Finnhub, cfg finnhub.Config, h feed.Handler) *running {
	t.Helper()
	r := &running{st: feed.NewStats(finnhub.Source), log: &logBuffer{}, done: make(chan struct{})}
	if cfg.URL == "" {
		cfg.URL = f.URL()
	}
	if cfg.Token == "" {
		cfg.Token = token
	}
	cfg.Logger = slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		defer close(r.done)
		r.err = finnhub.New(cfg).Run(ctx, h, r.st)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5 s of its context ending")
		}
		if strings.Contains(r.log.String(), token) {
			t.Errorf("the token is in the log:\n%s", r.log)
		}
	})
	return r
}

// subscribed reports whether f's current connection subscribed to exactly
// symbols.
func subscribed(f *fake.Finnhub, symbols ...string) func() bool {
	return func() bool {
		return slices.Equal(slices.Sorted(slices.Values(f.Subscribed())), slices.Sorted(slices.Values(symbols)))
	}
}

func newFake(t *testing.T) *fake.Finnhub {
	f := fake.NewFinnhub(token)
	t.Cleanup(f.Close)
	return f
}

// checkTrades compares trades field by field, the time to the millisecond
// and in UTC.
func checkTrades(t *testing.T, got, want []feed.Trade) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d trades, want %d:\n got %+v\nwant %+v", len(got), len(want), got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Symbol != w.Symbol || !g.TS.Equal(w.TS) || g.TS.Location() != time.UTC || g.Price != w.Price || g.Size != w.Size || g.ID != "" {
			t.Errorf("trade %d = %+v (%v), want %+v", i, g, g.TS.Location(), w)
		}
	}
}

func TestTradesArriveExactlyAndInOrder(t *testing.T) {
	f := newFake(t)
	h := &handler{}
	r := start(t, f, finnhub.Config{Symbols: []string{"AAPL", "msft", "AAPL"}}, h)
	waitFor(t, "the subscriptions", subscribed(f, "AAPL", "MSFT"))

	f.Send(fake.FinnhubTrade{Symbol: "AAPL", Price: 189.23, TS: t0, Volume: 100, Conditions: []string{"1", "12"}})
	// Several trades in one frame keep their order; a fractional volume
	// rounds to whole shares.
	f.Send(
		fake.FinnhubTrade{Symbol: "MSFT", Price: 410.5, TS: t0.Add(time.Millisecond), Volume: 2.6},
		fake.FinnhubTrade{Symbol: "AAPL", Price: 189.24, TS: t0.Add(time.Millisecond), Volume: 7},
		fake.FinnhubTrade{Symbol: "AAPL", Price: 189.22, TS: t0.Add(999 * time.Millisecond), Volume: 1},
	)
	want := []feed.Trade{
		{Symbol: "AAPL", TS: t0, Price: 189.23, Size: 100},
		{Symbol: "MSFT", TS: t0.Add(time.Millisecond), Price: 410.5, Size: 3},
		{Symbol: "AAPL", TS: t0.Add(time.Millisecond), Price: 189.24, Size: 7},
		{Symbol: "AAPL", TS: t0.Add(999 * time.Millisecond), Price: 189.22, Size: 1},
	}
	waitFor(t, "4 trades", func() bool { return len(h.got()) >= len(want) })
	checkTrades(t, h.got(), want)

	s := r.st.Snapshot()
	if s.State != feed.StateConnected || s.Messages != 2 || s.Errors != 0 || s.Reconnects != 0 || s.ConnectedSince.IsZero() {
		t.Errorf("stats = %+v; want connected, 2 messages, no errors, no reconnects", s)
	}
	if h.quotes != 0 {
		t.Errorf("%d quotes delivered; Finnhub has none", h.quotes)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
}

func TestPingErrorAndGarbageDeliverNothingAndKeepTheConnection(t *testing.T) {
	f := newFake(t)
	h := &handler{}
	r := start(t, f, finnhub.Config{Symbols: []string{"AAPL"}}, h)
	waitFor(t, "the subscription", subscribed(f, "AAPL"))

	f.SendPing()
	f.SendError("Subscribing to too many symbols")
	f.SendRaw([]byte(`not json`))
	f.SendRaw([]byte(`{"type":"news","data":[]}`))
	f.Send(fake.FinnhubTrade{Symbol: "AAPL", Price: 1.5, TS: t0, Volume: 10})
	waitFor(t, "the trade", func() bool { return len(h.got()) == 1 })
	checkTrades(t, h.got(), []feed.Trade{{Symbol: "AAPL", TS: t0, Price: 1.5, Size: 10}})

	s := r.st.Snapshot()
	if s.Messages != 5 || s.Errors != 3 || s.State != feed.StateConnected || s.Reconnects != 0 {
		t.Errorf("stats = %+v; want 5 messages, 3 errors (the error message, 2 undecodable), still connected", s)
	}
	if f.Connections() != 1 {
		t.Errorf("%d connections; a ping, an error or garbage must not disconnect", f.Connections())
	}
	if r.log.count("level=WARN", "Subscribing to too many symbols") != 1 {
		t.Errorf("want one WARN line with Finnhub's error message; log:\n%s", r.log)
	}
}

func TestReconnectResubscribes(t *testing.T) {
	f := newFake(t)
	h := &handler{}
	symbols := []string{"AAPL", "MSFT", "BINANCE:BTCUSDT"}
	r := start(t, f, finnhub.Config{Symbols: symbols}, h)
	waitFor(t, "the subscriptions", subscribed(f, symbols...))
	f.Send(fake.FinnhubTrade{Symbol: "AAPL", Price: 100, TS: t0, Volume: 1})
	waitFor(t, "the first trade", func() bool { return len(h.got()) == 1 })

	f.DropConnections()
	waitFor(t, "a second connection subscribed to every symbol", func() bool {
		return f.Connections() == 2 && subscribed(f, symbols...)()
	})
	waitFor(t, "the reconnect in the stats", func() bool { return r.st.Snapshot().Reconnects == 1 })
	f.Send(fake.FinnhubTrade{Symbol: "MSFT", Price: 200, TS: t0.Add(time.Second), Volume: 2})
	waitFor(t, "the trade after the reconnect", func() bool { return len(h.got()) == 2 })
	checkTrades(t, h.got(), []feed.Trade{
		{Symbol: "AAPL", TS: t0, Price: 100, Size: 1},
		{Symbol: "MSFT", TS: t0.Add(time.Second), Price: 200, Size: 2},
	})

	s := r.st.Snapshot()
	if s.State != feed.StateConnected || s.Errors != 1 || s.LastError == "" {
		t.Errorf("stats = %+v; want connected, the drop counted as one error", s)
	}
	if n := r.log.count("level=WARN"); n != 1 || r.log.count("level=WARN", "connection lost") != 1 {
		t.Errorf("%d WARN lines, want one saying the connection was lost; log:\n%s", n, r.log)
	}
}

func TestWrongTokenIsFatalAtOnce(t *testing.T) {
	f := fake.NewFinnhub("the-right-token")
	t.Cleanup(f.Close)
	var logs logBuffer
	c := finnhub.New(finnhub.Config{URL: f.URL(), Token: token, Symbols: []string{"AAPL"},
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	st := feed.NewStats(finnhub.Source)
	began := time.Now()
	err := c.Run(context.Background(), &handler{}, st)
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("Run took %v to give up on a wrong token", took)
	}
	var fatal *feed.FatalError
	if !errors.As(err, &fatal) {
		t.Fatalf("Run = %v, want a *feed.FatalError", err)
	}
	if fatal.Source != finnhub.Source || fatal.Code != 401 || !strings.Contains(fatal.Fix, "FINNHUB_TOKEN") || !strings.Contains(err.Error(), "https://finnhub.io/register") {
		t.Errorf("FatalError = %+v (%q); want finnhub, 401, the fix naming FINNHUB_TOKEN", fatal, err)
	}
	if f.Rejected() != 1 || f.Connections() != 0 {
		t.Errorf("%d handshakes refused, %d accepted; want 1 and 0: no retry", f.Rejected(), f.Connections())
	}
	if strings.Contains(err.Error(), token) || strings.Contains(logs.String(), token) {
		t.Errorf("the token shows: error %q, log:\n%s", err, logs.String())
	}
	if logs.count("level=WARN") != 0 {
		t.Errorf("a retry was logged:\n%s", logs.String())
	}
}

func TestTokenNeverShows(t *testing.T) {
	f := newFake(t)
	h := &handler{}
	r := start(t, f, finnhub.Config{Symbols: []string{"AAPL"}}, h)
	waitFor(t, "the subscription", subscribed(f, "AAPL"))
	// With the server gone, net/http's dial errors quote the URL it
	// requested, token included, unless the connector masks it.
	f.Close()
	waitFor(t, "a failed reconnect", func() bool { return r.log.count("level=WARN", "connection failed") >= 1 })
	if s := r.st.Snapshot(); strings.Contains(s.LastError, token) || !strings.Contains(s.LastError, "token=****") {
		t.Errorf("last error %q: want the URL with the token masked", s.LastError)
	}
	if !strings.Contains(r.log.String(), "token=****") {
		t.Errorf("the log shows no masked URL:\n%s", r.log)
	}
	// start's cleanup checks the whole log for the token.
}

func TestCancelClosesNormallyAndReturnsNil(t *testing.T) {
	f := newFake(t)
	r := start(t, f, finnhub.Config{Symbols: []string{"AAPL"}}, &handler{})
	waitFor(t, "the connection", func() bool { return r.st.Snapshot().State == feed.StateConnected })
	if err := r.stop(t); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	waitFor(t, "the close handshake at the server", func() bool { return f.ClosedNormally() == 1 })
	if s := r.st.Snapshot(); s.State != feed.StateStopped {
		t.Errorf("state after Run = %q, want %q", s.State, feed.StateStopped)
	}
}

func TestHandlerErrorStopsRun(t *testing.T) {
	f := newFake(t)
	full := errors.New("downstream is full")
	r := start(t, f, finnhub.Config{Symbols: []string{"AAPL"}}, &handler{fail: full})
	waitFor(t, "the subscription", subscribed(f, "AAPL"))
	f.Send(fake.FinnhubTrade{Symbol: "AAPL", Price: 1, TS: t0, Volume: 1})
	select {
	case <-r.done:
		if !errors.Is(r.err, full) {
			t.Fatalf("Run = %v, want the handler's error", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run went on after the handler failed")
	}
	if f.Connections() != 1 {
		t.Errorf("%d connections; a handler error must not reconnect", f.Connections())
	}
}

func TestIdleConnectionIsReconnected(t *testing.T) {
	f := newFake(t)
	h := &handler{}
	r := start(t, f, finnhub.Config{Symbols: []string{"AAPL"}, Idle: 300 * time.Millisecond}, h)
	// The fake sends nothing unless told: the connection falls silent.
	waitFor(t, "a reconnect after 300 ms of silence", func() bool {
		return f.Connections() == 2 && subscribed(f, "AAPL")() && r.st.Snapshot().Reconnects == 1
	})
	if r.log.count("level=WARN", "connection lost", "nothing arrived") != 1 {
		t.Errorf("want one WARN line saying nothing arrived; log:\n%s", r.log)
	}
	f.Send(fake.FinnhubTrade{Symbol: "AAPL", Price: 3, TS: t0, Volume: 4})
	waitFor(t, "a trade on the new connection", func() bool { return len(h.got()) == 1 })
}

func TestRecordingReplaysTheSameTrades(t *testing.T) {
	f := newFake(t)
	h := &handler{}
	var out bytes.Buffer
	rec := feed.NewRecorder(&out)
	r := start(t, f, finnhub.Config{Symbols: []string{"AAPL", "MSFT"}, Recorder: rec}, h)
	waitFor(t, "the subscriptions", subscribed(f, "AAPL", "MSFT"))

	f.Send(fake.FinnhubTrade{Symbol: "AAPL", Price: 189.23, TS: t0, Volume: 100})
	f.SendPing()
	f.SendRaw([]byte(`not json`))
	f.Send(
		fake.FinnhubTrade{Symbol: "MSFT", Price: 410.01, TS: t0.Add(time.Millisecond), Volume: 5},
		fake.FinnhubTrade{Symbol: "MSFT", Price: 410.02, TS: t0.Add(time.Millisecond), Volume: 0.2}, // under a share: left out
		fake.FinnhubTrade{Symbol: "AAPL", Price: 189.3, TS: t0.Add(2 * time.Millisecond), Volume: 1.5},
	)
	f.SendError("Subscribing to too many symbols")
	waitFor(t, "5 messages", func() bool { return r.st.Snapshot().Messages == 5 })
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	live := h.got()
	if len(live) != 3 {
		t.Fatalf("live: %d trades, want 3: %+v", len(live), live)
	}

	replay := &handler{}
	var arrivals []time.Time
	pace := func(at time.Time) error { arrivals = append(arrivals, at); return nil }
	messages, skipped, err := feed.ReadRecording(&out, map[string]feed.Decoder{finnhub.Source: finnhub.Decode}, replay, pace)
	if err != nil || messages != 5 || skipped != 1 {
		t.Fatalf("ReadRecording = %d messages, %d skipped, %v; want 5, 1 (the garbage), nil", messages, skipped, err)
	}
	checkTrades(t, replay.got(), live)
	if !slices.IsSortedFunc(arrivals, time.Time.Compare) {
		t.Errorf("arrival times out of order: %v", arrivals)
	}
}

func TestDecode(t *testing.T) {
	trade := func(sym string, ms int64, price float64, size int64) feed.Trade {
		return feed.Trade{Symbol: sym, TS: time.UnixMilli(ms).UTC(), Price: price, Size: size}
	}
	for _, tc := range []struct {
		name    string
		msg     string
		want    []feed.Trade
		wantErr string
	}{
		{name: "documented trade", msg: `{"type":"trade","data":[{"p":189.23,"s":"AAPL","t":1575526691134,"v":100,"c":["1","12"]}]}`,
			want: []feed.Trade{trade("AAPL", 1575526691134, 189.23, 100)}},
		{name: "several trades keep their order, conditions absent or null",
			msg:  `{"type":"trade","data":[{"p":2,"s":"B","t":2,"v":1},{"p":1,"s":"A","t":1,"v":1,"c":null}]}`,
			want: []feed.Trade{trade("B", 2, 2, 1), trade("A", 1, 1, 1)}},
		{name: "fractional volume rounds; under one share and no price are left out",
			msg:  `{"type":"trade","data":[{"p":1,"s":"X","t":1,"v":2.5},{"p":1,"s":"X","t":1,"v":0.49},{"p":0,"s":"X","t":1,"v":5},{"p":-1,"s":"X","t":1,"v":5},{"p":1,"s":"X","t":1,"v":0.5}]}`,
			want: []feed.Trade{trade("X", 1, 1, 3), trade("X", 1, 1, 1)}},
		{name: "time written as a float", msg: `{"type":"trade","data":[{"p":1,"s":"X","t":1.575526691134e12,"v":1}]}`,
			want: []feed.Trade{trade("X", 1575526691134, 1, 1)}},
		{name: "empty data", msg: `{"type":"trade","data":[]}`},
		{name: "ping", msg: `{"type":"ping"}`},
		{name: "error message", msg: `{"type":"error","msg":"Subscribing to too many symbols"}`},
		{name: "subscription acknowledgement", msg: `{"type":"subscribe","symbol":"AAPL"}`},
		{name: "no price", msg: `{"type":"trade","data":[{"s":"X","t":1,"v":1}]}`, wantErr: "no price (p)"},
		{name: "null price", msg: `{"type":"trade","data":[{"p":null,"s":"X","t":1,"v":1}]}`, wantErr: "no price (p)"},
		{name: "no symbol", msg: `{"type":"trade","data":[{"p":1,"t":1,"v":1}]}`, wantErr: "no symbol (s)"},
		{name: "no time", msg: `{"type":"trade","data":[{"p":1,"s":"X","v":1}]}`, wantErr: "no time (t)"},
		{name: "no volume, in the second trade", msg: `{"type":"trade","data":[{"p":1,"s":"X","t":1,"v":1},{"p":1,"s":"X","t":1}]}`, wantErr: "trade 2 of 2: no volume (v)"},
		{name: "trade without data", msg: `{"type":"trade"}`, wantErr: "without data"},
		{name: "unknown type", msg: `{"type":"news","data":[]}`, wantErr: `unknown type "news"`},
		{name: "no type", msg: `{"data":[]}`, wantErr: "without a type"},
		{name: "invalid JSON", msg: `{"type":"trade",`, wantErr: "not a JSON object"},
		{name: "not an object", msg: `[1,2]`, wantErr: "not a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs, err := finnhub.Decode([]byte(tc.msg))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Decode = %v, %v; want an error saying %q", evs, err, tc.wantErr)
				}
				if evs != nil {
					t.Errorf("events %v with the error", evs)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			var got []feed.Trade
			for _, ev := range evs {
				if ev.Trade == nil || ev.Quote != nil {
					t.Fatalf("event %+v is not a trade", ev)
				}
				got = append(got, *ev.Trade)
			}
			checkTrades(t, got, tc.want)
		})
	}
}

func TestConfigThatCannotWork(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  finnhub.Config
		want string
	}{
		{"no token", finnhub.Config{Symbols: []string{"AAPL"}}, "FINNHUB_TOKEN"},
		{"no symbols", finnhub.Config{Token: token, Symbols: []string{" "}}, "symbol"},
		{"not a WebSocket URL", finnhub.Config{URL: "http://example.com?token=" + token, Token: token, Symbols: []string{"AAPL"}}, "URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := finnhub.New(tc.cfg).Run(context.Background(), &handler{}, feed.NewStats(finnhub.Source))
			var fatal *feed.FatalError
			if !errors.As(err, &fatal) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), token) {
				t.Fatalf("Run = %v; want a *feed.FatalError saying %q, without the token", err, tc.want)
			}
		})
	}
}
