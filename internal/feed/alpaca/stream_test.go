package alpaca_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/stockpipe/stockpipe/internal/feed"
	"github.com/stockpipe/stockpipe/internal/feed/alpaca"
	"github.com/stockpipe/stockpipe/internal/feed/fake"
	"github.com/stockpipe/stockpipe/internal/market"
)

const (
	testKey    = "AKTESTKEY0123456789"
	testSecret = "s3cr3t-Test-Value-abcdef"
	badSecret  = "wr0ng-Secret-Value-zyxwv"
)

// logBuffer collects a test's log output; Write is called from many
// goroutines.
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

// newLogger returns a DEBUG logger whose output the test checks, when it
// ends, for the credentials.
func newLogger(t *testing.T) (*slog.Logger, *logBuffer) {
	t.Helper()
	lb := &logBuffer{}
	t.Cleanup(func() {
		out := lb.String()
		for _, c := range []string{testKey, testSecret, badSecret} {
			if strings.Contains(out, c) {
				t.Errorf("a credential (%q) is in the log:\n%s", c, out)
			}
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// collector is a feed.Handler that keeps what it gets and feeds its trades
// and quotes through a feed.Assembler.
type collector struct {
	mu    sync.Mutex
	evs   []feed.Event
	asm   *feed.Assembler
	ticks []market.Tick
	// failAt, if not 0, makes the failAt-th trade fail with errStop.
	failAt int
	trades int
}

var errStop = errors.New("handler stops")

func newCollector() *collector { return &collector{asm: feed.NewAssembler(nil)} }

func (c *collector) Trade(t feed.Trade) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.trades++
	if c.failAt != 0 && c.trades >= c.failAt {
		return errStop
	}
	c.evs = append(c.evs, feed.Event{Trade: &t})
	if tick, ok := c.asm.Trade(t); ok {
		c.ticks = append(c.ticks, tick)
	}
	return nil
}

func (c *collector) Quote(q feed.Quote) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.evs = append(c.evs, feed.Event{Quote: &q})
	c.asm.Quote(q)
	return nil
}

func (c *collector) events() []feed.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.evs)
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.evs)
}

// waitFor polls cond until it holds, failing the test after a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// running is a Stream's Run in a goroutine.
type running struct {
	st     *feed.Stats
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

func start(t *testing.T, cfg alpaca.StreamConfig, h feed.Handler) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{st: feed.NewStats(alpaca.Source), cancel: cancel, done: make(chan error, 1)}
	s := alpaca.NewStream(cfg)
	go func() { r.done <- s.Run(ctx, h, r.st) }()
	t.Cleanup(func() {
		cancel()
		r.result(t, 10*time.Second)
	})
	return r
}

// result waits up to d for Run to return and returns its error.
func (r *running) result(t *testing.T, d time.Duration) error {
	t.Helper()
	r.once.Do(func() {
		select {
		case r.err = <-r.done:
		case <-time.After(d):
			t.Fatalf("Run did not return within %v", d)
		}
	})
	return r.err
}

// returned reports whether Run has returned, without waiting.
func (r *running) returned() bool {
	select {
	case err := <-r.done:
		r.done <- err
		return true
	default:
		return false
	}
}

func subscribedTo(a *fake.Alpaca, symbols ...string) func() bool {
	return func() bool {
		tr, q := a.Subscribed()
		return slices.Equal(tr, symbols) && slices.Equal(q, symbols)
	}
}

var (
	t0 = time.Date(2021, 2, 22, 15, 51, 44, 208_000_000, time.UTC)

	tr1 = fake.AlpacaTrade{Symbol: "AAPL", ID: 96921, Exchange: "D", Price: 126.55, Size: 1, TS: t0, Conditions: []string{"@", "I"}, Tape: "C"}
	tr2 = fake.AlpacaTrade{Symbol: "AMD", ID: 7, Exchange: "V", Price: 87.67, Size: 300, TS: t0.Add(123456789), Conditions: []string{"@"}, Tape: "C"}
	tr3 = fake.AlpacaTrade{Symbol: "AAPL", ID: 96922, Exchange: "D", Price: 126.56, Size: 25, TS: t0.Add(time.Second + 1), Tape: "C"}
	tr4 = fake.AlpacaTrade{Symbol: "AAPL", ID: 52983525033527, Exchange: "V", Price: 126.57, Size: 100, TS: t0.Add(time.Second + 2), Tape: "C"}
	tr5 = fake.AlpacaTrade{Symbol: "AMD", ID: 8, Exchange: "V", Price: 87.69, Size: 5, TS: t0.Add(3 * time.Second), Tape: "C"}

	qu1 = fake.AlpacaQuote{Symbol: "AMD", BidExchange: "U", BidPrice: 87.66, BidSize: 1, AskExchange: "Q", AskPrice: 87.68, AskSize: 4,
		TS: time.Date(2021, 2, 22, 15, 51, 45, 335689322, time.UTC), Conditions: []string{"R"}, Tape: "C"}
	qu2 = fake.AlpacaQuote{Symbol: "AAPL", BidExchange: "V", BidPrice: 126.54, BidSize: 2, AskExchange: "V", AskPrice: 126.58, AskSize: 3,
		TS: t0.Add(-time.Millisecond), Tape: "C"}
	qu3 = fake.AlpacaQuote{Symbol: "AAPL", BidExchange: "V", BidPrice: 126.55, BidSize: 2, AskExchange: "V", AskPrice: 126.57, AskSize: 3,
		TS: t0.Add(time.Second), Tape: "C"}
)

func wantTrade(a fake.AlpacaTrade, id string) feed.Event {
	return feed.Event{Trade: &feed.Trade{Symbol: a.Symbol, TS: a.TS, Price: a.Price, Size: int64(a.Size), ID: id}}
}

func wantQuote(q fake.AlpacaQuote) feed.Event {
	return feed.Event{Quote: &feed.Quote{Symbol: q.Symbol, TS: q.TS, Bid: q.BidPrice, Ask: q.AskPrice}}
}

// sameEvents fails the test unless got and want are the same events in the
// same order.
func sameEvents(t *testing.T, got, want []feed.Event) {
	t.Helper()
	show := func(evs []feed.Event) string {
		var b strings.Builder
		for _, e := range evs {
			if e.Trade != nil {
				b.WriteString("\n  trade ")
				_ = json.NewEncoder(&b).Encode(e.Trade)
			} else if e.Quote != nil {
				b.WriteString("\n  quote ")
				_ = json.NewEncoder(&b).Encode(e.Quote)
			}
		}
		return b.String()
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("events:%s\nwant:%s", show(got), show(want))
	}
}

func streamConfig(a *fake.Alpaca, log *slog.Logger) alpaca.StreamConfig {
	return alpaca.StreamConfig{URL: a.URL(), Key: testKey, Secret: testSecret, Symbols: []string{"aapl", " AMD", "AAPL"}, Logger: log}
}

func TestStreamDeliversInArrivalOrder(t *testing.T) {
	srv := fake.NewAlpaca(testKey, testSecret)
	defer srv.Close()
	log, _ := newLogger(t)
	c := newCollector()
	r := start(t, streamConfig(srv, log), c)
	waitFor(t, "the subscription", subscribedTo(srv, "AAPL", "AMD"))

	srv.Send(qu2, tr1, tr2, qu1) // several messages in one array frame
	srv.SendTrades(tr3, tr4)
	srv.SendQuotes(qu3)
	srv.SendTrades(tr5)
	want := []feed.Event{wantQuote(qu2), wantTrade(tr1, "D:96921"), wantTrade(tr2, "V:7"), wantQuote(qu1),
		wantTrade(tr3, "D:96922"), wantTrade(tr4, "V:52983525033527"), wantQuote(qu3), wantTrade(tr5, "V:8")}
	waitFor(t, "8 events", func() bool { return c.count() >= len(want) })
	sameEvents(t, c.events(), want)

	snap := r.st.Snapshot()
	if snap.State != feed.StateConnected || snap.Messages != int64(len(want)) || snap.Reconnects != 0 {
		t.Errorf("stats = %+v, want connected, %d messages, no reconnects", snap, len(want))
	}
	if srv.Connections() != 1 {
		t.Errorf("%d connections, want 1", srv.Connections())
	}
	r.cancel()
	if err := r.result(t, 5*time.Second); err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
	if s := r.st.Snapshot().State; s != feed.StateStopped {
		t.Errorf("state after Run = %q, want %q", s, feed.StateStopped)
	}
}

func TestStreamReconnectsAndResubscribes(t *testing.T) {
	srv := fake.NewAlpaca(testKey, testSecret)
	defer srv.Close()
	log, _ := newLogger(t)
	c := newCollector()
	r := start(t, streamConfig(srv, log), c)
	waitFor(t, "the subscription", subscribedTo(srv, "AAPL", "AMD"))

	srv.SendQuotes(qu2)
	srv.SendTrades(tr1)
	waitFor(t, "the first trade", func() bool { return c.count() == 2 })

	srv.DropConnections()
	waitFor(t, "the reconnect", func() bool { return r.st.Snapshot().Reconnects == 1 })
	waitFor(t, "the resubscription", subscribedTo(srv, "AAPL", "AMD"))
	if n := srv.Connections(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}

	// Alpaca may send again what it sent before the drop: the same trade
	// arrives again with the same ID, and the assembler drops it.
	srv.SendTrades(tr1, tr3)
	waitFor(t, "the trades after the reconnect", func() bool { return c.count() == 4 })
	sameEvents(t, c.events(), []feed.Event{wantQuote(qu2), wantTrade(tr1, "D:96921"), wantTrade(tr1, "D:96921"), wantTrade(tr3, "D:96922")})

	c.mu.Lock()
	ticks, dropped := slices.Clone(c.ticks), c.asm.Dropped()
	c.mu.Unlock()
	if dropped != 1 || len(ticks) != 2 {
		t.Fatalf("assembler: %d ticks, %d dropped; want 2 ticks, the resend dropped", len(ticks), dropped)
	}
	want := []market.Tick{
		{Symbol: "AAPL", TS: tr1.TS, Seq: 1, Price: tr1.Price, Size: 1, Bid: qu2.BidPrice, Ask: qu2.AskPrice},
		{Symbol: "AAPL", TS: tr3.TS, Seq: 2, Price: tr3.Price, Size: 25, Bid: qu2.BidPrice, Ask: qu2.AskPrice},
	}
	if !reflect.DeepEqual(ticks, want) {
		t.Errorf("ticks = %+v, want %+v", ticks, want)
	}
	snap := r.st.Snapshot()
	if snap.State != feed.StateConnected || snap.Reconnects != 1 || snap.Errors < 1 {
		t.Errorf("stats = %+v, want connected, 1 reconnect, the loss counted", snap)
	}
}

func TestStreamFatalErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		secret string
		refuse int
		msg    string
		fix    string
	}{
		{name: "402 auth failed", secret: badSecret, fix: alpaca.CredentialsFix},
		{name: "406 connection limit", refuse: 406, msg: "connection limit exceeded", fix: alpaca.ConnectionLimitFix},
		{name: "409 insufficient subscription", refuse: 409, msg: "insufficient subscription", fix: alpaca.SubscriptionFix},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := fake.NewAlpaca(testKey, testSecret)
			defer srv.Close()
			log, _ := newLogger(t)
			cfg := streamConfig(srv, log)
			if tc.secret != "" {
				cfg.Secret = tc.secret
			}
			if tc.refuse != 0 {
				srv.RefuseNext(tc.refuse, tc.msg)
			}
			began := time.Now()
			r := start(t, cfg, newCollector())
			err := r.result(t, 5*time.Second)
			var fe *feed.FatalError
			if !errors.As(err, &fe) {
				t.Fatalf("Run = %v, want a *feed.FatalError", err)
			}
			code := tc.refuse
			if code == 0 {
				code = 402
			}
			if fe.Code != code || fe.Fix != tc.fix || !strings.Contains(err.Error(), tc.fix) {
				t.Errorf("error = %q (code %d), want code %d and the fix %q", err, fe.Code, code, tc.fix)
			}
			for _, c := range []string{testKey, testSecret, badSecret} {
				if strings.Contains(err.Error(), c) {
					t.Errorf("the error shows a credential: %q", err)
				}
			}
			if n := srv.Connections(); n != 1 {
				t.Errorf("%d connections, want 1: no retry", n)
			}
			t.Logf("returned after %v: %v", time.Since(began).Round(time.Millisecond), err)
		})
	}
}

func TestStreamSlowClientReconnects(t *testing.T) {
	srv := fake.NewAlpaca(testKey, testSecret)
	defer srv.Close()
	log, logs := newLogger(t)
	c := newCollector()
	r := start(t, streamConfig(srv, log), c)
	waitFor(t, "the subscription", subscribedTo(srv, "AAPL", "AMD"))

	srv.SendError(407, "slow client")
	waitFor(t, "the reconnect", func() bool { return r.st.Snapshot().Reconnects == 1 })
	waitFor(t, "the resubscription", subscribedTo(srv, "AAPL", "AMD"))
	if r.returned() {
		t.Fatalf("Run returned after 407: %v", r.result(t, 0))
	}
	srv.SendTrades(tr1)
	waitFor(t, "a trade after the reconnect", func() bool { return c.count() == 1 })
	if !strings.Contains(logs.String(), "too slow") {
		t.Errorf("the log does not say the client was too slow:\n%s", logs)
	}
	if snap := r.st.Snapshot(); snap.Errors < 1 {
		t.Errorf("stats = %+v, want the 407 counted", snap)
	}
}

func TestStreamReturnsHandlerError(t *testing.T) {
	srv := fake.NewAlpaca(testKey, testSecret)
	defer srv.Close()
	log, _ := newLogger(t)
	c := newCollector()
	c.failAt = 2
	r := start(t, streamConfig(srv, log), c)
	waitFor(t, "the subscription", subscribedTo(srv, "AAPL", "AMD"))
	srv.SendTrades(tr1, tr3, tr4)
	if err := r.result(t, 5*time.Second); !errors.Is(err, errStop) {
		t.Fatalf("Run = %v, want the handler's error", err)
	}
	if got := c.count(); got != 1 {
		t.Errorf("%d events delivered, want 1: nothing after the handler's error", got)
	}
}

func TestStreamRetriesUnreachableServer(t *testing.T) {
	srv := fake.NewAlpaca(testKey, testSecret)
	url := srv.URL()
	srv.Close() // nothing listens at url now
	log, _ := newLogger(t)
	r := start(t, alpaca.StreamConfig{URL: url, Key: testKey, Secret: testSecret, Symbols: []string{"AAPL"}, Logger: log}, newCollector())
	waitFor(t, "two failed attempts", func() bool { return r.st.Snapshot().Errors >= 2 })
	if r.returned() {
		t.Fatalf("Run returned while the server is away: %v", r.result(t, 0))
	}
	if s := r.st.Snapshot().State; s != feed.StateConnecting {
		t.Errorf("state = %q, want %q", s, feed.StateConnecting)
	}
	r.cancel()
	if err := r.result(t, 5*time.Second); err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
}

func TestStreamConfigErrors(t *testing.T) {
	for _, cfg := range []alpaca.StreamConfig{
		{URL: "ws://127.0.0.1:1", Symbols: []string{"AAPL"}},
		{URL: "ftp://host/v2/iex", Symbols: []string{"AAPL"}},
		{URL: "ws://127.0.0.1:1/v2/iex", Symbols: []string{" "}},
	} {
		err := alpaca.NewStream(cfg).Run(context.Background(), newCollector(), feed.NewStats(alpaca.Source))
		var fe *feed.FatalError
		if !errors.As(err, &fe) {
			t.Errorf("Run with %+v = %v, want a *feed.FatalError", cfg, err)
		}
	}
}

func TestStreamRecordingReplays(t *testing.T) {
	srv := fake.NewAlpaca(testKey, testSecret)
	defer srv.Close()
	log, _ := newLogger(t)
	var buf bytes.Buffer
	rec := feed.NewRecorder(&buf)
	cfg := streamConfig(srv, log)
	cfg.Recorder = rec
	c := newCollector()
	r := start(t, cfg, c)
	waitFor(t, "the subscription", subscribedTo(srv, "AAPL", "AMD"))
	srv.Send(qu2, tr1, tr2, qu1)
	srv.SendTrades(tr3, tr4)
	waitFor(t, "6 events", func() bool { return c.count() == 6 })
	r.cancel()
	if err := r.result(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}

	replay := newCollector()
	msgs, skipped, err := feed.ReadRecording(&buf, map[string]feed.Decoder{alpaca.Source: alpaca.Decode}, replay, nil)
	if err != nil || msgs != 6 || skipped != 0 {
		t.Fatalf("ReadRecording = %d messages, %d skipped, %v; want 6, 0, nil", msgs, skipped, err)
	}
	sameEvents(t, replay.events(), c.events())
}

// TestFakeSpeaksJSON checks the fake's JSON dialect, for clients that do
// not ask for msgpack, against Decode.
func TestFakeSpeaksJSON(t *testing.T) {
	srv := fake.NewAlpaca(testKey, testSecret)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, srv.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	read := func() string {
		t.Helper()
		typ, b, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if typ != websocket.MessageText {
			t.Fatalf("a %v frame, want text", typ)
		}
		return string(b)
	}
	write := func(s string) {
		t.Helper()
		if err := ws.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if got := read(); got != `[{"T":"success","msg":"connected"}]` {
		t.Fatalf("welcome = %s", got)
	}
	write(`{"action":"auth","key":"` + testKey + `","secret":"nope"}`)
	if got := read(); got != `[{"T":"error","code":402,"msg":"auth failed"}]` {
		t.Fatalf("wrong secret: %s", got)
	}
	write(`{"action":"auth","key":"` + testKey + `","secret":"` + testSecret + `"}`)
	if got := read(); got != `[{"T":"success","msg":"authenticated"}]` {
		t.Fatalf("auth: %s", got)
	}
	write(`{"action":"subscribe","trades":["AAPL"],"quotes":["AMD"]}`)
	want := `[{"T":"subscription","trades":["AAPL"],"quotes":["AMD"],"bars":[],"updatedBars":[],"dailyBars":[],"statuses":[],"lulds":[],"corrections":["AAPL"],"cancelErrors":["AAPL"]}]`
	if got := read(); got != want {
		t.Fatalf("subscription = %s\nwant %s", got, want)
	}
	waitFor(t, "the subscription", func() bool { tr, _ := srv.Subscribed(); return len(tr) == 1 })
	srv.Send(tr1, tr2, qu1, qu2) // tr2 (AMD) and qu2 (AAPL) are not subscribed
	frame := read()
	wantFrame := `[{"T":"t","S":"AAPL","i":96921,"x":"D","p":126.55,"s":1,"t":"2021-02-22T15:51:44.208Z","c":["@","I"],"z":"C"},` +
		`{"T":"q","S":"AMD","bx":"U","bp":87.66,"bs":1,"ax":"Q","ap":87.68,"as":4,"t":"2021-02-22T15:51:45.335689322Z","c":["R"],"z":"C"}]`
	if frame != wantFrame {
		t.Fatalf("frame = %s\nwant %s", frame, wantFrame)
	}
	evs, err := alpaca.Decode([]byte(frame))
	if err != nil {
		t.Fatal(err)
	}
	sameEvents(t, evs, []feed.Event{wantTrade(tr1, "D:96921"), wantQuote(qu1)})
}
