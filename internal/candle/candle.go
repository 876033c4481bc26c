package candle

import (
	"fmt"
	"math"
	"time"
)

// Candle is the OHLCV summary of one symbol's trades in one window
// [Bucket, Bucket+interval) of event time.
//
// Open and Close are the prices of the earliest and latest trade by
// (ts, seq), whatever order the trades arrived in: what
// first_value(price ORDER BY ts, seq) and last_value over the stored ticks
// give. Two trades with equal ts and seq (a duplicate the pipeline should
// have dropped) keep the one that arrived first.
type Candle struct {
	Bucket   time.Time // window start, UTC, a multiple of the interval since the Unix epoch
	Open     float64   // price of the trade at (OpenTS, OpenSeq)
	High     float64   // highest price
	Low      float64   // lowest price
	Close    float64   // price of the trade at (CloseTS, CloseSeq)
	Volume   int64     // Σ size
	Turnover float64   // Σ price·size, summed in arrival order
	Trades   int64     // number of trades
	OpenTS   time.Time // event time of the earliest trade by (ts, seq), UTC
	OpenSeq  int64     // its seq
	CloseTS  time.Time // event time of the latest trade by (ts, seq), UTC
	CloseSeq int64     // its seq
	// Final is set once the watermark has passed End, when no trade can
	// change the candle any more, or earlier, when the caller sealed it
	// because its symbol went quiet (Window.Seal): a sealed candle stays
	// final but may still be amended by a trade its own watermark accepts.
	Final bool
}

// VWAP returns Turnover/Volume, the volume-weighted average price, or NaN
// when Volume is 0, which a candle built from trades of positive size never
// is.
func (c *Candle) VWAP() float64 {
	if c.Volume == 0 {
		return math.NaN()
	}
	return c.Turnover / float64(c.Volume)
}

// End returns the end of the candle's window, Bucket + interval, which
// belongs to the next window.
func (c *Candle) End(interval time.Duration) time.Time {
	return c.Bucket.Add(interval)
}

func (c *Candle) add(ts time.Time, seq int64, price float64, size int64) {
	if before(ts, seq, c.OpenTS, c.OpenSeq) {
		c.Open, c.OpenTS, c.OpenSeq = price, ts, seq
	}
	if before(c.CloseTS, c.CloseSeq, ts, seq) {
		c.Close, c.CloseTS, c.CloseSeq = price, ts, seq
	}
	if price > c.High {
		c.High = price
	}
	if price < c.Low {
		c.Low = price
	}
	c.Volume += size
	c.Turnover += price * float64(size)
	c.Trades++
}

// before orders trades by (ts, seq).
func before(ts time.Time, seq int64, ts2 time.Time, seq2 int64) bool {
	c := ts.Compare(ts2)
	return c < 0 || c == 0 && seq < seq2
}

// checkInterval accepts the intervals whose windows can be aligned exactly
// from a time's Unix seconds and nanoseconds, with no 64-bit nanosecond
// count to overflow outside the years 1678–2262.
func checkInterval(d time.Duration) error {
	if d <= 0 || d%time.Second != 0 && time.Second%d != 0 {
		return fmt.Errorf("candle: interval %v is neither a whole number of seconds nor an even division of one", d)
	}
	return nil
}

// align returns the start of ts's window: the latest multiple of interval
// since the Unix epoch at or before ts. A ts exactly on a boundary starts
// the window that begins there.
func align(ts time.Time, interval time.Duration) time.Time {
	sec, nsec := ts.Unix(), int64(ts.Nanosecond())
	if interval >= time.Second {
		n := int64(interval / time.Second)
		r := sec % n
		if r < 0 {
			r += n // floor, not truncation, before 1970
		}
		return time.Unix(sec-r, 0).UTC()
	}
	return time.Unix(sec, nsec-nsec%int64(interval)).UTC()
}
