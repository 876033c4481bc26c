package indicator

import "github.com/stockpipe/stockpipe/internal/snapshot"

// Bits of Values.Has, one per value that is defined.
const (
	HasSMA5  uint8 = 1 << iota // SMA5 is defined: 5 closes pushed
	HasSMA20                   // SMA20 is defined: 20 closes pushed
	HasEMA12                   // EMA12 is defined: 1 close pushed
	HasEMA26                   // EMA26 is defined: 1 close pushed
	HasBB                      // BBUpper and BBLower are defined: 20 closes pushed
	HasRSI14                   // RSI14 is defined: 15 closes pushed
)

// Values are a Set's indicators at one close. A value is defined only when
// its bit is set in Has; an undefined value is 0, and the caller stores it
// as SQL NULL. A bitmask rather than NaN keeps Values comparable with ==
// and makes a forgotten check show up as a wrong number rather than a NaN
// leaking into sums downstream.
type Values struct {
	SMA5, SMA20      float64
	EMA12, EMA26     float64
	BBUpper, BBLower float64 // Bollinger(20, 2); the middle band is SMA20
	RSI14            float64
	Has              uint8 // HasSMA5 | HasSMA20 | … for the defined values
}

// Set is the indicators one candle interval of one symbol shows: SMA(5),
// SMA(20), EMA(12), EMA(26), Bollinger(20, 2) and RSI(14), all fed the same
// final closes. SMA(20) is read off the Bollinger window, which holds the
// same 20 closes, and equals what an SMA of period 20 gives bit for bit.
// The zero value ignores pushes and is never defined; use NewSet.
type Set struct {
	sma5  SMA
	bb    Bollinger
	ema12 EMA
	ema26 EMA
	rsi14 RSI
}

// NewSet returns an empty Set.
func NewSet() Set {
	return Set{
		sma5:  SMA{w: window{n: 5}},
		bb:    Bollinger{w: window{n: 20}, mult: 2},
		ema12: newEMA(12),
		ema26: newEMA(26),
		rsi14: RSI{n: 14},
	}
}

// Push adds the close of a final candle to every indicator.
func (s *Set) Push(x float64) {
	s.sma5.Push(x)
	s.bb.Push(x)
	s.ema12.Push(x)
	s.ema26.Push(x)
	s.rsi14.Push(x)
}

// Peek returns the values that Push(x) would give, without changing s: the
// indicators of a still-forming candle whose close so far is x.
func (s *Set) Peek(x float64) Values {
	var v Values
	if m, ok := s.sma5.Peek(x); ok {
		v.SMA5 = m
		v.Has |= HasSMA5
	}
	if s.bb.w.fullAfterPush() {
		v.SMA20, v.BBUpper, v.BBLower = s.bb.bands(s.bb.w.next(x))
		v.Has |= HasSMA20 | HasBB
	}
	if e, ok := s.ema12.Peek(x); ok {
		v.EMA12 = e
		v.Has |= HasEMA12
	}
	if e, ok := s.ema26.Peek(x); ok {
		v.EMA26 = e
		v.Has |= HasEMA26
	}
	if r, ok := s.rsi14.Peek(x); ok {
		v.RSI14 = r
		v.Has |= HasRSI14
	}
	return v
}

// Value returns the values after the last push.
func (s *Set) Value() Values {
	var v Values
	if m, ok := s.sma5.Value(); ok {
		v.SMA5 = m
		v.Has |= HasSMA5
	}
	if w := &s.bb.w; w.n > 0 && w.count == w.n {
		v.SMA20, v.BBUpper, v.BBLower = s.bb.bands(w.k, w.s1, w.s2)
		v.Has |= HasSMA20 | HasBB
	}
	if e, ok := s.ema12.Value(); ok {
		v.EMA12 = e
		v.Has |= HasEMA12
	}
	if e, ok := s.ema26.Value(); ok {
		v.EMA26 = e
		v.Has |= HasEMA26
	}
	if r, ok := s.rsi14.Value(); ok {
		v.RSI14 = r
		v.Has |= HasRSI14
	}
	return v
}

// AppendBinary appends the exact state of s to dst: a header, then the
// states of SMA(5), Bollinger(20, 2), EMA(12), EMA(26) and RSI(14) as their
// own AppendBinary writes them. It never fails; the error is there to
// satisfy encoding.BinaryAppender.
func (s *Set) AppendBinary(dst []byte) ([]byte, error) {
	dst = snapshot.AppendHeader(dst, tagSet, stateVersion)
	dst, _ = s.sma5.AppendBinary(dst)
	dst, _ = s.bb.AppendBinary(dst)
	dst, _ = s.ema12.AppendBinary(dst)
	dst, _ = s.ema26.AppendBinary(dst)
	dst, _ = s.rsi14.AppendBinary(dst)
	return dst, nil
}

// MarshalBinary returns AppendBinary(nil).
func (s *Set) MarshalBinary() ([]byte, error) { return s.AppendBinary(nil) }

// Decode restores s from a state AppendBinary wrote at the front of b and
// returns the bytes after it, for reading states composed into one buffer.
// A state whose periods are not those of a Set is an error. On error s is
// unchanged.
func (s *Set) Decode(b []byte) (rest []byte, err error) {
	r := newReader(b)
	r.Header(tagSet)
	if r.Err != nil {
		return nil, r.Err
	}
	var t Set
	rest = r.B
	for _, d := range []func([]byte) ([]byte, error){
		t.sma5.Decode, t.bb.Decode, t.ema12.Decode, t.ema26.Decode, t.rsi14.Decode,
	} {
		if rest, err = d(rest); err != nil {
			return nil, err
		}
	}
	want := NewSet()
	if t.sma5.w.n != want.sma5.w.n || t.bb.w.n != want.bb.w.n || t.bb.mult != want.bb.mult ||
		t.ema12.n != want.ema12.n || t.ema26.n != want.ema26.n || t.rsi14.n != want.rsi14.n {
		r.Fail("periods are not those of a Set")
		return nil, r.Err
	}
	*s = t
	return rest, nil
}

// UnmarshalBinary restores s from exactly the bytes AppendBinary wrote. On
// error s is unchanged.
func (s *Set) UnmarshalBinary(b []byte) error {
	var t Set
	if err := whole(t.Decode(b)); err != nil {
		return err
	}
	*s = t
	return nil
}
