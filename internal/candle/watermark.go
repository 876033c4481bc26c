package candle

import (
	"fmt"
	"time"

	"github.com/stockpipe/stockpipe/internal/snapshot"
)

// Watermark tracks how far one symbol's event time has certainly got: the
// latest event time observed minus the allowed lateness, or a later time
// the caller advanced it to. It never moves back.
//
// A tick is late when its ts is strictly before the watermark; a tick
// exactly at the watermark is on time. Windows finalise candles whose end
// is at or before the watermark, and a window's end is not in it, so every
// on-time tick falls in a window that is still open.
//
// The zero value has no lateness and has seen nothing.
type Watermark struct {
	lateness time.Duration
	max      time.Time // latest event time observed, if seen
	mark     time.Time // the watermark, if set
	seen     bool
	set      bool
}

// NewWatermark returns a watermark that trails the latest event time by
// lateness ≥ 0 (the pipeline's default is 2 s).
func NewWatermark(lateness time.Duration) (Watermark, error) {
	if lateness < 0 {
		return Watermark{}, fmt.Errorf("candle: negative lateness %v", lateness)
	}
	return Watermark{lateness: lateness}, nil
}

// Lateness returns how far the watermark trails the latest event time.
func (w *Watermark) Lateness() time.Duration { return w.lateness }

// Observe notes an accepted tick's event time, which moves the watermark
// up to ts − lateness if that is later.
func (w *Watermark) Observe(ts time.Time) {
	if !w.seen || ts.After(w.max) {
		w.max, w.seen = ts.UTC(), true
		w.raise(w.max.Add(-w.lateness))
	}
}

func (w *Watermark) raise(t time.Time) {
	if !w.set || t.After(w.mark) {
		w.mark, w.set = t, true
	}
}

// Late reports whether ts is strictly before the watermark. Nothing is late
// before the first Observe or AdvanceTo.
func (w *Watermark) Late(ts time.Time) bool {
	return w.set && ts.Before(w.mark)
}

// Time returns the watermark, in UTC, or the zero time before the first
// Observe or AdvanceTo (which finalises nothing when passed to Advance).
func (w *Watermark) Time() time.Time { return w.mark }

// Max returns the latest event time observed, in UTC, and false before the
// first Observe.
func (w *Watermark) Max() (time.Time, bool) { return w.max, w.seen }

// AppendBinary appends the exact state of w to dst. It never fails; the
// error is there to satisfy encoding.BinaryAppender.
func (w *Watermark) AppendBinary(dst []byte) ([]byte, error) {
	dst = append(dst, tagWatermark, stateVersion)
	dst = snapshot.AppendI64(dst, int64(w.lateness))
	var flags byte
	if w.seen {
		flags |= 1
	}
	if w.set {
		flags |= 2
	}
	dst = append(dst, flags)
	dst = snapshot.AppendTime(dst, w.max)
	return snapshot.AppendTime(dst, w.mark), nil
}

// MarshalBinary returns AppendBinary(nil).
func (w *Watermark) MarshalBinary() ([]byte, error) { return w.AppendBinary(nil) }

// Decode restores w from a state AppendBinary wrote at the front of b and
// returns the bytes after it, for reading states composed into one buffer.
// On error w is unchanged.
func (w *Watermark) Decode(b []byte) (rest []byte, err error) {
	r := newReader(b)
	r.HeaderVersion(tagWatermark, 1)
	lateness := time.Duration(r.I64())
	flags := r.Byte()
	t := Watermark{lateness: lateness, max: r.Time(), mark: r.Time(), seen: flags&1 != 0, set: flags&2 != 0}
	switch {
	case r.Err != nil:
	case lateness < 0:
		r.Fail("negative lateness %v", lateness)
	case flags > 3:
		r.Fail("watermark flags %#x", flags)
	case !t.seen && !t.max.IsZero(), !t.set && !t.mark.IsZero():
		r.Fail("watermark time without its flag")
	}
	if r.Err != nil {
		return nil, r.Err
	}
	*w = t
	return r.B, nil
}

// UnmarshalBinary restores w from exactly the bytes AppendBinary wrote. On
// error w is unchanged.
func (w *Watermark) UnmarshalBinary(b []byte) error {
	var t Watermark
	if err := whole(t.Decode(b)); err != nil {
		return err
	}
	*w = t
	return nil
}
