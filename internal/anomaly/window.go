package anomaly

import "math"

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
// places by binary search (O(log W) comparisons) and shifts the values
// between them with one copy, a memmove of at most 8·W bytes; typical sums
// the middle half, W/2 additions, and is only needed when a cheap bound says
// the tick might fire. At the default W of 64 or 128 that is a few tens of
// nanoseconds, less than the pointer chasing of a pair of heaps or a skip
// list, and it allocates nothing. Summing afresh rather than keeping a running total also
// makes the result depend only on the values in the window, not on the order
// they came in, which keeps a restored checkpoint bit-for-bit exact.
//
// Values must be >= 0 and not NaN or −0 (see lowerBound); trade sizes and
// relative spreads are.
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
	j := lowerBound(r.sorted, x)
	if r.n == w {
		// Evict and insert in one move: shift only the values between
		// the leaving one's place and the arriving one's.
		i := lowerBound(r.sorted, r.ring[r.head])
		if j <= i {
			copy(r.sorted[j+1:i+1], r.sorted[j:i])
			r.sorted[j] = x
		} else {
			copy(r.sorted[i:j-1], r.sorted[i+1:j])
			r.sorted[j-1] = x
		}
	} else {
		r.n++
		r.sorted = r.sorted[:len(r.sorted)+1]
		copy(r.sorted[j+1:], r.sorted[j:])
		r.sorted[j] = x
	}
	r.ring[r.head] = x
	r.head++
	if r.head == w {
		r.head = 0
	}
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

// lowerQuartile returns the smallest value typical averages, a lower bound
// on it that costs nothing to read; 0 when the window is empty.
func (r *window) lowerQuartile() float64 {
	n := len(r.sorted)
	if n == 0 {
		return 0
	}
	return r.sorted[n/4]
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

// lowerBound returns the first index i with s[i] >= x, for s and x >= 0 and
// not NaN. It halves the range without a data-dependent branch: a branch
// here is mispredicted half the time, and was the largest single cost of a
// tick. The comparison is done on the IEEE 754 bits, which for numbers >= 0
// (+0 included, −0 not) order exactly as the numbers do and differ by less
// than 2⁶³, so the sign of their difference is the answer.
func lowerBound(s []float64, x float64) int {
	n := len(s)
	if n == 0 {
		return 0
	}
	xb := int64(math.Float64bits(x))
	less := func(v float64) int { // 1 if v < x, else 0
		return int(uint64(int64(math.Float64bits(v))-xb) >> 63)
	}
	base := 0
	for n > 1 {
		half := n / 2
		base += half * less(s[base+half])
		n -= half
	}
	return base + less(s[base])
}
