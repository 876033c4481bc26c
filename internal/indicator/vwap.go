package indicator

import "github.com/stockpipe/stockpipe/internal/snapshot"

// VWAP is a session's volume-weighted average price: the running
// Σ(price·size) / Σ(size) since the last Reset, undefined while no volume
// has been added. The caller resets it at each session start. The zero
// value is an empty session, ready to use.
//
// Unlike the windowed indicators, VWAP only ever adds positive terms, so its
// sums have no cancellation to guard against: after m additions the
// turnover is within about m·u of exact relatively (u = 2⁻⁵³), and the
// volume, an integer, is exact.
type VWAP struct {
	turnover float64
	volume   int64
}

// Push adds one trade. A size ≤ 0 carries no volume and is ignored
// (validation rejects such ticks before they get here).
func (v *VWAP) Push(price float64, size int64) {
	if size > 0 {
		v.turnover += price * float64(size)
		v.volume += size
	}
}

// Peek returns the VWAP that Push(price, size) would give, without changing
// v.
func (v *VWAP) Peek(price float64, size int64) (vwap float64, ok bool) {
	if size <= 0 {
		return v.Value()
	}
	return (v.turnover + price*float64(size)) / float64(v.volume+size), true
}

// Value returns the VWAP of the session so far.
func (v *VWAP) Value() (vwap float64, ok bool) {
	if v.volume <= 0 {
		return 0, false
	}
	return v.turnover / float64(v.volume), true
}

// Volume returns the session's total size so far.
func (v *VWAP) Volume() int64 { return v.volume }

// Reset starts a new session.
func (v *VWAP) Reset() { *v = VWAP{} }

// AppendBinary appends the exact state of v to dst. It never fails; the
// error is there to satisfy encoding.BinaryAppender.
func (v *VWAP) AppendBinary(dst []byte) ([]byte, error) {
	dst = snapshot.AppendHeader(dst, tagVWAP, stateVersion)
	dst = snapshot.AppendF64(dst, v.turnover)
	return snapshot.AppendI64(dst, v.volume), nil
}

// MarshalBinary returns AppendBinary(nil).
func (v *VWAP) MarshalBinary() ([]byte, error) { return v.AppendBinary(nil) }

// Decode restores v from a state AppendBinary wrote at the front of b and
// returns the bytes after it, for reading states composed into one buffer.
// On error v is unchanged.
func (v *VWAP) Decode(b []byte) (rest []byte, err error) {
	r := newReader(b)
	r.Header(tagVWAP)
	t := VWAP{turnover: r.F64(), volume: r.I64()}
	if r.Err == nil && t.volume < 0 {
		r.Fail("VWAP volume %d", t.volume)
	}
	if r.Err != nil {
		return nil, r.Err
	}
	*v = t
	return r.B, nil
}

// UnmarshalBinary restores v from exactly the bytes AppendBinary wrote. On
// error v is unchanged.
func (v *VWAP) UnmarshalBinary(b []byte) error {
	var t VWAP
	if err := whole(t.Decode(b)); err != nil {
		return err
	}
	*v = t
	return nil
}
