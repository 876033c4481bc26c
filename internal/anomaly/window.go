package anomaly

// window holds the last len(ring) values pushed and answers what a typical
// one is: their interquartile mean, the average of the middle half once
// sorted.
//
// Why not the median: trade sizes come in round lots and spreads in whole
// cents, so the median of a busy stock sits on one of two values, 100 or
// 200 shares, 1 or 2 cents, and flips between them by chance; judged against
// it, an ordinary run of trades is twice as big one second as the next. The
// interquartile mean moves smoothly with the mix yet, like the median,
// ignores the top and bottom quarters, so a burst that fills less than a
// quarter of the window does not raise its own baseline.
//
// The values are kept twice: in arrival order in a ring, to know which one
// leaves, and sorted. A push finds the leaving and the arriving value's
// places by binary search (O(log W) comparisons) and shifts the sorted slice
// with copy, a memmove of at most 8·W bytes; typical sums the middle half,
// W/2 additions. At the default W = 64 that is a few tens of nanoseconds,
// less than the pointer chasing of a pair of heaps or a skip list, and it
// allocates nothing. Summing afresh rather than keeping a running total also
// makes the result depend only on the values in the window, not on the order
// they came in, which keeps a restored checkpoint bit-for-bit exact.
//
// Values must not be NaN, which has no place in an order; callers filter
// them out.
type window struct {
	ring   []float64 // capacity W; ring[head] is the next slot written
	sorted []float64 // the n values in the window, ascending
	head   int
	n      int
}

func newWindow(w int) window {
	return window{ring: make([]float64, w), sorted: make([]float64, 0, w)}
}

// push adds x, evicting the oldest value once the window is full.
func (r *window) push(x float64) {
	w := len(r.ring)
	if r.n == w {
		i := lowerBound(r.sorted, r.ring[r.head])
		copy(r.sorted[i:], r.sorted[i+1:])
		r.sorted = r.sorted[:len(r.sorted)-1]
	} else {
		r.n++
	}
	r.ring[r.head] = x
	r.head++
	if r.head == w {
		r.head = 0
	}
	i := lowerBound(r.sorted, x)
	r.sorted = r.sorted[:len(r.sorted)+1]
	copy(r.sorted[i+1:], r.sorted[i:])
	r.sorted[i] = x
}

// typical returns the mean of the middle half of the window (all of it
// below four values); 0 when the window is empty.
func (r *window) typical() float64 {
	n := len(r.sorted)
	q := n / 4
	mid := r.sorted[q : n-q]
	if len(mid) == 0 {
		return 0
	}
	var sum float64
	for _, v := range mid {
		sum += v
	}
	return sum / float64(len(mid))
}

// recent returns the value pushed k pushes ago: recent(0) is the latest. It
// requires k < n.
func (r *window) recent(k int) float64 {
	i := r.head - 1 - k
	if i < 0 {
		i += len(r.ring)
	}
	return r.ring[i]
}

// reset empties the window and refills it with vs, oldest first, keeping
// only the newest len(ring) of them.
func (r *window) reset(vs []float64) {
	r.head, r.n = 0, 0
	r.sorted = r.sorted[:0]
	if len(vs) > len(r.ring) {
		vs = vs[len(vs)-len(r.ring):]
	}
	for _, v := range vs {
		r.push(v)
	}
}

// lowerBound returns the first index i with s[i] >= x.
func lowerBound(s []float64, x float64) int {
	lo, hi := 0, len(s)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s[m] < x {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}
