package indicator

import "github.com/stockpipe/stockpipe/internal/snapshot"

// SMA is the simple moving average of the last n closes: their mean,
// undefined until n closes have been pushed. The zero value ignores pushes
// and is never defined; use NewSMA.
//
// Push and Peek are O(1), except in the one state in n where the next push
// fills the ring's last slot: then both sum the ring's n closes, which is
// what bounds rounding error (see the package documentation).
type SMA struct {
	w window
}

// NewSMA returns an SMA over n closes, 1 ≤ n ≤ MaxPeriod.
func NewSMA(n int) (SMA, error) {
	if err := checkPeriod("SMA", n); err != nil {
		return SMA{}, err
	}
	return SMA{w: window{n: n}}, nil
}

// Push adds the close of a final candle.
func (s *SMA) Push(x float64) { s.w.push(x) }

// Peek returns the average that Push(x) would give, without changing s.
func (s *SMA) Peek(x float64) (v float64, ok bool) {
	if !s.w.fullAfterPush() {
		return 0, false
	}
	k, s1, s2 := s.w.next(x)
	mean, _ := s.w.stats(k, s1, s2)
	return mean, true
}

// Value returns the average after the last push.
func (s *SMA) Value() (v float64, ok bool) {
	if s.w.n == 0 || s.w.count < s.w.n {
		return 0, false
	}
	mean, _ := s.w.stats(s.w.k, s.w.s1, s.w.s2)
	return mean, true
}

// AppendBinary appends the exact state of s to dst. It never fails; the
// error is there to satisfy encoding.BinaryAppender.
func (s *SMA) AppendBinary(dst []byte) ([]byte, error) {
	return s.w.appendBinary(snapshot.AppendHeader(dst, tagSMA, stateVersion)), nil
}

// MarshalBinary returns AppendBinary(nil).
func (s *SMA) MarshalBinary() ([]byte, error) { return s.AppendBinary(nil) }

// Decode restores s from a state AppendBinary wrote at the front of b and
// returns the bytes after it, for reading states composed into one buffer.
// On error s is unchanged.
func (s *SMA) Decode(b []byte) (rest []byte, err error) {
	r := newReader(b)
	r.Header(tagSMA)
	var t SMA
	t.w.decode(r)
	if r.Err != nil {
		return nil, r.Err
	}
	*s = t
	return r.B, nil
}

// UnmarshalBinary restores s from exactly the bytes AppendBinary wrote. On
// error s is unchanged.
func (s *SMA) UnmarshalBinary(b []byte) error {
	var t SMA
	if err := whole(t.Decode(b)); err != nil {
		return err
	}
	*s = t
	return nil
}
