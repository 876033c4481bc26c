package indicator

import (
	"fmt"

	"github.com/stockpipe/stockpipe/internal/snapshot"
)

// MaxPeriod is the longest window SMA and Bollinger support. Their ring of
// closes is a fixed array of this size, so that indicators are plain values
// that never allocate and copy deeply. The pipeline uses periods 5 and 20;
// 64 leaves room at 512 bytes per indicator — with four per symbol and
// thousands of symbols per processor, 256 (a 200-period average) made these
// rings most of the processor's memory. Encoded states hold only the n
// closes in use.
const MaxPeriod = 64

// window is a ring of the last n closes with running sums of their
// deviations from a reference value k: s1 = Σ(x−k) and s2 = Σ(x−k)². The
// package documentation explains the rebasing that bounds their rounding
// error.
type window struct {
	n     int // period, 1..MaxPeriod; 0 in a zero value, which ignores pushes
	count int // closes in the ring, 0..n
	head  int // slot the next close goes to, 0..n−1
	k     float64
	s1    float64
	s2    float64
	ring  [MaxPeriod]float64
}

func checkPeriod(what string, n int) error {
	if n < 1 || n > MaxPeriod {
		return fmt.Errorf("indicator: %s period %d outside [1, %d]", what, n, MaxPeriod)
	}
	return nil
}

// next returns the reference and sums the window would hold after pushing
// x, without changing it. Push and Peek both go through here, so a peeked
// value is bit for bit the value a push of the same close gives.
func (w *window) next(x float64) (k, s1, s2 float64) {
	if w.head == w.n-1 {
		// The push fills the last slot: recompute, rebased to x, whose own
		// deviation is then exactly zero.
		k = x
		for _, v := range w.ring[:w.n-1] {
			d := v - k
			s1 += d
			s2 += d * d
		}
		return k, s1, s2
	}
	d := x - w.k
	if w.count < w.n {
		return w.k, w.s1 + d, w.s2 + d*d
	}
	o := w.ring[w.head] - w.k
	return w.k, w.s1 + (d - o), w.s2 + (d-o)*(d+o)
}

// fullAfterPush reports whether the window holds n closes after one more
// push.
func (w *window) fullAfterPush() bool {
	return w.n > 0 && w.count >= w.n-1
}

func (w *window) push(x float64) {
	if w.n == 0 {
		return
	}
	w.k, w.s1, w.s2 = w.next(x)
	w.ring[w.head] = x
	if w.head++; w.head == w.n {
		w.head = 0
	}
	if w.count < w.n {
		w.count++
	}
}

// stats turns a full window's sums into its mean and population variance.
func (w *window) stats(k, s1, s2 float64) (mean, variance float64) {
	nf := float64(w.n)
	m1 := s1 / nf
	variance = s2/nf - m1*m1
	if variance < 0 {
		// Rounding can push a near-zero variance just below zero.
		variance = 0
	}
	return k + m1, variance
}

// The layout is n, count and head as uint32, then k, s1, s2 and the first
// count slots of the ring as float64 bits, all little endian. Slots past
// count have never been written and are zero, so they need not be stored.
func (w *window) appendBinary(dst []byte) []byte {
	dst = snapshot.AppendU32(dst, w.n)
	dst = snapshot.AppendU32(dst, w.count)
	dst = snapshot.AppendU32(dst, w.head)
	dst = snapshot.AppendF64(dst, w.k)
	dst = snapshot.AppendF64(dst, w.s1)
	dst = snapshot.AppendF64(dst, w.s2)
	for _, v := range w.ring[:w.count] {
		dst = snapshot.AppendF64(dst, v)
	}
	return dst
}

func (w *window) decode(r *snapshot.Reader) {
	n, count, head := r.U32(), r.U32(), r.U32()
	k, s1, s2 := r.F64(), r.F64(), r.F64()
	if r.Err != nil {
		return
	}
	switch {
	case n < 1 || n > MaxPeriod:
		r.Fail("period %d", n)
		return
	case count > n:
		r.Fail("count %d > period %d", count, n)
		return
	case count < n && head != count, count == n && head >= n:
		r.Fail("head %d with count %d of %d", head, count, n)
		return
	}
	*w = window{n: n, count: count, head: head, k: k, s1: s1, s2: s2}
	for i := range count {
		w.ring[i] = r.F64()
	}
}
