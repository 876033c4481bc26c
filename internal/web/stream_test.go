package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/analytics"
	"github.com/stockpipe/stockpipe/internal/anomaly"
	"github.com/stockpipe/stockpipe/internal/candle"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/store"
	"github.com/stockpipe/stockpipe/internal/web"
)

// streamEvent is one event read from /api/stream.
type streamEvent struct {
	event string
	data  string
}

// openStream opens path on f's server and returns its events as they come.
func openStream(t *testing.T, f *fixture, path string) <-chan streamEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", f.srv.URL+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %s", path, resp.Status)
	}
	r := bufio.NewReader(resp.Body)
	if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "retry:") {
		t.Fatalf("%s: first line %q", path, line)
	}
	out := make(chan streamEvent, 1024)
	go func() {
		defer resp.Body.Close()
		defer close(out)
		event := ""
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case strings.HasPrefix(line, "event: "):
				event = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				out <- streamEvent{event, line[len("data: "):]}
			}
		}
	}()
	return out
}

// liveBatch is a committed batch of two symbols with a tick, 1m and 5m
// candles and an anomaly each.
func liveBatch(minute int) *store.Batch {
	b := &store.Batch{Group: "g", Topic: "ticks"}
	ts := day.Add(time.Duration(minute) * time.Minute)
	for i, sym := range []string{"MSFT", "AAPL"} {
		b.Ticks = append(b.Ticks, store.TickRow{Tick: market.Tick{Symbol: sym, TS: ts, Seq: int64(1000*minute + i), Price: 100, Size: 1, Bid: 99.99, Ask: 100.01}})
		c := candle.Candle{Bucket: ts.Truncate(time.Minute), Open: 100, High: 100, Low: 100, Close: 100, Volume: 1, Turnover: 100, Trades: 1}
		b.Candles = append(b.Candles, analytics.CandleRow{Symbol: sym, Interval: "1m", Candle: c})
		c.Bucket = ts.Truncate(5 * time.Minute)
		b.Candles = append(b.Candles, analytics.CandleRow{Symbol: sym, Interval: "5m", Candle: c})
		b.Anomalies = append(b.Anomalies, anomaly.Anomaly{Symbol: sym, TS: ts, Kind: anomaly.KindPriceJump, Severity: anomaly.SeverityHigh, Detail: sym + " jumped"})
	}
	return b
}

// TestStreamSubscriptions: each page's stream carries what the page shows
// and nothing else. The pipeline page's no ticks, candles or anomalies; a
// symbol page's only its symbol's, of its interval; the overview's prices
// without trades and 1m candles only; the default stream everything, as
// before.
func TestStreamSubscriptions(t *testing.T) {
	f := newFixtureWith(t, func(c *web.Config) { c.LiveRate = web.DefaultLiveRate })
	pipeline := openStream(t, f, "/api/stream?pipeline=1")
	symbol := openStream(t, f, "/api/stream?symbol=AAPL&ticks=trades&candles=1m&anomalies=1")
	overview := openStream(t, f, "/api/stream?ticks=all&candles=1m&anomalies=1&status=1")
	all := openStream(t, f, "/api/stream")
	f.commit(t, liveBatch(10))

	// read collects a stream's events until it has seen every kind in
	// until (and then some more time, for whatever it should not get).
	read := func(name string, ch <-chan streamEvent, until ...string) map[string][]string {
		t.Helper()
		got := map[string][]string{}
		deadline := time.After(15 * time.Second)
		var grace <-chan time.Time
		for {
			select {
			case e, ok := <-ch:
				if !ok {
					t.Fatalf("%s: the stream ended", name)
				}
				got[e.event] = append(got[e.event], e.data)
				if grace == nil && hasAll(got, until) {
					// Past a status event (once a second) and a pipeline
					// event (every two), had they been asked for.
					grace = time.After(2500 * time.Millisecond)
				}
			case <-grace:
				return got
			case <-deadline:
				t.Fatalf("%s: got %v, waited for %v", name, keys(got), until)
			}
		}
	}

	if got := read("pipeline page", pipeline, "pipeline"); len(got) != 1 {
		t.Errorf("the pipeline page's stream carries %v, want pipeline events only", keys(got))
	}

	got := read("symbol page", symbol, "tick", "candle", "anomaly")
	for kind, list := range got {
		for _, d := range list {
			var e struct {
				Symbol   string `json:"symbol"`
				Interval string `json:"interval"`
			}
			var tick store.TickEvent
			if err := json.Unmarshal([]byte(d), &e); err != nil {
				t.Fatal(err)
			}
			if kind == "tick" {
				if err := json.Unmarshal([]byte(d), &tick); err != nil {
					t.Fatal(err)
				}
			}
			switch {
			case kind != "tick" && kind != "candle" && kind != "anomaly":
				t.Errorf("the symbol page's stream carries a %s event", kind)
			case e.Symbol != "AAPL":
				t.Errorf("the AAPL page's stream carries a %s event of %s: %s", kind, e.Symbol, d)
			case kind == "candle" && e.Interval != "1m":
				t.Errorf("the 1m page's stream carries a %s candle", e.Interval)
			case kind == "tick" && len(tick.Trades) != 1:
				t.Errorf("the symbol page's tick event has %d trades: %s", len(tick.Trades), d)
			}
		}
	}

	got = read("overview", overview, "tick", "candle", "anomaly", "status")
	if len(got) != 4 {
		t.Errorf("the overview's stream carries %v", keys(got))
	}
	if n := len(got["tick"]); n != 2 {
		t.Errorf("the overview got %d tick events, want one per symbol", n)
	}
	for _, d := range got["tick"] {
		if strings.Contains(d, "trades") || !strings.Contains(d, `"price":100`) {
			t.Errorf("the overview's tick event is not the price alone: %s", d)
		}
	}
	for _, d := range got["candle"] {
		if !strings.Contains(d, `"interval":"1m"`) {
			t.Errorf("the overview got a candle other than 1m: %s", d)
		}
	}

	got = read("default", all, "tick", "candle", "anomaly", "status", "pipeline")
	if len(got["candle"]) != 4 || len(got["tick"]) != 2 || len(got["anomaly"]) != 2 {
		t.Errorf("the default stream got %d candles, %d ticks, %d anomalies; want everything: 4, 2, 2", len(got["candle"]), len(got["tick"]), len(got["anomaly"]))
	}
	for _, d := range got["tick"] {
		if !strings.Contains(d, `"trades":[`) {
			t.Errorf("the default stream's tick event lacks its trades: %s", d)
		}
	}
}

func hasAll(got map[string][]string, kinds []string) bool {
	for _, k := range kinds {
		if len(got[k]) == 0 {
			return false
		}
	}
	return true
}

func keys(m map[string][]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"×"+strings.Repeat("I", min(len(v), 5)))
	}
	return out
}

// TestStreamBadParameters: an unknown parameter or value is a 400 with a
// one-line message naming it; an unknown symbol still a 404.
func TestStreamBadParameters(t *testing.T) {
	f := newFixture(t)
	for path, want := range map[string]string{
		"/api/stream?tick=all":              `unknown parameter "tick"`,
		"/api/stream?ticks=all&candle=1m":   `unknown parameter "candle"`,
		"/api/stream?ticks=everything":      `ticks "everything"`,
		"/api/stream?candles=1h":            `candles "1h"`,
		"/api/stream?symbol=AAPL&status=on": `status "on"`,
	} {
		code, _, body := f.get(t, path)
		var e struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal(body, &e); err != nil || code != 400 || !strings.Contains(e.Error, want) || strings.Contains(e.Error, "\n") {
			t.Errorf("%s: %d %s; want 400 with one line containing %s", path, code, body, want)
		}
	}
	if code, _, body := f.get(t, "/api/stream?symbol=ZZZZ&ticks=all"); code != 404 {
		t.Errorf("an unknown symbol: %d %s", code, body)
	}
}

// TestLiveRateRefusedBelowZero: a negative rate is a configuration error.
func TestLiveRateRefusedBelowZero(t *testing.T) {
	f := newFixture(t)
	if _, err := web.New(web.Config{Pool: f.pool, LiveRate: -1}); err == nil {
		t.Error("web.New took a negative live rate")
	}
}
