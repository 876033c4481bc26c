package market

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzRules checks Rules.Check against the rules restated plainly: Check
// accepts a tick exactly when no rule is broken, and a rejection names one
// of the rules the tick breaks, in one line. A tick it accepts survives the
// wire format: encoded and decoded again, it is the same tick (to the
// microsecond the format keeps) and still accepted.
func FuzzRules(f *testing.F) {
	good := time.Date(2026, 11, 2, 14, 30, 0, 123456789, time.UTC)
	now := good.Add(time.Second)
	f.Add("AAPL", good.Unix(), int64(good.Nanosecond()), int64(1), 189.23, int64(100), 189.22, 189.24, now.Unix(), int64(time.Minute))
	f.Add("AAPL", good.Unix(), int64(0), int64(0), 189.23, int64(100), 189.22, 189.24, now.Unix(), int64(time.Minute))
	f.Add("BRK.B", good.Unix(), int64(0), int64(7), math.NaN(), int64(100), 1.0, 2.0, now.Unix(), int64(time.Minute))
	f.Add("X", good.Unix(), int64(0), int64(7), 1e9, int64(1e12), 1e9, 1e9, now.Unix(), int64(0))
	f.Add("X", good.Unix(), int64(0), int64(7), 1e9+1, int64(1e12+1), 2.0, 1.0, now.Unix(), int64(0))
	f.Add("X", int64(86399), int64(999999999), int64(7), 1.0, int64(1), 1.0, 1.0, now.Unix(), int64(time.Minute))
	f.Add("X", now.Unix()+61, int64(0), int64(7), 1.0, int64(1), math.Inf(1), math.Inf(-1), now.Unix(), int64(time.Minute))
	f.Add("X", int64(-62135596800), int64(0), int64(-1), math.Copysign(0, -1), int64(-5), 5e-324, 5e-324, int64(253402300799), int64(math.MaxInt64))
	// Without a quote (a trade-only feed), with half of one, and with a
	// quote of -0 and 0, which is none.
	f.Add("AAPL", good.Unix(), int64(0), int64(1), 189.23, int64(100), 0.0, 0.0, now.Unix(), int64(time.Minute))
	f.Add("AAPL", good.Unix(), int64(0), int64(1), 189.23, int64(100), 189.22, 0.0, now.Unix(), int64(time.Minute))
	f.Add("AAPL", good.Unix(), int64(0), int64(1), 189.23, int64(100), 0.0, math.NaN(), now.Unix(), int64(time.Minute))
	f.Add("AAPL", good.Unix(), int64(0), int64(1), 189.23, int64(100), math.Copysign(0, -1), 0.0, now.Unix(), int64(time.Minute))

	f.Fuzz(func(t *testing.T, sym string, sec, nsec, seq int64, price float64, size int64, bid, ask float64, nowSec, maxFuture int64) {
		rules := DefaultRules()
		// Up to a year: Check measures with time.Sub, which saturates
		// 292 years out, and no one allows ticks that far ahead.
		rules.MaxFuture = time.Duration(maxFuture % int64(365*24*time.Hour))
		if rules.MaxFuture < 0 {
			rules.MaxFuture = -rules.MaxFuture
		}
		tk := Tick{Symbol: sym, TS: time.Unix(sec, nsec).UTC(), Seq: seq, Price: price, Size: size, Bid: bid, Ask: ask}
		clock := time.Unix(nowSec, 0).UTC()

		broken := brokenRules(rules, &tk, clock)
		err := rules.Check(&tk, clock)
		if err == nil {
			if len(broken) > 0 {
				t.Fatalf("Check accepts %+v at %v, which breaks %v", tk, clock, broken)
			}
		} else {
			var rej *Rejection
			if !errors.As(err, &rej) {
				t.Fatalf("Check(%+v) = %v (%T), want a *Rejection", tk, err, err)
			}
			if !broken[rej.Reason] {
				t.Fatalf("Check(%+v) at %v rejects it as %s, but it breaks only %v", tk, clock, rej.Reason, broken)
			}
			if rej.Detail == "" || strings.ContainsAny(rej.Detail, "\n\r") || !utf8.ValidString(rej.Detail) {
				t.Fatalf("Check(%+v): detail %q is not one line of text", tk, rej.Detail)
			}
			return
		}

		// Round trip through the wire format, for ticks it can carry.
		if !ValidSymbol(sym) || tk.TS.Year() > 9999 {
			return
		}
		wire := tk.AppendJSON(nil)
		var back Tick
		if err := NewDecoder().Decode(wire, &back); err != nil {
			t.Fatalf("an accepted tick %+v does not decode from its own encoding %s: %v", tk, wire, err)
		}
		want := tk
		want.TS = tk.TS.Truncate(time.Microsecond)
		if tk.Bid == 0 && tk.Ask == 0 {
			// No quote: the wire form leaves it out, so a -0 comes
			// back as 0.
			want.Bid, want.Ask = 0, 0
		}
		if !sameTick(back, want) {
			t.Fatalf("round trip of %s\n got %+v\nwant %+v", wire, back, want)
		}
		if err := rules.Check(&back, clock); err != nil {
			t.Fatalf("Check accepts %+v but not its round trip %+v: %v", tk, back, err)
		}
	})
}

// brokenRules restates the tick rules independently of Check: the reasons
// that apply to t at now. A tick whose bid and ask are both 0 has no quote
// (a trade-only feed's), and no quote rule applies to it.
func brokenRules(r Rules, t *Tick, now time.Time) map[Reason]bool {
	in := func(v, hi float64) bool { return v > 0 && v <= hi } // false for NaN
	b := map[Reason]bool{}
	if t.Seq < 1 {
		b[ReasonBadSeq] = true
	}
	if !in(t.Price, r.MaxPrice) {
		b[ReasonBadPrice] = true
	}
	if t.Size < 1 || t.Size > r.MaxSize {
		b[ReasonBadSize] = true
	}
	switch {
	case t.Bid == 0 && t.Ask == 0: // no quote
	case !in(t.Bid, r.MaxPrice) || !in(t.Ask, r.MaxPrice):
		b[ReasonBadQuote] = true
	case t.Bid > t.Ask:
		b[ReasonCrossedQuote] = true
	}
	if t.TS.Before(r.MinTS) {
		b[ReasonAncientTS] = true
	}
	if t.TS.After(now.Add(r.MaxFuture)) {
		b[ReasonFutureTS] = true
	}
	return b
}
