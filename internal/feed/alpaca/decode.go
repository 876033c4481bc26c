package alpaca

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/stockpipe/stockpipe/internal/feed"
)

// message is any element of an Alpaca JSON message array: a trade ("t")
// or quote ("q") fills its fields, a control message ("success",
// "subscription", "error") others. Pointers tell a missing field from a
// zero. encoding/json matches keys exactly before it matches them
// case-insensitively, so "S" and "s", "T" and "t" stay apart.
type message struct {
	T  *string    `json:"T"`
	S  *string    `json:"S"`
	I  *int64     `json:"i"`
	X  *string    `json:"x"`
	P  *float64   `json:"p"`
	Sz *int64     `json:"s"`
	TS *time.Time `json:"t"`
	BP *float64   `json:"bp"`
	AP *float64   `json:"ap"`
}

// Decode is the feed.Decoder of one Alpaca JSON message array, the shape
// Alpaca's stream sends to a client that does not ask for msgpack and the
// one Stream records. Its elements give events in their order: a trade
// ("T":"t") a trade event with ID "x:i", TS t in UTC, Price p and Size s;
// a quote ("T":"q") a quote event with Bid bp and Ask ap. Control messages
// (success, subscription, error) and the other kinds Alpaca documents
// (bars, statuses, corrections …) give no events and no error. Invalid
// JSON, a message that is not an array of objects, an element without
// "T", or a trade or quote missing a field the event needs is an error.
func Decode(msg []byte) ([]feed.Event, error) {
	var elems []json.RawMessage
	if err := json.Unmarshal(msg, &elems); err != nil {
		return nil, fmt.Errorf("an alpaca message that is not a JSON array: %w", err)
	}
	evs := make([]feed.Event, 0, len(elems))
	for i, raw := range elems {
		ev, ok, err := decodeOne(raw)
		if err != nil {
			return nil, fmt.Errorf("alpaca message %d of %d: %w", i+1, len(elems), err)
		}
		if ok {
			evs = append(evs, ev)
		}
	}
	return evs, nil
}

// decodeOne decodes one element; ok is false for an element that gives no
// event.
func decodeOne(raw json.RawMessage) (ev feed.Event, ok bool, err error) {
	var m message
	if err := json.Unmarshal(raw, &m); err != nil {
		return ev, false, fmt.Errorf("not a JSON object: %w", err)
	}
	if m.T == nil {
		return ev, false, errors.New("no message type T")
	}
	switch *m.T {
	case "t":
		if m.S == nil || m.I == nil || m.X == nil || m.P == nil || m.Sz == nil || m.TS == nil {
			return ev, false, errors.New("a trade without S, i, x, p, s or t")
		}
		return feed.Event{Trade: &feed.Trade{Symbol: *m.S, TS: m.TS.UTC(), Price: *m.P, Size: *m.Sz,
			ID: tradeID(*m.X, *m.I)}}, true, nil
	case "q":
		if m.S == nil || m.BP == nil || m.AP == nil || m.TS == nil {
			return ev, false, errors.New("a quote without S, bp, ap or t")
		}
		return feed.Event{Quote: &feed.Quote{Symbol: *m.S, TS: m.TS.UTC(), Bid: *m.BP, Ask: *m.AP}}, true, nil
	default:
		return ev, false, nil
	}
}
