package anomaly

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestWindow checks the sorted window against sorting the last W values
// afresh, with many ties, as round lots and whole cents make them.
func TestWindow(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, w := range []int{1, 2, 3, 5, 64, 128} {
		win := newWindow(w)
		var all []float64
		for i := range 5000 {
			x := float64(rng.IntN(6)) * 100
			if i%7 == 0 {
				x = rng.Float64() * 1000
			}
			win.push(x)
			all = append(all, x)
			last := all[max(0, len(all)-w):]
			want := slices.Sorted(slices.Values(last))
			if !slices.Equal(win.sorted, want) {
				t.Fatalf("w=%d after %d pushes: sorted %v, want %v", w, i+1, win.sorted, want)
			}
			for k := range min(len(last), 5) {
				if win.recent(k) != last[len(last)-1-k] {
					t.Fatalf("w=%d: recent(%d) = %v, want %v", w, k, win.recent(k), last[len(last)-1-k])
				}
			}
			q := len(want) / 4
			var sum float64
			for _, v := range want[q : len(want)-q] {
				sum += v
			}
			if got := win.typical(); got != sum/float64(len(want)-2*q) {
				t.Fatalf("w=%d: typical %v, want %v", w, got, sum/float64(len(want)-2*q))
			}
			if win.lowerQuartile() > win.typical() {
				t.Fatalf("w=%d: lower quartile %v above typical %v", w, win.lowerQuartile(), win.typical())
			}
		}
	}
	for _, n := range []int{0, 1, 2, 3, 7, 8, 100} {
		s := make([]float64, n)
		for i := range s {
			s[i] = float64(i / 2)
		}
		for x := 0.0; x <= float64(n/2)+1; x += 0.25 {
			want, _ := slices.BinarySearch(s, x)
			if got := lowerBound(s, x); got != want {
				t.Fatalf("lowerBound(%v, %v) = %d, want %d", s, x, got, want)
			}
		}
	}
}
