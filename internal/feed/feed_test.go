package feed

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 2, 14, 30, 0, 0, time.UTC)

func TestAssemblerSeqQuotesAndResends(t *testing.T) {
	a := NewAssembler(map[string]int64{"AAPL": 41})
	a.Quote(Quote{Symbol: "AAPL", TS: t0, Bid: 189.1, Ask: 189.2})
	tk, ok := a.Trade(Trade{Symbol: "AAPL", TS: t0.Add(time.Millisecond), Price: 189.15, Size: 100, ID: "V:1"})
	if !ok || tk.Seq != 42 || tk.Bid != 189.1 || tk.Ask != 189.2 || tk.Price != 189.15 || tk.Size != 100 {
		t.Fatalf("first AAPL trade = %+v, %v; want seq 42 continuing the topic, with the quote", tk, ok)
	}
	// A symbol the topic does not hold starts at 1, and has no quote yet.
	tk, ok = a.Trade(Trade{Symbol: "MSFT", TS: t0, Price: 410, Size: 5, ID: "V:1"})
	if !ok || tk.Seq != 1 || tk.HasQuote() {
		t.Fatalf("first MSFT trade = %+v, %v; want seq 1 without a quote (the same id at another symbol is another trade)", tk, ok)
	}
	// The resend of a trade after a reconnect makes no tick and takes no seq.
	if _, ok := a.Trade(Trade{Symbol: "AAPL", TS: t0.Add(time.Millisecond), Price: 189.15, Size: 100, ID: "V:1"}); ok {
		t.Fatal("a resend of AAPL V:1 made a tick")
	}
	tk, _ = a.Trade(Trade{Symbol: "AAPL", TS: t0.Add(2 * time.Millisecond), Price: 189.16, Size: 1, ID: "V:2"})
	if tk.Seq != 43 || a.Dropped() != 1 {
		t.Fatalf("after the resend: seq %d, dropped %d; want 43 and 1", tk.Seq, a.Dropped())
	}
	// Trades without an id (Finnhub) are never taken for resends.
	for i := range 3 {
		if tk, ok := a.Trade(Trade{Symbol: "TSLA", TS: t0, Price: 250, Size: 1}); !ok || tk.Seq != int64(i+1) {
			t.Fatalf("id-less trade %d = %+v, %v", i, tk, ok)
		}
	}
	// A one-sided or crossed quote is forgotten, not attached.
	for _, q := range []Quote{{Bid: 0, Ask: 189.3}, {Bid: 189.4, Ask: 189.3}, {Bid: 189.2, Ask: 0}} {
		q.Symbol = "AAPL"
		a.Quote(q)
		if tk, _ := a.Trade(Trade{Symbol: "AAPL", TS: t0, Price: 189.3, Size: 1}); tk.HasQuote() {
			t.Fatalf("after quote %+v the trade carries %v/%v", q, tk.Bid, tk.Ask)
		}
	}
}

// A resend is recognised for as long as the provider could resend it: the
// last recentIDs trades of the symbol, whatever other symbols send.
func TestAssemblerRemembersRecentIDsPerSymbol(t *testing.T) {
	a := NewAssembler(nil)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range recentIDs {
		a.Trade(Trade{Symbol: "AAPL", TS: t0, Price: 1, Size: 1, ID: fmt.Sprint(i)})
		// Other symbols' trades in between do not push AAPL's ids out.
		a.Trade(Trade{Symbol: fmt.Sprintf("S%d", rng.IntN(50)), TS: t0, Price: 1, Size: 1, ID: fmt.Sprint(i)})
	}
	for i := range recentIDs {
		if _, ok := a.Trade(Trade{Symbol: "AAPL", TS: t0, Price: 1, Size: 1, ID: fmt.Sprint(i)}); ok {
			t.Fatalf("resend of id %d not recognised", i)
		}
	}
	a.Trade(Trade{Symbol: "AAPL", TS: t0, Price: 1, Size: 1, ID: "new"})
	if _, ok := a.Trade(Trade{Symbol: "AAPL", TS: t0, Price: 1, Size: 1, ID: "0"}); !ok {
		t.Fatal("the oldest id is still remembered after recentIDs newer ones: the window is unbounded")
	}
}

type collect struct{ evs []string }

func (c *collect) Trade(tr Trade) error {
	c.evs = append(c.evs, fmt.Sprintf("t %s %s %v %d %s", tr.Symbol, tr.TS.Format(time.RFC3339Nano), tr.Price, tr.Size, tr.ID))
	return nil
}

func (c *collect) Quote(q Quote) error {
	c.evs = append(c.evs, fmt.Sprintf("q %s %v %v", q.Symbol, q.Bid, q.Ask))
	return nil
}

// lineDecoder is a provider whose messages are JSON arrays of trades.
func lineDecoder(msg []byte) ([]Event, error) {
	var trs []Trade
	if err := json.Unmarshal(msg, &trs); err != nil {
		return nil, err
	}
	evs := make([]Event, len(trs))
	for i := range trs {
		evs[i] = Event{Trade: &trs[i]}
	}
	return evs, nil
}

func TestRecordingReplaysInOrder(t *testing.T) {
	var buf bytes.Buffer
	r := NewRecorder(&buf)
	msgs := []string{
		`[{"Symbol":"AAPL","TS":"2026-11-02T14:30:00.000001Z","Price":1.5,"Size":2,"ID":"a"}]`,
		`not json`,
		`[{"Symbol":"MSFT","TS":"2026-11-02T14:30:01Z","Price":3,"Size":4},{"Symbol":"AAPL","TS":"2026-11-02T14:30:02Z","Price":5,"Size":6}]`,
	}
	for i, m := range msgs {
		r.Record("x", t0.Add(time.Duration(i)*time.Second), []byte(m))
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(buf.String(), "\n"); n != 3 {
		t.Fatalf("%d lines recorded, want 3:\n%s", n, buf.String())
	}
	var c collect
	var ats []time.Time
	n, skipped, err := ReadRecording(&buf, map[string]Decoder{"x": lineDecoder}, &c, func(at time.Time) error { ats = append(ats, at); return nil })
	if err != nil || n != 3 || skipped != 1 {
		t.Fatalf("ReadRecording = %d, %d, %v; want 3 messages, 1 skipped (the undecodable one)", n, skipped, err)
	}
	want := []string{"t AAPL 2026-11-02T14:30:00.000001Z 1.5 2 a", "t MSFT 2026-11-02T14:30:01Z 3 4 ", "t AAPL 2026-11-02T14:30:02Z 5 6 "}
	if len(ats) != 3 || !ats[2].Equal(t0.Add(2*time.Second)) {
		t.Fatalf("paced at %v, want the three arrival times", ats)
	}
	if fmt.Sprint(c.evs) != fmt.Sprint(want) {
		t.Fatalf("replayed %q\nwant %q", c.evs, want)
	}
	if _, _, err := ReadRecording(strings.NewReader(`{"at":"2026-11-02T14:30:00Z","source":"y","msg":[]}`+"\n"), map[string]Decoder{"x": lineDecoder}, &c, nil); err == nil || !strings.Contains(err.Error(), `"y"`) {
		t.Fatalf("unknown source: %v", err)
	}
	if _, _, err := ReadRecording(strings.NewReader("garbage\n"), nil, &c, nil); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("garbage line: %v", err)
	}
}

func TestStatsCountsReconnects(t *testing.T) {
	s := NewStats("x")
	s.Connected(t0)
	s.Messages(3, t0.Add(time.Second))
	s.Disconnected(errors.New("EOF"))
	if snap := s.Snapshot(); snap.State != StateReconnecting || !snap.ConnectedSince.IsZero() || snap.Errors != 1 || snap.LastError != "EOF" {
		t.Fatalf("after a drop: %+v", snap)
	}
	s.Connected(t0.Add(2 * time.Second))
	snap := s.Snapshot()
	if snap.Reconnects != 1 || snap.Messages != 3 || snap.State != StateConnected || !snap.ConnectedSince.Equal(t0.Add(2*time.Second)) || !snap.LastMessage.Equal(t0.Add(time.Second)) {
		t.Fatalf("after reconnecting: %+v", snap)
	}
}

func TestFatalErrorSaysTheFix(t *testing.T) {
	err := error(&FatalError{Source: "alpaca", Code: 402, Msg: "auth failed", Fix: "check APCA_API_KEY_ID"})
	if got := err.Error(); got != "alpaca refused the connection (402 auth failed): check APCA_API_KEY_ID" {
		t.Fatal(got)
	}
}

// Two recorders appending to one file, as two commands given the same
// --record do, leave whole lines: every line of the file is an entry.
func TestRecordersSharingAFileKeepWholeLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "session.jsonl")
	open := func() (*os.File, *Recorder) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		return f, NewRecorder(f)
	}
	fa, a := open()
	fb, b := open()
	msg := []byte(`{"type":"trade","data":[{"p":189.23,"s":"AAPL","t":1575526691134,"v":100,"c":["1","12"]}]}`)
	var wg sync.WaitGroup
	for _, r := range []*Recorder{a, b} {
		wg.Go(func() {
			for i := range 5000 {
				r.Record("finnhub", t0.Add(time.Duration(i)), msg)
			}
		})
	}
	wg.Wait()
	for _, c := range []struct {
		f *os.File
		r *Recorder
	}{{fa, a}, {fb, b}} {
		if err := c.r.Close(); err != nil {
			t.Fatal(err)
		}
		c.f.Close()
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 10_000 {
		t.Fatalf("%d lines, want 10000", len(lines))
	}
	for i, l := range lines {
		var e Entry
		if err := json.Unmarshal([]byte(l), &e); err != nil || e.Source != "finnhub" {
			t.Fatalf("line %d is not an entry (%v): %.120s", i+1, err, l)
		}
	}
}
