// Package market holds the tick: its type, its JSON wire format and the rules
// a tick must satisfy. It does no I/O.
package market

import (
	"strconv"
	"time"
)

// Tick is one trade print with the quote in force when it happened, if the
// source had one.
//
// The wire format is the JSON object
//
//	{"symbol":"AAPL","ts":"2026-11-25T14:30:00.123456Z","seq":1042,"price":189.23,"size":100,"bid":189.22,"ask":189.24}
//
// bid and ask come both or neither: trade-only feeds (Finnhub, or an Alpaca
// trade before its symbol's first quote) have no quote to send, and a tick
// without one omits both fields (or sends both as null). Half a quote is
// rejected (see Decode).
type Tick struct {
	Symbol string    // upper-case ticker, see ValidSymbol
	TS     time.Time // event time, UTC
	Seq    int64     // increases per symbol at the source
	Price  float64   // trade price, > 0
	Size   int64     // shares, > 0
	// Bid and Ask are the quote: best bid > 0 and <= Ask, best ask > 0.
	// Both 0 means the tick carries no quote (see HasQuote); a real
	// quote is never 0, so the zero value needs no flag beside it.
	Bid float64
	Ask float64
}

// HasQuote reports whether the tick carries a quote: true unless Bid and Ask
// are both 0. With only one of them 0 the tick has a quote, a bad one, which
// Rules.Check rejects.
func (t *Tick) HasQuote() bool { return t.Bid != 0 || t.Ask != 0 }

// AppendJSON appends the tick's wire form to dst and returns the extended
// buffer. Written by hand because encoding/json allocates and reflects on
// every call, and the generator encodes hundreds of thousands of ticks a
// second.
func (t *Tick) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"symbol":`...)
	dst = strconv.AppendQuote(dst, t.Symbol)
	dst = append(dst, `,"ts":"`...)
	dst = AppendTime(dst, t.TS)
	dst = append(dst, `","seq":`...)
	dst = strconv.AppendInt(dst, t.Seq, 10)
	dst = append(dst, `,"price":`...)
	dst = strconv.AppendFloat(dst, t.Price, 'f', -1, 64)
	dst = append(dst, `,"size":`...)
	dst = strconv.AppendInt(dst, t.Size, 10)
	if !t.HasQuote() {
		// No quote: both fields left out, the form trade-only feeds send.
		return append(dst, '}')
	}
	dst = append(dst, `,"bid":`...)
	dst = strconv.AppendFloat(dst, t.Bid, 'f', -1, 64)
	dst = append(dst, `,"ask":`...)
	dst = strconv.AppendFloat(dst, t.Ask, 'f', -1, 64)
	return append(dst, '}')
}

// AppendTime appends ts in UTC as RFC 3339 with microseconds, the precision
// PostgreSQL's timestamptz keeps, so a tick survives a round trip through the
// database unchanged.
func AppendTime(dst []byte, ts time.Time) []byte {
	return ts.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000000Z07:00")
}

// HistoryName suggests a name of its own for a live symbol's history (AAPL
// → AAPL.H): a symbol's time is its own, so history replayed under the name
// of a symbol that is live is late, and under another name is not.
func HistoryName(sym string) string {
	const suffix = ".H"
	if len(sym)+len(suffix) > MaxSymbolLen {
		sym = sym[:MaxSymbolLen-len(suffix)]
	}
	return sym + suffix
}
