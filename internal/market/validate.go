package market

import (
	"math"
	"strconv"
	"time"
)

// Rules are the checks on a decoded tick's values. The zero value is not
// useful; start from DefaultRules.
type Rules struct {
	// MaxFuture is how far ahead of the processor's clock a ts may be.
	// Clocks drift; a tick from next week is a bug.
	MaxFuture time.Duration
	// MinTS is the earliest accepted ts. History is welcome, the epoch is
	// not: a zero or near-zero time means the producer never set it.
	MinTS time.Time
	// MaxPrice bounds price, bid and ask so that sums over a day of trades
	// (VWAP numerators) stay finite.
	MaxPrice float64
	// MaxSize bounds size for the same reason.
	MaxSize int64
}

// DefaultRules returns the rules stockpipe applies unless told otherwise.
func DefaultRules() Rules {
	return Rules{
		MaxFuture: time.Minute,
		MinTS:     time.Date(1970, 1, 2, 0, 0, 0, 0, time.UTC),
		MaxPrice:  1e9,
		MaxSize:   1e12,
	}
}

// Check reports whether t obeys the tick rules at time now, returning a
// *Rejection naming the first rule broken. The quote rules apply to a tick
// that has a quote (Tick.HasQuote); one without is valid.
func (r Rules) Check(t *Tick, now time.Time) error {
	if t.Seq <= 0 {
		return reject(ReasonBadSeq, "seq "+strconv.FormatInt(t.Seq, 10)+" must be positive")
	}
	if !(t.Price > 0) || t.Price > r.MaxPrice || math.IsInf(t.Price, 0) {
		return reject(ReasonBadPrice, "price "+fmtFloat(t.Price)+" must be above 0 and at most "+fmtFloat(r.MaxPrice))
	}
	if t.Size <= 0 || t.Size > r.MaxSize {
		return reject(ReasonBadSize, "size "+strconv.FormatInt(t.Size, 10)+" must be above 0 and at most "+strconv.FormatInt(r.MaxSize, 10))
	}
	// A tick without a quote (from a trade-only feed) has no quote rules
	// to break.
	if t.HasQuote() {
		if !(t.Bid > 0) || t.Bid > r.MaxPrice || !(t.Ask > 0) || t.Ask > r.MaxPrice {
			return reject(ReasonBadQuote, "bid "+fmtFloat(t.Bid)+" and ask "+fmtFloat(t.Ask)+" must be above 0 and at most "+fmtFloat(r.MaxPrice))
		}
		if t.Bid > t.Ask {
			return reject(ReasonCrossedQuote, "bid "+fmtFloat(t.Bid)+" is above ask "+fmtFloat(t.Ask))
		}
	}
	if t.TS.Before(r.MinTS) {
		return reject(ReasonAncientTS, "ts "+t.TS.Format(time.RFC3339Nano)+" is before "+r.MinTS.Format(time.RFC3339))
	}
	if t.TS.Sub(now) > r.MaxFuture {
		return reject(ReasonFutureTS, "ts "+t.TS.Format(time.RFC3339Nano)+" is more than "+r.MaxFuture.String()+" ahead of the processor's clock")
	}
	return nil
}

func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
