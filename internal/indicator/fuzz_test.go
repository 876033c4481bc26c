package indicator

import (
	"encoding/binary"
	"math"
	"testing"
)

// fuzzCloses turns fuzz bytes into positive finite closes, three bytes a
// close: with the first byte's low bit set, a price on a coarse grid of
// (1…65536)·scale, so neighbours can differ by a factor of 65536 and
// running sums must survive large values leaving the window; otherwise
// scale·(1 + v/1e6), a spread of at most 6.5% that puts the variance's
// cancellation to the test.
func fuzzCloses(data []byte, scale float64) []float64 {
	xs := make([]float64, 0, len(data)/3)
	for ; len(data) >= 3; data = data[3:] {
		v := float64(binary.LittleEndian.Uint16(data[1:3]))
		if data[0]&1 != 0 {
			xs = append(xs, (v+1)*scale)
		} else {
			xs = append(xs, scale*(1+v/1e6))
		}
	}
	return xs
}

// FuzzSet checks a Set against the naive recomputation on fuzzed closes.
// The tolerances are the package's error bounds with room to spare: for the
// means, relative to the largest close since the last rebase could have
// happened (the last 2n closes); for the bands, plus k·√Δvar with Δvar the
// variance bound over the range of those closes, since near-zero spreads
// make the standard deviation as sensitive as that.
func FuzzSet(f *testing.F) {
	f.Add([]byte{}, 100.0)
	f.Add([]byte{1, 0, 0, 1, 255, 255, 0, 1, 0, 0, 2, 0, 1, 9, 9}, 1.0)
	f.Add([]byte("a gentle walk up and down the scale, then back again!!"), 0.01)
	seed := make([]byte, 0, 3*60)
	for i := range 60 {
		seed = append(seed, byte(i%2), byte(i*37), byte(i*i))
	}
	f.Add(seed, 1e6)
	f.Fuzz(func(t *testing.T, data []byte, scale float64) {
		if !(scale >= 1e-6 && scale <= 1e9) {
			t.Skip()
		}
		// The naive side is quadratic in the number of closes; one or two
		// hundred cover every ring phase several times over.
		xs := fuzzCloses(data[:min(len(data), 3*150)], scale)
		s := NewSet()
		const u = 0x1p-53
		for i, x := range xs {
			peek := s.Peek(x)
			s.Push(x)
			got := s.Value()
			if !sameValues(peek, got) {
				t.Fatalf("close %d: Peek %+v, Push then Value %+v", i, peek, got)
			}
			h := xs[:i+1]
			want := naiveValues(h)
			if got.Has != want.Has {
				t.Fatalf("close %d: Has %06b, naive %06b", i, got.Has, want.Has)
			}
			check := func(name string, got, want, tol float64) {
				t.Helper()
				if !(math.Abs(got-want) <= tol) {
					t.Fatalf("close %d: %s = %.17g, naive %.17g, off by %.3g > %.3g", i, name, got, want, math.Abs(got-want), tol)
				}
			}
			maxAll := 0.0
			for _, x := range h {
				maxAll = math.Max(maxAll, x)
			}
			check("SMA5", got.SMA5, want.SMA5, 1e-12*maxLast(h, 10))
			m20 := maxLast(h, 40)
			check("SMA20", got.SMA20, want.SMA20, 1e-12*m20)
			sdTol := 2 * math.Sqrt(4*(6*(20+10)+20)*u) * rangeLast(h, 40)
			check("BBUpper", got.BBUpper, want.BBUpper, 1e-12*m20+sdTol)
			check("BBLower", got.BBLower, want.BBLower, 1e-12*m20+sdTol)
			check("EMA12", got.EMA12, want.EMA12, 1e-12*maxAll)
			check("EMA26", got.EMA26, want.EMA26, 1e-12*maxAll)
			check("RSI14", got.RSI14, want.RSI14, 1e-9)
		}
		// And a restored copy carries on identically.
		b, _ := s.AppendBinary(nil)
		var r Set
		if err := r.UnmarshalBinary(b); err != nil || r != s {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func maxLast(xs []float64, n int) float64 {
	m := 0.0
	for _, x := range xs[max(0, len(xs)-n):] {
		m = math.Max(m, math.Abs(x))
	}
	return m
}

func rangeLast(xs []float64, n int) float64 {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, x := range xs[max(0, len(xs)-n):] {
		lo, hi = math.Min(lo, x), math.Max(hi, x)
	}
	return hi - lo
}
