package anomaly

import (
	"math"
	"time"
)

// idle is what the tests' callers of a detector do when event time passes:
// report the gaps the watermark has passed and, measuring the symbol's
// silence as the watermark minus its last tick (the simplest clock a caller
// can keep), a stale symbol.
func (d *Detector) idle(dst []Anomaly, symbol string, watermark time.Time) []Anomaly {
	dst = d.Gaps(dst, symbol, watermark)
	var silence time.Duration
	switch f := float64(watermark.UnixNano()) - float64(d.lastNs); {
	case f >= math.MaxInt64:
		silence = math.MaxInt64
	case f > 0:
		silence = time.Duration(f)
	}
	return d.Stale(dst, symbol, silence)
}
