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

// Run pulls records from src and emits them, pacing by event time: with speed
// 1 a record is emitted when the wall clock has advanced as far past the first
// record's emission as its TS is past the first record's TS; with speed X
// event time runs X times faster than the wall clock; with speed 0 records
// are emitted as fast as emit accepts them. Run returns the number of records
// emitted, and stops early with ctx's error when ctx is done.
func Run(ctx context.Context, src Source, speed float64, emit Emit) (int64, error) {
	var (
		n         int64
		wallStart time.Time
		evStart   time.Time
		timer     *time.Timer
		anchored  bool
	)
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
			if wait := time.Until(due); wait > time.Millisecond {
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				select {
				case <-ctx.Done():
					timer.Stop()
					return n, ctx.Err()
				case <-timer.C:
				}
			}
		}
		if err := emit(ctx, rec); err != nil {
			return n, err
		}
		n++
	}
}
