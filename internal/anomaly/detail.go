package anomaly

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// The Detail sentences. They are built only when an anomaly fires, so they
// may allocate.

func jumpDetail(sym string, prev, price, move float64, dt time.Duration, z float64) string {
	verb := "rose"
	if move < 0 {
		verb = "fell"
	}
	return fmt.Sprintf("%s %s %.2f%% (%s → %s) in %s, %.1fσ of its recent tick-to-tick volatility",
		sym, verb, math.Abs(move)*100, fmtPrice(prev), fmtPrice(price), fmtGap(dt), math.Abs(z))
}

func volumeDetail(sym string, sum float64, k int, med, ratio float64) string {
	trades := "its last " + strconv.Itoa(k) + " trades"
	if k == 1 {
		trades = "one trade"
	}
	return fmt.Sprintf("%s traded %s shares in %s, %.1f× its typical trade of %s shares",
		sym, fmtShares(sum), trades, ratio, fmtShares(med))
}

func spreadDetail(sym string, bid, ask, s, med, ratio float64) string {
	return fmt.Sprintf("%s spread widened to %.1f bp (bid %s, ask %s), %.1f× its typical %.2f bp",
		sym, s*1e4, fmtPrice(bid), fmtPrice(ask), ratio, med*1e4)
}

func bandDetail(sym string, price, lower, upper, edge, excess float64) string {
	side := "above the upper"
	if edge == lower {
		side = "below the lower"
	}
	return fmt.Sprintf("%s traded at %s, %.2f%% %s Bollinger band (%s–%s) of the forming minute",
		sym, fmtPrice(price), excess*100, side, fmtLevel(lower), fmtLevel(upper))
}

func vwapDetail(sym string, price, vwap, dev float64) string {
	side := "above"
	if dev < 0 {
		side = "below"
	}
	return fmt.Sprintf("%s traded at %s, %.2f%% %s its session VWAP of %s",
		sym, fmtPrice(price), math.Abs(dev)/100, side, fmtLevel(vwap))
}

func gapDetail(sym string, g *gap) string {
	total := uint64(g.hi) - uint64(g.lo) + 1
	seqs, them := "seq "+strconv.FormatInt(g.lo, 10), "it"
	if total > 1 {
		seqs, them = "seqs "+strconv.FormatInt(g.lo, 10)+"–"+strconv.FormatInt(g.hi, 10), "them"
	}
	if g.missing != total {
		seqs = strconv.FormatUint(g.missing, 10) + " of " + seqs
	}
	return fmt.Sprintf("%s never received %s, before seq %d at %s, and the watermark has passed %s",
		sym, seqs, g.hi+1, fmtTime(g.afterNs), them)
}

func staleDetail(sym string, silenceNs float64, last time.Time) string {
	return fmt.Sprintf("%s has had no tick for %s while the rest of the feed traded on; its last was at %s",
		sym, fmtGap(time.Duration(math.Min(silenceNs, math.MaxInt64))), last.Format("2006-01-02T15:04:05.000000Z07:00"))
}

// fmtPrice writes a price as short as it can be read back exactly.
func fmtPrice(p float64) string { return strconv.FormatFloat(p, 'f', -1, 64) }

// fmtLevel writes a computed price level, such as a band or an average,
// which has more digits than are worth reading: cents, or four significant
// digits below a dollar.
func fmtLevel(p float64) string {
	if math.Abs(p) >= 1 {
		return strconv.FormatFloat(p, 'f', 2, 64)
	}
	return strconv.FormatFloat(p, 'g', 4, 64)
}

// fmtShares writes a share count, which the detectors hold as float64.
func fmtShares(x float64) string {
	if x == math.Trunc(x) && math.Abs(x) < 1e15 {
		return strconv.FormatInt(int64(x), 10)
	}
	return strconv.FormatFloat(x, 'f', 1, 64)
}

// fmtGap rounds a duration to what a reader cares about: milliseconds below
// a minute, seconds above.
func fmtGap(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.String()
	case d < time.Minute:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func fmtTime(ns int64) string {
	return time.Unix(0, ns).UTC().Format("2006-01-02T15:04:05.000000Z07:00")
}
