// Package indicator computes technical indicators incrementally over a
// series of candle closes: SMA, EMA, Bollinger Bands, Wilder's RSI, a
// session VWAP, and Set, the bundle one candle interval shows.
//
// Every indicator is a small value with no pointers, updated in O(1) without
// allocating. Push adds the close of a final candle; Peek(x) returns the
// value Push(x) would give, bit for bit, without changing the state, which
// is how a still-forming candle's indicators are shown. Value returns the
// value after the last push. A value that is not defined yet (too few
// closes) comes back with ok false, or, in Values, with its Has bit clear.
//
// # Rounding
//
// SMA and Bollinger keep running sums over a ring of the last n closes, as
// deviations from a reference value k: Σ(x−k) and Σ(x−k)². Deviations keep
// the variance s2/n − (s1/n)² free of the cancellation Σx² − (Σx)²/n
// suffers when the spread is small against the price. So that rounding
// error cannot build up over a long stream, the push that writes the ring's
// last slot, one in n, recomputes both sums from the ring and rebases k to
// its own close. Error therefore comes from at most 2n−1 closes: those in
// the ring at the last rebase and those pushed since. With u = 2⁻⁵³ and D
// the largest |x − k| over those closes (at most their range), the mean is
// within about 2(n+4)·u·D of the exact mean of the window and the variance
// within about 6(n+10)·u·D², so the standard deviation is within Δvar/(2σ)
// and never further than √Δvar, however long the stream runs. For prices a
// few percent apart this is far below 1e-9 relative.
//
// Closes are prices: positive and finite. Nothing panics on other input,
// but a NaN or infinity stays in an EMA or RSI for good and in a window
// until it has left the ring and the next rebase, and closes beyond about
// 1e150 overflow the sum of squares.
//
// # State
//
// Every stateful type has AppendBinary (the encoding.BinaryAppender
// shape), MarshalBinary and UnmarshalBinary, and Decode, which reads one
// state from the front of a buffer and returns the rest, so that many
// states appended one after another into one blob read back in the same
// order:
//
//	blob, _ = a.AppendBinary(blob)
//	blob, _ = b.AppendBinary(blob)
//	…
//	rest, err := a.Decode(blob)
//	rest, err = b.Decode(rest)
//
// A state is a type tag and a version byte, then its fields little endian,
// float64s as their IEEE 754 bits, so a restored indicator continues bit for
// bit as the one that was saved. A buffer that is not such a state gives an
// error wrapping ErrCorrupt and leaves the receiver unchanged.
//
// The package does no I/O and reads no clock.
package indicator
