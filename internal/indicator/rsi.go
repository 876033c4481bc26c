package indicator

import (
	"fmt"
	"math"

	"github.com/stockpipe/stockpipe/internal/snapshot"
)

// RSI is Wilder's Relative Strength Index of period n. With changes
// d_i = close_i − close_{i−1}, gains max(d_i, 0) and losses max(−d_i, 0), the
// first average gain and loss are the plain means of the first n gains and
// losses, so RSI is undefined until n+1 closes have been pushed; after that
// each new change updates avg = (avg·(n−1) + current)/n. Then
// RSI = 100 − 100/(1 + avgGain/avgLoss), except that it is 100 when avgLoss
// is 0 and avgGain is not (only gains: the formula's limit), and 50 when
// both are 0 (a flat series: no direction, so the midpoint rather than the
// 0/0 the formula would give). The zero value ignores pushes and is never
// defined; use NewRSI.
type RSI struct {
	n     int
	count int // closes pushed, saturating at n+1
	prev  float64
	// Sums of the gains and losses while count ≤ n, their Wilder averages
	// once count = n+1.
	gain float64
	loss float64
}

// NewRSI returns an RSI of period n ≥ 1; the customary choice is 14.
func NewRSI(n int) (RSI, error) {
	if n < 1 || n > math.MaxInt32-1 {
		return RSI{}, fmt.Errorf("indicator: RSI period %d outside [1, %d]", n, math.MaxInt32-1)
	}
	return RSI{n: n}, nil
}

// next returns the count, gain and loss after pushing x, without changing r.
// Push and Peek both go through here so that they agree bit for bit.
func (r *RSI) next(x float64) (count int, gain, loss float64) {
	if r.count == 0 {
		return 1, 0, 0
	}
	var g, l float64
	if d := x - r.prev; d > 0 {
		g = d
	} else if d < 0 {
		l = -d
	}
	// r.count closes so far make r.count−1 changes; this push makes r.count.
	nf := float64(r.n)
	switch {
	case r.count < r.n:
		return r.count + 1, r.gain + g, r.loss + l
	case r.count == r.n:
		return r.count + 1, (r.gain + g) / nf, (r.loss + l) / nf
	default:
		return r.count, (r.gain*(nf-1) + g) / nf, (r.loss*(nf-1) + l) / nf
	}
}

func rsi(gain, loss float64) float64 {
	if loss == 0 {
		if gain == 0 {
			return 50
		}
		return 100
	}
	return 100 - 100/(1+gain/loss)
}

// Push adds the close of a final candle.
func (r *RSI) Push(x float64) {
	if r.n == 0 {
		return
	}
	r.count, r.gain, r.loss = r.next(x)
	r.prev = x
}

// Peek returns the RSI that Push(x) would give, without changing r.
func (r *RSI) Peek(x float64) (v float64, ok bool) {
	if r.n == 0 {
		return 0, false
	}
	count, gain, loss := r.next(x)
	if count <= r.n {
		return 0, false
	}
	return rsi(gain, loss), true
}

// Value returns the RSI after the last push.
func (r *RSI) Value() (v float64, ok bool) {
	if r.n == 0 || r.count <= r.n {
		return 0, false
	}
	return rsi(r.gain, r.loss), true
}

// AppendBinary appends the exact state of r to dst. It never fails; the
// error is there to satisfy encoding.BinaryAppender.
func (r *RSI) AppendBinary(dst []byte) ([]byte, error) {
	dst = snapshot.AppendHeader(dst, tagRSI, stateVersion)
	dst = snapshot.AppendU32(dst, r.n)
	dst = snapshot.AppendU32(dst, r.count)
	dst = snapshot.AppendF64(dst, r.prev)
	dst = snapshot.AppendF64(dst, r.gain)
	return snapshot.AppendF64(dst, r.loss), nil
}

// MarshalBinary returns AppendBinary(nil).
func (r *RSI) MarshalBinary() ([]byte, error) { return r.AppendBinary(nil) }

// Decode restores r from a state AppendBinary wrote at the front of b and
// returns the bytes after it, for reading states composed into one buffer.
// On error r is unchanged.
func (r *RSI) Decode(b []byte) (rest []byte, err error) {
	rd := newReader(b)
	rd.Header(tagRSI)
	t := RSI{n: rd.U32(), count: rd.U32(), prev: rd.F64(), gain: rd.F64(), loss: rd.F64()}
	if rd.Err == nil {
		if t.n < 1 || t.n > math.MaxInt32-1 {
			rd.Fail("RSI period %d", t.n)
		} else if t.count > t.n+1 {
			rd.Fail("RSI count %d > period %d + 1", t.count, t.n)
		}
	}
	if rd.Err != nil {
		return nil, rd.Err
	}
	*r = t
	return rd.B, nil
}

// UnmarshalBinary restores r from exactly the bytes AppendBinary wrote. On
// error r is unchanged.
func (r *RSI) UnmarshalBinary(b []byte) error {
	var t RSI
	if err := whole(t.Decode(b)); err != nil {
		return err
	}
	*r = t
	return nil
}
