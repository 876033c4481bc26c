package feed

import (
	"github.com/stockpipe/stockpipe/internal/market"
)

// recentIDs is how many trade ids per symbol are remembered to recognise a
// resend. A provider resends at most what it sent since the connection
// dropped, which is seconds of trades.
const recentIDs = 4096

// Assembler makes ticks from trades: each trade gets its symbol's next seq
// and the symbol's latest quote as bid/ask, and a trade whose id was seen
// recently is a resend and makes no tick. It is not safe for concurrent use.
type Assembler struct {
	seq     map[string]int64
	quote   map[string]Quote
	seen    map[string]*idRing
	dropped int64
}

// NewAssembler starts each symbol's seq after last (the topic's tail, so a
// restarted connector continues where it left off); symbols not in last
// start at 1.
func NewAssembler(last map[string]int64) *Assembler {
	a := &Assembler{seq: make(map[string]int64), quote: make(map[string]Quote), seen: make(map[string]*idRing)}
	for s, n := range last {
		a.seq[s] = n
	}
	return a
}

// Quote records q as its symbol's quote in force. A quote that is not a
// two-sided market (a side at zero, or bid above ask, which a crossed or
// locked book can briefly show) is forgotten instead, so trades after it
// carry no quote rather than one the validator would refuse.
func (a *Assembler) Quote(q Quote) {
	if q.Bid > 0 && q.Ask > 0 && q.Bid <= q.Ask {
		a.quote[q.Symbol] = q
		return
	}
	delete(a.quote, q.Symbol)
}

// Trade returns the tick for tr, or ok=false when tr is a resend of a trade
// already turned into a tick.
func (a *Assembler) Trade(tr Trade) (t market.Tick, ok bool) {
	if tr.ID != "" {
		r := a.seen[tr.Symbol]
		if r == nil {
			r = newIDRing(recentIDs)
			a.seen[tr.Symbol] = r
		}
		if !r.add(tr.ID) {
			a.dropped++
			return market.Tick{}, false
		}
	}
	a.seq[tr.Symbol]++
	t = market.Tick{Symbol: tr.Symbol, TS: tr.TS.UTC(), Seq: a.seq[tr.Symbol], Price: tr.Price, Size: tr.Size}
	if q, ok := a.quote[tr.Symbol]; ok {
		t.Bid, t.Ask = q.Bid, q.Ask
	}
	return t, true
}

// Dropped is the number of resends recognised so far.
func (a *Assembler) Dropped() int64 { return a.dropped }

// idRing remembers the last n ids added, in a set and a ring that evicts
// the oldest.
type idRing struct {
	set  map[string]struct{}
	ring []string
	next int
}

func newIDRing(n int) *idRing {
	return &idRing{set: make(map[string]struct{}, n), ring: make([]string, n)}
}

// add reports whether id is new, remembering it.
func (r *idRing) add(id string) bool {
	if _, ok := r.set[id]; ok {
		return false
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.set, old)
	}
	r.ring[r.next] = id
	r.set[id] = struct{}{}
	r.next = (r.next + 1) % len(r.ring)
	return true
}
