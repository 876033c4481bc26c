package anomaly

import (
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/market"
)

var t0 = time.Date(2026, 11, 25, 14, 30, 0, 0, time.UTC)

// walk makes a calm synthetic tick series: a Gaussian random walk of the
// mid in cents, trades at the bid or the ask (so the trade price bounces),
// spreads of a few basis points, round-lot sizes with some odd lots, and
// exponential gaps between ticks.
type walk struct {
	rng       *rand.Rand
	tick      market.Tick
	mid       float64
	volBps    float64 // σ of the mid per tick
	spreadBps float64
	meanGap   time.Duration
}

func newWalk(seed uint64, symbol string, price float64) *walk {
	return &walk{
		rng:       rand.New(rand.NewPCG(seed, 7)),
		tick:      market.Tick{Symbol: symbol, TS: t0},
		mid:       price,
		volBps:    0.5,
		spreadBps: 2,
		meanGap:   15 * time.Millisecond,
	}
}

func cents(x float64) float64 { return math.Round(x*100) / 100 }

// next returns the following tick.
func (w *walk) next() market.Tick {
	t := &w.tick
	t.Seq++
	gap := time.Duration(w.rng.ExpFloat64() * float64(w.meanGap))
	t.TS = t.TS.Add(max(time.Microsecond, gap.Truncate(time.Microsecond)))
	w.mid *= math.Exp(w.volBps * 1e-4 * w.rng.NormFloat64())
	spread := math.Max(0.01, cents(w.mid*w.spreadBps*1e-4*(0.5+w.rng.Float64())))
	t.Bid = cents(w.mid - spread/2)
	t.Ask = cents(t.Bid + spread)
	switch u := w.rng.Float64(); {
	case u < 0.45:
		t.Price = t.Bid
	case u < 0.9:
		t.Price = t.Ask
	default:
		t.Price = cents(w.mid)
	}
	if w.rng.Float64() < 0.07 {
		t.Size = 1 + w.rng.Int64N(99)
	} else {
		t.Size = 100 * (1 + w.rng.Int64N(4))
	}
	return *t
}

// jump moves the mid by the fraction m, so the next tick trades there.
func (w *walk) jump(m float64) { w.mid *= 1 + m }

// feed observes n ticks of w, passing each through edit if not nil, and
// returns the anomalies.
func feed(d *Detector, w *walk, n int, edit func(i int, t *market.Tick)) []Anomaly {
	var out []Anomaly
	for i := range n {
		t := w.next()
		if edit != nil {
			edit(i, &t)
		}
		out = d.Observe(out, &t, Context{})
	}
	return out
}

func ofKind(as []Anomaly, k Kind) []Anomaly {
	var out []Anomaly
	for _, a := range as {
		if a.Kind == k {
			out = append(out, a)
		}
	}
	return out
}

// checkSane fails on anomalies no detector should produce: a non-finite
// number, an unknown kind or severity, an empty detail, or two of a kind at
// one time.
func checkSane(t testing.TB, as []Anomaly) {
	t.Helper()
	type key struct {
		sym     string
		sec, us int64
		kind    Kind
	}
	seen := map[key]bool{}
	for _, a := range as {
		if math.IsNaN(a.Value) || math.IsInf(a.Value, 0) || math.IsNaN(a.Threshold) || math.IsInf(a.Threshold, 0) {
			t.Fatalf("non-finite numbers in %+v", a)
		}
		if !a.Severity.Valid() || a.Detail == "" {
			t.Fatalf("bad severity or empty detail in %+v", a)
		}
		switch a.Kind {
		case KindPriceJump, KindVolumeBurst, KindSpreadBlowout, KindBandBreak, KindVWAPDeviation, KindSeqGap, KindStale:
		default:
			t.Fatalf("unknown kind in %+v", a)
		}
		k := key{a.Symbol, a.TS.Unix(), int64(a.TS.Nanosecond() / 1000), a.Kind}
		if seen[k] {
			t.Fatalf("two %s anomalies at %v", a.Kind, a.TS)
		}
		seen[k] = true
	}
}

func TestPriceJump(t *testing.T) {
	for _, tc := range []struct {
		name string
		move float64
		sev  Severity
	}{
		{"up 2% medium", 0.02, SeverityMedium},
		{"down 2% medium", -0.02, SeverityMedium},
		{"up 5% high", 0.05, SeverityHigh},
		{"down 3.5% high", -0.035, SeverityHigh},
		{"up 0.7% low", 0.007, SeverityLow},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDetector(DefaultConfig())
			w := newWalk(1, "AAPL", 270)
			out := feed(d, w, 2000, nil)
			w.jump(tc.move)
			jt := w.next()
			out = d.Observe(out, &jt, Context{})
			out = append(out, feed(d, w, 2000, nil)...)
			checkSane(t, out)
			if len(out) != 1 {
				t.Fatalf("got %d anomalies, want one price_jump: %+v", len(out), out)
			}
			a := out[0]
			if a.Kind != KindPriceJump || !a.TS.Equal(jt.TS) || a.Symbol != "AAPL" {
				t.Fatalf("got %+v, want a price_jump at %v", a, jt.TS)
			}
			if math.Signbit(a.Value) != (tc.move < 0) || math.Signbit(a.Threshold) != (tc.move < 0) {
				t.Errorf("value %v, threshold %v: wrong sign for a move of %v", a.Value, a.Threshold, tc.move)
			}
			if math.Abs(a.Value) < math.Abs(a.Threshold) {
				t.Errorf("|value| %v below |threshold| %v", a.Value, a.Threshold)
			}
			if a.Severity != tc.sev {
				t.Errorf("severity %s, want %s", a.Severity, tc.sev)
			}
			verb := "rose"
			if tc.move < 0 {
				verb = "fell"
			}
			if !strings.HasPrefix(a.Detail, "AAPL "+verb+" ") {
				t.Errorf("detail %q does not say AAPL %s", a.Detail, verb)
			}
		})
	}
}

// TestPriceJumpNotBlinded checks that a jump does not inflate the
// volatility estimate enough to hide the next one, a cooldown later.
func TestPriceJumpNotBlinded(t *testing.T) {
	d := NewDetector(DefaultConfig())
	w := newWalk(2, "MSFT", 510)
	out := feed(d, w, 1000, nil)
	for _, m := range []float64{0.03, -0.012, 0.011} {
		w.jump(m)
		out = append(out, feed(d, w, 600, nil)...) // about 9 s, past the cooldown
	}
	checkSane(t, out)
	if got := ofKind(out, KindPriceJump); len(got) != 3 || len(out) != 3 {
		t.Fatalf("got %+v, want three price jumps", out)
	}
}

// TestPriceJumpFloor checks the floors: a quiet stock that sits on one price
// and then moves a few cents is not a jump, however small its estimated
// volatility.
func TestPriceJumpFloor(t *testing.T) {
	d := NewDetector(DefaultConfig())
	w := newWalk(3, "KO", 70)
	w.volBps = 0
	feed(d, w, 500, func(i int, t *market.Tick) { t.Price, t.Bid, t.Ask = 70, 70, 70.01 })
	out := feed(d, w, 1, func(i int, t *market.Tick) { t.Price, t.Bid, t.Ask = 70.2, 70.19, 70.2 }) // +29 bp
	if len(out) != 0 {
		t.Fatalf("a 29 bp move on a flat stock raised %+v", out)
	}
	// Before the warm-up is over nothing fires either.
	d = NewDetector(DefaultConfig())
	w = newWalk(3, "KO", 70)
	out = feed(d, w, 10, nil)
	w.jump(0.05)
	out = append(out, feed(d, w, 1, nil)...)
	if len(out) != 0 {
		t.Fatalf("a jump during the warm-up raised %+v", out)
	}
}

// TestPriceJumpLongGap checks that a move after a long silence is judged
// against the volatility of that much time, not of one ordinary gap.
func TestPriceJumpLongGap(t *testing.T) {
	cfg := DefaultConfig()
	d := NewDetector(cfg)
	w := newWalk(4, "NVDA", 195)
	w.volBps = 3
	out := feed(d, w, 2000, nil)
	// 20 minutes of diffusion at 3 bp per 15 ms tick is about 85 bp of σ:
	// a 1% move then is ordinary.
	w.tick.TS = w.tick.TS.Add(20 * time.Minute)
	w.jump(0.01)
	out = append(out, feed(d, w, 100, nil)...)
	if len(ofKind(out, KindPriceJump)) != 0 {
		t.Fatalf("a 1%% move after 20 minutes of silence raised %+v", out)
	}
}

func TestCalmWalkIsQuiet(t *testing.T) {
	n := 200_000
	if testing.Short() {
		n = 50_000
	}
	for seed := uint64(1); seed <= 4; seed++ {
		d := NewDetector(DefaultConfig())
		w := newWalk(seed, "CALM", 20+40*float64(seed))
		w.volBps = 0.5 * float64(seed)
		w.spreadBps = float64(seed)
		var out []Anomaly
		for range n {
			tk := w.next()
			c := Context{SessionVWAP: w.mid, HasVWAP: true}
			out = d.Observe(out, &tk, c)
			out = d.idle(out, "CALM", tk.TS.Add(-time.Second))
		}
		if len(out) != 0 {
			t.Errorf("seed %d: a calm walk of %d ticks raised %d anomalies, first %+v", seed, n, len(out), out[0])
		}
	}
}

func TestVolumeBurst(t *testing.T) {
	for _, tc := range []struct {
		name   string
		n      int
		size   int64
		want   int
		wantSv Severity
	}{
		// The typical trade of the walk is about 250 shares, so five
		// of them come to about 1250.
		{"8 trades of 4000", 8, 4000, 1, SeverityLow},
		{"12 trades of 2000", 12, 2000, 1, SeverityLow},
		{"one trade of 50000", 1, 50000, 1, SeverityHigh},
		{"one trade of 25000", 1, 25000, 1, SeverityMedium},
		{"4 trades of 1200 is not a burst", 4, 1200, 0, ""},
		{"one trade of 5000 is not a burst", 1, 5000, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDetector(DefaultConfig())
			w := newWalk(5, "JPM", 315)
			out := feed(d, w, 500, nil)
			var first time.Time
			out = append(out, feed(d, w, tc.n, func(i int, tk *market.Tick) {
				tk.Size = tc.size
				if i == 0 {
					first = tk.TS
				}
			})...)
			last := w.tick.TS
			out = append(out, feed(d, w, 500, nil)...)
			checkSane(t, out)
			if len(out) != tc.want {
				t.Fatalf("got %+v, want %d volume_burst", out, tc.want)
			}
			if tc.want == 0 {
				return
			}
			a := out[0]
			if a.Kind != KindVolumeBurst || a.TS.Before(first) || a.TS.After(last) {
				t.Fatalf("got %+v, want a volume_burst between %v and %v", a, first, last)
			}
			if a.Severity != tc.wantSv {
				t.Errorf("severity %s, want %s (value %.1f)", a.Severity, tc.wantSv, a.Value)
			}
		})
	}
}

func TestSpreadBlowout(t *testing.T) {
	d := NewDetector(DefaultConfig())
	w := newWalk(6, "ADBE", 345)
	out := feed(d, w, 500, nil)
	var first time.Time
	out = append(out, feed(d, w, 10, func(i int, tk *market.Tick) {
		tk.Ask = cents(tk.Bid * 1.006) // 60 bp against a typical 2
		if i == 0 {
			first = tk.TS
		}
	})...)
	out = append(out, feed(d, w, 500, nil)...)
	checkSane(t, out)
	if len(out) != 1 || out[0].Kind != KindSpreadBlowout || !out[0].TS.Equal(first) {
		t.Fatalf("got %+v, want one spread_blowout at %v", out, first)
	}
	if out[0].Severity != SeverityHigh {
		t.Errorf("severity %s for a 30× spread, want high", out[0].Severity)
	}
	// A locked market (bid = ask) for a while, then an ordinary spread,
	// must not divide by zero into a blow-out.
	d = NewDetector(DefaultConfig())
	out = feed(d, w, 200, func(i int, tk *market.Tick) { tk.Bid, tk.Price = tk.Ask, tk.Ask })
	out = append(out, feed(d, w, 100, nil)...)
	checkSane(t, out)
	if len(out) != 0 {
		t.Fatalf("after a locked market: %+v", out)
	}
}

// TestSpreadSkipsTicksWithoutQuote feeds ticks without a quote, as a
// trade-only feed sends them, at each stage of the spread detector: they
// raise no spread_blowout and leave its state (the window of spreads, the
// episode) as it was, while the other detectors still see them.
func TestSpreadSkipsTicksWithoutQuote(t *testing.T) {
	cfg := DefaultConfig()
	for _, tc := range []struct {
		name   string
		quoted int // ordinary quoted ticks first
		blown  int // then ticks with a blown-out spread
		bare   int // then ticks without a quote
	}{
		{"trade-only from the start", 0, 0, 600},
		{"in the warm-up", cfg.SpreadWarmup / 2, 0, 300},
		{"after the warm-up", 500, 0, 300},
		{"inside a blow-out", 500, 3, 300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDetector(cfg)
			w := newWalk(11, "FHUB", 120)
			// 300 ticks 100 ms apart: several cooldowns without a quote.
			w.meanGap = 100 * time.Millisecond
			out := feed(d, w, tc.quoted, nil)
			out = append(out, feed(d, w, tc.blown, func(_ int, tk *market.Tick) { tk.Ask = cents(tk.Bid * 1.006) })...)
			if got, want := len(ofKind(out, KindSpreadBlowout)), min(tc.blown, 1); got != want {
				t.Fatalf("before the ticks without a quote: %d spread_blowout, want %d", got, want)
			}
			spr := window{ring: slices.Clone(d.spr.ring), sorted: slices.Clone(d.spr.sorted), head: d.spr.head, n: d.spr.n}
			ep, volN := d.ep[epSpread], d.vol.n

			bare := feed(d, w, tc.bare, func(_ int, tk *market.Tick) { tk.Bid, tk.Ask = 0, 0 })
			checkSane(t, bare)
			if got := ofKind(bare, KindSpreadBlowout); len(got) != 0 {
				t.Errorf("ticks without a quote raised %+v", got)
			}
			if !reflect.DeepEqual(d.spr, spr) || d.ep[epSpread] != ep {
				t.Errorf("ticks without a quote changed the spread state: window of %d spreads (head %d, typical %g) → %d (head %d, typical %g), episode %+v → %+v",
					spr.n, spr.head, spr.typical(), d.spr.n, d.spr.head, d.spr.typical(), ep, d.ep[epSpread])
			}
			if d.vol.n != min(volN+tc.bare, cfg.VolumeWindow) || d.prevPrice != w.tick.Price {
				t.Errorf("the other detectors did not see the ticks without a quote: %d sizes (had %d), previous price %v, last %v",
					d.vol.n, volN, d.prevPrice, w.tick.Price)
			}

			// Quoted ticks carry on where they left off.
			feed(d, w, 1, nil)
			if d.spr.n != min(spr.n+1, cfg.SpreadWindow) {
				t.Errorf("a quoted tick after them: %d spreads, want %d", d.spr.n, min(spr.n+1, cfg.SpreadWindow))
			}
		})
	}
}

// TestCooldown checks the boundary: a second blow-out fires only when the
// spread has been ordinary for at least the cooldown since the last blown
// tick.
func TestCooldown(t *testing.T) {
	cfg := DefaultConfig()
	for _, tc := range []struct {
		quiet time.Duration
		want  int
	}{
		{cfg.SpreadCooldown - time.Microsecond, 1},
		{cfg.SpreadCooldown, 2},
		{cfg.SpreadCooldown + time.Second, 2},
	} {
		d := NewDetector(cfg)
		w := newWalk(7, "TSLA", 430)
		w.meanGap = 100 * time.Millisecond
		out := feed(d, w, 300, nil)
		blow := func(tk *market.Tick) { tk.Ask = cents(tk.Bid * 1.005) }
		// Episode one: three blown ticks, the last at lastHit.
		out = append(out, feed(d, w, 3, func(_ int, tk *market.Tick) { blow(tk) })...)
		lastHit := w.tick.TS
		// Ordinary ticks, all before the second episode.
		for {
			tk := w.next()
			if !tk.TS.Before(lastHit.Add(tc.quiet)) {
				break
			}
			out = d.Observe(out, &tk, Context{})
		}
		tk := w.next()
		tk.TS = lastHit.Add(tc.quiet)
		blow(&tk)
		out = d.Observe(out, &tk, Context{})
		checkSane(t, out)
		if got := len(ofKind(out, KindSpreadBlowout)); got != tc.want || len(out) != got {
			t.Errorf("quiet %v: got %+v, want %d spread_blowout", tc.quiet, out, tc.want)
		}
	}
}

// TestEpisodeLongerThanCooldown checks that an event outlasting its cooldown
// is still a single alert.
func TestEpisodeLongerThanCooldown(t *testing.T) {
	cfg := DefaultConfig()
	d := NewDetector(cfg)
	w := newWalk(8, "PLTR", 185)
	w.meanGap = time.Second
	out := feed(d, w, 300, nil)
	// 30 blown ticks a second apart: six cooldowns long.
	base := w.tick.TS
	out = append(out, feed(d, w, 30, func(i int, tk *market.Tick) {
		tk.TS = base.Add(time.Duration(i+1) * time.Second)
		tk.Ask = cents(tk.Bid * 1.005)
	})...)
	if got := len(ofKind(out, KindSpreadBlowout)); got != 1 {
		t.Fatalf("a 30 s blow-out raised %d alerts: %+v", got, out)
	}
}

func TestBandBreakAndVWAP(t *testing.T) {
	cfg := DefaultConfig()
	d := NewDetector(cfg)
	w := newWalk(9, "HD", 385)
	var out []Anomaly
	obs := func(price float64, c Context) {
		tk := w.next()
		tk.Price = price
		out = d.Observe(out, &tk, c)
	}
	band := Context{BBLower: 384, BBUpper: 386, HasBands: true, SessionVWAP: 385, HasVWAP: true}
	for range 100 {
		obs(385, band)
	}
	obs(386.2, band) // above the band, but by less than the margin (0.25 = 0.25 $)
	obs(383.9, band) // likewise below
	if got := ofKind(out, KindBandBreak); len(got) != 0 {
		t.Fatalf("inside the margin: %+v", got)
	}
	obs(386.3, band) // 1.3 half-widths: a break
	obs(386.4, band) // same episode
	if got := ofKind(out, KindBandBreak); len(got) != 1 || got[0].Value <= 1.25 || got[0].Threshold != 1.25 || got[0].Severity != SeverityLow {
		t.Fatalf("got %+v, want one band_break above", got)
	}
	// A band that has no width, or is not known, is ignored.
	out = out[:0]
	obs(400, Context{BBLower: 385, BBUpper: 385, HasBands: true})
	obs(400, Context{BBLower: 390, BBUpper: 380, HasBands: true})
	obs(400, Context{BBLower: math.NaN(), BBUpper: 386, HasBands: true})
	obs(400, Context{BBLower: 384, BBUpper: 386})
	if got := ofKind(out, KindBandBreak); len(got) != 0 {
		t.Fatalf("degenerate bands: %+v", got)
	}
	// VWAP: 2% away fires once for the episode; a zero VWAP is ignored.
	out = out[:0]
	obs(385, Context{SessionVWAP: 0, HasVWAP: true})
	obs(392.8, Context{SessionVWAP: 385, HasVWAP: true})
	obs(393, Context{SessionVWAP: 385, HasVWAP: true})
	if got := ofKind(out, KindVWAPDeviation); len(got) != 1 || got[0].Value < 200 || got[0].Threshold != 200 {
		t.Fatalf("got %+v, want one vwap_deviation", got)
	}
	obs(376, Context{SessionVWAP: 385, HasVWAP: true}) // below, same episode
	if got := ofKind(out, KindVWAPDeviation); len(got) != 1 {
		t.Fatalf("a second deviation within the cooldown: %+v", got)
	}
	checkSane(t, out)
}

func TestSeqGap(t *testing.T) {
	type step struct {
		seq  int64
		ms   int64 // event time, ms after t0
		idle int64 // if > 0, call Idle with the watermark at this ms instead
	}
	for _, tc := range []struct {
		name    string
		steps   []step
		want    []float64 // Value of each seq_gap, in order
		wantTS  []int64   // its TS, ms after t0
		pending int
	}{
		{"no gap", []step{{1, 0, 0}, {2, 10, 0}, {3, 20, 0}, {0, 0, 1000}}, nil, nil, 0},
		{"filled late", []step{{1, 0, 0}, {4, 30, 0}, {3, 25, 0}, {5, 40, 0}, {2, 15, 0}, {0, 0, 1000}}, nil, nil, 0},
		{"unfilled", []step{{1, 0, 0}, {4, 30, 0}, {5, 40, 0}, {0, 0, 30}, {0, 0, 31}, {0, 0, 1000}}, []float64{2}, []int64{30}, 0},
		{"partly filled", []step{{1, 0, 0}, {5, 30, 0}, {3, 20, 0}, {0, 0, 31}}, []float64{2}, []int64{30}, 0},
		{"filled after the watermark passed", []step{{1, 0, 0}, {3, 30, 0}, {0, 0, 31}, {2, 20, 0}, {0, 0, 1000}}, []float64{1}, []int64{30}, 0},
		{"two gaps, one due", []step{{1, 0, 0}, {3, 30, 0}, {6, 60, 0}, {0, 0, 40}}, []float64{1}, []int64{30}, 1},
		{"a gap revealed out of time order", []step{{1, 0, 0}, {3, 30, 0}, {5, 20, 0}, {0, 0, 100}}, []float64{1, 1}, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDetector(DefaultConfig())
			var out []Anomaly
			for _, s := range tc.steps {
				if s.idle > 0 {
					out = d.idle(out, "XOM", t0.Add(time.Duration(s.idle)*time.Millisecond))
					continue
				}
				tk := market.Tick{Symbol: "XOM", TS: t0.Add(time.Duration(s.ms) * time.Millisecond), Seq: s.seq, Price: 118, Size: 100, Bid: 117.99, Ask: 118.01}
				out = d.Observe(out, &tk, Context{})
			}
			checkSane(t, out)
			gaps := ofKind(out, KindSeqGap)
			if len(gaps) != len(tc.want) || len(out) != len(gaps) {
				t.Fatalf("got %+v, want %d seq_gap", out, len(tc.want))
			}
			for i, g := range gaps {
				if g.Value != tc.want[i] || g.Severity != SeverityMedium || g.Symbol != "XOM" {
					t.Errorf("gap %d: %+v, want value %v", i, g, tc.want[i])
				}
				if tc.wantTS != nil && !g.TS.Equal(t0.Add(time.Duration(tc.wantTS[i])*time.Millisecond)) {
					t.Errorf("gap %d at %v, want %d ms after start", i, g.TS, tc.wantTS[i])
				}
			}
			if len(d.gaps) != tc.pending {
				t.Errorf("%d gaps pending, want %d", len(d.gaps), tc.pending)
			}
		})
	}
}

// TestSeqGapBound checks that the pending set stays bounded: the gap that
// would exceed it pushes out the oldest, which is reported at once.
func TestSeqGapBound(t *testing.T) {
	cfg := DefaultConfig()
	cfg.GapMaxPending = 3
	d := NewDetector(cfg)
	var out []Anomaly
	for i := range int64(6) {
		tk := market.Tick{Symbol: "BAC", TS: t0.Add(time.Duration(i) * time.Second), Seq: 1 + 2*i, Price: 53, Size: 100, Bid: 52.99, Ask: 53.01}
		out = d.Observe(out, &tk, Context{})
	}
	// seqs 1,3,5,7,9,11: gaps at 2,4,6,8,10; the first two were pushed out.
	if len(out) != 2 || len(d.gaps) != 3 || out[0].TS.Equal(out[1].TS) {
		t.Fatalf("got %+v and %d pending, want 2 reported and 3 pending", out, len(d.gaps))
	}
	// A huge gap counts without overflowing.
	tk := market.Tick{Symbol: "BAC", TS: t0.Add(time.Hour), Seq: math.MaxInt64, Price: 53, Size: 100, Bid: 52.99, Ask: 53.01}
	out = d.Observe(out[:0], &tk, Context{})
	out = d.idle(out, "BAC", t0.Add(2*time.Hour))
	checkSane(t, out)
	gaps := ofKind(out, KindSeqGap)
	if len(gaps) != 4 || gaps[3].Value != float64(math.MaxInt64-12) {
		t.Fatalf("huge gap: %+v", out)
	}
}

func TestStale(t *testing.T) {
	cfg := DefaultConfig()
	d := NewDetector(cfg)
	var out []Anomaly
	if out = d.idle(out, "WMT", t0.Add(time.Hour)); len(out) != 0 {
		t.Fatalf("stale before any tick: %+v", out)
	}
	w := newWalk(10, "WMT", 105)
	out = feed(d, w, 100, nil)
	last := w.tick.TS
	out = d.idle(out, "WMT", last.Add(cfg.StaleAfter-time.Microsecond))
	if len(out) != 0 {
		t.Fatalf("stale too early: %+v", out)
	}
	for _, wm := range []time.Duration{cfg.StaleAfter, cfg.StaleAfter + time.Second, time.Hour} {
		out = d.idle(out, "WMT", last.Add(wm))
	}
	if len(out) != 1 || out[0].Kind != KindStale || !out[0].TS.Equal(last.Add(cfg.StaleAfter)) ||
		out[0].Value != cfg.StaleAfter.Seconds() || out[0].Symbol != "WMT" {
		t.Fatalf("got %+v, want one stale at %v", out, last.Add(cfg.StaleAfter))
	}
	// Ticking again re-arms it.
	w.tick.TS = last.Add(2 * time.Hour)
	out = feed(d, w, 1, nil)
	out = d.idle(out, "WMT", w.tick.TS.Add(time.Minute))
	if len(out) != 1 || !out[0].TS.Equal(w.tick.TS.Add(cfg.StaleAfter)) {
		t.Fatalf("after ticking again: %+v", out)
	}
}

// TestOutOfOrder checks that a tick arriving behind a higher seq neither
// raises nor moves anything: its price is older than the one already judged.
func TestOutOfOrder(t *testing.T) {
	d := NewDetector(DefaultConfig())
	w := newWalk(11, "CRM", 255)
	out := feed(d, w, 1000, nil)
	held := w.next()
	held.Price *= 1.05 // a stale print far from the market
	out = append(out, feed(d, w, 3, nil)...)
	out = d.Observe(out, &held, Context{})
	out = append(out, feed(d, w, 100, nil)...)
	out = d.idle(out, "CRM", w.tick.TS)
	if len(out) != 0 {
		t.Fatalf("an out-of-order tick raised %+v", out)
	}
}

func TestZeroDetector(t *testing.T) {
	var d Detector
	w := newWalk(12, "V", 345)
	out := feed(&d, w, 1000, nil)
	w.jump(0.02)
	out = append(out, feed(&d, w, 10, nil)...)
	if len(out) != 1 || out[0].Kind != KindPriceJump {
		t.Fatalf("zero Detector: %+v", out)
	}
	if d.Config() != DefaultConfig() {
		t.Errorf("zero Detector's config is not the default")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for name, edit := range map[string]func(*Config){
		"lambda 1":           func(c *Config) { c.JumpLambda = 1 },
		"NaN z":              func(c *Config) { c.JumpZ = math.NaN() },
		"zero floor":         func(c *Config) { c.JumpSigmaFloorBps = 0 },
		"high below medium":  func(c *Config) { c.JumpHighBps = 10 },
		"window too big":     func(c *Config) { c.VolumeWindow = MaxWindow + 1 },
		"span over window":   func(c *Config) { c.VolumeSpan = c.VolumeWindow + 1 },
		"warmup 0":           func(c *Config) { c.SpreadWarmup = 0 },
		"negative cooldown":  func(c *Config) { c.BandCooldown = -1 },
		"bad severity":       func(c *Config) { c.VWAPSeverity = "urgent" },
		"no pending gaps":    func(c *Config) { c.GapMaxPending = 0 },
		"zero stale":         func(c *Config) { c.StaleAfter = 0 },
		"infinite vwap":      func(c *Config) { c.VWAPDeviationBps = math.Inf(1) },
		"negative min move":  func(c *Config) { c.JumpMinMoveBps = -1 },
		"zero volume ratio":  func(c *Config) { c.VolumeRatio = 0 },
		"negative band edge": func(c *Config) { c.BandMargin = -0.1 },
	} {
		cfg := DefaultConfig()
		edit(&cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: Validate accepted it", name)
		}
		// NewDetector repairs it to a valid configuration.
		if err := NewDetector(cfg).Config().Validate(); err != nil {
			t.Errorf("%s: NewDetector kept a bad config: %v", name, err)
		}
	}
}

func TestObserveAllocs(t *testing.T) {
	d := NewDetector(DefaultConfig())
	w := newWalk(13, "AMD", 245)
	ticks := make([]market.Tick, 4096)
	for i := range ticks {
		ticks[i] = w.next()
	}
	c := Context{BBLower: 200, BBUpper: 300, HasBands: true, SessionVWAP: 245, HasVWAP: true}
	var out []Anomaly
	i := 0
	allocs := testing.AllocsPerRun(4000, func() {
		out = d.Observe(out[:0], &ticks[i%len(ticks)], c)
		i++
	})
	if len(out) != 0 {
		t.Fatalf("the calm series raised %+v", out)
	}
	if allocs != 0 {
		t.Errorf("Observe allocates %v times per tick when nothing fires", allocs)
	}
}

func BenchmarkObserve(b *testing.B) {
	d := NewDetector(DefaultConfig())
	w := newWalk(14, "AMD", 245)
	const n = 1 << 14
	ticks := make([]market.Tick, n)
	for i := range ticks {
		ticks[i] = w.next()
	}
	c := Context{BBLower: 200, BBUpper: 300, HasBands: true, SessionVWAP: 245, HasVWAP: true}
	out := make([]Anomaly, 0, 8)
	var tk market.Tick
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		// Walk the series forwards then backwards, so consecutive
		// prices stay neighbours however long the benchmark runs, with
		// seq and time always moving on.
		j := i % (2 * n)
		if j >= n {
			j = 2*n - 1 - j
		}
		tk = ticks[j]
		tk.Seq = int64(i + 1)
		tk.TS = t0.Add(time.Duration(i) * 15 * time.Millisecond)
		out = d.Observe(out[:0], &tk, c)
	}
	if len(out) != 0 {
		b.Fatalf("the calm series raised %+v", out)
	}
}
