package anomaly

import (
	"math"
	"time"
)

// gap is a run of seqs found missing when a later seq arrived. Out-of-order
// delivery often fills it a few ticks later, so it is only reported once the
// watermark has passed the tick after it (see Detector.Gaps).
//
// Which seqs arrived is tracked exactly for the first 64 seqs of a gap, the
// size out-of-order delivery produces, with one bit each; beyond that only a
// count is kept, which relies on the input being deduplicated as Observe
// requires. A Detector holds at most Config.GapMaxPending gaps, in seq
// order.
type gap struct {
	lo, hi  int64  // the missing seqs, lo..hi inclusive, as first found
	missing uint64 // how many of them have not arrived
	arrived uint64 // bit i: seq lo+i arrived, for i < 64
	afterNs int64  // event time of the tick with seq hi+1, Unix ns
}

// open records the gap lo..hi found by a tick at event time ns. If that
// makes too many pending gaps, the oldest are reported at once. (There can
// be more than one too many after restoring a state saved with a larger
// GapMaxPending.)
func (d *Detector) open(dst []Anomaly, symbol string, lo, hi, ns int64) []Anomaly {
	for len(d.gaps) >= d.cfg.GapMaxPending {
		dst = d.report(dst, symbol, &d.gaps[0])
		copy(d.gaps, d.gaps[1:])
		d.gaps = d.gaps[:len(d.gaps)-1]
	}
	// As uint64 the count is exact even where hi−lo overflows int64.
	d.gaps = append(d.gaps, gap{lo: lo, hi: hi, missing: uint64(hi) - uint64(lo) + 1, afterNs: ns})
	return dst
}

// fill notes that seq, below the highest seq seen, has arrived.
func (d *Detector) fill(seq int64) {
	for i := range d.gaps {
		g := &d.gaps[i]
		if seq < g.lo || seq > g.hi {
			continue
		}
		if off := uint64(seq) - uint64(g.lo); off < 64 {
			if g.arrived&(1<<off) != 0 {
				return // already counted
			}
			g.arrived |= 1 << off
		}
		g.missing--
		if g.missing == 0 {
			copy(d.gaps[i:], d.gaps[i+1:])
			d.gaps[len(d.gaps)-1] = gap{}
			d.gaps = d.gaps[:len(d.gaps)-1]
		}
		return
	}
}

// report appends the seq_gap anomaly for g.
func (d *Detector) report(dst []Anomaly, symbol string, g *gap) []Anomaly {
	ts := g.afterNs
	if d.gapFired && micros(ts) <= micros(d.lastGapNs) {
		// Only ticks whose times run against their seqs get here. Move
		// to the next microsecond, the precision the store keeps.
		us := micros(d.lastGapNs) + 1
		if us > math.MaxInt64/1000 {
			return dst // the end of representable time
		}
		ts = us * 1000
	}
	d.gapFired, d.lastGapNs = true, ts
	return append(dst, Anomaly{
		Symbol:    symbol,
		TS:        time.Unix(0, ts).UTC(),
		Kind:      KindSeqGap,
		Severity:  d.cfg.GapSeverity,
		Value:     float64(g.missing),
		Threshold: 1,
		Detail:    gapDetail(symbol, g),
	})
}
