// Package feed turns a market-data provider's trades and quotes into ticks:
// the types a connector delivers, the assembly of a tick from a trade and
// its symbol's latest quote (with a per-symbol seq and resends dropped), a
// connector's statistics, and the recording of what arrived. It does no
// network I/O; the connectors live in its sub-packages.
package feed

import (
	"context"
	"fmt"
	"time"
)

// Trade is one trade print as a provider reports it.
type Trade struct {
	Symbol string
	TS     time.Time
	Price  float64
	Size   int64
	// ID identifies the trade at its provider (Alpaca: exchange and trade
	// id), so a resend after a reconnect can be recognised. Empty when the
	// provider gives no id (Finnhub).
	ID string
}

// Quote is a provider's best bid and ask for a symbol.
type Quote struct {
	Symbol string
	TS     time.Time
	Bid    float64
	Ask    float64
}

// Handler receives what a connector reads, in arrival order, from one
// goroutine. A Handler may block (the connector then reads no further), and
// returns an error only when nothing more can be delivered; the connector
// then stops with that error.
type Handler interface {
	Trade(Trade) error
	Quote(Quote) error
}

// Connector streams one provider's trades and quotes.
type Connector interface {
	// Run connects, subscribes and delivers to h until ctx is done (it
	// then returns nil), reconnecting with backoff after a lost
	// connection and resubscribing. It returns an error only for what a
	// reconnect cannot cure — bad credentials, no subscription to the
	// feed — as a *FatalError, or an error of h.
	Run(ctx context.Context, h Handler, st *Stats) error
}

// FatalError is a provider's refusal that retrying cannot cure. Code is
// the provider's code (Alpaca's 402, 406, 409 …), Fix says what the user
// can do.
type FatalError struct {
	Source string
	Code   int
	Msg    string
	Fix    string
}

func (e *FatalError) Error() string {
	s := fmt.Sprintf("%s refused the connection", e.Source)
	if e.Code != 0 {
		s += fmt.Sprintf(" (%d %s)", e.Code, e.Msg)
	} else if e.Msg != "" {
		s += ": " + e.Msg
	}
	if e.Fix != "" {
		s += ": " + e.Fix
	}
	return s
}
