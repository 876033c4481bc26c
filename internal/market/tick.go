// Package market holds the tick: its type, its JSON wire format and the rules
// a tick must satisfy. It does no I/O.
package market

import (
	"strconv"
	"time"
)

// Tick is one trade print with the quote in force when it happened.
//
// The wire format is the JSON object
//
//	{"symbol":"AAPL","ts":"2026-11-25T14:30:00.123456Z","seq":1042,"price":189.23,"size":100,"bid":189.22,"ask":189.24}
type Tick struct {
	Symbol string    // upper-case ticker, see ValidSymbol
	TS     time.Time // event time, UTC
	Seq    int64     // increases per symbol at the source
	Price  float64   // trade price, > 0
	Size   int64     // shares, > 0
	Bid    float64   // best bid, > 0 and <= Ask
	Ask    float64   // best ask, > 0
}

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
