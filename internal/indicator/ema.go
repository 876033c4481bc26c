package indicator

import (
	"fmt"
	"math"

	"github.com/stockpipe/stockpipe/internal/snapshot"
)

// EMA is the exponential moving average with alpha = 2/(n+1), seeded with
// the first close: after the first push it equals that close, and every
// later push x sets ema = ema + alpha·(x − ema). The zero value ignores
// pushes and is never defined; use NewEMA.
type EMA struct {
	n     int
	alpha float64 // 2/(n+1), kept to spare a division per update
	v     float64
	ok    bool
}

// NewEMA returns an EMA of period n ≥ 1.
func NewEMA(n int) (EMA, error) {
	if n < 1 || n > math.MaxInt32 {
		return EMA{}, fmt.Errorf("indicator: EMA period %d outside [1, %d]", n, math.MaxInt32)
	}
	return newEMA(n), nil
}

func newEMA(n int) EMA {
	return EMA{n: n, alpha: 2 / float64(n+1)}
}

// Push adds the close of a final candle.
func (e *EMA) Push(x float64) {
	if e.n == 0 {
		return
	}
	e.v, e.ok = e.next(x), true
}

func (e *EMA) next(x float64) float64 {
	if !e.ok {
		return x
	}
	return e.v + e.alpha*(x-e.v)
}

// Peek returns the average that Push(x) would give, without changing e.
func (e *EMA) Peek(x float64) (v float64, ok bool) {
	if e.n == 0 {
		return 0, false
	}
	return e.next(x), true
}

// Value returns the average after the last push.
func (e *EMA) Value() (v float64, ok bool) { return e.v, e.ok }

// AppendBinary appends the exact state of e to dst. It never fails; the
// error is there to satisfy encoding.BinaryAppender.
func (e *EMA) AppendBinary(dst []byte) ([]byte, error) {
	dst = snapshot.AppendHeader(dst, tagEMA, stateVersion)
	dst = snapshot.AppendU32(dst, e.n)
	ok := byte(0)
	if e.ok {
		ok = 1
	}
	dst = append(dst, ok)
	return snapshot.AppendF64(dst, e.v), nil
}

// MarshalBinary returns AppendBinary(nil).
func (e *EMA) MarshalBinary() ([]byte, error) { return e.AppendBinary(nil) }

// Decode restores e from a state AppendBinary wrote at the front of b and
// returns the bytes after it, for reading states composed into one buffer.
// On error e is unchanged.
func (e *EMA) Decode(b []byte) (rest []byte, err error) {
	r := newReader(b)
	r.Header(tagEMA)
	n := r.U32()
	flag := r.Take(1)
	v := r.F64()
	if r.Err != nil {
		return nil, r.Err
	}
	if n < 1 || n > math.MaxInt32 {
		r.Fail("EMA period %d", n)
	} else if flag[0] > 1 || flag[0] == 0 && v != 0 {
		r.Fail("EMA flag %d with value %v", flag[0], v)
	}
	if r.Err != nil {
		return nil, r.Err
	}
	// alpha is recomputed by the same expression as in NewEMA, so it comes
	// back bit for bit.
	t := newEMA(n)
	t.v, t.ok = v, flag[0] == 1
	*e = t
	return r.B, nil
}

// UnmarshalBinary restores e from exactly the bytes AppendBinary wrote. On
// error e is unchanged.
func (e *EMA) UnmarshalBinary(b []byte) error {
	var t EMA
	if err := whole(t.Decode(b)); err != nil {
		return err
	}
	*e = t
	return nil
}
