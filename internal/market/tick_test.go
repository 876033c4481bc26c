package market

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// Instants AppendTime can write with a four-digit year in UTC.
var (
	minRoundTripTS = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	maxRoundTripTS = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
)

func randSymbol(r *rand.Rand) string {
	const first = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	const rest = first + "0123456789.-"
	b := make([]byte, 1+r.IntN(MaxSymbolLen))
	b[0] = first[r.IntN(len(first))]
	for i := 1; i < len(b); i++ {
		b[i] = rest[r.IntN(len(rest))]
	}
	return string(b)
}

// randTS returns an instant between year 1 and 9999 in a random fixed zone;
// half of them are near now, where real ticks are.
func randTS(r *rand.Rand) time.Time {
	var ts time.Time
	if r.IntN(2) == 0 {
		span := maxRoundTripTS.Unix() - minRoundTripTS.Unix()
		ts = time.Unix(minRoundTripTS.Unix()+r.Int64N(span), r.Int64N(1e9))
	} else {
		ts = time.Date(2026, 11, 25, 14, 30, 0, 0, time.UTC).Add(time.Duration(r.Int64N(int64(48*time.Hour))) - 24*time.Hour)
		ts = ts.Add(time.Duration(r.Int64N(1e9)))
	}
	zone := time.FixedZone("", (r.IntN(48*60-1)-(24*60-1))*60) // -23:59 to +23:59
	return ts.In(zone)
}

// randFloat returns a finite float: a price-like value, an extreme, or any
// bit pattern. Decode does not check ranges, so negatives are fine.
func randFloat(r *rand.Rand) float64 {
	switch r.IntN(4) {
	case 0:
		return math.Round(r.Float64()*1e6) / 100 // cents
	case 1:
		return r.Float64() * math.Pow(10, float64(r.IntN(40)-20))
	case 2:
		return [...]float64{0, math.Copysign(0, -1), math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64, 1e-300, 1e300}[r.IntN(7)]
	default:
		for {
			f := math.Float64frombits(r.Uint64())
			if !math.IsNaN(f) && !math.IsInf(f, 0) {
				return f
			}
		}
	}
}

func randInt(r *rand.Rand) int64 {
	switch r.IntN(3) {
	case 0:
		return 1 + r.Int64N(1e6)
	case 1:
		return [...]int64{0, 1, -1, math.MaxInt64, math.MinInt64}[r.IntN(5)]
	default:
		return int64(r.Uint64())
	}
}

func TestAppendJSONRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(2026, 1125))
	d := NewDecoder()
	var buf []byte
	noQuote := 0
	for i := range 20000 {
		in := Tick{
			Symbol: randSymbol(r),
			TS:     randTS(r),
			Seq:    randInt(r),
			Price:  randFloat(r),
			Size:   randInt(r),
			Bid:    randFloat(r),
			Ask:    randFloat(r),
		}
		if r.IntN(8) == 0 {
			in.Bid, in.Ask = 0, 0 // a trade-only feed's tick
		}
		if !in.HasQuote() {
			noQuote++
		}
		buf = in.AppendJSON(buf[:0])
		var out Tick
		if err := d.Decode(buf, &out); err != nil {
			t.Fatalf("tick %d: %+v encodes as %s, which does not decode: %v", i, in, buf, err)
		}
		want := in
		want.TS = in.TS.UTC().Truncate(time.Microsecond)
		if !in.HasQuote() {
			want.Bid, want.Ask = 0, 0 // left out on the wire, so -0 comes back as 0
		}
		if !sameTick(out, want) {
			t.Fatalf("tick %d: %s\ndecodes as %+v\n      want %+v", i, buf, out, want)
		}
	}
	if noQuote < 1000 {
		t.Fatalf("only %d of the ticks had no quote", noQuote)
	}
}

// TestAppendJSONExample pins the wire form of the format's example tick.
func TestAppendJSONExample(t *testing.T) {
	tk := goodTick()
	tk.TS = tk.TS.Add(789) // beyond microseconds: dropped
	if got := string(tk.AppendJSON(nil)); got != goodJSON {
		t.Errorf("AppendJSON = %s\n        want %s", got, goodJSON)
	}
	// Without a quote, bid and ask are left out.
	tk.Bid, tk.Ask = 0, 0
	if got, want := string(tk.AppendJSON(nil)), rec(`-bid`, `-ask`); got != want {
		t.Errorf("AppendJSON without a quote = %s\n                        want %s", got, want)
	}
	// Half a quote is a quote, a bad one, and written as it is so that
	// the rules can say what is wrong with it.
	tk.Bid = 189.22
	if got, want := string(tk.AppendJSON(nil)), rec(`ask=0`); got != want {
		t.Errorf("AppendJSON with ask 0 = %s\n                 want %s", got, want)
	}
	tk.TS = time.Date(2026, 11, 25, 9, 30, 0, 0, time.FixedZone("EST", -5*3600))
	if got, want := string(AppendTime(nil, tk.TS)), "2026-11-25T14:30:00.000000Z"; got != want {
		t.Errorf("AppendTime = %s, want %s", got, want)
	}
}

func TestParseTimeRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	for i := range 20000 {
		ts := randTS(r)
		if y := ts.Year(); y < 1 || y > 9999 {
			continue // RFC3339Nano would not write four digits
		}
		want := ts.UTC().Truncate(time.Microsecond)
		for _, s := range []string{
			string(AppendTime(nil, ts)),       // UTC, six digits
			ts.Format(time.RFC3339Nano),       // its own zone, 0 to 9 digits
			ts.Format(time.RFC3339),           // no fraction
			ts.UTC().Format(time.RFC3339Nano), // Z
		} {
			w := want
			if !strings.Contains(s, ".") {
				w = ts.UTC().Truncate(time.Second)
			}
			got, ok := ParseTime(s)
			if !ok {
				t.Fatalf("%d: ParseTime(%q) failed", i, s)
			}
			if !got.Equal(w) || got.Location() != time.UTC {
				t.Fatalf("%d: ParseTime(%q) = %v, want %v", i, s, got, w)
			}
			if gotB, ok := ParseTime([]byte(s)); !ok || !gotB.Equal(got) {
				t.Fatalf("%d: ParseTime([]byte(%q)) = %v, %v; the string gives %v", i, s, gotB, ok, got)
			}
		}
	}
}

// TestParseTimeStricterThanTimeParse lists the inputs time.Parse accepts
// with layout RFC3339Nano but ParseTime rejects on purpose, because RFC 3339
// does not allow them. FuzzParseTime skips these shapes.
func TestParseTimeStricterThanTimeParse(t *testing.T) {
	for _, s := range []string{
		"2026-11-25T9:30:00Z",       // one-digit hour
		"2026-11-25T14:30:00,123Z",  // comma before the fraction
		"2026-11-25T14:30:00+24:00", // offset hour over 23
		"2026-11-25T14:30:00+01:60", // offset minute over 59
	} {
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			t.Errorf("time.Parse(%q) now fails (%v): update this list and FuzzParseTime", s, err)
		}
		if ts, ok := ParseTime(s); ok {
			t.Errorf("ParseTime(%q) = %v, want failure", s, ts)
		}
	}
}

func TestHistoryName(t *testing.T) {
	for _, sym := range []string{"A", "AAPL", "BRK.B", "ABCDEFGHIJ", "ABCDEFGHIJKL"} {
		h := HistoryName(sym)
		if !ValidSymbol(h) || h == sym || h[:min(len(sym), len(h)-2)] != sym[:min(len(sym), len(h)-2)] {
			t.Errorf("HistoryName(%q) = %q", sym, h)
		}
	}
}
