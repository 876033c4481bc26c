// Package candle turns one symbol's trades into OHLCV candles over windows
// of event time, finalised by a watermark.
//
// Windows are aligned to multiples of the interval since the Unix epoch, in
// UTC, and are half open: a trade exactly on a boundary belongs to the
// window that starts there. A Watermark per symbol trails the latest event
// time by the allowed lateness; a tick strictly before it is late, and a
// candle is final once the watermark reaches its end. One Watermark serves
// all of a symbol's Windows, one per interval:
//
//	if wm.Late(t.TS) {
//		// reject as late
//	} else {
//		wm.Observe(t.TS)
//		for _, w := range windows { // 1m, 5m, … of this symbol
//			forming := w.Add(t.TS, t.Seq, t.Price, t.Size)
//			w.Advance(wm.Time(), emit) // final candles, in bucket order
//			// show forming, with indicators peeked at forming.Close
//		}
//	}
//
// A symbol that goes quiet would keep its last candles open for ever: its
// own watermark only moves with its own trades. The caller may Seal them by
// a clock of its choosing; a sealed candle reads as final but stays in the
// window, so the symbol's own on-time trades still land in it. Nothing but
// the symbol's own trades decides what is late.
//
// A candle is then exactly what a batch recomputation over the accepted
// ticks grouped by window gives (Open and Close by first_value and
// last_value ordered by (ts, seq), High, Low, Volume, Trades, and Turnover
// up to the last bits of floating-point summation order), because
// out-of-order ticks only ever land in open windows.
//
// Window and Watermark are fixed-size values that never allocate once made.
// Both have AppendBinary (the encoding.BinaryAppender shape), MarshalBinary
// and UnmarshalBinary, and Decode, which reads one state from the front of
// a buffer and returns the rest, so that many states appended one after
// another into one blob read back in the same order. Floats are stored as
// their IEEE 754 bits and times as Unix seconds and nanoseconds, so a
// restored state continues bit for bit as the one saved; a buffer that is
// not such a state gives an error wrapping ErrCorrupt and leaves the
// receiver unchanged.
//
// The package does no I/O and reads no clock: all time is event time from
// the trades and the caller.
package candle
