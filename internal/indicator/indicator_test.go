package indicator

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stockpipe/stockpipe/internal/snapshot"
)

// relClose reports whether a and b agree within tol relative to the larger.
func relClose(a, b, tol float64) bool {
	if a == b {
		return true
	}
	return math.Abs(a-b) <= tol*math.Max(math.Abs(a), math.Abs(b))
}

// walk returns n closes of a geometric random walk from start with per-step
// volatility sigma, rounded to tick (0: not rounded), repeating the previous
// close one time in twenty so that flat steps (zero changes) occur.
func walk(seed uint64, n int, start, sigma, tick float64) []float64 {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	xs := make([]float64, n)
	x := start
	for i := range xs {
		if i > 0 && rng.IntN(20) == 0 {
			xs[i] = xs[i-1]
			continue
		}
		x *= math.Exp(sigma * rng.NormFloat64())
		xs[i] = x
		if tick > 0 {
			xs[i] = math.Max(tick, math.Round(x/tick)*tick)
		}
	}
	return xs
}

var walks = []struct {
	name               string
	seed               uint64
	start, sigma, tick float64
}{
	{"large cap in cents", 1, 180, 0.01, 0.01},
	{"penny stock", 2, 0.05, 0.03, 0.0001},
	{"high price unrounded", 3, 50000, 0.002, 0},
	{"volatile", 4, 20, 0.08, 0.01},
}

func TestSetMatchesNaiveOnRandomWalks(t *testing.T) {
	for _, w := range walks {
		t.Run(w.name, func(t *testing.T) {
			xs := walk(w.seed, 5000, w.start, w.sigma, w.tick)
			s := NewSet()
			for i, x := range xs {
				s.Push(x)
				got, want := s.Value(), naiveValues(xs[:i+1])
				checkValues(t, i, got, want, 1e-9)
			}
		})
	}
}

func checkValues(t *testing.T, i int, got, want Values, tol float64) {
	t.Helper()
	if got.Has != want.Has {
		t.Fatalf("close %d: Has = %06b, want %06b", i, got.Has, want.Has)
	}
	for _, f := range []struct {
		name      string
		got, want float64
	}{
		{"SMA5", got.SMA5, want.SMA5},
		{"SMA20", got.SMA20, want.SMA20},
		{"EMA12", got.EMA12, want.EMA12},
		{"EMA26", got.EMA26, want.EMA26},
		{"BBUpper", got.BBUpper, want.BBUpper},
		{"BBLower", got.BBLower, want.BBLower},
		{"RSI14", got.RSI14, want.RSI14},
	} {
		if !relClose(f.got, f.want, tol) {
			t.Fatalf("close %d: %s = %.17g, naive %.17g (rel %.3g)", i, f.name, f.got, f.want,
				math.Abs(f.got-f.want)/math.Abs(f.want))
		}
	}
}

func TestSingleIndicatorsMatchNaive(t *testing.T) {
	xs := walk(9, 3000, 75, 0.015, 0.01)
	for _, n := range []int{1, 2, 3, 7, 50, MaxPeriod} {
		sma, _ := NewSMA(n)
		bb, _ := NewBollinger(n, 2.5)
		ema, _ := NewEMA(n)
		rsi, _ := NewRSI(n)
		for i, x := range xs {
			sma.Push(x)
			bb.Push(x)
			ema.Push(x)
			rsi.Push(x)
			h := xs[:i+1]
			if got, ok := sma.Value(); true {
				want, wok := naiveSMA(h, n)
				if ok != wok || !relClose(got, want, 1e-9) {
					t.Fatalf("SMA(%d) close %d = %v %v, naive %v %v", n, i, got, ok, want, wok)
				}
			}
			if u, l, ok := bb.Value(); true {
				wu, wl, wok := naiveBollinger(h, n, 2.5)
				if ok != wok || !relClose(u, wu, 1e-9) || !relClose(l, wl, 1e-9) {
					t.Fatalf("Bollinger(%d) close %d = %v %v %v, naive %v %v %v", n, i, u, l, ok, wu, wl, wok)
				}
			}
			if got, ok := ema.Value(); true {
				want, wok := naiveEMA(h, n)
				if ok != wok || !relClose(got, want, 1e-9) {
					t.Fatalf("EMA(%d) close %d = %v %v, naive %v %v", n, i, got, ok, want, wok)
				}
			}
			if got, ok := rsi.Value(); true {
				want, wok := naiveRSI(h, n)
				if ok != wok || !relClose(got, want, 1e-9) {
					t.Fatalf("RSI(%d) close %d = %v %v, naive %v %v", n, i, got, ok, want, wok)
				}
			}
		}
	}
}

// The closes and RSI(14) column of the cs-rsi.xls spreadsheet that
// StockCharts ChartSchool publishes with its "Relative Strength Index (RSI)"
// article (chartschool.stockcharts.com, Technical Indicators, Relative
// Strength Index), which works the example from these QQQQ closes.
var (
	stockChartsRSICloses = []float64{
		44.3389, 44.0902, 44.1497, 43.6124, 44.3278, 44.8264, 45.0955, 45.4245, 45.8433, 46.0826,
		45.8931, 46.0328, 45.6140, 46.2820, 46.2820, 46.0028, 46.0328, 46.4116, 46.2222, 45.6439,
		46.2122, 46.2521, 45.7137, 46.4515, 45.7835, 45.3548, 44.0288, 44.1783, 44.2181, 44.5672,
		43.4205, 42.6628, 43.1314,
	}
	// From the 15th close on; published to four decimals.
	stockChartsRSI = []float64{
		70.5328, 66.3186, 66.5498, 69.4063, 66.3552, 57.9749, 62.9296, 63.2571, 56.0593, 62.3771,
		54.7076, 50.4228, 39.9898, 41.4605, 41.8689, 45.4632, 37.3040, 33.0795, 37.7730,
	}
)

func TestRSIStockChartsExample(t *testing.T) {
	r, err := NewRSI(14)
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range stockChartsRSICloses {
		r.Push(x)
		got, ok := r.Value()
		if i < 14 {
			if ok {
				t.Fatalf("close %d: RSI defined (%v) before 15 closes", i+1, got)
			}
			continue
		}
		want := stockChartsRSI[i-14]
		if !ok || math.Abs(got-want) > 0.5e-4 {
			t.Errorf("close %d: RSI = %.6f %v, published %.4f", i+1, got, ok, want)
		}
		if naive, _ := naiveRSI(stockChartsRSICloses[:i+1], 14); !relClose(got, naive, 1e-12) {
			t.Errorf("close %d: RSI = %v, naive %v", i+1, got, naive)
		}
	}
}

// The article's table prints the same closes rounded to cents, and the
// published RSIs (70.53, 66.32, 66.55, 69.41, 66.36, 57.97) come from the
// unrounded ones above. From the rounded closes themselves, worked by hand
// from the definition, the first RSI is 100 − 100/(1 + (3.34/14)/(1.40/14))
// = 70.46, and the next ones 66.25, 66.48, 69.35, 66.29, 57.92.
func TestRSIStockChartsRoundedCloses(t *testing.T) {
	closes := []float64{44.34, 44.09, 44.15, 43.61, 44.33, 44.83, 45.10, 45.42, 45.84, 46.08,
		45.89, 46.03, 45.61, 46.28, 46.28, 46.00, 46.03, 46.41, 46.22, 45.64}
	want := []float64{70.46, 66.25, 66.48, 69.35, 66.29, 57.92}
	r, _ := NewRSI(14)
	for i, x := range closes {
		r.Push(x)
		if i < 14 {
			continue
		}
		got, _ := r.Value()
		if math.Abs(got-want[i-14]) > 0.005 {
			t.Errorf("close %d: RSI = %.4f, want %.2f", i+1, got, want[i-14])
		}
		if naive, _ := naiveRSI(closes[:i+1], 14); !relClose(got, naive, 1e-12) {
			t.Errorf("close %d: RSI = %v, naive %v", i+1, got, naive)
		}
	}
}

// The closes and Bollinger Bands (20, 2) columns of the cs-bbands.xls
// spreadsheet StockCharts ChartSchool publishes with its "Bollinger Bands"
// article (SPY daily closes), published to six decimals or fewer. The
// middle band is the 20-day SMA.
var stockChartsBB = struct {
	closes, mid, upper, lower []float64
}{
	closes: []float64{
		86.1557, 89.0867, 88.7829, 90.3228, 89.0671, 91.1453, 89.4397, 89.1750, 86.9302, 87.6752,
		86.9596, 89.4299, 89.3221, 88.7241, 87.4497, 87.2634, 89.4985, 87.9006, 89.1260, 90.7043,
		92.9001, 92.9784, 91.8021, 92.6647, 92.6843, 92.3021, 92.7725, 92.5373, 92.9490, 93.2039,
		91.0669, 89.8318, 89.7435, 90.3994, 90.7387, 88.0177, 88.0867, 88.8439, 90.7781, 90.5416,
		91.3894, 90.6500,
	},
	// From the 20th close on.
	mid: []float64{
		88.70794, 89.04516, 89.239745, 89.390705, 89.5078, 89.68866, 89.7465, 89.91314, 90.081255,
		90.382195, 90.65863, 90.863995, 90.88409, 90.90516, 90.988925, 91.153375, 91.19109, 91.1205,
		91.167665, 91.25027, 91.242135, 91.1666, 91.05018,
	},
	upper: []float64{
		91.291862, 91.949268, 92.612595, 92.9342, 93.31195, 93.72845, 93.899592, 94.266255, 94.565096,
		94.786912, 95.043001, 94.907605, 94.902912, 94.89532, 94.861013, 94.673629, 94.556593,
		94.678752, 94.575786, 94.534271, 94.532306, 94.369251, 94.148503,
	},
	lower: []float64{
		86.124018, 86.141052, 85.866895, 85.84721, 85.70365, 85.64887, 85.593408, 85.560025, 85.597414,
		85.977478, 86.274259, 86.820385, 86.865268, 86.915, 87.116837, 87.633121, 87.825587,
		87.562248, 87.759544, 87.966269, 87.951964, 87.963949, 87.951857,
	},
}

func TestBollingerStockChartsExample(t *testing.T) {
	d := stockChartsBB
	s := NewSet()
	for i, x := range d.closes {
		s.Push(x)
		v := s.Value()
		if i < 19 {
			if v.Has&(HasBB|HasSMA20) != 0 {
				t.Fatalf("close %d: bands defined before 20 closes: %+v", i+1, v)
			}
			continue
		}
		if v.Has&(HasBB|HasSMA20) != HasBB|HasSMA20 {
			t.Fatalf("close %d: bands undefined: %+v", i+1, v)
		}
		// Six published decimals: half a unit in the last place, plus slack
		// for the spreadsheet's own rounding of its inputs.
		const tol = 2e-6
		if math.Abs(v.SMA20-d.mid[i-19]) > tol || math.Abs(v.BBUpper-d.upper[i-19]) > tol ||
			math.Abs(v.BBLower-d.lower[i-19]) > tol {
			t.Errorf("close %d: mid %.6f upper %.6f lower %.6f, published %v %v %v", i+1,
				v.SMA20, v.BBUpper, v.BBLower, d.mid[i-19], d.upper[i-19], d.lower[i-19])
		}
	}
}

// A small example worked by hand. Closes 2, 4, 6, 8, 10, 9:
//
//	SMA(3):  –, –, 4, 6, 8, 9
//	EMA(3):  alpha = 2/4 = 0.5: 2, 3, 4.5, 6.25, 8.125, 8.5625
//	BB(3,2): at 2, 4, 6 the mean is 4 and the population variance
//	         (4+0+4)/3 = 8/3, so 4 ± 2·√(8/3) = 4 ± 3.265986323710904;
//	         at 8, 10, 9 the mean is 9 and the variance (1+1+0)/3 = 2/3.
func TestHandWorkedExample(t *testing.T) {
	closes := []float64{2, 4, 6, 8, 10, 9}
	wantSMA := []float64{0, 0, 4, 6, 8, 9}
	wantEMA := []float64{2, 3, 4.5, 6.25, 8.125, 8.5625}
	sma, _ := NewSMA(3)
	ema, _ := NewEMA(3)
	bb, _ := NewBollinger(3, 2)
	for i, x := range closes {
		sma.Push(x)
		ema.Push(x)
		bb.Push(x)
		if got, ok := sma.Value(); ok != (i >= 2) || math.Abs(got-wantSMA[i]) > 1e-15 {
			t.Errorf("close %d: SMA(3) = %v %v, want %v", i+1, got, ok, wantSMA[i])
		}
		if got, ok := ema.Value(); !ok || got != wantEMA[i] {
			t.Errorf("close %d: EMA(3) = %v %v, want %v", i+1, got, ok, wantEMA[i])
		}
	}
	u, l, ok := bb.Value()
	if d := 2 * math.Sqrt(2.0/3); !ok || math.Abs(u-(9+d)) > 1e-14 || math.Abs(l-(9-d)) > 1e-14 {
		t.Errorf("BB(3,2) at 8, 10, 9 = %v %v %v, want 9 ± %v", u, l, ok, d)
	}
	bb, _ = NewBollinger(3, 2)
	for _, x := range closes[:3] {
		bb.Push(x)
	}
	if u, l, ok := bb.Value(); !ok || math.Abs(u-7.265986323710904) > 1e-14 || math.Abs(l-0.734013676289096) > 1e-14 {
		t.Errorf("BB(3,2) at 2, 4, 6 = %v %v %v, want 7.265986323710904 0.734013676289096", u, l, ok)
	}
}

func TestRSIEdgeCases(t *testing.T) {
	for _, c := range []struct {
		name   string
		closes []float64
		want   float64
	}{
		{"flat: no gains, no losses", []float64{5, 5, 5, 5}, 50},
		{"only gains", []float64{1, 2, 3, 4}, 100},
		{"only losses", []float64{4, 3, 2, 1}, 0},
		{"gains then flat", []float64{1, 2, 3, 4, 4, 4, 4}, 100},
		{"equal gain and loss", []float64{1, 2, 2, 1}, 50},
	} {
		r, _ := NewRSI(3)
		for _, x := range c.closes {
			r.Push(x)
		}
		if got, ok := r.Value(); !ok || got != c.want {
			t.Errorf("%s: RSI(3) = %v %v, want %v", c.name, got, ok, c.want)
		}
	}
}

func TestVWAP(t *testing.T) {
	var v VWAP
	if _, ok := v.Value(); ok {
		t.Fatal("empty session has a VWAP")
	}
	if got, ok := v.Peek(10, 100); !ok || got != 10 {
		t.Fatalf("Peek on empty = %v %v", got, ok)
	}
	v.Push(10, 100)
	v.Push(12, 300)
	v.Push(99, 0)  // no volume: ignored
	v.Push(99, -5) // likewise
	if got, ok := v.Value(); !ok || got != (10*100+12*300)/400.0 {
		t.Fatalf("VWAP = %v %v, want 11.5", got, ok)
	}
	w := v
	w.Push(13, 50)
	if a, _ := v.Peek(13, 50); a != must(w.Value()) {
		t.Fatal("Peek differs from Push then Value")
	}
	v.Reset()
	if _, ok := v.Value(); ok || v.Volume() != 0 {
		t.Fatal("Reset left a session behind")
	}
}

func must(v float64, ok bool) float64 {
	if !ok {
		return math.NaN()
	}
	return v
}

// Peek(x) must be bit for bit what Push(x) then Value gives, at every phase
// of the rings, including the pushes that rebase the sums.
func TestPeekEqualsPushOnCopy(t *testing.T) {
	xs := walk(5, 2000, 30, 0.02, 0.01)
	s := NewSet()
	sma, _ := NewSMA(7)
	bb, _ := NewBollinger(1, 2)
	ema, _ := NewEMA(1)
	rsi, _ := NewRSI(1)
	for i, x := range xs {
		// Peek at the close itself and at a nearby price, as a forming
		// candle's close would move.
		for _, p := range []float64{x, x * 1.003} {
			c := s
			c.Push(p)
			if got, want := s.Peek(p), c.Value(); !sameValues(got, want) {
				t.Fatalf("close %d: Set.Peek(%v) = %+v, Push then Value = %+v", i, p, got, want)
			}
			cs := sma
			cs.Push(p)
			b, bok := cs.Value()
			if a, aok := sma.Peek(p); !same2(a, aok, b, bok) {
				t.Fatalf("close %d: SMA(7).Peek differs", i)
			}
			cb := bb
			cb.Push(p)
			u, l, ok := bb.Peek(p)
			if cu, cl, cok := cb.Value(); !same2(u, ok, cu, cok) || !same2(l, ok, cl, cok) {
				t.Fatalf("close %d: Bollinger(1).Peek differs", i)
			}
			ce := ema
			ce.Push(p)
			b, bok = ce.Value()
			if a, aok := ema.Peek(p); !same2(a, aok, b, bok) {
				t.Fatalf("close %d: EMA(1).Peek differs", i)
			}
			cr := rsi
			cr.Push(p)
			b, bok = cr.Value()
			if a, aok := rsi.Peek(p); !same2(a, aok, b, bok) {
				t.Fatalf("close %d: RSI(1).Peek differs", i)
			}
		}
		before := s
		s.Peek(x)
		if s != before {
			t.Fatalf("close %d: Peek changed the Set", i)
		}
		s.Push(x)
		sma.Push(x)
		bb.Push(x)
		ema.Push(x)
		rsi.Push(x)
	}
}

func sameValues(a, b Values) bool {
	return a.Has == b.Has &&
		math.Float64bits(a.SMA5) == math.Float64bits(b.SMA5) &&
		math.Float64bits(a.SMA20) == math.Float64bits(b.SMA20) &&
		math.Float64bits(a.EMA12) == math.Float64bits(b.EMA12) &&
		math.Float64bits(a.EMA26) == math.Float64bits(b.EMA26) &&
		math.Float64bits(a.BBUpper) == math.Float64bits(b.BBUpper) &&
		math.Float64bits(a.BBLower) == math.Float64bits(b.BBLower) &&
		math.Float64bits(a.RSI14) == math.Float64bits(b.RSI14)
}

func same2(a float64, aok bool, b float64, bok bool) bool {
	return aok == bok && math.Float64bits(a) == math.Float64bits(b)
}

func TestSMA20IsTheBollingerMiddle(t *testing.T) {
	xs := walk(6, 500, 100, 0.01, 0.01)
	s := NewSet()
	sma, _ := NewSMA(20)
	for i, x := range xs {
		s.Push(x)
		sma.Push(x)
		got := s.Value()
		want, ok := sma.Value()
		if ok != (got.Has&HasSMA20 != 0) || math.Float64bits(got.SMA20) != math.Float64bits(want) {
			t.Fatalf("close %d: Set.SMA20 = %v, SMA(20) = %v %v", i, got.SMA20, want, ok)
		}
	}
}

// A state saved mid-stream and restored into a fresh value must continue
// bit for bit as the original, at every phase of the rings.
func TestSetRoundTrip(t *testing.T) {
	xs := walk(7, 400, 60, 0.02, 0.01)
	for cut := 0; cut <= 60; cut++ {
		s := NewSet()
		for _, x := range xs[:cut] {
			s.Push(x)
		}
		b, err := s.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		var r Set
		if err := r.UnmarshalBinary(b); err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		if r != s {
			t.Fatalf("cut %d: restored state differs", cut)
		}
		if b2, _ := r.MarshalBinary(); !bytes.Equal(b, b2) {
			t.Fatalf("cut %d: re-encoding differs", cut)
		}
		for i, x := range xs[cut:] {
			if a, b := s.Peek(x*1.001), r.Peek(x*1.001); !sameValues(a, b) {
				t.Fatalf("cut %d, close %d: Peek %+v after restore, %+v uninterrupted", cut, i, b, a)
			}
			s.Push(x)
			r.Push(x)
			if a, b := s.Value(), r.Value(); !sameValues(a, b) {
				t.Fatalf("cut %d, close %d: %+v after restore, %+v uninterrupted", cut, i, b, a)
			}
		}
	}
}

// States appended one after another into one buffer read back with Decode
// in the same order.
func TestComposedStates(t *testing.T) {
	xs := walk(8, 37, 10, 0.02, 0.01)
	sma, _ := NewSMA(9)
	bb, _ := NewBollinger(11, 1.5)
	ema, _ := NewEMA(4)
	rsi, _ := NewRSI(5)
	var v VWAP
	sets := []Set{NewSet(), NewSet()}
	for i, x := range xs {
		sma.Push(x)
		bb.Push(x)
		ema.Push(x)
		rsi.Push(x)
		v.Push(x, int64(100+i))
		sets[i%2].Push(x)
	}
	var blob []byte
	for _, a := range []interface{ AppendBinary([]byte) ([]byte, error) }{&sma, &bb, &ema, &rsi, &v, &sets[0], &sets[1]} {
		blob, _ = a.AppendBinary(blob)
	}
	var (
		sma2  SMA
		bb2   Bollinger
		ema2  EMA
		rsi2  RSI
		v2    VWAP
		sets2 [2]Set
	)
	rest := blob
	var err error
	for _, d := range []interface{ Decode([]byte) ([]byte, error) }{&sma2, &bb2, &ema2, &rsi2, &v2, &sets2[0], &sets2[1]} {
		if rest, err = d.Decode(rest); err != nil {
			t.Fatal(err)
		}
	}
	if len(rest) != 0 {
		t.Fatalf("%d bytes left", len(rest))
	}
	if sma2 != sma || bb2 != bb || ema2 != ema || rsi2 != rsi || v2 != v || sets2[0] != sets[0] || sets2[1] != sets[1] {
		t.Fatal("decoded states differ")
	}
	// Out of order is an error, not garbage.
	if _, err := ema2.Decode(blob); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("EMA decoding an SMA state: %v", err)
	}
}

func TestDecodeRejectsCorruptState(t *testing.T) {
	s := NewSet()
	for _, x := range walk(10, 30, 10, 0.01, 0.01) {
		s.Push(x)
	}
	good, _ := s.AppendBinary(nil)
	orig := s
	// Every truncation fails and leaves the receiver alone.
	for n := range len(good) {
		if err := s.UnmarshalBinary(good[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%d of %d bytes: err = %v", n, len(good), err)
		}
		if s != orig {
			t.Fatalf("%d of %d bytes: receiver changed", n, len(good))
		}
	}
	if err := s.UnmarshalBinary(append(good[:len(good):len(good)], 0)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("trailing byte: err = %v", err)
	}
	// Flipped bytes must never panic; most fail, some decode to another
	// valid state, which is fine.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		b := bytes.Clone(good)
		b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
		var r Set
		if err := r.UnmarshalBinary(b); err == nil {
			r.Push(1)
			r.Peek(2)
		}
	}
	// A state of the right shape but other periods is not a Set.
	bad := []byte{tagSet, stateVersion}
	sma, _ := NewSMA(6)
	bad, _ = sma.AppendBinary(bad)
	bad = append(bad, good[len(bad):]...)
	if err := s.UnmarshalBinary(bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Set with SMA(6): err = %v", err)
	}
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"period 0", append([]byte{tagSMA, stateVersion}, make([]byte, 36)...)},
		{"wrong version", []byte{tagSMA, stateVersion + 1}},
		{"count past period", func() []byte {
			b := []byte{tagSMA, stateVersion}
			b = snapshot.AppendU32(b, 2)
			b = snapshot.AppendU32(b, 3)
			b = snapshot.AppendU32(b, 0)
			return append(b, make([]byte, 24+24)...)
		}()},
		{"head not at count", func() []byte {
			b := []byte{tagSMA, stateVersion}
			b = snapshot.AppendU32(b, 4)
			b = snapshot.AppendU32(b, 1)
			b = snapshot.AppendU32(b, 3)
			return append(b, make([]byte, 24+8)...)
		}()},
	} {
		var x SMA
		if err := x.UnmarshalBinary(c.b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v", c.name, err)
		}
	}
}

func TestConstructorsRejectBadParameters(t *testing.T) {
	for _, n := range []int{0, -1, MaxPeriod + 1} {
		if _, err := NewSMA(n); err == nil {
			t.Errorf("NewSMA(%d) accepted", n)
		}
		if _, err := NewBollinger(n, 2); err == nil {
			t.Errorf("NewBollinger(%d, 2) accepted", n)
		}
	}
	for _, n := range []int{0, -1} {
		if _, err := NewEMA(n); err == nil {
			t.Errorf("NewEMA(%d) accepted", n)
		}
		if _, err := NewRSI(n); err == nil {
			t.Errorf("NewRSI(%d) accepted", n)
		}
	}
	for _, k := range []float64{math.NaN(), math.Inf(1)} {
		if _, err := NewBollinger(20, k); err == nil {
			t.Errorf("NewBollinger(20, %v) accepted", k)
		}
	}
}

// Zero values must not panic and never become defined.
func TestZeroValues(t *testing.T) {
	var (
		s   Set
		sma SMA
		bb  Bollinger
		ema EMA
		rsi RSI
	)
	for i := range 3 * MaxPeriod {
		x := float64(i + 1)
		s.Push(x)
		sma.Push(x)
		bb.Push(x)
		ema.Push(x)
		rsi.Push(x)
	}
	if v := s.Peek(1); v != (Values{}) || s.Value() != (Values{}) {
		t.Error("zero Set became defined")
	}
	if _, ok := sma.Peek(1); ok {
		t.Error("zero SMA became defined")
	}
	if _, _, ok := bb.Peek(1); ok {
		t.Error("zero Bollinger became defined")
	}
	if _, ok := ema.Peek(1); ok {
		t.Error("zero EMA became defined")
	}
	if _, ok := rsi.Peek(1); ok {
		t.Error("zero RSI became defined")
	}
}

func TestSetWarmUp(t *testing.T) {
	s := NewSet()
	want := []uint8{
		1:  HasEMA12 | HasEMA26,
		5:  HasEMA12 | HasEMA26 | HasSMA5,
		15: HasEMA12 | HasEMA26 | HasSMA5 | HasRSI14,
		20: HasEMA12 | HasEMA26 | HasSMA5 | HasRSI14 | HasSMA20 | HasBB,
	}
	has := uint8(0)
	for i := 1; i <= 21; i++ {
		if i < len(want) && want[i] != 0 {
			has = want[i]
		}
		if got := s.Peek(float64(i)).Has; got != has {
			t.Fatalf("Peek with %d closes: Has = %06b, want %06b", i, got, has)
		}
		s.Push(float64(i))
		if got := s.Value().Has; got != has {
			t.Fatalf("after %d closes: Has = %06b, want %06b", i, got, has)
		}
	}
}
