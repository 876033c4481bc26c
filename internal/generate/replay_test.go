package generate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// replayWantBar is a bar as the tests expect it, prices in cents.
type replayWantBar struct {
	start, end             time.Time
	open, high, low, close int64
	volume                 int64
}

// replayGotTick is a tick decoded from its wire form.
type replayGotTick struct {
	Symbol string    `json:"symbol"`
	TS     time.Time `json:"ts"`
	Seq    int64     `json:"seq"`
	Price  float64   `json:"price"`
	Size   int64     `json:"size"`
	Bid    float64   `json:"bid"`
	Ask    float64   `json:"ask"`
}

func replayMustTime(t testing.TB, s string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func replayCents(f float64) int64 { return int64(math.Round(f * 100)) }

// replayBarAt builds a replayWantBar from RFC 3339 times and dollar prices.
func replayBarAt(t testing.TB, start, end string, o, h, l, c float64, v int64) replayWantBar {
	return replayWantBar{
		start: replayMustTime(t, start), end: replayMustTime(t, end),
		open: replayCents(o), high: replayCents(h), low: replayCents(l), close: replayCents(c),
		volume: v,
	}
}

// replayDecode checks one record's envelope and decodes its tick.
func replayDecode(t testing.TB, rec Record, symbol string) replayGotTick {
	t.Helper()
	var g replayGotTick
	dec := json.NewDecoder(bytes.NewReader(rec.Value))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&g); err != nil {
		t.Fatalf("decoding %s: %v", rec.Value, err)
	}
	if string(rec.Key) != symbol {
		t.Fatalf("key %q, want %q", rec.Key, symbol)
	}
	if !rec.TS.Equal(g.TS) {
		t.Fatalf("record TS %v, tick ts %v", rec.TS, g.TS)
	}
	return g
}

// replayCheckStream checks the rules every tick of a replay obeys, on its
// own and against the tick before it.
func replayCheckStream(t testing.TB, ticks []replayGotTick, symbol string, startSeq int64) {
	t.Helper()
	for i, g := range ticks {
		if g.Symbol != symbol {
			t.Fatalf("tick %d: symbol %q, want %q", i, g.Symbol, symbol)
		}
		if g.Seq != startSeq+int64(i)+1 {
			t.Fatalf("tick %d: seq %d, want %d", i, g.Seq, startSeq+int64(i)+1)
		}
		if i > 0 && !g.TS.After(ticks[i-1].TS) {
			t.Fatalf("tick %d: ts %v not after %v", i, g.TS, ticks[i-1].TS)
		}
		if g.TS.Location() != time.UTC {
			t.Fatalf("tick %d: ts %v not in UTC", i, g.TS)
		}
		if g.Size <= 0 || g.Price <= 0 || g.Bid <= 0 || g.Ask <= 0 {
			t.Fatalf("tick %d: non-positive field in %+v", i, g)
		}
		if !(g.Bid < g.Ask) || g.Price < g.Bid || g.Price > g.Ask {
			t.Fatalf("tick %d: want bid < ask and price between them: %+v", i, g)
		}
		for _, f := range []float64{g.Price, g.Bid, g.Ask} {
			if float64(replayCents(f))/100 != f {
				t.Fatalf("tick %d: %v is not a whole number of cents", i, f)
			}
		}
	}
}

// replayCheckBar checks that ticks, all the ticks of bar w, trace it.
func replayCheckBar(t testing.TB, w replayWantBar, ticks []replayGotTick) {
	t.Helper()
	if len(ticks) == 0 {
		t.Fatalf("bar at %v: no ticks", w.start)
	}
	hi, lo := int64(math.MinInt64), int64(math.MaxInt64)
	var sum int64
	oddLots := 0
	for _, g := range ticks {
		if g.TS.Before(w.start) || !g.TS.Before(w.end) {
			t.Errorf("bar at %v: tick ts %v outside [%v, %v)", w.start, g.TS, w.start, w.end)
		}
		c := replayCents(g.Price)
		hi, lo = max(hi, c), min(lo, c)
		sum += g.Size
		if g.Size%100 != 0 {
			oddLots++
		}
	}
	if got := replayCents(ticks[0].Price); got != w.open {
		t.Errorf("bar at %v: first price %d¢, want open %d¢", w.start, got, w.open)
	}
	if got := replayCents(ticks[len(ticks)-1].Price); got != w.close {
		t.Errorf("bar at %v: last price %d¢, want close %d¢", w.start, got, w.close)
	}
	if hi != w.high || lo != w.low {
		t.Errorf("bar at %v: price range [%d¢, %d¢], want [%d¢, %d¢]", w.start, lo, hi, w.low, w.high)
	}
	n := int64(len(ticks))
	switch {
	case w.volume >= n && sum != w.volume:
		t.Errorf("bar at %v: sizes sum to %d, want volume %d", w.start, sum, w.volume)
	case w.volume < n && sum != n:
		t.Errorf("bar at %v: volume %d under %d ticks, want size-1 ticks, sizes sum to %d", w.start, w.volume, n, sum)
	case w.volume >= 100*n && oddLots > 1:
		t.Errorf("bar at %v: %d odd-lot ticks, want at most 1 with volume %d over %d ticks", w.start, oddLots, w.volume, n)
	}
}

// replayDrain reads p to the end, or to its first error.
func replayDrain(t testing.TB, p *Replay, symbol string) ([]replayGotTick, error) {
	t.Helper()
	var ticks []replayGotTick
	for {
		rec, ok, err := p.Next()
		if err != nil || !ok {
			return ticks, err
		}
		ticks = append(ticks, replayDecode(t, rec, symbol))
	}
}

// replayCheckBars assigns ticks to bars by time and checks each bar.
func replayCheckBars(t testing.TB, want []replayWantBar, ticks []replayGotTick) {
	t.Helper()
	i := 0
	for _, w := range want {
		j := i
		for j < len(ticks) && ticks[j].TS.Before(w.end) {
			j++
		}
		replayCheckBar(t, w, ticks[i:j])
		i = j
	}
	if i != len(ticks) {
		t.Errorf("%d ticks after the last bar, first at %v", len(ticks)-i, ticks[i].TS)
	}
}

func replayOpenFixture(t testing.TB, name string) *os.File {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestReplayFixtures(t *testing.T) {
	daily3 := []replayWantBar{
		replayBarAt(t, "2024-01-02T14:30:00Z", "2024-01-02T21:00:00Z", 187.15, 188.44, 183.89, 185.64, 82488700),
		replayBarAt(t, "2024-01-03T14:30:00Z", "2024-01-03T21:00:00Z", 184.22, 185.88, 183.43, 184.25, 58414500),
		replayBarAt(t, "2024-01-04T14:30:00Z", "2024-01-04T21:00:00Z", 182.15, 183.09, 180.88, 181.91, 71983600),
	}
	tests := []struct {
		file       string
		startSeq   int64
		want       []replayWantBar
		wantPadded int64
	}{
		{
			// Yahoo's download page: BOM, CRLF, date-only rows, and a
			// daylight-saving change between the last two rows.
			file: "daily.csv",
			want: append(append([]replayWantBar(nil), daily3...),
				replayBarAt(t, "2024-01-05T14:30:00Z", "2024-01-05T21:00:00Z", 181.99, 182.76, 180.17, 181.18, 62303300),
				replayBarAt(t, "2024-01-08T14:30:00Z", "2024-01-08T21:00:00Z", 182.09, 185.60, 181.50, 185.56, 59144500),
				replayBarAt(t, "2024-03-08T14:30:00Z", "2024-03-08T21:00:00Z", 169.00, 173.70, 168.94, 170.73, 76114600),
				replayBarAt(t, "2024-03-11T13:30:00Z", "2024-03-11T20:00:00Z", 172.94, 174.38, 172.05, 172.75, 60139500),
			),
		},
		{
			// One-minute bars at -05:00 with a missing minute, a flat
			// thin bar, and an overnight gap that must not stretch a bar.
			file:     "intraday_ny.csv",
			startSeq: 41,
			want: []replayWantBar{
				replayBarAt(t, "2024-01-02T14:30:00Z", "2024-01-02T14:31:00Z", 187.15, 187.42, 186.20, 186.48, 3412781),
				replayBarAt(t, "2024-01-02T14:31:00Z", "2024-01-02T14:32:00Z", 186.47, 186.74, 186.30, 186.70, 402163),
				replayBarAt(t, "2024-01-02T14:32:00Z", "2024-01-02T14:33:00Z", 186.69, 186.69, 186.05, 186.09, 288812),
				replayBarAt(t, "2024-01-02T14:33:00Z", "2024-01-02T14:34:00Z", 186.10, 186.33, 185.95, 186.33, 255170),
				replayBarAt(t, "2024-01-02T14:35:00Z", "2024-01-02T14:36:00Z", 186.33, 186.33, 186.33, 186.33, 250),
				replayBarAt(t, "2024-01-02T20:59:00Z", "2024-01-02T21:00:00Z", 185.64, 185.68, 185.58, 185.65, 1123077),
				replayBarAt(t, "2024-01-03T14:30:00Z", "2024-01-03T14:31:00Z", 184.22, 184.38, 183.85, 183.99, 2391200),
			},
		},
		{
			// yfinance Ticker.history: +00:00, lower-case names, no Adj
			// Close, extra columns, a 3-share bar and a zero-volume bar.
			file: "intraday_utc.csv",
			want: []replayWantBar{
				replayBarAt(t, "2024-01-02T14:30:00Z", "2024-01-02T14:35:00Z", 187.15, 187.92, 186.25, 187.49, 4730021),
				replayBarAt(t, "2024-01-02T14:35:00Z", "2024-01-02T14:40:00Z", 187.49, 187.64, 186.96, 187.00, 1021530),
				replayBarAt(t, "2024-01-02T14:40:00Z", "2024-01-02T14:45:00Z", 186.99, 187.08, 186.50, 186.50, 917114),
				replayBarAt(t, "2024-01-02T14:45:00Z", "2024-01-02T14:50:00Z", 186.50, 186.50, 186.50, 186.50, 3),
				replayBarAt(t, "2024-01-02T14:50:00Z", "2024-01-02T14:55:00Z", 186.50, 186.89, 186.41, 186.64, 0),
			},
			wantPadded: 1,
		},
		{
			// yf.download: "Price" header, "Ticker" and "Date" lines,
			// columns in alphabetical order.
			file: "yfinance_multiindex.csv",
			want: daily3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			p, err := NewReplay(replayOpenFixture(t, tt.file), ReplayConfig{Symbol: "AAPL", StartSeq: tt.startSeq})
			if err != nil {
				t.Fatal(err)
			}
			ticks, err := replayDrain(t, p, "AAPL")
			if err != nil {
				t.Fatal(err)
			}
			replayCheckStream(t, ticks, "AAPL", tt.startSeq)
			replayCheckBars(t, tt.want, ticks)
			if len(ticks) < 3*len(tt.want) {
				t.Errorf("%d ticks for %d bars, want a few per bar", len(ticks), len(tt.want))
			}
			n := int64(len(tt.want))
			want := ReplayStats{RowsRead: n, BarsUsed: n, TicksEmitted: int64(len(ticks)), PaddedBars: tt.wantPadded}
			if got := p.Stats(); !reflect.DeepEqual(got, want) {
				t.Errorf("Stats() = %+v, want %+v", got, want)
			}
			if _, ok, err := p.Next(); ok || err != nil {
				t.Errorf("Next after the end = ok %v, err %v; want false, nil", ok, err)
			}
		})
	}
}

func TestReplayDeterministic(t *testing.T) {
	run := func() []byte {
		p, err := NewReplay(replayOpenFixture(t, "intraday_ny.csv"), ReplayConfig{Symbol: "AAPL"})
		if err != nil {
			t.Fatal(err)
		}
		var out []byte
		for {
			rec, ok, err := p.Next()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				return out
			}
			out = append(append(out, rec.Value...), '\n')
		}
	}
	if a, b := run(), run(); !bytes.Equal(a, b) {
		t.Errorf("two replays of the same file differ:\n%s\n%s", a, b)
	}
}

func TestReplayBadRowFixture(t *testing.T) {
	t.Run("stop", func(t *testing.T) {
		p, err := NewReplay(replayOpenFixture(t, "bad_row.csv"), ReplayConfig{Symbol: "AAPL"})
		if err != nil {
			t.Fatal(err)
		}
		ticks, err := replayDrain(t, p, "AAPL")
		var rowErr *ReplayRowError
		if !errors.As(err, &rowErr) || rowErr.Line != 4 || !strings.Contains(err.Error(), "line 4: open is missing (null)") {
			t.Fatalf("err = %v, want a ReplayRowError for line 4 saying open is missing", err)
		}
		// The good rows before the bad one are replayed first.
		replayCheckStream(t, ticks, "AAPL", 0)
		replayCheckBars(t, []replayWantBar{
			replayBarAt(t, "2024-01-02T14:30:00Z", "2024-01-02T21:00:00Z", 187.15, 188.44, 183.89, 185.64, 82488700),
			replayBarAt(t, "2024-01-03T14:30:00Z", "2024-01-03T21:00:00Z", 184.22, 185.88, 183.43, 184.25, 58414500),
		}, ticks)
		if _, ok, err2 := p.Next(); ok || !errors.Is(err2, err) {
			t.Errorf("Next after the error = ok %v, err %v; want the same error", ok, err2)
		}
	})
	t.Run("skip", func(t *testing.T) {
		p, err := NewReplay(replayOpenFixture(t, "bad_row.csv"), ReplayConfig{Symbol: "AAPL", SkipBad: true})
		if err != nil {
			t.Fatal(err)
		}
		ticks, err := replayDrain(t, p, "AAPL")
		if err != nil {
			t.Fatal(err)
		}
		replayCheckStream(t, ticks, "AAPL", 0)
		replayCheckBars(t, []replayWantBar{
			replayBarAt(t, "2024-01-02T14:30:00Z", "2024-01-02T21:00:00Z", 187.15, 188.44, 183.89, 185.64, 82488700),
			replayBarAt(t, "2024-01-03T14:30:00Z", "2024-01-03T21:00:00Z", 184.22, 185.88, 183.43, 184.25, 58414500),
			replayBarAt(t, "2024-01-05T14:30:00Z", "2024-01-05T21:00:00Z", 181.99, 182.76, 180.17, 181.18, 62303300),
			replayBarAt(t, "2024-01-09T14:30:00Z", "2024-01-09T21:00:00Z", 183.92, 185.15, 182.73, 185.14, 42841800),
		}, ticks)
		want := ReplayStats{
			RowsRead: 6, BarsUsed: 4, RowsSkipped: 2, TicksEmitted: int64(len(ticks)),
			Skips: []ReplaySkip{
				{Line: 4, Reason: "open is missing (null)"},
				{Line: 6, Reason: "high 99.5 is below close 101.2"},
			},
		}
		if got := p.Stats(); !reflect.DeepEqual(got, want) {
			t.Errorf("Stats() = %+v, want %+v", got, want)
		}
	})
}

func TestReplayBadRows(t *testing.T) {
	const daily = "Date,Open,High,Low,Close,Volume\n2024-01-02,10,11,9,10.5,1000\n"
	const intraday = "Datetime,Open,High,Low,Close,Volume\n2024-01-02 09:30:00-05:00,10,11,9,10.5,1000\n"
	tests := []struct {
		name, in, want string
	}{
		{"empty", daily + "2024-01-03,,11,9,10,1000\n", "line 3: open is missing (empty)"},
		{"not a number", daily + "2024-01-03,10,x11,9,10,1000\n", `line 3: high "x11" is not a number`},
		{"high below open", daily + "2024-01-03,10,9.99,9,9.5,1000\n", "line 3: high 9.99 is below open 10"},
		{"low above open on an up bar", daily + "2024-01-03,10,11,10.01,10.5,1000\n", "line 3: low 10.01 is above open 10"},
		{"low above close on a down bar", daily + "2024-01-03,10,11,9.6,9.5,1000\n", "line 3: low 9.6 is above close 9.5"},
		{"zero price", daily + "2024-01-03,0,11,9,10,1000\n", "line 3: open 0 is not positive"},
		{"sub-cent price", daily + "2024-01-03,0.004,0.004,0.004,0.004,1000\n", "line 3: open 0.004 rounds to zero cents"},
		{"huge price", daily + "2024-01-03,10,1e9,9,10,1000\n", "line 3: high 1e9 is above the supported maximum"},
		{"huge volume", daily + "2024-01-03,10,11,9,10,1e13\n", "line 3: volume 1e13 is above the supported maximum"},
		{"infinite price", daily + "2024-01-03,10,Inf,9,10,1000\n", "line 3: high Inf is not finite"},
		{"negative volume", daily + "2024-01-03,10,11,9,10,-5\n", "line 3: volume -5 is negative"},
		{"fractional volume", daily + "2024-01-03,10,11,9,10,5.5\n", "line 3: volume 5.5 is not a whole number"},
		{"same date", daily + "2024-01-02,10,11,9,10,1000\n", "line 3: date 2024-01-02 is not after 2024-01-02 on line 2"},
		{"earlier time", intraday + "2024-01-02 09:29:00-05:00,10,11,9,10,1000\n", "line 3: datetime 2024-01-02 09:29:00-05:00 is not after"},
		{"same instant in another zone", intraday + "2024-01-02 14:30:00+00:00,10,11,9,10,1000\n", "line 3: datetime 2024-01-02 14:30:00+00:00 is not after"},
		{"ancient date", daily + "1899-12-31,10,11,9,10,1000\n", "line 3: date 1899-12-31 is outside the years 1900 to 2199"},
		{"bad date", daily + "Jan 3 2024,10,11,9,10,1000\n", `line 3: date "Jan 3 2024" is not a date or time`},
		{"fractional seconds", intraday + "2024-01-02 09:31:00.5-05:00,10,11,9,10,1000\n", "has fractional seconds"},
		{"short row", daily + "2024-01-03,10,11\n", "line 3: has 3 fields, want at least 6"},
		{"csv syntax", daily + "2024-01-03,1\"0,11,9,10,1000\n", "line 3: malformed CSV"},
		{"late header line", daily + "Date,,,,,\n", `line 3: date "Date" is not a date or time`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in + "2024-01-09,10,11,9,10,1000\n"
			p, err := NewReplay(strings.NewReader(in), ReplayConfig{Symbol: "X"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := replayDrain(t, p, "X"); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to contain %q", err, tt.want)
			}

			p, err = NewReplay(strings.NewReader(in), ReplayConfig{Symbol: "X", SkipBad: true})
			if err != nil {
				t.Fatal(err)
			}
			ticks, err := replayDrain(t, p, "X")
			if err != nil {
				t.Fatalf("with SkipBad: %v", err)
			}
			replayCheckStream(t, ticks, "X", 0)
			st := p.Stats()
			if st.RowsSkipped != 1 || st.BarsUsed != 2 || len(st.Skips) != 1 || st.Skips[0].Line != 3 {
				t.Errorf("with SkipBad: Stats() = %+v, want line 3 skipped and 2 bars used", st)
			}
		})
	}
}

func TestReplayBadHeader(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "empty input"},
		{"not ohlcv", "Name,Age\nBob,3\n", "no Date or Datetime, Open, High, Low, Close, Volume column"},
		{"no volume", "Date,Open,High,Low,Close,Adj Close\n", "no Volume column"},
		{"two tickers", "Price,Open,Open,High,High,Low,Low,Close,Close,Volume,Volume\n", `column "Open" appears more than once`},
		{"only ticker lines", "Ticker,AAPL\nTicker,AAPL\n", "no header line after 2 Ticker lines"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewReplay(strings.NewReader(tt.in), ReplayConfig{Symbol: "X"})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), "Date,Open,High,Low,Close,Adj Close,Volume") {
				t.Errorf("err = %v, want it to show the expected header", err)
			}
		})
	}
}

func TestReplayConfigErrors(t *testing.T) {
	const in = "Date,Open,High,Low,Close,Volume\n"
	for _, cfg := range []ReplayConfig{{}, {Symbol: "aapl"}, {Symbol: "^GSPC"}, {Symbol: " AAPL"}, {Symbol: "X", StartSeq: -1}} {
		if _, err := NewReplay(strings.NewReader(in), cfg); err == nil {
			t.Errorf("NewReplay with %+v: no error", cfg)
		}
	}
}

func TestReplayLocation(t *testing.T) {
	const in = "Datetime,Open,High,Low,Close,Volume\n2024-07-01 09:30:00,10,11,9,10.5,100000\n"
	tests := []struct {
		name string
		loc  *time.Location
		want string
	}{
		{"default is New York", nil, "2024-07-01T13:30:00Z"},
		{"UTC", time.UTC, "2024-07-01T09:30:00Z"},
		{"fixed", time.FixedZone("", 9*3600), "2024-07-01T00:30:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewReplay(strings.NewReader(in), ReplayConfig{Symbol: "X", Location: tt.loc})
			if err != nil {
				t.Fatal(err)
			}
			ticks, err := replayDrain(t, p, "X")
			if err != nil {
				t.Fatal(err)
			}
			start := replayMustTime(t, tt.want)
			// A lone intraday row is taken to be a one-minute bar.
			replayCheckBars(t, []replayWantBar{{
				start: start, end: start.Add(time.Minute),
				open: 1000, high: 1100, low: 900, close: 1050, volume: 100000,
			}}, ticks)
		})
	}
}

func TestSymbolFromPath(t *testing.T) {
	tests := []struct{ path, want string }{
		{"data/aapl.csv", "AAPL"},
		{"BRK-B.csv", "BRK-B"},
		{"/srv/history/^gspc.csv", "^GSPC"},
		{"msft", "MSFT"},
		{"spy.1d.csv", "SPY.1D"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := SymbolFromPath(tt.path); got != tt.want {
			t.Errorf("SymbolFromPath(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

// replayFuzzHeaders are the header shapes FuzzReplay puts before its input.
var replayFuzzHeaders = []string{
	"Date,Open,High,Low,Close,Adj Close,Volume\n",
	"Datetime,Open,High,Low,Close,Adj Close,Volume\n",
	"Price,Adj Close,Close,High,Low,Open,Volume\nTicker,X,X,X,X,X,X\n",
}

func FuzzReplay(f *testing.F) {
	for _, name := range []string{"daily.csv", "intraday_ny.csv", "intraday_utc.csv", "bad_row.csv", "yfinance_multiindex.csv"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		_, body, _ := bytes.Cut(data, []byte("\n"))
		for h := range replayFuzzHeaders {
			f.Add(uint8(h), false, body)
			f.Add(uint8(h), true, body)
		}
	}
	f.Add(uint8(1), true, []byte("2024-01-02 09:30:00,1,1,1,1,0\n2024-01-02 09:30:01,1,2,1,2,1\n9999-12-31 23:59:59Z,1,1,1,1,1\n"))
	f.Add(uint8(2), true, []byte("Date,,,,,,\n2024-01-02,1,1,1,1,1,1\n\"2024-01-03\n"))

	f.Fuzz(func(t *testing.T, header uint8, skipBad bool, body []byte) {
		in := replayFuzzHeaders[int(header)%len(replayFuzzHeaders)] + string(body)
		p, err := NewReplay(strings.NewReader(in), ReplayConfig{Symbol: "X", SkipBad: skipBad})
		if err != nil {
			t.Fatalf("valid header rejected: %v", err)
		}
		var (
			ticks   []replayGotTick
			bars    []replayWantBar
			barOf   []int // index into bars of each tick
			curLine = -1
		)
		for {
			rec, ok, err := p.Next()
			if err != nil {
				var rowErr *ReplayRowError
				if skipBad && errors.As(err, &rowErr) {
					t.Fatalf("row error with SkipBad: %v", err)
				}
				if !strings.HasPrefix(err.Error(), "line ") {
					t.Fatalf("error %q does not start with a line number", err)
				}
				break
			}
			if !ok {
				break
			}
			ticks = append(ticks, replayDecode(t, rec, "X"))
			// The bar behind the tick, as the replay read it; the
			// checks below hold its ticks to it.
			if b := p.bar; b.line != curLine {
				curLine = b.line
				bars = append(bars, replayWantBar{
					start: b.start, end: b.end,
					open: b.open, high: b.high, low: b.low, close: b.close,
					volume: b.volume,
				})
			}
			barOf = append(barOf, len(bars)-1)
		}
		replayCheckStream(t, ticks, "X", 0)
		for i, w := range bars {
			if i > 0 && w.start.Before(bars[i-1].end) {
				t.Fatalf("bar %d starts at %v, before the previous bar ends at %v", i, w.start, bars[i-1].end)
			}
			lo := 0
			for lo < len(barOf) && barOf[lo] < i {
				lo++
			}
			hi := lo
			for hi < len(barOf) && barOf[hi] == i {
				hi++
			}
			replayCheckBar(t, w, ticks[lo:hi])
		}
		st := p.Stats()
		if st.TicksEmitted != int64(len(ticks)) || st.BarsUsed != int64(len(bars)) {
			t.Fatalf("Stats() = %+v, but saw %d ticks in %d bars", st, len(ticks), len(bars))
		}
		if st.RowsRead != st.BarsUsed+st.RowsSkipped && (skipBad || st.RowsRead != st.BarsUsed+1) {
			t.Fatalf("Stats() = %+v: rows read do not add up", st)
		}
	})
}

// TestReplayIntradayGaps drops rows of a 1-minute file at its start, in
// its middle and at its end, as Yahoo does for minutes without trades:
// every remaining bar's ticks stay inside its own minute and reproduce its
// OHLCV, and no tick lands in a missing minute (which would make a phantom
// candle there). An explicit Interval gives the same.
func TestReplayIntradayGaps(t *testing.T) {
	day := time.Date(2024, 1, 2, 9, 30, 0, 0, time.FixedZone("EST", -5*3600))
	const bars = 60
	for _, tc := range []struct {
		name    string
		missing []int
	}{
		{"at the start", []int{1}},
		{"the first two", []int{0, 1}},
		{"in the middle", []int{30, 31, 32}},
		{"at the end", []int{bars - 2}},
		{"everywhere", []int{1, 2, 20, 40, bars - 2}},
	} {
		for _, interval := range []time.Duration{0, time.Minute} {
			t.Run(fmt.Sprintf("%s, interval %v", tc.name, interval), func(t *testing.T) {
				var b strings.Builder
				b.WriteString("Datetime,Open,High,Low,Close,Adj Close,Volume\n")
				var want []replayWantBar
				price := 80.0
				for i := range bars {
					o, c := price, price+float64(i%5-2)*0.02
					h, l := math.Max(o, c)+0.03, math.Min(o, c)-0.01
					price = c
					if slices.Contains(tc.missing, i) {
						continue
					}
					at := day.Add(time.Duration(i) * time.Minute)
					fmt.Fprintf(&b, "%s,%.2f,%.2f,%.2f,%.2f,%.2f,%d\n", at.Format("2006-01-02 15:04:05-07:00"), o, h, l, c, c, 10_000+i*100)
					want = append(want, replayWantBar{start: at, end: at.Add(time.Minute), open: replayCents(o), high: replayCents(h),
						low: replayCents(l), close: replayCents(c), volume: int64(10_000 + i*100)})
				}
				p, err := NewReplay(strings.NewReader(b.String()), ReplayConfig{Symbol: "GAPS", Interval: interval})
				if err != nil {
					t.Fatal(err)
				}
				ticks, err := replayDrain(t, p, "GAPS")
				if err != nil {
					t.Fatal(err)
				}
				// Every tick lies in a minute the file has a row for.
				for _, tk := range ticks {
					if i := int(tk.TS.Sub(day) / time.Minute); slices.Contains(tc.missing, i) {
						t.Fatalf("a tick at %v, in minute %d, which the file does not have", tk.TS, i)
					}
				}
				replayCheckBars(t, want, ticks)
			})
		}
	}
}
