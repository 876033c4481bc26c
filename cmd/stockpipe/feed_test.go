package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/feed"
	"github.com/stockpipe/stockpipe/internal/feed/fake"
	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
)

// liveFake is what the journeys below need of a provider's fake: send
// trades (and quotes, where the provider has them) and break the
// connection.
type liveFake struct {
	source, url string
	env         []string
	subscribed  func() []string
	connections func() int
	drop        func()
	close       func()
	// send sends one trade of sym at ts; id identifies it at the provider
	// (a resend repeats it); it reports the bid/ask the tick must carry
	// ("" for none).
	send func(sym string, id int, ts time.Time, price float64, size int) (quote string)
}

func finnhubFake(t *testing.T) liveFake {
	f := fake.NewFinnhub("fh-test-token")
	t.Cleanup(f.Close)
	return liveFake{source: "finnhub", url: f.URL(), env: []string{"FINNHUB_TOKEN=fh-test-token"},
		subscribed: f.Subscribed, connections: f.Connections, drop: f.DropConnections, close: f.Close,
		send: func(sym string, _ int, ts time.Time, price float64, size int) string {
			f.Send(fake.FinnhubTrade{Symbol: sym, Price: price, TS: ts, Volume: float64(size)})
			return "" // Finnhub sends trades without quotes
		}}
}

func alpacaFake(t *testing.T) liveFake {
	a := fake.NewAlpaca("PKTEST", "alpaca-test-secret")
	t.Cleanup(a.Close)
	return liveFake{source: "alpaca", url: a.URL(), env: []string{"APCA_API_KEY_ID=PKTEST", "APCA_API_SECRET_KEY=alpaca-test-secret"},
		subscribed: func() []string { tr, _ := a.Subscribed(); return tr }, connections: a.Connections, drop: a.DropConnections, close: a.Close,
		send: func(sym string, id int, ts time.Time, price float64, size int) string {
			bid, ask := price-0.01, price+0.01
			// The quote and the trade in one frame, quote first: the
			// trade carries the quote in force.
			a.Send(fake.AlpacaQuote{Symbol: sym, BidPrice: bid, AskPrice: ask, BidSize: 1, AskSize: 1, TS: ts, BidExchange: "V", AskExchange: "V", Tape: "C"},
				fake.AlpacaTrade{Symbol: sym, ID: int64(id), Exchange: "V", Price: price, Size: uint32(size), TS: ts, Tape: "C"})
			return fmt.Sprintf("%g/%g", bid, ask)
		}}
}

// TestJourneyLiveFeed runs the whole pipeline on a (fake) real feed, as the
// README shows: up --source with the provider's own credentials. The
// trades arrive as ticks with the right values and quotes, candles fill,
// /pipeline shows the connector; a dropped connection is reconnected and
// resubscribed, resends are dropped, and the recorded session replays into
// another pipeline as the same ticks.
func TestJourneyLiveFeed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	for _, mk := range []func(*testing.T) liveFake{alpacaFake, finnhubFake} {
		f := mk(t)
		t.Run(f.source, func(t *testing.T) { liveFeedJourney(t, f) })
	}
}

func liveFeedJourney(t *testing.T, f liveFake) {
	recording := filepath.Join(t.TempDir(), "session.jsonl")
	u := startUp(t, upDataDir(t), f.env, "--source", f.source, "--symbols", "AAPL,MSFT", "--url", f.url, "--record", recording)
	waitFor(t, "up to subscribe to AAPL and MSFT", time.Minute, func() bool {
		return slices.Equal(sorted(f.subscribed()), []string{"AAPL", "MSFT"})
	})
	// Trades of the last minute, a few milliseconds apart, as a feed
	// delivers them during the session.
	base := time.Now().UTC().Add(-time.Minute).Truncate(time.Millisecond)
	type sent struct {
		sym   string
		ts    time.Time
		price float64
		size  int
		quote string
	}
	var want []sent
	id := 0
	send := func(n int) {
		for range n {
			id++
			for _, sym := range []string{"AAPL", "MSFT"} {
				ts := base.Add(time.Duration(id) * 10 * time.Millisecond)
				price := map[string]float64{"AAPL": 189, "MSFT": 410}[sym] + float64(id)/100
				q := f.send(sym, id, ts, price, id)
				want = append(want, sent{sym, ts, price, id, q})
			}
		}
	}
	// Each tick is its trade: symbol, seq from 1, time, price, size, and
	// the quote where the provider has one.
	expected := func() []string {
		var expect []string
		for _, sym := range []string{"AAPL", "MSFT"} {
			seq := 0
			for _, w := range want {
				if w.sym == sym {
					seq++
					expect = append(expect, fmt.Sprintf("%s %d %s %v %d %s", w.sym, seq, w.ts.Format(time.RFC3339Nano), w.price, w.size, w.quote))
				}
			}
		}
		return expect
	}
	var stored []string
	storedAsSent := func() bool { stored = tickRows(t, u.pool); return slices.Equal(stored, expected()) }
	send(20)
	waitFor(t, "the trades to be stored as sent", time.Minute, func() bool {
		if storedAsSent() {
			return true
		}
		if len(stored) > len(want) {
			t.Fatalf("stored ticks:\n%s\nwant:\n%s", strings.Join(stored, "\n"), strings.Join(expected(), "\n"))
		}
		return false
	})
	waitFor(t, "AAPL's 1m candle", 30*time.Second, func() bool {
		return scalar(t, u.pool, `SELECT count(*) FROM candles WHERE symbol = 'AAPL' AND interval = '1m'`) > 0
	})
	feedState := func() map[string]any {
		resp, err := http.Get("http://" + u.web + "/api/pipeline?fresh=1")
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		var p struct {
			Feeds []map[string]any `json:"feeds"`
		}
		if json.NewDecoder(resp.Body).Decode(&p) != nil || len(p.Feeds) != 1 {
			return nil
		}
		return p.Feeds[0]
	}
	waitFor(t, "/pipeline to show the connector connected", 30*time.Second, func() bool {
		s := feedState()
		return s != nil && s["source"] == f.source && s["state"] == "connected" && s["messages"].(float64) >= 20 && s["last_message_age_s"] != nil
	})

	// The connection drops: the connector comes back, subscribes again,
	// and the trades after it are stored; a trade the provider resends
	// after the reconnect is not stored twice (Alpaca's trade ids).
	f.drop()
	waitFor(t, "a reconnect and a new subscription", time.Minute, func() bool {
		return f.connections() == 2 && slices.Equal(sorted(f.subscribed()), []string{"AAPL", "MSFT"})
	})
	if f.source == "alpaca" {
		last := want[len(want)-1]
		f.send(last.sym, id, last.ts, last.price, last.size) // the resend
	}
	send(5)
	// Stored as sent, so not the resend: its tick would precede the new
	// ones under a seq of its own.
	waitFor(t, "the trades after the reconnect, as sent", time.Minute, storedAsSent)
	waitFor(t, "/pipeline to count the reconnect", 30*time.Second, func() bool {
		s := feedState()
		return s != nil && s["reconnects"] == float64(1) && s["state"] == "connected"
	})
	if n := scalar(t, u.pool, `SELECT count(*) FROM rejected_ticks`); n != 0 {
		t.Fatalf("%d ticks rejected", n)
	}
	final := tickRows(t, u.pool)

	// The provider goes away: /pipeline says the connector is reconnecting
	// and up keeps running.
	f.close()
	waitFor(t, "/pipeline to show the connector reconnecting", 30*time.Second, func() bool {
		s := feedState()
		return s != nil && s["state"] == "reconnecting"
	})
	if u.exited() {
		t.Fatalf("up stopped when the provider went away:\n%s", u.out)
	}
	u.signal(t, syscall.SIGINT)
	u.wait(t)
	if strings.Contains(u.out.String(), "test-secret") || strings.Contains(u.out.String(), "fh-test-token") {
		t.Fatalf("a credential reached the log:\n%s", u.out)
	}

	// The recording replays into another pipeline as the same ticks.
	if b, err := os.ReadFile(recording); err != nil || len(b) == 0 {
		t.Fatalf("recording: %v, %d bytes", err, len(b))
	}
	addr := runBroker(t)
	dbURL := pgtest.New(t)
	rp := start(t, "replay", "--brokers", addr, "--recording", recording)
	rp.wait(t)
	if !strings.Contains(rp.out.String(), fmt.Sprintf("%d ticks", len(want))) {
		t.Fatalf("replay: %s", rp.out)
	}
	proc := start(t, "process", "--brokers", addr, "--database-url", dbURL)
	defer proc.signal(t, syscall.SIGINT)
	pool := openPool(t, dbURL)
	waitFor(t, "the replayed ticks to be stored", time.Minute, func() bool {
		n, err := countTicks(pool)
		return err == nil && n == int64(len(want))
	})
	if replayed := tickRows(t, pool); !slices.Equal(replayed, final) {
		t.Fatalf("replayed ticks differ from the live session's:\n%s\nlive:\n%s", strings.Join(replayed, "\n"), strings.Join(final, "\n"))
	}
}

// runBroker runs `stockpipe broker` and returns its address once it
// listens.
func runBroker(t *testing.T) string {
	t.Helper()
	addr := freeAddr(t)
	broker := start(t, "broker", "--listen", addr, "--data-dir", t.TempDir())
	t.Cleanup(func() { broker.signal(t, syscall.SIGINT) })
	waitFor(t, "the broker to listen", 30*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr
}

// tickRows are the stored ticks as "SYM seq ts price size bid/ask", the
// quote empty when the tick has none.
func tickRows(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT symbol, seq, ts, price, size, bid, ask FROM ticks ORDER BY symbol, seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var sym string
		var seq, size int64
		var ts time.Time
		var price float64
		var bid, ask *float64
		if err := rows.Scan(&sym, &seq, &ts, &price, &size, &bid, &ask); err != nil {
			t.Fatal(err)
		}
		quote := ""
		if bid != nil && ask != nil {
			quote = fmt.Sprintf("%v/%v", *bid, *ask)
		}
		out = append(out, fmt.Sprintf("%s %d %s %v %d %s", sym, seq, ts.UTC().Format(time.RFC3339Nano), price, size, quote))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// TestIngestRefusedKeyIsOneLine: a bad key ends ingest with exit status 1
// and one line that says what to fix, without retrying for ever.
func TestIngestRefusedKeyIsOneLine(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	a := fake.NewAlpaca("PKTEST", "right")
	defer a.Close()
	addr := runBroker(t)
	for _, tc := range []struct {
		name, secret string
		refuse       int
		want         string
	}{
		{"bad key", "wrong", 0, "402 auth failed"},
		{"no subscription", "right", 409, "use --feed iex"},
		{"connection limit", "right", 406, "connection limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.refuse != 0 {
				a.RefuseNext(tc.refuse, map[int]string{409: "insufficient subscription", 406: "connection limit exceeded"}[tc.refuse])
			}
			p := startEnv(t, []string{"APCA_API_KEY_ID=PKTEST", "APCA_API_SECRET_KEY=" + tc.secret},
				"ingest", "alpaca", "--brokers", addr, "--symbols", "AAPL", "--url", a.URL(), "--log-level", "error")
			waitFor(t, "ingest to give up", time.Minute, p.exited)
			out := strings.TrimSpace(p.out.String())
			if p.err == nil || !strings.Contains(out, tc.want) || strings.Count(out, "\n") != 0 || strings.Contains(out, tc.secret) {
				t.Fatalf("ingest: %v\n%s\nwant exit status 1 and a line containing %q", p.err, out, tc.want)
			}
		})
	}
}

// TestBackfillAlpacaHistory pulls two days of a symbol's real (fake)
// trades through the historical API, three pages of them with a 429 on
// the way, into the pipeline; every trade is stored once, in order, and
// running the same backfill again, as after an interruption, sends nothing
// twice.
func TestBackfillAlpacaHistory(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	rest := fake.NewAlpacaREST("PKTEST", "hist-secret")
	defer rest.Close()
	rest.RateLimitFirst()
	var trades []fake.AlpacaTrade
	for day, open := range []time.Time{time.Date(2026, 11, 2, 14, 30, 0, 0, time.UTC), time.Date(2026, 11, 3, 14, 30, 0, 0, time.UTC)} {
		for i := range 12_500 {
			trades = append(trades, fake.AlpacaTrade{ID: int64(day*100_000 + i), Exchange: "V", Price: 100 + float64(i%100)/100,
				Size: uint32(1 + i%7), TS: open.Add(time.Duration(i) * time.Second)})
		}
	}
	rest.SetTrades("AAPL", trades)
	addr := runBroker(t)
	dbURL := pgtest.New(t)
	env := []string{"APCA_API_KEY_ID=PKTEST", "APCA_API_SECRET_KEY=hist-secret"}
	bf := startEnv(t, env, "backfill", "alpaca", "--brokers", addr, "--symbols", "AAPL", "--from", "2026-11-02", "--to", "2026-11-03", "--url", rest.URL())
	bf.wait(t)
	if !strings.Contains(bf.out.String(), "backfilled 25000 ticks of AAPL from 2026-11-02 to 2026-11-03") {
		t.Fatalf("backfill: %s", bf.out)
	}
	if n := rest.Requests(); n < 4 { // three pages and the refused one
		t.Fatalf("%d requests: want the 429 retried and three pages", n)
	}
	proc := start(t, "process", "--brokers", addr, "--database-url", dbURL)
	defer proc.signal(t, syscall.SIGINT)
	pool := openPool(t, dbURL)
	waitFor(t, "the history to be stored", time.Minute, func() bool {
		n, err := countTicks(pool)
		return err == nil && n == int64(len(trades))
	})
	rows := tickRows(t, pool)
	for i, tr := range trades {
		if want := fmt.Sprintf("AAPL %d %s %v %d ", i+1, tr.TS.Format(time.RFC3339Nano), tr.Price, tr.Size); rows[i] != want {
			t.Fatalf("tick %d = %q, want %q", i, rows[i], want)
		}
	}
	again := startEnv(t, env, "backfill", "alpaca", "--brokers", addr, "--symbols", "AAPL", "--from", "2026-11-02", "--to", "2026-11-03", "--url", rest.URL())
	again.wait(t)
	if !strings.Contains(again.out.String(), "backfilled 0 ticks") {
		t.Fatalf("the second backfill sent ticks again: %s", again.out)
	}
	if n := scalar(t, pool, `SELECT count(*) FROM rejected_ticks`); n != 0 {
		t.Fatalf("%d rejected", n)
	}
}

// TestFeedLogSaysMarketClosedOnce: a connected feed that hears nothing
// outside the regular session says once that the market is closed, not
// every five seconds, and says it again only after a session has passed.
func TestFeedLogSaysMarketClosedOnce(t *testing.T) {
	var buf syncBuffer
	rc := &runCtx{log: slog.New(slog.NewTextHandler(&buf, nil))}
	now := time.Date(2026, 11, 7, 15, 0, 0, 0, time.UTC) // a Saturday
	st := feed.NewStats("alpaca")
	st.Connected(now)
	log := feedLogger(rc, st, func() time.Time { return now })
	closed := func() int { return strings.Count(buf.String(), "outside its regular session") }
	for range 10 {
		now = now.Add(5 * time.Second)
		log()
	}
	if closed() != 1 || strings.Count(buf.String(), "msg=feed ") != 10 {
		t.Fatalf("over a quiet closed minute: %d closed notices, log:\n%s", closed(), buf.String())
	}
	now = time.Date(2026, 11, 9, 15, 0, 0, 0, time.UTC) // Monday 10:00 New York
	log()
	now = time.Date(2026, 11, 9, 22, 0, 0, 0, time.UTC) // after the close
	log()
	log()
	if closed() != 2 {
		t.Fatalf("after Monday's session: %d closed notices, want 2", closed())
	}
}
