package store_test

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/store"
)

// randomFloat draws from every range encoding/json formats differently:
// zero, tiny (exponent form), ordinary prices, huge (exponent form), and
// both signs.
func randomFloat(r *rand.Rand) float64 {
	var f float64
	switch r.IntN(6) {
	case 0:
		f = 0
	case 1:
		f = r.Float64() * 1e-6 * math.Pow(10, -float64(r.IntN(300)))
	case 2:
		f = math.Round(r.Float64()*1e6) / 100
	case 3:
		f = r.Float64() * 1e21 * math.Pow(10, float64(r.IntN(280)))
	case 4:
		f = r.NormFloat64() * math.Pow(10, float64(r.IntN(40)-20))
	default:
		f = math.Float64frombits(r.Uint64())
		if math.IsNaN(f) || math.IsInf(f, 0) {
			f = 1
		}
	}
	if r.IntN(3) == 0 {
		f = -f
	}
	return f
}

func randomPtr(r *rand.Rand) *float64 {
	if r.IntN(4) == 0 {
		return nil
	}
	f := randomFloat(r)
	return &f
}

func randomString(r *rand.Rand) string {
	pool := []string{"AAPL", "BRK.B", "", "1m", "*", `a"b`, `back\slash`, "<tag>&", "tab\there", "line\nbreak", "é", "\u2028", "\x00x"}
	return pool[r.IntN(len(pool))]
}

func randomTime(r *rand.Rand) time.Time {
	t := time.Unix(r.Int64N(4e9), r.Int64N(1e9))
	if r.IntN(3) == 0 {
		t = t.Truncate(time.Second)
	}
	zones := []*time.Location{time.UTC, time.FixedZone("", -5*3600), time.FixedZone("", 5*3600+1800)}
	return t.In(zones[r.IntN(len(zones))])
}

func randomTrade(r *rand.Rand) store.Trade {
	return store.Trade{TS: randomTime(r), Seq: r.Int64() - r.Int64(), Price: randomFloat(r), Size: r.Int64N(1e9), Bid: randomPtr(r), Ask: randomPtr(r)}
}

// TestAppendJSONMatchesEncodingJSON holds the hand-written encoders to
// encoding/json's exact bytes over random values, so browsers and tests
// that read the live updates see what the API's encoder would have sent.
func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	check := func(what string, got []byte, v any) {
		t.Helper()
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s:\n got %s\nwant %s", what, got, want)
		}
	}
	for range 20000 {
		tr := randomTrade(r)
		check("trade", tr.AppendJSON(nil), tr)

		ev := store.TickEvent{Symbol: randomString(r), Price: randomFloat(r), TS: randomTime(r).Format(time.RFC3339Nano), Count: r.IntN(1000)}
		switch r.IntN(3) {
		case 0: // nil: null
		case 1:
			ev.Trades = []store.Trade{}
		default:
			for range 1 + r.IntN(20) {
				ev.Trades = append(ev.Trades, randomTrade(r))
			}
		}
		check("tick event", ev.AppendJSON(nil), ev)
		check("slim tick event", ev.AppendSlimJSON(nil), struct {
			Symbol string  `json:"symbol"`
			Price  float64 `json:"price"`
			TS     string  `json:"ts"`
		}{ev.Symbol, ev.Price, ev.TS})
		trades, _ := json.Marshal(ev.Trades)
		if got := store.TradesJSON(ev.AppendJSON(nil)); !bytes.Equal(got, trades) {
			t.Fatalf("TradesJSON: got %s, want %s", got, trades)
		}

		b := randomTime(r)
		c := store.Candle{Symbol: randomString(r), Interval: randomString(r), T: b.Unix(), Bucket: b,
			Open: randomFloat(r), High: randomFloat(r), Low: randomFloat(r), Close: randomFloat(r), Volume: r.Int64(), VWAP: randomPtr(r),
			Trades: r.Int64(), SMA5: randomPtr(r), SMA20: randomPtr(r), EMA12: randomPtr(r), EMA26: randomPtr(r),
			BBUpper: randomPtr(r), BBLower: randomPtr(r), RSI14: randomPtr(r), Final: r.IntN(2) == 0}
		check("candle", c.AppendJSON(nil), c)
	}
}

// TestAppendJSONNaNIsNull: encoding/json refuses NaN; a live update must
// not fail a commit over one, so it is written as null.
func TestAppendJSONNaNIsNull(t *testing.T) {
	c := store.Candle{Open: math.NaN(), High: math.Inf(1)}
	var v map[string]any
	if err := json.Unmarshal(c.AppendJSON(nil), &v); err != nil {
		t.Fatalf("%s: %v", c.AppendJSON(nil), err)
	}
	if v["open"] != nil || v["high"] != nil {
		t.Fatalf("open %v high %v, want null", v["open"], v["high"])
	}
}

// TestEncodeDecodeEvents: events split into payloads under PostgreSQL's
// limit come back in order, with every routing field and their JSON.
func TestEncodeDecodeEvents(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var events []store.Event
	for i := range 3000 {
		var e store.Event
		switch i % 4 {
		case 0:
			ev := store.TickEvent{Symbol: "S" + strings.Repeat("X", r.IntN(5)), Price: randomFloat(r), TS: randomTime(r).Format(time.RFC3339Nano), Count: r.IntN(50)}
			for range r.IntN(20) {
				ev.Trades = append(ev.Trades, randomTrade(r))
			}
			e = store.TickUpdate(&ev)
		case 1:
			b := randomTime(r)
			c := store.Candle{Symbol: "AAPL", Interval: "5m", T: b.Unix(), Bucket: b, Close: randomFloat(r), Final: r.IntN(2) == 0}
			e = store.CandleUpdate(&c)
		case 2:
			var err error
			if e, err = store.AnomalyUpdate(&store.Anomaly{Symbol: "MSFT", Kind: "price_jump", Detail: "tab\tand\nnewline"}); err != nil {
				t.Fatal(err)
			}
		default:
			var err error
			if e, err = store.CandlesChangedUpdate(store.AllSymbols, "1d"); err != nil {
				t.Fatal(err)
			}
		}
		events = append(events, e)
	}
	payloads := store.Encode(events)
	if len(payloads) < 2 {
		t.Fatalf("%d payloads for %d events: the test does not split", len(payloads), len(events))
	}
	var got []store.Event
	for _, p := range payloads {
		if len(p) > 7800 {
			t.Fatalf("payload of %d bytes, over PostgreSQL's limit", len(p))
		}
		evs, err := store.Decode(p)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, evs...)
	}
	if len(got) != len(events) {
		t.Fatalf("decoded %d events, encoded %d", len(got), len(events))
	}
	for i := range events {
		if !reflect.DeepEqual(got[i], events[i]) && !(math.IsNaN(got[i].Price) && math.IsNaN(events[i].Price)) {
			t.Fatalf("event %d:\n got %+v\nwant %+v", i, got[i], events[i])
		}
	}
	if _, err := store.Decode("tick\tAAPL\n"); err == nil {
		t.Fatal("a truncated line was accepted")
	}
}
