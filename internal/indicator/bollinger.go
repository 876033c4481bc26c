package indicator

import (
	"fmt"
	"math"

	"github.com/stockpipe/stockpipe/internal/snapshot"
)

// Bollinger is the pair of Bollinger Bands over the last n closes: their
// mean plus and minus k times their population standard deviation (divided
// by n, not n−1), undefined until n closes have been pushed. The zero value
// ignores pushes and is never defined; use NewBollinger.
//
// Push and Peek are O(1), except in the one state in n where the next push
// fills the ring's last slot: then both sum the ring's n closes, which is
// what bounds rounding error (see the package documentation).
type Bollinger struct {
	w    window
	mult float64
}

// NewBollinger returns the bands over n closes, 1 ≤ n ≤ MaxPeriod, at k
// standard deviations, k finite; the customary choice is n = 20, k = 2.
func NewBollinger(n int, k float64) (Bollinger, error) {
	if err := checkPeriod("Bollinger", n); err != nil {
		return Bollinger{}, err
	}
	if math.IsNaN(k) || math.IsInf(k, 0) {
		return Bollinger{}, fmt.Errorf("indicator: Bollinger width %v is not finite", k)
	}
	return Bollinger{w: window{n: n}, mult: k}, nil
}

// Push adds the close of a final candle.
func (b *Bollinger) Push(x float64) { b.w.push(x) }

// Peek returns the bands that Push(x) would give, without changing b.
func (b *Bollinger) Peek(x float64) (upper, lower float64, ok bool) {
	if !b.w.fullAfterPush() {
		return 0, 0, false
	}
	_, upper, lower = b.bands(b.w.next(x))
	return upper, lower, true
}

// Value returns the bands after the last push.
func (b *Bollinger) Value() (upper, lower float64, ok bool) {
	if b.w.n == 0 || b.w.count < b.w.n {
		return 0, 0, false
	}
	_, upper, lower = b.bands(b.w.k, b.w.s1, b.w.s2)
	return upper, lower, true
}

// bands also returns the middle band, which is the SMA over the same closes
// (bit for bit what an SMA of the same period gives), so that Set need not
// keep a second ring of the same 20 closes.
func (b *Bollinger) bands(k, s1, s2 float64) (mid, upper, lower float64) {
	mean, variance := b.w.stats(k, s1, s2)
	d := b.mult * math.Sqrt(variance)
	return mean, mean + d, mean - d
}

// AppendBinary appends the exact state of b to dst. It never fails; the
// error is there to satisfy encoding.BinaryAppender.
func (b *Bollinger) AppendBinary(dst []byte) ([]byte, error) {
	dst = snapshot.AppendHeader(dst, tagBollinger, stateVersion)
	dst = snapshot.AppendF64(dst, b.mult)
	return b.w.appendBinary(dst), nil
}

// MarshalBinary returns AppendBinary(nil).
func (b *Bollinger) MarshalBinary() ([]byte, error) { return b.AppendBinary(nil) }

// Decode restores b from a state AppendBinary wrote at the front of buf and
// returns the bytes after it, for reading states composed into one buffer.
// On error b is unchanged.
func (b *Bollinger) Decode(buf []byte) (rest []byte, err error) {
	r := newReader(buf)
	r.Header(tagBollinger)
	var t Bollinger
	t.mult = r.F64()
	t.w.decode(r)
	if r.Err == nil && (math.IsNaN(t.mult) || math.IsInf(t.mult, 0)) {
		r.Fail("Bollinger width %v", t.mult)
	}
	if r.Err != nil {
		return nil, r.Err
	}
	*b = t
	return r.B, nil
}

// UnmarshalBinary restores b from exactly the bytes AppendBinary wrote. On
// error b is unchanged.
func (b *Bollinger) UnmarshalBinary(buf []byte) error {
	var t Bollinger
	if err := whole(t.Decode(buf)); err != nil {
		return err
	}
	*b = t
	return nil
}
