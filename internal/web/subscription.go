package web

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// tickMode is what a stream client gets of tick events.
type tickMode uint8

const (
	ticksNone   tickMode = iota
	ticksPrice           // the latest price: {symbol, price, ts}
	ticksTrades          // the processor's event: price, ts, count and the latest trades
)

// subscription is what one client of /api/stream asked for. A page names
// the events it shows, so that it is sent nothing it would ignore: the
// overview no ticks' trades nor 5m candles, the pipeline page no ticks at
// all.
type subscription struct {
	// symbol restricts ticks, candles, anomalies and candles_changed to
	// one symbol; "" is every symbol.
	symbol string
	// everything is set when no kind was named: every event, as before the
	// parameters existed, ticks with their trades.
	everything bool
	ticks      tickMode
	// candles are the intervals whose candle and candles_changed events
	// are sent: whoever follows live candles must also hear that stored
	// ones were rewritten.
	candles   map[string]bool
	anomalies bool
	status    bool
	pipeline  bool
	dagruns   bool
}

// streamParams are the parameters /api/stream takes, for the message
// refusing others.
var streamParams = []string{"symbol", "ticks", "candles", "anomalies", "status", "pipeline", "dagruns"}

// parseSubscription reads the /api/stream parameters other than symbol's
// value (which the handler checks against the database). Anything it does
// not know is a *badParam: a typo would otherwise silently subscribe to
// nothing, or to everything.
func parseSubscription(q url.Values) (subscription, error) {
	sub := subscription{everything: true, ticks: ticksTrades}
	names := make([]string, 0, len(q))
	for name := range q {
		names = append(names, name)
	}
	slices.Sort(names) // the same message for the same request
	for _, name := range names {
		if !slices.Contains(streamParams, name) {
			return sub, &badParam{"unknown parameter " + strconv.Quote(name) + "; /api/stream takes " + strings.Join(streamParams, ", ")}
		}
	}
	if !slices.ContainsFunc(names, func(n string) bool { return n != "symbol" }) {
		return sub, nil
	}
	sub = subscription{}
	for _, name := range names {
		for _, v := range q[name] {
			var err error
			switch name {
			case "symbol":
				// Checked by the handler.
			case "ticks":
				switch v {
				case "all":
					sub.ticks = max(sub.ticks, ticksPrice)
				case "trades":
					sub.ticks = ticksTrades
				default:
					err = &badParam{"ticks " + strconv.Quote(v) + " must be all (the latest price of each symbol) or trades (the latest trades as well)"}
				}
			case "candles":
				err = sub.addIntervals(v)
			case "anomalies":
				sub.anomalies, err = boolParam(name, v)
			case "status":
				sub.status, err = boolParam(name, v)
			case "pipeline":
				sub.pipeline, err = boolParam(name, v)
			case "dagruns":
				sub.dagruns, err = boolParam(name, v)
			}
			if err != nil {
				return sub, err
			}
		}
	}
	return sub, nil
}

func (s *subscription) addIntervals(v string) error {
	if s.candles == nil {
		s.candles = map[string]bool{}
	}
	if v == "all" {
		for iv := range intervals {
			s.candles[iv] = true
		}
		return nil
	}
	for iv := range strings.SplitSeq(v, ",") {
		if !intervals[iv] {
			return &badParam{"candles " + strconv.Quote(v) + " must be intervals of 1m, 5m, 1d (comma-separated) or all"}
		}
		s.candles[iv] = true
	}
	return nil
}

func boolParam(name, v string) (bool, error) {
	switch v {
	case "1", "true":
		return true, nil
	case "0", "false":
		return false, nil
	}
	return false, &badParam{name + " " + strconv.Quote(v) + " must be 1 or 0"}
}

// wants reports whether the client asked for m.
func (s *subscription) wants(m *message) bool {
	if m.symbol != "" && s.symbol != "" && m.symbol != s.symbol {
		return false
	}
	if s.everything {
		return true
	}
	switch m.event {
	case "tick":
		return s.ticks != ticksNone
	case "candle", "candles_changed":
		return s.candles[m.interval]
	case "anomaly":
		return s.anomalies
	case "status":
		return s.status
	case "pipeline":
		return s.pipeline
	case "dagrun":
		return s.dagruns
	}
	return false
}
