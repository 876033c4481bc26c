package candle

import (
	"fmt"
	"time"

	"github.com/stockpipe/stockpipe/internal/snapshot"
)

// MaxOpen is how many candles a Window holds open at once. Open candles
// end after the last watermark and start at or before the latest event
// time, which lies lateness past it, so at most 1 + ⌈lateness/interval⌉ of
// them stay open between ticks; one more opens when a tick starts a new
// window before Advance has closed the old ones. So lateness may be at most
// (MaxOpen−2)·interval: two intervals, for example 2 s for 1 s candles.
const MaxOpen = 4

// Window builds one symbol's candles of one interval from its trades.
// Trades may arrive out of event-time order, within the lateness the
// symbol's Watermark allows; each lands in the candle of its own event
// time.
//
// A window with no trades makes no candle: gaps stay gaps, with no candle
// carried forward over them.
//
// A Window is a plain value of fixed size that never allocates. The zero
// value ignores every trade; use NewWindow.
type Window struct {
	interval time.Duration
	lateness time.Duration
	done     time.Time // the latest watermark Advance was given, if advanced
	advanced bool
	n        int
	open     [MaxOpen]Candle // open candles, in bucket order; zero past n
}

// NewWindow returns a window of the given interval for trades up to
// lateness late. The interval must be a whole number of seconds (1m, 5m,
// 1h, …) or divide a second evenly; lateness must be ≥ 0 and at most
// (MaxOpen−2)·interval.
func NewWindow(interval, lateness time.Duration) (Window, error) {
	if err := checkWindow(interval, lateness); err != nil {
		return Window{}, err
	}
	return Window{interval: interval, lateness: lateness}, nil
}

func checkWindow(interval, lateness time.Duration) error {
	if err := checkInterval(interval); err != nil {
		return err
	}
	if lateness < 0 {
		return fmt.Errorf("candle: negative lateness %v", lateness)
	}
	if n := (lateness + interval - 1) / interval; n > MaxOpen-2 {
		return fmt.Errorf("candle: lateness %v would need %d open %v candles, more than the %d a Window holds",
			lateness, n+2, interval, MaxOpen)
	}
	return nil
}

// Interval returns the window length.
func (w *Window) Interval() time.Duration { return w.interval }

// Lateness returns the lateness the window was made for.
func (w *Window) Lateness() time.Duration { return w.lateness }

// Len returns the number of open candles.
func (w *Window) Len() int { return w.n }

// Add adds a trade of size shares at price, event time ts and sequence
// number seq, and returns the candle it landed in, valid until the next
// call of Add or Advance. A trade at ts exactly on a boundary belongs to
// the window that starts there. The caller has already dropped late trades
// (Watermark.Late) and validated the rest.
//
// Add returns nil and changes nothing when the trade's window was already
// finalised by Advance, or would be one open window more than MaxOpen;
// neither happens to a caller that drops late trades and calls Advance
// after every Observe, as the package documentation shows.
func (w *Window) Add(ts time.Time, seq int64, price float64, size int64) *Candle {
	if w.interval <= 0 {
		return nil
	}
	ts = ts.UTC()
	b := align(ts, w.interval)
	// Newest first: nearly every trade lands in the latest window.
	i := w.n - 1
	for ; i >= 0; i-- {
		c := w.open[i].Bucket.Compare(b)
		if c == 0 {
			w.open[i].add(ts, seq, price, size)
			return &w.open[i]
		}
		if c < 0 {
			break
		}
	}
	// Only a window with no open candle can have been finalised already.
	if w.n == MaxOpen || w.advanced && !b.Add(w.interval).After(w.done) {
		return nil
	}
	i++
	copy(w.open[i+1:w.n+1], w.open[i:w.n])
	w.open[i] = Candle{
		Bucket: b,
		Open:   price, High: price, Low: price, Close: price,
		Volume:   size,
		Turnover: price * float64(size),
		Trades:   1,
		OpenTS:   ts, OpenSeq: seq,
		CloseTS: ts, CloseSeq: seq,
	}
	w.n++
	return &w.open[i]
}

// Advance finalises every open candle whose End is at or before watermark,
// in bucket order: it removes each from the window and passes it to emit
// with Final set. The caller then pushes each final close into its
// indicators. Trades in finalised windows are refused by Add from then on.
// A watermark earlier than one already given finalises nothing. Each
// candle leaves the window before emit sees it; emit may be nil.
func (w *Window) Advance(watermark time.Time, emit func(Candle)) {
	if w.advanced && !watermark.After(w.done) {
		// Every open candle ends after w.done: Add refuses the rest.
		return
	}
	w.done, w.advanced = watermark.UTC(), true
	for w.n > 0 && !w.open[0].Bucket.Add(w.interval).After(watermark) {
		c := w.open[0]
		c.Final = true
		copy(w.open[:w.n-1], w.open[1:w.n])
		w.n--
		w.open[w.n] = Candle{}
		if emit != nil {
			emit(c)
		}
	}
}

// Seal marks every open candle whose End is at or before until as final
// without closing it, and reports how many it newly sealed. The caller
// seals the candles of a symbol that has gone quiet, so that readers see
// them final, by a clock other than the symbol's own (see the analytics
// package): a sealed candle stays in the window, so a trade the symbol's
// Watermark still accepts lands in it and amends it, and the candle stays
// final. Advance later closes it like any other. Sealing changes no value,
// only Final, so the candles a stream builds do not depend on when, or
// whether, they were sealed.
func (w *Window) Seal(until time.Time) int {
	n := 0
	for i := range w.n {
		c := &w.open[i]
		if c.Final || c.Bucket.Add(w.interval).After(until) {
			continue
		}
		c.Final = true
		n++
	}
	return n
}

// Forming appends the open candles, in bucket order, to dst and returns the
// extended slice. A sealed candle has Final set.
func (w *Window) Forming(dst []Candle) []Candle {
	return append(dst, w.open[:w.n]...)
}

// AppendBinary appends the exact state of w to dst. It never fails; the
// error is there to satisfy encoding.BinaryAppender.
//
// The layout is the tag 'W', a version byte, interval and lateness as
// int64 nanoseconds, a byte that is 1 once Advance has been called and the
// last watermark it was given, the number of open candles as a byte, then
// each open candle: Bucket, Open, High, Low, Close, Volume, Turnover,
// Trades, OpenTS, OpenSeq, CloseTS, CloseSeq and a byte that is 1 if it is
// sealed (version 2; version 1 had no such byte and is still read). Times
// are int64 Unix seconds and uint32 nanoseconds, float64s their IEEE 754
// bits, all little endian.
func (w *Window) AppendBinary(dst []byte) ([]byte, error) {
	dst = append(dst, tagWindow, stateVersion)
	dst = snapshot.AppendI64(dst, int64(w.interval))
	dst = snapshot.AppendI64(dst, int64(w.lateness))
	adv := byte(0)
	if w.advanced {
		adv = 1
	}
	dst = append(dst, adv)
	dst = snapshot.AppendTime(dst, w.done)
	dst = append(dst, byte(w.n))
	for i := range w.n {
		c := &w.open[i]
		dst = snapshot.AppendTime(dst, c.Bucket)
		dst = snapshot.AppendF64(dst, c.Open)
		dst = snapshot.AppendF64(dst, c.High)
		dst = snapshot.AppendF64(dst, c.Low)
		dst = snapshot.AppendF64(dst, c.Close)
		dst = snapshot.AppendI64(dst, c.Volume)
		dst = snapshot.AppendF64(dst, c.Turnover)
		dst = snapshot.AppendI64(dst, c.Trades)
		dst = snapshot.AppendTime(dst, c.OpenTS)
		dst = snapshot.AppendI64(dst, c.OpenSeq)
		dst = snapshot.AppendTime(dst, c.CloseTS)
		dst = snapshot.AppendI64(dst, c.CloseSeq)
		sealed := byte(0)
		if c.Final {
			sealed = 1
		}
		dst = append(dst, sealed)
	}
	return dst, nil
}

// MarshalBinary returns AppendBinary(nil).
func (w *Window) MarshalBinary() ([]byte, error) { return w.AppendBinary(nil) }

// Decode restores w from a state AppendBinary wrote at the front of b and
// returns the bytes after it, for reading states composed into one buffer.
// On error w is unchanged.
func (w *Window) Decode(b []byte) (rest []byte, err error) {
	r := newReader(b)
	version := r.HeaderVersion(tagWindow, 1)
	var t Window
	t.interval = time.Duration(r.I64())
	t.lateness = time.Duration(r.I64())
	adv := r.Byte()
	t.done = r.Time()
	t.n = int(r.Byte())
	if r.Err != nil {
		return nil, r.Err
	}
	if err := checkWindow(t.interval, t.lateness); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	switch {
	case adv > 1:
		r.Fail("advanced flag %d", adv)
	case adv == 0 && !t.done.IsZero():
		r.Fail("watermark without its flag")
	case t.n > MaxOpen:
		r.Fail("%d open candles", t.n)
	}
	t.advanced = adv == 1
	for i := 0; i < t.n && r.Err == nil; i++ {
		c := &t.open[i]
		c.Bucket = r.Time()
		c.Open, c.High, c.Low, c.Close = r.F64(), r.F64(), r.F64(), r.F64()
		c.Volume, c.Turnover, c.Trades = r.I64(), r.F64(), r.I64()
		c.OpenTS, c.OpenSeq = r.Time(), r.I64()
		c.CloseTS, c.CloseSeq = r.Time(), r.I64()
		if version >= 2 {
			switch sealed := r.Byte(); sealed {
			case 0, 1:
				c.Final = sealed == 1
			default:
				r.Fail("sealed flag %d", sealed)
			}
		}
		switch {
		case r.Err != nil:
		case !align(c.Bucket, t.interval).Equal(c.Bucket):
			r.Fail("bucket %v not aligned to %v", c.Bucket, t.interval)
		case i > 0 && !c.Bucket.After(t.open[i-1].Bucket):
			r.Fail("buckets out of order")
		case t.advanced && !c.End(t.interval).After(t.done):
			r.Fail("open candle %v already past the watermark", c.Bucket)
		}
	}
	if r.Err != nil {
		return nil, r.Err
	}
	*w = t
	return r.B, nil
}

// UnmarshalBinary restores w from exactly the bytes AppendBinary wrote. On
// error w is unchanged.
func (w *Window) UnmarshalBinary(b []byte) error {
	var t Window
	if err := whole(t.Decode(b)); err != nil {
		return err
	}
	*w = t
	return nil
}
