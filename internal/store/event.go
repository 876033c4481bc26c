package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Event is one live update, as notified on Channel. Data is the event's
// JSON, exactly what a browser gets; the routing fields beside it say what
// a listener needs to route and conflate the event without decoding Data,
// which at thousands of symbols is most of a listener's work.
type Event struct {
	Kind   string // "tick", "candle", "anomaly", "batch" or "candles_changed"
	Symbol string // "" for batch; AllSymbols for a candles_changed of every symbol

	Interval string  // candle and candles_changed
	Bucket   int64   // candle: the bucket, Unix seconds
	Final    bool    // candle: the candle is final
	Count    int     // tick: trades in the batch
	TS       string  // tick: the latest trade's time, RFC 3339
	Price    float64 // tick: the latest trade's price

	Data []byte
}

// TickUpdate is the live update of ev.
func TickUpdate(ev *TickEvent) Event {
	return Event{Kind: "tick", Symbol: ev.Symbol, Count: ev.Count, TS: ev.TS, Price: ev.Price, Data: ev.AppendJSON(nil)}
}

// CandleUpdate is the live update of c.
func CandleUpdate(c *Candle) Event {
	return Event{Kind: "candle", Symbol: c.Symbol, Interval: c.Interval, Bucket: c.T, Final: c.Final, Data: c.AppendJSON(nil)}
}

// AnomalyUpdate is the live update of a.
func AnomalyUpdate(a *Anomaly) (Event, error) {
	d, err := json.Marshal(a)
	return Event{Kind: "anomaly", Symbol: a.Symbol, Data: d}, err
}

// BatchUpdate announces a committed batch to the pipeline monitor.
func BatchUpdate(m *BatchMeta) (Event, error) {
	d, err := json.Marshal(m)
	return Event{Kind: "batch", Data: d}, err
}

// CandlesChangedUpdate announces that the stored candles of symbol
// (AllSymbols: every symbol) and interval were rewritten.
func CandlesChangedUpdate(symbol, interval string) (Event, error) {
	d, err := json.Marshal(CandlesChanged{Symbol: symbol, Interval: interval})
	return Event{Kind: "candles_changed", Symbol: symbol, Interval: interval, Data: d}, err
}

// A notification's payload is one line per event: the routing fields and
// then Data, separated by tabs. Neither a field nor JSON holds a raw tab or
// newline before Data (symbols and intervals are validated names; JSON
// escapes control characters), so a line splits unambiguously. It is our
// own format rather than JSON because decoding JSON routing envelopes was
// a quarter of the web server's CPU at 5,000 symbols.
const eventFields = 9

// appendEvent appends e's line, newline included.
func appendEvent(b []byte, e *Event) []byte {
	b = append(b, e.Kind...)
	b = append(b, '\t')
	b = append(b, e.Symbol...)
	b = append(b, '\t')
	b = append(b, e.Interval...)
	b = append(b, '\t')
	b = strconv.AppendInt(b, e.Bucket, 10)
	b = append(b, '\t')
	b = strconv.AppendBool(b, e.Final)
	b = append(b, '\t')
	b = strconv.AppendInt(b, int64(e.Count), 10)
	b = append(b, '\t')
	b = append(b, e.TS...)
	b = append(b, '\t')
	b = strconv.AppendFloat(b, e.Price, 'g', -1, 64)
	b = append(b, '\t')
	b = append(b, e.Data...)
	return append(b, '\n')
}

// Encode packs events into as few notification payloads as PostgreSQL's
// payload limit allows, in order. An event too large for any payload
// (impossible with the bounded events built here) is left out rather than
// failing a commit over a live update.
func Encode(events []Event) []string {
	var out []string
	var buf []byte
	var line []byte
	for i := range events {
		line = appendEvent(line[:0], &events[i])
		if len(line) > maxPayload {
			continue
		}
		if len(buf)+len(line) > maxPayload {
			out = append(out, string(buf))
			buf = buf[:0]
		}
		buf = append(buf, line...)
	}
	if len(buf) > 0 {
		out = append(out, string(buf))
	}
	return out
}

// Decode reads the events of one notification payload.
func Decode(payload string) ([]Event, error) {
	var events []Event
	for line := range strings.Lines(payload) {
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			continue
		}
		var f [eventFields]string
		rest := line
		for i := range eventFields - 1 {
			var ok bool
			f[i], rest, ok = strings.Cut(rest, "\t")
			if !ok {
				return events, fmt.Errorf("decoding live update %.80q: %d fields, want %d", line, i+1, eventFields)
			}
		}
		f[eventFields-1] = rest
		e := Event{Kind: f[0], Symbol: f[1], Interval: f[2], TS: f[6], Data: []byte(f[8])}
		var err error
		if e.Bucket, err = strconv.ParseInt(f[3], 10, 64); err != nil {
			return events, fmt.Errorf("decoding live update %.80q: bucket: %w", line, err)
		}
		if e.Final, err = strconv.ParseBool(f[4]); err != nil {
			return events, fmt.Errorf("decoding live update %.80q: final: %w", line, err)
		}
		if e.Count, err = strconv.Atoi(f[5]); err != nil {
			return events, fmt.Errorf("decoding live update %.80q: count: %w", line, err)
		}
		if e.Price, err = strconv.ParseFloat(f[7], 64); err != nil {
			return events, fmt.Errorf("decoding live update %.80q: price: %w", line, err)
		}
		events = append(events, e)
	}
	return events, nil
}

// The JSON of the live updates is written by hand: encoding/json's
// reflection (and its re-validation of nested raw JSON) was the largest
// single cost of a batch at thousands of symbols. The output is byte for
// byte what encoding/json writes (TestAppendJSONMatchesEncodingJSON).

// AppendJSON appends ev's JSON, as encoding/json would write it.
func (ev *TickEvent) AppendJSON(b []byte) []byte {
	b = ev.appendHead(b)
	b = append(b, `,"count":`...)
	b = strconv.AppendInt(b, int64(ev.Count), 10)
	b = append(b, `,"trades":`...)
	if ev.Trades == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range ev.Trades {
			if i > 0 {
				b = append(b, ',')
			}
			b = ev.Trades[i].AppendJSON(b)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// AppendSlimJSON appends ev's JSON without its count and trades: the
// symbol, price and time, all a price-only view needs.
func (ev *TickEvent) AppendSlimJSON(b []byte) []byte {
	return append(ev.appendHead(b), '}')
}

// appendHead opens ev's JSON with the fields both forms share.
func (ev *TickEvent) appendHead(b []byte) []byte {
	b = append(b, `{"symbol":`...)
	b = appendString(b, ev.Symbol)
	b = append(b, `,"price":`...)
	b = appendFloat(b, ev.Price)
	b = append(b, `,"ts":`...)
	return appendString(b, ev.TS)
}

// TradesJSON returns the part of ev's JSON (as AppendJSON writes it) that
// holds its trades, so that a reader can leave them undecoded until needed.
func TradesJSON(data []byte) []byte {
	const key = `,"trades":`
	i := bytes.LastIndex(data, []byte(key))
	if i < 0 || len(data) == 0 || data[len(data)-1] != '}' {
		return nil
	}
	return data[i+len(key) : len(data)-1]
}

// AppendJSON appends t's JSON, as encoding/json would write it.
func (t *Trade) AppendJSON(b []byte) []byte {
	b = append(b, `{"ts":`...)
	b = appendTime(b, t.TS)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, t.Seq, 10)
	b = append(b, `,"price":`...)
	b = appendFloat(b, t.Price)
	b = append(b, `,"size":`...)
	b = strconv.AppendInt(b, t.Size, 10)
	b = append(b, `,"bid":`...)
	b = appendFloatPtr(b, t.Bid)
	b = append(b, `,"ask":`...)
	b = appendFloatPtr(b, t.Ask)
	return append(b, '}')
}

// AppendJSON appends c's JSON, as encoding/json would write it.
func (c *Candle) AppendJSON(b []byte) []byte {
	b = append(b, '{')
	if c.Symbol != "" {
		b = append(b, `"symbol":`...)
		b = appendString(b, c.Symbol)
		b = append(b, ',')
	}
	if c.Interval != "" {
		b = append(b, `"interval":`...)
		b = appendString(b, c.Interval)
		b = append(b, ',')
	}
	b = append(b, `"t":`...)
	b = strconv.AppendInt(b, c.T, 10)
	b = append(b, `,"bucket":`...)
	b = appendTime(b, c.Bucket)
	b = append(b, `,"open":`...)
	b = appendFloat(b, c.Open)
	b = append(b, `,"high":`...)
	b = appendFloat(b, c.High)
	b = append(b, `,"low":`...)
	b = appendFloat(b, c.Low)
	b = append(b, `,"close":`...)
	b = appendFloat(b, c.Close)
	b = append(b, `,"volume":`...)
	b = strconv.AppendInt(b, c.Volume, 10)
	b = append(b, `,"vwap":`...)
	b = appendFloatPtr(b, c.VWAP)
	b = append(b, `,"trades":`...)
	b = strconv.AppendInt(b, c.Trades, 10)
	for _, f := range [...]struct {
		key string
		v   *float64
	}{
		{`,"sma_5":`, c.SMA5}, {`,"sma_20":`, c.SMA20}, {`,"ema_12":`, c.EMA12}, {`,"ema_26":`, c.EMA26},
		{`,"bb_upper":`, c.BBUpper}, {`,"bb_lower":`, c.BBLower}, {`,"rsi_14":`, c.RSI14},
	} {
		b = append(b, f.key...)
		b = appendFloatPtr(b, f.v)
	}
	b = append(b, `,"final":`...)
	b = strconv.AppendBool(b, c.Final)
	return append(b, '}')
}

func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

func appendFloatPtr(b []byte, f *float64) []byte {
	if f == nil {
		return append(b, "null"...)
	}
	return appendFloat(b, *f)
}

// appendFloat writes f as encoding/json does; NaN and infinities, which it
// refuses, become null.
func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 → e-9, as encoding/json writes it.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// appendString writes s as a JSON string. Symbols, intervals and times need
// no escaping; anything else goes through encoding/json.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
