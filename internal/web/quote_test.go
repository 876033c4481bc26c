package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/store"
)

// TestTicksWithoutQuote stores a tick without a quote (a trade-only
// feed's) through the sink after the fixture's quoted ones, and expects
// "bid":null,"ask":null for it in /api/ticks and in the live stream, and
// the quoted ticks' numbers as before.
func TestTicksWithoutQuote(t *testing.T) {
	f := newFixture(t)

	req, _ := http.NewRequest("GET", f.srv.URL+"/api/stream?symbol=AAPL", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "retry:") {
		t.Fatalf("first line %q", line)
	}

	ts := day.Add(2*time.Minute + 30*time.Second)
	f.commit(t, &store.Batch{Group: "g", Topic: "ticks", Ticks: []store.TickRow{{Tick: market.Tick{Symbol: "AAPL", TS: ts, Seq: 11,
		Price: 100.5, Size: 300}, Offset: 10}}})

	// Live: the tick event's trade.
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended before the tick: %v", err)
		}
		if line != "event: tick\n" {
			continue
		}
		data, _ := r.ReadString('\n')
		data = strings.TrimPrefix(data, "data: ")
		var ev struct {
			Trades []json.RawMessage `json:"trades"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil || len(ev.Trades) != 1 {
			t.Fatalf("tick event %q: %v", data, err)
		}
		if got := string(ev.Trades[0]); !strings.Contains(got, `"seq":11,`) || !strings.Contains(got, `"bid":null,"ask":null`) {
			t.Errorf("live trade without a quote: %s", got)
		}
		break
	}

	// Read back: the newest first, then the fixture's last quoted tick.
	code, _, body := f.get(t, "/api/ticks?symbol=AAPL&limit=2")
	var got struct{ Ticks []json.RawMessage }
	if code != 200 || json.Unmarshal(body, &got) != nil || len(got.Ticks) != 2 {
		t.Fatalf("/api/ticks: %d %s", code, body)
	}
	const noQuote = `{"ts":"2026-11-02T14:32:30Z","seq":11,"price":100.5,"size":300,"bid":null,"ask":null}`
	if s := string(got.Ticks[0]); s != noQuote {
		t.Errorf("tick without a quote:\n got %s\nwant %s", s, noQuote)
	}
	const quoted = `{"ts":"2026-11-02T14:32:20Z","seq":10,"price":100.25,"size":100,"bid":100.24,"ask":100.26}`
	if s := string(got.Ticks[1]); s != quoted {
		t.Errorf("quoted tick:\n got %s\nwant %s", s, quoted)
	}
}
