package alpaca_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/alpacahq/alpaca-trade-api-go/v3/marketdata"

	"github.com/stockpipe/stockpipe/internal/feed"
	"github.com/stockpipe/stockpipe/internal/feed/alpaca"
	"github.com/stockpipe/stockpipe/internal/feed/fake"
	"github.com/stockpipe/stockpipe/internal/market"
)

var h0 = time.Date(2024, 3, 4, 14, 30, 0, 0, time.UTC)

// histTrade is AAPL trade id on exchange V at h0 + sec seconds.
func histTrade(id int64, sec float64, price float64) fake.AlpacaTrade {
	return fake.AlpacaTrade{Symbol: "AAPL", ID: id, Exchange: "V", Price: price, Size: uint32(id * 10),
		TS: h0.Add(time.Duration(sec * float64(time.Second))), Conditions: []string{"@"}, Tape: "C"}
}

func tradeIDs(evs []feed.Event) []string {
	var ids []string
	for _, e := range evs {
		if e.Trade != nil {
			ids = append(ids, e.Trade.ID)
		}
	}
	return ids
}

func newHistory(srv *fake.AlpacaREST, t *testing.T, pageSize int) *alpaca.History {
	log, _ := newLogger(t)
	return alpaca.NewHistory(alpaca.HistoryConfig{URL: srv.URL(), Key: testKey, Secret: testSecret, PageSize: pageSize, Logger: log})
}

func TestHistoryPagesWaitsOutRateLimit(t *testing.T) {
	srv := fake.NewAlpacaREST(testKey, testSecret)
	defer srv.Close()
	srv.SetTrades("AAPL", []fake.AlpacaTrade{
		histTrade(1, -1, 100), // before from
		histTrade(2, 0, 101),  // at from: delivered
		histTrade(3, 1, 102),
		histTrade(4, 2, 103), // 4 and 5 share a timestamp across a page boundary
		histTrade(5, 2, 104),
		histTrade(6, 3, 105),
		histTrade(7, 4, 106),
		histTrade(8, 5, 107),
		histTrade(9, 6, 108),
		histTrade(10, 7, 109),
		histTrade(11, 8, 110), // at to: not delivered
	})
	srv.RateLimitFirst()
	h := newHistory(srv, t, 3)
	c := newCollector()
	began := time.Now()
	n, err := h.Trades(context.Background(), "AAPL", h0, h0.Add(8*time.Second), false, c)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(began)
	want := []string{"V:2", "V:3", "V:4", "V:5", "V:6", "V:7", "V:8", "V:9", "V:10"}
	if got := tradeIDs(c.events()); !reflect.DeepEqual(got, want) || n != int64(len(want)) {
		t.Fatalf("trades %v (n=%d), want %v", got, n, want)
	}
	evs := c.events()
	first := evs[0].Trade
	if *first != (feed.Trade{Symbol: "AAPL", TS: h0, Price: 101, Size: 20, ID: "V:2"}) {
		t.Errorf("first trade = %+v", *first)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Trade.TS.Before(evs[i-1].Trade.TS) {
			t.Errorf("trade %d out of time order", i)
		}
	}
	// Pages of 3 from the last timestamp on: [2 3 4] [4 5 6] [6 7 8]
	// [8 9 10] [10 11], and one 429 before the first.
	if got := srv.Requests(); got != 6 {
		t.Errorf("%d requests, want 6 (5 pages and the retry after the 429)", got)
	}
	if took < 900*time.Millisecond {
		t.Errorf("took %v: the 429's Retry-After of 1 s was not waited out", took)
	}
}

func TestHistoryInterleavesQuotes(t *testing.T) {
	srv := fake.NewAlpacaREST(testKey, testSecret)
	defer srv.Close()
	quote := func(sec float64, bid, ask float64) fake.AlpacaQuote {
		return fake.AlpacaQuote{Symbol: "AAPL", BidExchange: "V", BidPrice: bid, BidSize: 1, AskExchange: "V", AskPrice: ask, AskSize: 2,
			TS: h0.Add(time.Duration(sec * float64(time.Second))), Tape: "C"}
	}
	srv.SetTrades("AAPL", []fake.AlpacaTrade{histTrade(1, 1, 100.5), histTrade(2, 3, 101.5), histTrade(3, 3, 101.6), histTrade(4, 5, 102.5)})
	srv.SetQuotes("AAPL", []fake.AlpacaQuote{
		quote(-7200, 90, 91),   // two hours before from: not the one in force
		quote(-60, 99, 101),    // in force at from
		quote(1, 100, 101),     // same time as trade 1: in force for it
		quote(2, 101, 102),     //
		quote(2.5, 101.2, 102), //
		quote(4, 102, 103),     //
		quote(6, 103, 104),     // after the last trade: not fetched
	})
	h := newHistory(srv, t, 2)
	c := newCollector()
	n, err := h.Trades(context.Background(), "AAPL", h0, h0.Add(time.Minute), true, c)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("n = %d, want 4", n)
	}
	var got []string
	for _, e := range c.events() {
		if e.Trade != nil {
			got = append(got, "t"+e.Trade.ID)
		} else {
			got = append(got, "q"+e.Quote.TS.Sub(h0).String())
		}
	}
	want := []string{"q-1m0s", "q1s", "tV:1", "q2s", "q2.5s", "tV:2", "tV:3", "q4s", "tV:4"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("events %v\nwant   %v", got, want)
	}
	c.mu.Lock()
	ticks := c.ticks
	c.mu.Unlock()
	wantTicks := []market.Tick{
		{Symbol: "AAPL", TS: h0.Add(time.Second), Seq: 1, Price: 100.5, Size: 10, Bid: 100, Ask: 101},
		{Symbol: "AAPL", TS: h0.Add(3 * time.Second), Seq: 2, Price: 101.5, Size: 20, Bid: 101.2, Ask: 102},
		{Symbol: "AAPL", TS: h0.Add(3 * time.Second), Seq: 3, Price: 101.6, Size: 30, Bid: 101.2, Ask: 102},
		{Symbol: "AAPL", TS: h0.Add(5 * time.Second), Seq: 4, Price: 102.5, Size: 40, Bid: 102, Ask: 103},
	}
	if !reflect.DeepEqual(ticks, wantTicks) {
		t.Errorf("ticks %+v\nwant  %+v", ticks, wantTicks)
	}
}

func TestHistoryEmptyRange(t *testing.T) {
	srv := fake.NewAlpacaREST(testKey, testSecret)
	defer srv.Close()
	srv.SetTrades("AAPL", []fake.AlpacaTrade{histTrade(1, 10, 100)})
	h := newHistory(srv, t, 0)
	c := newCollector()
	n, err := h.Trades(context.Background(), "AAPL", h0, h0.Add(5*time.Second), true, c)
	if err != nil || n != 0 || c.count() != 0 {
		t.Fatalf("Trades = %d, %v, %d events; want nothing", n, err, c.count())
	}
	if n, err := h.Trades(context.Background(), "AAPL", h0, h0, false, c); err != nil || n != 0 {
		t.Fatalf("Trades of an empty range = %d, %v", n, err)
	}
}

func TestHistoryBadKeyIsFatal(t *testing.T) {
	srv := fake.NewAlpacaREST(testKey, testSecret)
	defer srv.Close()
	srv.SetTrades("AAPL", []fake.AlpacaTrade{histTrade(1, 1, 100)})
	log, _ := newLogger(t)
	h := alpaca.NewHistory(alpaca.HistoryConfig{URL: srv.URL(), Key: testKey, Secret: badSecret, Logger: log})
	_, err := h.Trades(context.Background(), "AAPL", h0, h0.Add(time.Minute), false, newCollector())
	var fe *feed.FatalError
	if !errors.As(err, &fe) || fe.Code != http.StatusUnauthorized || fe.Fix != alpaca.CredentialsFix {
		t.Fatalf("Trades = %v, want a *feed.FatalError 401 with the credentials fix", err)
	}
	if strings.Contains(err.Error(), badSecret) || strings.Contains(err.Error(), testKey) {
		t.Errorf("the error shows a credential: %q", err)
	}
	if got := srv.Requests(); got != 1 {
		t.Errorf("%d requests, want 1: no retry", got)
	}
}

func TestHistoryReturnsHandlerError(t *testing.T) {
	srv := fake.NewAlpacaREST(testKey, testSecret)
	defer srv.Close()
	srv.SetTrades("AAPL", []fake.AlpacaTrade{histTrade(1, 1, 100), histTrade(2, 2, 100), histTrade(3, 3, 100)})
	c := newCollector()
	c.failAt = 2
	n, err := newHistory(srv, t, 0).Trades(context.Background(), "AAPL", h0, h0.Add(time.Minute), false, c)
	if !errors.Is(err, errStop) || n != 1 {
		t.Fatalf("Trades = %d, %v; want 1 and the handler's error", n, err)
	}
}

func TestHistoryCancelledDuringRateLimitWait(t *testing.T) {
	srv := fake.NewAlpacaREST(testKey, testSecret)
	defer srv.Close()
	srv.SetTrades("AAPL", []fake.AlpacaTrade{histTrade(1, 1, 100)})
	srv.RateLimitFirst()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		waitFor(t, "the 429", func() bool { return srv.Requests() == 1 })
		cancel()
	}()
	_, err := newHistory(srv, t, 0).Trades(ctx, "AAPL", h0, h0.Add(time.Minute), false, newCollector())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Trades = %v, want context.Canceled", err)
	}
}

// TestFakeRESTPagination checks the fake's next_page_token against the
// SDK's own pagination, and its single-symbol endpoint.
func TestFakeRESTPagination(t *testing.T) {
	srv := fake.NewAlpacaREST(testKey, testSecret)
	defer srv.Close()
	var trades []fake.AlpacaTrade
	for i := range 7 {
		trades = append(trades, histTrade(int64(i+1), float64(i), 100+float64(i)))
	}
	srv.SetTrades("AAPL", trades)
	srv.SetTrades("MSFT", []fake.AlpacaTrade{histTrade(99, 0, 400)})
	client := marketdata.NewClient(marketdata.ClientOpts{APIKey: testKey, APISecret: testSecret, BaseURL: srv.URL()})
	got, err := client.GetMultiTrades([]string{"MSFT", "AAPL"}, marketdata.GetTradesRequest{Start: h0, End: h0.Add(time.Hour), PageLimit: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(got["AAPL"]) != 7 || len(got["MSFT"]) != 1 {
		t.Fatalf("got %d AAPL and %d MSFT trades, want 7 and 1", len(got["AAPL"]), len(got["MSFT"]))
	}
	for i, tr := range got["AAPL"] {
		if tr.ID != int64(i+1) || !tr.Timestamp.Equal(trades[i].TS) || tr.Price != trades[i].Price || tr.Exchange != "V" {
			t.Errorf("trade %d = %+v, want %+v", i, tr, trades[i])
		}
	}
	if n := srv.Requests(); n != 3 { // 8 trades, 3 a page
		t.Errorf("%d requests, want 3", n)
	}

	req, _ := http.NewRequest(http.MethodGet, srv.URL()+"/v2/stocks/AAPL/trades?limit=5&start="+h0.Format(time.RFC3339), nil)
	req.Header.Set("APCA-API-KEY-ID", testKey)
	req.Header.Set("APCA-API-SECRET-KEY", testSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page struct {
		Trades []struct {
			I int64 `json:"i"`
		} `json:"trades"`
		Symbol string  `json:"symbol"`
		Next   *string `json:"next_page_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		t.Fatal(err)
	}
	if page.Symbol != "AAPL" || len(page.Trades) != 5 || page.Next == nil {
		t.Errorf("single-symbol page = %+v, want 5 AAPL trades and a next_page_token", page)
	}
}

func TestHistoryMoreTradesAtOneTimestampThanAPage(t *testing.T) {
	srv := fake.NewAlpacaREST(testKey, testSecret)
	defer srv.Close()
	var trades []fake.AlpacaTrade
	for i := range 5 {
		trades = append(trades, histTrade(int64(i+1), 1, 100))
	}
	trades = append(trades, histTrade(6, 2, 101))
	srv.SetTrades("AAPL", trades)
	c := newCollector()
	n, err := newHistory(srv, t, 2).Trades(context.Background(), "AAPL", h0, h0.Add(time.Minute), false, c)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"V:1", "V:2", "V:3", "V:4", "V:5", "V:6"}
	if got := tradeIDs(c.events()); !reflect.DeepEqual(got, want) || n != 6 {
		t.Fatalf("trades %v (n=%d), want %v", got, n, want)
	}
	// Pages: [1 2] from h0; from 1 s: [1 2] (nothing new), [1 2 3 4]
	// (4 asked), [1 … 6] (8 asked, fewer came: the last).
	if got := srv.Requests(); got != 4 {
		t.Errorf("%d requests, want 4", got)
	}
}
