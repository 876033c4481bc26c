package market

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzDecode checks Decode against encoding/json, which is slow but
// trusted. A record Decode accepts must be a JSON object from which
// encoding/json reads the same values (five, or seven with the quote); a
// record encoding/json reads as a good tick must be one Decode accepts.
//
// Decode is stricter than encoding/json on purpose in these ways, and the
// fuzz target allows for each:
//
//   - Field names are case-sensitive. encoding/json matches them ignoring
//     case (bytes.EqualFold, so "PRICE" and even "\u017fymbol" set a field);
//     for Decode those are unknown fields.
//   - A known field may appear only once (duplicate_field). encoding/json
//     keeps the last.
//   - null is not a value for a known field (wrong_type), except bid and
//     ask, where it means absent. encoding/json leaves the field unset.
//   - bid and ask come both or neither, and not both 0 (bad_quote).
//     encoding/json leaves a missing one 0.
//   - Bytes must be UTF-8 (invalid_utf8). encoding/json replaces bad bytes
//     with U+FFFD.
//   - A record is at most MaxPayload bytes (too_large), and unknown values
//     nest at most maxDepth deep (malformed_json). encoding/json allows
//     10000 levels.
//   - symbol must satisfy ValidSymbol and ts must be RFC 3339; time.Parse
//     also takes a few shapes RFC 3339 does not (see
//     TestParseTimeStricterThanTimeParse).
//   - NaN and Infinity are bad_number, not malformed_json. Both reject them.
//
// Decode reports the first problem it meets, so a record with a bad field
// followed by a syntax error is rejected for the field; the reasons are
// checked only where they are unambiguous.
func FuzzDecode(f *testing.F) {
	for _, c := range decodeCases {
		if len(c.in) <= 2*MaxPayload {
			f.Add([]byte(c.in))
		}
	}
	f.Add([]byte(rec(`PRICE=1`)))
	f.Add([]byte(rec(`-symbol`, `\u017fymbol="AAPL"`)))
	f.Add([]byte(rec(`price=null`)))
	f.Add([]byte(rec(`bid=null`, `ask=null`)))
	f.Add([]byte(rec(`-bid`, `ask=null`)))
	f.Add([]byte(rec(`BID=1`, `-bid`, `-ask`)))
	f.Add([]byte(`"\ud800\u0041"`))
	f.Add([]byte(`"\udc00\ud83d\ude00"`))

	f.Fuzz(func(t *testing.T, b []byte) {
		var tk Tick
		err := NewDecoder().Decode(b, &tk)
		reason := reasonOf(err)
		if err != nil && !decodeReasons[reason] {
			t.Fatalf("Decode(%q) = %v: not a reason Decode gives", b, err)
		}

		// Reasons decided before any parsing.
		switch {
		case len(b) == 0:
			if reason != ReasonEmpty {
				t.Fatalf("Decode(%q) = %v, want empty", b, err)
			}
			return
		case len(b) > MaxPayload:
			if reason != ReasonTooLarge {
				t.Fatalf("Decode of %d bytes = %v, want too_large", len(b), err)
			}
			return
		case !utf8.Valid(b):
			if reason != ReasonInvalidUTF8 {
				t.Fatalf("Decode(%q) = %v, want invalid_utf8", b, err)
			}
			return
		}

		valid := json.Valid(b)
		var std stdRecord
		isObject := false
		if valid {
			std, isObject = readStd(t, b)
			checkUnquote(t, b)
		}

		if err == nil {
			if !valid || !isObject {
				t.Fatalf("Decode accepts %q, which encoding/json says is not a JSON object", b)
			}
			jt, why := std.tick()
			if why != "" {
				t.Fatalf("Decode accepts %q as %+v, but encoding/json: %s", b, tk, why)
			}
			if why := jt.bad(); why != "" {
				t.Fatalf("Decode accepts %q as %+v, but %s", b, tk, why)
			}
			want := jt.tick()
			if !sameTick(tk, want) {
				t.Fatalf("Decode(%q)\n            = %+v\nencoding/json %+v", b, tk, want)
			}
			if !std.folded {
				// The same through a struct, the usual way to use
				// encoding/json. Field names that differ only in case
				// would set the struct's fields too, so not for those.
				var st jsonTick
				if err := json.Unmarshal(b, &st); err != nil {
					t.Fatalf("Decode accepts %q, json.Unmarshal: %v", b, err)
				}
				if got := st.tick(); !sameTick(tk, got) {
					t.Fatalf("Decode(%q)\n             = %+v\njson.Unmarshal %+v", b, tk, got)
				}
			}
			return
		}

		if !valid {
			return // any reason: Decode names the first problem it meets
		}
		if !isObject {
			if reason != ReasonMalformedJSON {
				t.Fatalf("Decode(%q) = %v, want malformed_json", b, err)
			}
			return
		}
		if tooDeep(b) {
			return // malformed_json, unless Decode met another problem first
		}
		// A JSON object of sane depth: Decode may reject it only for a
		// tick rule, never as malformed.
		switch reason {
		case ReasonMalformedJSON:
			t.Fatalf("Decode(%q) = %v, but encoding/json reads it", b, err)
		case ReasonDuplicateKey:
			if !std.duplicate() {
				t.Fatalf("Decode(%q) = %v, but no field appears twice", b, err)
			}
		case ReasonMissingField:
			if !std.missing() {
				t.Fatalf("Decode(%q) = %v, but every field is there", b, err)
			}
		case ReasonBadSymbol:
			var s string
			if json.Unmarshal(std.members["symbol"][0], &s) == nil && ValidSymbol(s) {
				t.Fatalf("Decode(%q) = %v, but symbol %q is valid", b, err, s)
			}
		case ReasonBadTS:
			var s string
			if json.Unmarshal(std.members["ts"][0], &s) == nil {
				if _, ok := parseStd(s); ok {
					t.Fatalf("Decode(%q) = %v, but ts %q is RFC 3339", b, err, s)
				}
			}
		case ReasonBadQuote:
			// Decode checks the quote last, once every field has read
			// well, so encoding/json reads the fields too.
			if why := std.quote(); why == "" {
				t.Fatalf("Decode(%q) = %v, but the quote is whole", b, err)
			}
		}
		jt, why := std.tick()
		if why == "" && jt.bad() == "" {
			t.Fatalf("Decode(%q) = %v, but encoding/json reads it as %+v", b, err, jt)
		}
	})
}

// FuzzParseTime checks ParseTime against time.Parse(time.RFC3339Nano, s):
// ParseTime must accept no more than time.Parse, must agree with it on the
// instant (in UTC, truncated to the microsecond), and must accept
// everything time.Parse accepts in RFC 3339's own grammar (see
// TestParseTimeStricterThanTimeParse for what else time.Parse takes). Both
// reject leap seconds (:60), which RFC 3339 allows.
func FuzzParseTime(f *testing.F) {
	tsValue := regexp.MustCompile(`"ts":"([^"\\]*)"`)
	for _, c := range decodeCases {
		for _, m := range tsValue.FindAllStringSubmatch(c.in, -1) {
			f.Add(m[1])
		}
	}
	for _, s := range []string{
		"2026-11-25T9:30:00Z", "2026-11-25T14:30:00,123Z", "2026-11-25T14:30:00+24:00",
		"2026-11-25T14:30:00+01:60", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999-23:59",
		"2000-02-29T12:00:00+14:00", "1900-02-29T12:00:00Z", "2026-11-25T14:30:00.000000001Z",
	} {
		f.Add(s)
	}

	f.Fuzz(func(t *testing.T, s string) {
		got, ok := ParseTime(s)
		if gotB, okB := ParseTime([]byte(s)); okB != ok || !gotB.Equal(got) {
			t.Fatalf("ParseTime(%q) = %v, %v but ParseTime([]byte) = %v, %v", s, got, ok, gotB, okB)
		}
		want, wantOK := parseStd(s)
		if ok != wantOK {
			if ok {
				t.Fatalf("ParseTime(%q) = %v, but it is not RFC 3339", s, got)
			}
			t.Fatalf("ParseTime(%q) fails, time.Parse gives %v", s, want)
		}
		if ok && (!got.Equal(want) || got.Location() != time.UTC) {
			t.Fatalf("ParseTime(%q) = %v, want %v", s, got, want)
		}
	})
}

// rfc3339 is RFC 3339's date-time grammar. Ranges of the date and time
// fields are left to time.Parse; the offset's are here because time.Parse
// is lax about them.
var rfc3339 = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`)

// parseStd is ParseTime built from the standard library: time.Parse
// restricted to RFC 3339, in UTC, truncated to the microsecond.
func parseStd(s string) (time.Time, bool) {
	if !rfc3339.MatchString(s) {
		return time.Time{}, false
	}
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, false
	}
	return ts.UTC().Truncate(time.Microsecond), true
}

var decodeReasons = map[Reason]bool{
	ReasonEmpty: true, ReasonTooLarge: true, ReasonInvalidUTF8: true, ReasonMalformedJSON: true,
	ReasonDuplicateKey: true, ReasonMissingField: true, ReasonWrongType: true, ReasonBadNumber: true,
	ReasonBadSymbol: true, ReasonBadTS: true, ReasonBadQuote: true,
}

// tickFields are the known fields; the first five are required, the quote
// (bid, ask) is optional as a pair.
var tickFields = [...]string{"symbol", "ts", "seq", "price", "size", "bid", "ask"}

const requiredFields = 5

// jsonTick is a tick as encoding/json reads it.
type jsonTick struct {
	Symbol string  `json:"symbol"`
	TS     string  `json:"ts"`
	Seq    int64   `json:"seq"`
	Price  float64 `json:"price"`
	Size   int64   `json:"size"`
	Bid    float64 `json:"bid"`
	Ask    float64 `json:"ask"`
}

// bad says which of Decode's format rules the tick breaks, if any.
func (j jsonTick) bad() string {
	if !ValidSymbol(j.Symbol) {
		return "symbol " + j.Symbol + " is not valid"
	}
	if _, ok := parseStd(j.TS); !ok {
		return "ts " + j.TS + " is not RFC 3339"
	}
	return ""
}

func (j jsonTick) tick() Tick {
	ts, _ := parseStd(j.TS)
	return Tick{Symbol: j.Symbol, TS: ts, Seq: j.Seq, Price: j.Price, Size: j.Size, Bid: j.Bid, Ask: j.Ask}
}

// stdRecord is the top level of a JSON object as encoding/json reads it.
type stdRecord struct {
	members map[string][]json.RawMessage // values by exact, unescaped name
	folded  bool                         // a name matches a tick field only ignoring case
}

// readStd reads the JSON text b, which json.Valid accepts, reporting
// whether it is an object.
func readStd(t *testing.T, b []byte) (stdRecord, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // a top-level 1e400 is valid JSON
	tok, err := dec.Token()
	if err != nil {
		t.Fatalf("json.Valid accepts %q but Token: %v", b, err)
	}
	if tok != json.Delim('{') {
		return stdRecord{}, false
	}
	r := stdRecord{members: map[string][]json.RawMessage{}}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("json.Valid accepts %q but Token: %v", b, err)
		}
		name := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			t.Fatalf("json.Valid accepts %q but Decode: %v", b, err)
		}
		r.members[name] = append(r.members[name], raw)
		for _, f := range tickFields {
			if name != f && strings.EqualFold(name, f) {
				r.folded = true
			}
		}
	}
	return r, true
}

func (r stdRecord) duplicate() bool {
	for _, f := range tickFields {
		if len(r.members[f]) > 1 {
			return true
		}
	}
	return false
}

func (r stdRecord) missing() bool {
	for _, f := range tickFields[:requiredFields] {
		if len(r.members[f]) == 0 {
			return true
		}
	}
	return false
}

// tick reads the fields into their Go types, or says why it cannot: the
// five required ones each present once and not null, bid and ask each at
// most once, a null one as if absent, and then both or neither and not
// both 0 (see quote).
func (r stdRecord) tick() (jsonTick, string) {
	var j jsonTick
	dst := [...]any{&j.Symbol, &j.TS, &j.Seq, &j.Price, &j.Size, &j.Bid, &j.Ask}
	for i, f := range tickFields {
		raws := r.members[f]
		optional := i >= requiredFields
		switch {
		case len(raws) == 0 && optional:
			continue
		case len(raws) == 0:
			return j, f + " is missing"
		case len(raws) > 1:
			return j, f + " appears more than once"
		case string(raws[0]) == "null" && optional:
			continue
		case string(raws[0]) == "null":
			return j, f + " is null"
		}
		if err := json.Unmarshal(raws[0], dst[i]); err != nil {
			return j, f + ": " + err.Error()
		}
	}
	return j, r.quote()
}

// quote says what is wrong with the record's quote, if anything: bid
// without ask or ask without bid (null counting as absent), or both 0,
// which would read as no quote. It assumes each is a number or null.
func (r stdRecord) quote() string {
	given := func(f string) (float64, bool) {
		raws := r.members[f]
		if len(raws) == 0 || string(raws[0]) == "null" {
			return 0, false
		}
		var v float64
		_ = json.Unmarshal(raws[0], &v)
		return v, true
	}
	bid, hasBid := given("bid")
	ask, hasAsk := given("ask")
	switch {
	case hasBid && !hasAsk:
		return "bid without ask"
	case hasAsk && !hasBid:
		return "ask without bid"
	case hasBid && bid == 0 && ask == 0:
		return "bid and ask both 0"
	}
	return ""
}

// tooDeep reports whether the JSON text b has a value nested deeper than
// Decode allows: a field's value is at depth 0 for Decode's scanner, so a
// value inside more than maxDepth+1 arrays and objects is too deep.
func tooDeep(b []byte) bool {
	open, deepest := 0, 0 // arrays and objects open; most open around a value
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inString:
			if c == '\\' {
				i++
			} else if c == '"' {
				inString = false
			}
		case c == ']' || c == '}':
			open--
		case c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ',' || c == ':':
		default: // the start or middle of a value
			deepest = max(deepest, open)
			if c == '"' {
				inString = true
			} else if c == '[' || c == '{' {
				open++
			}
		}
	}
	return deepest > maxDepth+1
}

// checkUnquote compares the scanner's string decoding with encoding/json's
// when b, which json.Valid accepts, is a lone string.
func checkUnquote(t *testing.T, b []byte) {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 || b[0] != '"' {
		return
	}
	var want string
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatalf("json.Valid accepts %q, Unmarshal: %v", b, err)
	}
	p := scanner{b: b}
	got, fits, err := p.rawString(make([]byte, 0, len(b)))
	if err != nil || !fits {
		t.Fatalf("rawString(%q) = %q, %v, %v; encoding/json reads %q", b, got, fits, err, want)
	}
	if p.ws(); p.i != len(b) {
		t.Fatalf("rawString(%q) stopped at byte %d", b, p.i)
	}
	if string(got) != want {
		t.Fatalf("rawString(%q) = %q, encoding/json reads %q", b, got, want)
	}
}

func TestFuzzHelpers(t *testing.T) {
	if _, err := (stdRecord{}).tick(); err == "" {
		t.Error("empty record reads as a tick")
	}
	for _, s := range []string{"2026-11-25T14:30:00Z", "2026-11-25T14:30:00.1-23:59"} {
		if _, ok := parseStd(s); !ok {
			t.Errorf("parseStd(%q) fails", s)
		}
	}
	// tooDeep must match Decode's nesting limit exactly.
	for n := 1; n < maxDepth+5; n++ {
		for _, v := range []string{
			nest(n),
			strings.Repeat("[", n) + "1" + strings.Repeat("]", n),
			strings.Repeat(`{"a":`, n) + `"[{\"["` + strings.Repeat("}", n),
		} {
			in := []byte(rec("x=" + v))
			err := NewDecoder().Decode(in, new(Tick))
			if deep := tooDeep(in); deep != (err != nil) {
				t.Errorf("tooDeep(%s) = %v, but Decode gives %v", in, deep, err)
			}
		}
	}
}
