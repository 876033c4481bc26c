package generate

import (
	"bytes"
	"strconv"
)

// Fault encodings. Both kinds start from the last valid tick the symbol
// emitted, so a broken record looks like a corrupted copy of real traffic
// and an invalid one reuses an existing seq (it must not open a seq gap).

// appendMalformed appends bytes that are not a JSON tick object: the
// sorts a consumer meets when a producer or a network goes wrong.
func (s *Simulator) appendMalformed(dst []byte, y *simSym) []byte {
	s.scratch = s.appendTick(s.scratch[:0], &y.last, y.name)
	tick := s.scratch
	switch s.rng.IntN(7) {
	case 0: // truncated: an object only closes at its last byte
		return append(dst, tick[:1+s.rng.IntN(len(tick)-1)]...)
	case 1: // not JSON: a CSV line
		dst = append(dst, y.name...)
		dst = append(dst, ',')
		dst = strconv.AppendInt(dst, y.last.seq, 10)
		dst = append(dst, ',')
		return strconv.AppendFloat(dst, float64(y.last.priceC)/100, 'f', 2, 64)
	case 2: // binary garbage; a leading NUL can never start JSON
		dst = append(dst, 0)
		for n := 8 + s.rng.IntN(24); n > 0; n-- {
			dst = append(dst, byte(s.rng.IntN(256)))
		}
		return dst
	case 3: // two objects glued together
		dst = append(dst, tick...)
		return append(dst, tick...)
	case 4: // a JSON array instead of an object
		dst = append(dst, `["`...)
		dst = append(dst, y.name...)
		dst = append(dst, `",`...)
		dst = strconv.AppendInt(dst, y.last.seq, 10)
		dst = append(dst, ',')
		dst = strconv.AppendFloat(dst, float64(y.last.priceC)/100, 'f', -1, 64)
		return append(dst, ']')
	case 5: // unterminated string
		dst = append(dst, `{"symbol":"`...)
		return append(dst, y.name...)
	default: // well-formed JSON, wrong types
		switch s.rng.IntN(5) {
		case 0:
			return simReplaceField(dst, tick, "price", []byte("true"))
		case 1:
			return simReplaceField(dst, tick, "seq", []byte(`"n/a"`))
		case 2:
			s.valBuf = strconv.AppendInt(append(s.valBuf[:0], '['), y.last.size, 10)
			s.valBuf = append(s.valBuf, ']')
			return simReplaceField(dst, tick, "size", s.valBuf)
		case 3:
			v := strconv.AppendInt(s.valBuf[:0], s.tsOf(y.last.offNs).UnixMilli(), 10)
			s.valBuf = v
			return simReplaceField(dst, tick, "ts", v)
		default:
			return simReplaceField(dst, tick, "symbol", []byte("42"))
		}
	}
}

// appendInvalid appends a well-formed tick object with one broken value.
func (s *Simulator) appendInvalid(dst []byte, y *simSym) []byte {
	t := y.last
	switch s.rng.IntN(8) {
	case 0: // price zero or negative
		if s.rng.IntN(2) == 0 {
			t.priceC = 0
		} else {
			t.priceC = -t.priceC
		}
	case 1: // size zero or negative
		if s.rng.IntN(2) == 0 {
			t.size = 0
		} else {
			t.size = -t.size
		}
	case 2: // crossed quote
		t.bidC, t.askC = t.askC, t.bidC
	case 3: // zero bid
		t.bidC = 0
	case 4: // lower-case symbol
		return s.appendTick(dst, &t, y.lower)
	case 5: // non-finite number sent as a string, as some encoders do
		s.scratch = s.appendTick(s.scratch[:0], &t, y.name)
		field := [...]string{"price", "bid", "ask"}[s.rng.IntN(3)]
		val := [...]string{`"NaN"`, `"Infinity"`, `"-Infinity"`}[s.rng.IntN(3)]
		return simReplaceField(dst, s.scratch, field, []byte(val))
	case 6: // a required field missing, or half of the quote (bid and ask come both or neither)
		s.scratch = s.appendTick(s.scratch[:0], &t, y.name)
		field := [...]string{"ts", "price", "size", "bid", "ask"}[s.rng.IntN(5)]
		return simReplaceField(dst, s.scratch, field, nil)
	default: // timestamp in the wrong format
		s.scratch = s.appendTick(s.scratch[:0], &t, y.name)
		s.valBuf = s.tsOf(t.offNs).AppendFormat(append(s.valBuf[:0], '"'), "2006-01-02 15:04:05")
		s.valBuf = append(s.valBuf, '"')
		return simReplaceField(dst, s.scratch, "ts", s.valBuf)
	}
	return s.appendTick(dst, &t, y.name)
}

// simReplaceField appends src, a tick as written by market.Tick.AppendJSON,
// with the value of field replaced by val, or with the field removed when
// val is nil. It relies on that encoder's shape: no value contains a comma
// or a brace.
func simReplaceField(dst, src []byte, field string, val []byte) []byte {
	var keyBuf [16]byte
	key := append(append(append(keyBuf[:0], '"'), field...), `":`...)
	at := bytes.Index(src, key)
	if at < 0 {
		return append(dst, src...)
	}
	vStart := at + len(key)
	vEnd := vStart + bytes.IndexAny(src[vStart:], ",}")
	if val != nil {
		dst = append(dst, src[:vStart]...)
		dst = append(dst, val...)
		return append(dst, src[vEnd:]...)
	}
	// Drop the field and one adjoining comma.
	if src[vEnd] == ',' {
		dst = append(dst, src[:at]...)
		return append(dst, src[vEnd+1:]...)
	}
	dst = append(dst, src[:at-1]...)
	return append(dst, src[vEnd:]...)
}
