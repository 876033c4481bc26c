// Package generate makes the records that flow into the ticks topic: a market
// simulator with fault and anomaly injection, and a replay of historical OHLCV
// files. It knows nothing of Kafka; callers hand records to a producer.
package generate

import (
	"context"
	"math"
	"time"
)

// Record is one message for the ticks topic. Key is the symbol. Value is the
// tick's JSON, or deliberately broken bytes when a fault was injected.
//
// A source may reuse the Value buffer on the next call to Next, so callers
// copy it if they keep it.
type Record struct {
	Key   []byte
	Value []byte
	// TS is the record's event time (the tick's ts), used to pace emission
	// against the wall clock. For a malformed record it is the time of the
	// record before it.
	TS time.Time
}

// Source yields records in a deterministic order.
type Source interface {
	// Next returns the next record, or ok=false when the source is exhausted.
	Next() (rec Record, ok bool, err error)
}

// Emit hands a record to its destination. It must copy rec.Value if it keeps
// it after returning.
type Emit func(ctx context.Context, rec Record) error

// Pace says how Run spaces records in time.
type Pace struct {
	// Speed is simulated seconds per wall-clock second: with 1 a record is
	// emitted when the wall clock has advanced as far past the first
	// record's emission as its TS is past the first record's TS; with X
	// event time runs X times faster; with 0 records go as fast as emit
	// accepts them.
	Speed float64
	// NotAhead holds back a record whose TS is ahead of the wall clock
	// until the clock reaches it. A run from a start in the past at a speed
	// above 1 (or 0) then catches up with the present and carries on in
	// real time, instead of sending ticks from the future, which the
	// processor rejects (future_ts) and which would run ahead of every
	// other source's clock.
	NotAhead bool
	// CaughtUp, if set, is called once, with the record's TS, when NotAhead
	// first holds a record back.
	CaughtUp func(ts time.Time)
}

// Run pulls records from src and emits them, paced as pace says. It returns
// the number of records emitted, and stops early with ctx's error when ctx
// is done.
func Run(ctx context.Context, src Source, pace Pace, emit Emit) (int64, error) {
	var (
		n         int64
		wallStart time.Time
		evStart   time.Time
		timer     *time.Timer
		anchored  bool
		caughtUp  bool
	)
	wait := func(d time.Duration) error {
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
			return nil
		}
	}
	speed := pace.Speed
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		rec, ok, err := src.Next()
		if err != nil {
			return n, err
		}
		if !ok {
			return n, nil
		}
		if speed > 0 && !rec.TS.IsZero() {
			// Anchor on the first record that has an event time: a zero TS
			// (say a malformed first record) would put every later record
			// centuries in the future.
			if !anchored {
				wallStart, evStart, anchored = time.Now(), rec.TS, true
			}
			// Clamp before converting: a float64 beyond the int64 range
			// converts to an arbitrary Duration, on amd64 the most negative
			// one, which would emit a far-future record at once.
			var ahead time.Duration
			switch f := float64(rec.TS.Sub(evStart)) / speed; {
			case f >= math.MaxInt64:
				ahead = math.MaxInt64
			case f <= math.MinInt64:
				ahead = math.MinInt64
			default:
				ahead = time.Duration(f)
			}
			due := wallStart.Add(ahead)
			// Sleeping per record would cost a syscall each at high rates;
			// only wait once we are a millisecond ahead of schedule.
			if d := time.Until(due); d > time.Millisecond {
				if err := wait(d); err != nil {
					return n, err
				}
			}
		}
		if pace.NotAhead && !rec.TS.IsZero() {
			if d := time.Until(rec.TS); d > time.Millisecond {
				if !caughtUp {
					caughtUp = true
					if pace.CaughtUp != nil {
						pace.CaughtUp(rec.TS)
					}
				}
				if err := wait(d); err != nil {
					return n, err
				}
			}
		}
		if err := emit(ctx, rec); err != nil {
			return n, err
		}
		n++
	}
}
