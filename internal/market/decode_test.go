package market

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// goodJSON is the wire format's example tick; goodTick is what it decodes to.
const goodJSON = `{"symbol":"AAPL","ts":"2026-11-25T14:30:00.123456Z","seq":1042,"price":189.23,"size":100,"bid":189.22,"ask":189.24}`

func goodTick() Tick {
	return Tick{
		Symbol: "AAPL",
		TS:     time.Date(2026, 11, 25, 14, 30, 0, 123456000, time.UTC),
		Seq:    1042,
		Price:  189.23,
		Size:   100,
		Bid:    189.22,
		Ask:    189.24,
	}
}

var goodFields = [...][2]string{
	{"symbol", `"AAPL"`},
	{"ts", `"2026-11-25T14:30:00.123456Z"`},
	{"seq", `1042`},
	{"price", `189.23`},
	{"size", `100`},
	{"bid", `189.22`},
	{"ask", `189.24`},
}

// rec builds a record from goodJSON's fields, in goodJSON's order, with
// edits applied: "name=raw" sets the field's raw JSON value (adding the field
// at the end if it is not one of the seven) and "-name" drops the field.
func rec(edits ...string) string {
	fields := goodFields[:]
	fields = append([][2]string(nil), fields...)
	for _, e := range edits {
		if name, ok := strings.CutPrefix(e, "-"); ok {
			for i, f := range fields {
				if f[0] == name {
					fields = append(fields[:i], fields[i+1:]...)
					break
				}
			}
			continue
		}
		name, raw, _ := strings.Cut(e, "=")
		found := false
		for i, f := range fields {
			if f[0] == name {
				fields[i][1] = raw
				found = true
				break
			}
		}
		if !found {
			fields = append(fields, [2]string{name, raw})
		}
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, f := range fields {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + f[0] + `":` + f[1])
	}
	b.WriteByte('}')
	return b.String()
}

// addRaw inserts ","+raw before the closing brace of the object s.
func addRaw(s, raw string) string { return s[:len(s)-1] + "," + raw + "}" }

// nest returns n nested arrays around an empty innermost one: n=1 is [].
func nest(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }

func utc(year int, month time.Month, day, hour, min, sec, nsec int) time.Time {
	return time.Date(year, month, day, hour, min, sec, nsec, time.UTC)
}

type decodeCase struct {
	name string
	in   string
	want Reason      // "" means Decode succeeds
	tick func(*Tick) // on success: edits to goodTick giving the expected tick
}

func withTS(ts time.Time) func(*Tick) { return func(t *Tick) { t.TS = ts } }
func withSym(s string) func(*Tick)    { return func(t *Tick) { t.Symbol = s } }
func withPrice(f float64) func(*Tick) { return func(t *Tick) { t.Price = f } }
func withSeq(n int64) func(*Tick)     { return func(t *Tick) { t.Seq = n } }
func withSize(n int64) func(*Tick)    { return func(t *Tick) { t.Size = n } }
func noQuote(t *Tick)                 { t.Bid, t.Ask = 0, 0 }
func withBid(f float64) func(*Tick)   { return func(t *Tick) { t.Bid = f } }

var decodeCases = []decodeCase{
	// Valid records.
	{name: "valid", in: goodJSON},
	{name: "whitespace and newlines", in: " \r\n\t{\n  \"symbol\" : \"AAPL\" ,\n  \"ts\"\t:\t\"2026-11-25T14:30:00.123456Z\",\r\n  \"seq\": 1042 ,\"price\":189.23\n,\"size\":100,\"bid\":189.22,\"ask\":189.24\n}\n\n"},
	{name: "unknown string field", in: rec(`venue="XNAS"`)},
	{name: "unknown scalar fields", in: rec(`n=-1.5e-3`, `t=true`, `f=false`, `z=null`, `i=0`, `big=1e400`)},
	{name: "unknown nested object", in: rec(`meta={"a":[1,2,{"b":null}],"c":"d","e":{}}`)},
	{name: "unknown array", in: rec(`conds=["@","F",1,true,false,null,[],{}]`)},
	{name: "unknown empty object and array", in: rec(`o={}`, `a=[]`)},
	{name: "unknown field first", in: `{"v":2,` + goodJSON[1:]},
	{name: "unknown string with every escape", in: rec(`note="\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00\ud800\udc00x"`)},
	{name: "unknown key with escapes", in: rec(`a_rather_long_unknown_field_name\n=1`)},
	{name: "unknown key that differs in case", in: rec(`PRICE=1`, `Symbol="x"`)},
	{name: "unknown key with trailing space", in: rec(`price =1`)},
	{name: "unknown key repeated", in: addRaw(rec(`x=1`), `"x":[2]`)},
	{name: "field order shuffled", in: `{"ask":189.24,"size":100,"ts":"2026-11-25T14:30:00.123456Z","price":189.23,"symbol":"AAPL","bid":189.22,"seq":1042}`},
	{name: "escaped key", in: rec(`-price`, `pri\u0063e=189.23`)},
	{name: "fully escaped key", in: rec(`-seq`, `\u0073\u0065\u0071=1042`)},
	{name: "escaped symbol", in: rec(`symbol="\u0041A\u0050L"`)},
	{name: "escaped ts", in: rec(`ts="2026-11-25T14:30:00.123456\u005a"`)},
	{name: "escaped ts over 64 bytes", in: rec(`ts="2026-11-25T14:30:00.123456` + strings.Repeat("0", 60) + `\u005a"`)},
	{name: "BRK.B", in: rec(`symbol="BRK.B"`), tick: withSym("BRK.B")},
	{name: "BF-B", in: rec(`symbol="BF-B"`), tick: withSym("BF-B")},
	{name: "one-letter symbol", in: rec(`symbol="F"`), tick: withSym("F")},
	{name: "12-character symbol", in: rec(`symbol="ABCDEFGHIJ12"`), tick: withSym("ABCDEFGHIJ12")},
	{name: "integer price", in: rec(`price=189`), tick: withPrice(189)},
	{name: "price with exponent", in: rec(`price=1.8923E+2`)},
	{name: "price with long mantissa", in: rec(`price=189.230000000000000000000000000000000000001`)},
	{name: "price underflows to zero", in: rec(`price=1e-400`), tick: withPrice(0)},
	{name: "negative zero price", in: rec(`price=-0`), tick: withPrice(math.Copysign(0, -1))},
	{name: "negative zero seq", in: rec(`seq=-0`), tick: withSeq(0)},
	{name: "negative price", in: rec(`price=-1.5`), tick: withPrice(-1.5)},
	{name: "seq max int64", in: rec(`seq=9223372036854775807`), tick: withSeq(math.MaxInt64)},
	{name: "seq min int64", in: rec(`seq=-9223372036854775808`), tick: withSeq(math.MinInt64)},
	{name: "size zero", in: rec(`size=0`), tick: withSize(0)},
	{name: "largest float", in: rec(`price=1.7976931348623157e308`), tick: withPrice(math.MaxFloat64)},
	{name: "unknown value nested 32 deep", in: rec(`x=` + nest(32))},
	{name: "unknown value at the nesting limit", in: rec(`x=` + nest(maxDepth+1))},
	{name: "payload exactly MaxPayload", in: goodJSON + strings.Repeat(" ", MaxPayload-len(goodJSON))},

	// The quote: both or neither, null as good as absent.
	{name: "no quote", in: rec(`-bid`, `-ask`), tick: noQuote},
	{name: "bid and ask null", in: rec(`bid=null`, `ask=null`), tick: noQuote},
	{name: "bid null, ask absent", in: rec(`bid=null`, `-ask`), tick: noQuote},
	{name: "ask null, bid absent", in: rec(`-bid`, `ask=null`), tick: noQuote},
	{name: "null quote spaced", in: `{"symbol":"AAPL","ts":"2026-11-25T14:30:00.123456Z","seq":1042,"price":189.23,"size":100,"bid" : null ,"ask":null }`, tick: noQuote},
	{name: "no quote, other fields after it", in: `{"bid":null,"symbol":"AAPL","ts":"2026-11-25T14:30:00.123456Z","seq":1042,"price":189.23,"size":100}`, tick: noQuote},
	{name: "no quote, unknown null field", in: rec(`-bid`, `-ask`, `quote=null`), tick: noQuote},
	{name: "bid zero with an ask", in: rec(`bid=0`), tick: withBid(0)}, // a quote, and a bad one: Check's to reject
	{name: "missing bid", in: rec(`-bid`), want: ReasonBadQuote},
	{name: "missing ask", in: rec(`-ask`), want: ReasonBadQuote},
	{name: "bid null, ask given", in: rec(`bid=null`), want: ReasonBadQuote},
	{name: "ask null, bid given", in: rec(`ask=null`), want: ReasonBadQuote},
	{name: "bid zero, ask absent", in: rec(`bid=0`, `-ask`), want: ReasonBadQuote},
	{name: "bid and ask zero", in: rec(`bid=0`, `ask=0`), want: ReasonBadQuote},
	{name: "bid and ask negative zero", in: rec(`bid=-0`, `ask=-0.0`), want: ReasonBadQuote},
	{name: "bid and ask underflow to zero", in: rec(`bid=1e-400`, `ask=0e5`), want: ReasonBadQuote},
	{name: "bid null twice", in: addRaw(rec(`bid=null`, `ask=null`), `"bid":null`), want: ReasonDuplicateKey},
	{name: "bid null then a number", in: addRaw(rec(`bid=null`, `-ask`), `"bid":1`), want: ReasonDuplicateKey},
	{name: "bid as the string null", in: rec(`bid="null"`), want: ReasonWrongType},
	{name: "bid as a truncated null", in: rec(`bid=nul`), want: ReasonMalformedJSON},
	{name: "bid as null and more", in: rec(`bid=nullx`), want: ReasonMalformedJSON},
	{name: "bid as capitalised null", in: rec(`bid=Null`), want: ReasonMalformedJSON},
	{name: "record ends after bid null", in: `{"bid":null`, want: ReasonMalformedJSON},

	// ts variants.
	{name: "ts no fraction", in: rec(`ts="2026-11-25T14:30:00Z"`), tick: withTS(utc(2026, 11, 25, 14, 30, 0, 0))},
	{name: "ts 3 fraction digits", in: rec(`ts="2026-11-25T14:30:00.123Z"`), tick: withTS(utc(2026, 11, 25, 14, 30, 0, 123000000))},
	{name: "ts 1 fraction digit", in: rec(`ts="2026-11-25T14:30:00.5Z"`), tick: withTS(utc(2026, 11, 25, 14, 30, 0, 500000000))},
	{name: "ts 9 fraction digits truncated", in: rec(`ts="2026-11-25T14:30:00.123456789Z"`)},
	{name: "ts 7 fraction digits truncated", in: rec(`ts="2026-11-25T14:30:00.1234569Z"`)},
	{name: "ts 20 fraction digits truncated", in: rec(`ts="2026-11-25T14:30:00.12345699999999999999Z"`)},
	{name: "ts +00:00", in: rec(`ts="2026-11-25T14:30:00.123456+00:00"`)},
	{name: "ts -00:00", in: rec(`ts="2026-11-25T14:30:00.123456-00:00"`)},
	{name: "ts -05:00 converted", in: rec(`ts="2026-11-25T09:30:00.123456-05:00"`)},
	{name: "ts +05:30 converted", in: rec(`ts="2026-11-25T20:00:00.123456+05:30"`)},
	{name: "ts offset crosses midnight", in: rec(`ts="2026-11-25T23:30:00-10:00"`), tick: withTS(utc(2026, 11, 26, 9, 30, 0, 0))},
	{name: "ts offset crosses year", in: rec(`ts="2027-01-01T00:30:00+01:00"`), tick: withTS(utc(2026, 12, 31, 23, 30, 0, 0))},
	{name: "ts leap day", in: rec(`ts="2024-02-29T00:00:00Z"`), tick: withTS(utc(2024, 2, 29, 0, 0, 0, 0))},
	{name: "ts end of day", in: rec(`ts="2026-12-31T23:59:59.999999999Z"`), tick: withTS(utc(2026, 12, 31, 23, 59, 59, 999999000))},

	// Not JSON, or not an object.
	{name: "empty", in: "", want: ReasonEmpty},
	{name: "whitespace only", in: " \n", want: ReasonMalformedJSON},
	{name: "null", in: "null", want: ReasonMalformedJSON},
	{name: "array", in: `[` + goodJSON + `]`, want: ReasonMalformedJSON},
	{name: "string", in: `"AAPL"`, want: ReasonMalformedJSON},
	{name: "number", in: `42`, want: ReasonMalformedJSON},
	{name: "true", in: `true`, want: ReasonMalformedJSON},
	{name: "truncated in a value", in: goodJSON[:60], want: ReasonMalformedJSON},
	{name: "truncated in a string", in: goodJSON[:14], want: ReasonMalformedJSON},
	{name: "truncated before }", in: goodJSON[:len(goodJSON)-1], want: ReasonMalformedJSON},
	{name: "truncated after {", in: `{`, want: ReasonMalformedJSON},
	{name: "truncated in unknown value", in: `{"x":[1,`, want: ReasonMalformedJSON},
	{name: "trailing garbage", in: goodJSON + "x", want: ReasonMalformedJSON},
	{name: "trailing second object", in: goodJSON + goodJSON, want: ReasonMalformedJSON},
	{name: "trailing comma after object", in: goodJSON + ",", want: ReasonMalformedJSON},
	{name: "empty object then garbage", in: `{} x`, want: ReasonMalformedJSON},
	{name: "trailing comma in object", in: addRaw(goodJSON, ""), want: ReasonMalformedJSON},
	{name: "trailing comma in unknown array", in: rec(`x=[1,]`), want: ReasonMalformedJSON},
	{name: "trailing comma in unknown object", in: rec(`x={"a":1,}`), want: ReasonMalformedJSON},
	{name: "missing colon", in: `{"symbol" "AAPL"}`, want: ReasonMalformedJSON},
	{name: "missing comma", in: `{"symbol":"AAPL" "seq":1}`, want: ReasonMalformedJSON},
	{name: "unquoted key", in: `{symbol:"AAPL"}`, want: ReasonMalformedJSON},
	{name: "single quotes", in: `{'symbol':'AAPL'}`, want: ReasonMalformedJSON},
	{name: "non-string key", in: `{1:2}`, want: ReasonMalformedJSON},
	{name: "comment", in: "/* tick */" + goodJSON, want: ReasonMalformedJSON},
	{name: "byte order mark", in: "\uFEFF" + goodJSON, want: ReasonMalformedJSON},
	{name: "form feed is not whitespace", in: "\f" + goodJSON, want: ReasonMalformedJSON},
	{name: "no-break space is not whitespace", in: "\u00a0" + goodJSON, want: ReasonMalformedJSON},
	{name: "binary garbage", in: "\x00\x01\x02\x03\x7f", want: ReasonMalformedJSON},
	{name: "binary garbage not UTF-8", in: "\x89PNG\r\n\x1a\n\x00\x00", want: ReasonInvalidUTF8},
	{name: "unknown literal", in: rec(`x=nul`), want: ReasonMalformedJSON},
	{name: "unknown literal prefix", in: rec(`x=truex`), want: ReasonMalformedJSON},
	{name: "capitalised literal", in: rec(`x=True`), want: ReasonMalformedJSON},
	{name: "number with leading zero", in: rec(`price=0189.23`), want: ReasonMalformedJSON},
	{name: "number with trailing dot", in: rec(`price=189.`), want: ReasonMalformedJSON},
	{name: "number with leading dot", in: rec(`price=.5`), want: ReasonMalformedJSON},
	{name: "number with plus sign", in: rec(`price=+189.23`), want: ReasonMalformedJSON},
	{name: "number with empty exponent", in: rec(`price=1e`), want: ReasonMalformedJSON},
	{name: "number lone minus", in: rec(`price=-`), want: ReasonMalformedJSON},
	{name: "hex number", in: rec(`size=0x10`), want: ReasonMalformedJSON},
	{name: "number with underscore", in: rec(`size=1_000`), want: ReasonMalformedJSON},
	{name: "-NaN", in: rec(`price=-NaN`), want: ReasonMalformedJSON},

	// Strings.
	{name: "control character in symbol", in: rec("symbol=\"AA\tPL\""), want: ReasonMalformedJSON},
	{name: "newline in unknown string", in: rec("x=\"a\nb\""), want: ReasonMalformedJSON},
	{name: "NUL in key", in: rec("x\x00=1"), want: ReasonMalformedJSON},
	{name: "escaped control character in symbol", in: rec(`symbol="AA\tPL"`), want: ReasonBadSymbol},
	{name: "bad escape", in: rec(`x="\x41"`), want: ReasonMalformedJSON},
	{name: "short unicode escape", in: rec(`x="\u41"`), want: ReasonMalformedJSON},
	{name: "non-hex unicode escape", in: rec(`x="\u00G1"`), want: ReasonMalformedJSON},
	{name: "upper-case U escape", in: rec(`x="\U0041"`), want: ReasonMalformedJSON},
	{name: "bad escape after lone surrogate", in: rec(`x="\ud800\uZZZZ"`), want: ReasonMalformedJSON},
	{name: "backslash at end", in: `{"x":"\`, want: ReasonMalformedJSON},
	{name: "lone high surrogate in unknown string", in: rec(`x="\ud800"`)},
	{name: "lone low surrogate in unknown string", in: rec(`x="\udfff"`)},
	{name: "lone surrogate in symbol", in: rec(`symbol="A\ud800"`), want: ReasonBadSymbol},
	{name: "lone surrogate then letter in symbol", in: rec(`symbol="A\ud800\u0041"`), want: ReasonBadSymbol},
	{name: "lone surrogate in ts", in: rec(`ts="2026-11-25T14:30:00\ud800Z"`), want: ReasonBadTS},
	{name: "lone surrogate in key", in: rec(`-price`, `pric\ud800=189.23`), want: ReasonMissingField},

	// UTF-8.
	{name: "invalid UTF-8 in symbol", in: rec("symbol=\"AA\xffPL\""), want: ReasonInvalidUTF8},
	{name: "invalid UTF-8 in unknown string", in: rec("x=\"\xc3\x28\""), want: ReasonInvalidUTF8},
	{name: "invalid UTF-8 outside strings", in: addRaw(goodJSON, "\xfe"), want: ReasonInvalidUTF8},
	{name: "overlong UTF-8", in: rec("x=\"\xc0\xaf\""), want: ReasonInvalidUTF8},
	{name: "UTF-8 encoded surrogate", in: rec("x=\"\xed\xa0\x80\""), want: ReasonInvalidUTF8},
	{name: "truncated UTF-8 sequence", in: goodJSON + "\xe2\x82", want: ReasonInvalidUTF8},
	{name: "valid UTF-8 in unknown string", in: rec(`x="€ 𝄞 日本"`)},
	{name: "non-ASCII symbol", in: rec(`symbol="ÄAPL"`), want: ReasonBadSymbol},

	// Wrong JSON types.
	{name: "price as string", in: rec(`price="189.23"`), want: ReasonWrongType},
	{name: "price as null", in: rec(`price=null`), want: ReasonWrongType},
	{name: "price as object", in: rec(`price={"v":189.23}`), want: ReasonWrongType},
	{name: "price as array", in: rec(`price=[189.23]`), want: ReasonWrongType},
	{name: "price as malformed array", in: rec(`price=[189.23`), want: ReasonMalformedJSON},
	{name: "bid as bool", in: rec(`bid=true`), want: ReasonWrongType},
	{name: "seq as float", in: rec(`seq=1.5`), want: ReasonWrongType},
	{name: "seq as 1.0", in: rec(`seq=1.0`), want: ReasonWrongType},
	{name: "seq with exponent", in: rec(`seq=1e3`), want: ReasonWrongType},
	{name: "seq as string", in: rec(`seq="1042"`), want: ReasonWrongType},
	{name: "size as bool", in: rec(`size=false`), want: ReasonWrongType},
	{name: "size as null", in: rec(`size=null`), want: ReasonWrongType},
	{name: "symbol as number", in: rec(`symbol=123`), want: ReasonWrongType},
	{name: "symbol as null", in: rec(`symbol=null`), want: ReasonWrongType},
	{name: "symbol as array", in: rec(`symbol=["AAPL"]`), want: ReasonWrongType},
	{name: "ts as number", in: rec(`ts=1795617000`), want: ReasonWrongType},
	{name: "ts as object", in: rec(`ts={}`), want: ReasonWrongType},

	// Numbers JSON can spell but a tick cannot hold.
	{name: "price NaN", in: rec(`price=NaN`), want: ReasonBadNumber},
	{name: "price Infinity", in: rec(`price=Infinity`), want: ReasonBadNumber},
	{name: "ask -Infinity", in: rec(`ask=-Infinity`), want: ReasonBadNumber},
	{name: "seq NaN", in: rec(`seq=NaN`), want: ReasonBadNumber},
	{name: "size Infinity", in: rec(`size=Infinity`), want: ReasonBadNumber},
	{name: "price 1e400", in: rec(`price=1e400`), want: ReasonBadNumber},
	{name: "bid -1e400", in: rec(`bid=-1e400`), want: ReasonBadNumber},
	{name: "price just above MaxFloat64", in: rec(`price=1.8e308`), want: ReasonBadNumber},
	{name: "seq 20 digits", in: rec(`seq=99999999999999999999`), want: ReasonBadNumber},
	{name: "seq max int64 + 1", in: rec(`seq=9223372036854775808`), want: ReasonBadNumber},
	{name: "size min int64 - 1", in: rec(`size=-9223372036854775809`), want: ReasonBadNumber},

	// Missing and duplicate fields.
	{name: "empty object", in: `{}`, want: ReasonMissingField},
	{name: "empty object with whitespace", in: " { \n } ", want: ReasonMissingField},
	{name: "missing symbol", in: rec(`-symbol`), want: ReasonMissingField},
	{name: "missing ts", in: rec(`-ts`), want: ReasonMissingField},
	{name: "missing seq", in: rec(`-seq`), want: ReasonMissingField},
	{name: "missing price", in: rec(`-price`), want: ReasonMissingField},
	{name: "missing size", in: rec(`-size`), want: ReasonMissingField},
	{name: "missing price, PRICE present", in: rec(`-price`, `PRICE=189.23`), want: ReasonMissingField},
	{name: "duplicate price", in: addRaw(goodJSON, `"price":189.23`), want: ReasonDuplicateKey},
	{name: "duplicate symbol", in: `{"symbol":"AAPL","symbol":"MSFT"}`, want: ReasonDuplicateKey},
	{name: "duplicate with other value", in: addRaw(goodJSON, `"seq":1043`), want: ReasonDuplicateKey},
	{name: "duplicate via escaped key", in: addRaw(goodJSON, `"\u0061sk":1`), want: ReasonDuplicateKey},

	// Symbols.
	{name: "lower-case symbol", in: rec(`symbol="aapl"`), want: ReasonBadSymbol},
	{name: "mixed-case symbol", in: rec(`symbol="Aapl"`), want: ReasonBadSymbol},
	{name: "13-character symbol", in: rec(`symbol="ABCDEFGHIJKLM"`), want: ReasonBadSymbol},
	{name: "empty symbol", in: rec(`symbol=""`), want: ReasonBadSymbol},
	{name: "symbol with space", in: rec(`symbol="BRK B"`), want: ReasonBadSymbol},
	{name: "symbol with trailing space", in: rec(`symbol="AAPL "`), want: ReasonBadSymbol},
	{name: "symbol starting with digit", in: rec(`symbol="1ABC"`), want: ReasonBadSymbol},
	{name: "symbol starting with dot", in: rec(`symbol=".A"`), want: ReasonBadSymbol},
	{name: "symbol with slash", in: rec(`symbol="BRK/B"`), want: ReasonBadSymbol},
	{name: "escaped symbol over 32 bytes", in: rec(`symbol="` + strings.Repeat(`\u0041`, 33) + `"`), want: ReasonBadSymbol},

	// Bad ts.
	{name: "ts without zone", in: rec(`ts="2026-11-25T14:30:00.123456"`), want: ReasonBadTS},
	{name: "ts lower-case t", in: rec(`ts="2026-11-25t14:30:00.123456Z"`), want: ReasonBadTS},
	{name: "ts lower-case z", in: rec(`ts="2026-11-25T14:30:00.123456z"`), want: ReasonBadTS},
	{name: "ts with space", in: rec(`ts="2026-11-25 14:30:00.123456Z"`), want: ReasonBadTS},
	{name: "ts February 30", in: rec(`ts="2026-02-30T14:30:00Z"`), want: ReasonBadTS},
	{name: "ts February 29 not leap", in: rec(`ts="2026-02-29T14:30:00Z"`), want: ReasonBadTS},
	{name: "ts April 31", in: rec(`ts="2026-04-31T14:30:00Z"`), want: ReasonBadTS},
	{name: "ts day 00", in: rec(`ts="2026-11-00T14:30:00Z"`), want: ReasonBadTS},
	{name: "ts month 13", in: rec(`ts="2026-13-01T14:30:00Z"`), want: ReasonBadTS},
	{name: "ts hour 24", in: rec(`ts="2026-11-25T24:00:00Z"`), want: ReasonBadTS},
	{name: "ts minute 60", in: rec(`ts="2026-11-25T14:60:00Z"`), want: ReasonBadTS},
	{name: "ts second 60", in: rec(`ts="2016-12-31T23:59:60Z"`), want: ReasonBadTS},
	{name: "ts single-digit hour", in: rec(`ts="2026-11-25T9:30:00Z"`), want: ReasonBadTS},
	{name: "ts dot without digits", in: rec(`ts="2026-11-25T14:30:00.Z"`), want: ReasonBadTS},
	{name: "ts comma fraction", in: rec(`ts="2026-11-25T14:30:00,123Z"`), want: ReasonBadTS},
	{name: "ts offset without colon", in: rec(`ts="2026-11-25T14:30:00+0500"`), want: ReasonBadTS},
	{name: "ts offset hour only", in: rec(`ts="2026-11-25T14:30:00+05"`), want: ReasonBadTS},
	{name: "ts offset +24:00", in: rec(`ts="2026-11-25T14:30:00+24:00"`), want: ReasonBadTS},
	{name: "ts offset minute 60", in: rec(`ts="2026-11-25T14:30:00+01:60"`), want: ReasonBadTS},
	{name: "ts Z and offset", in: rec(`ts="2026-11-25T14:30:00Z+01:00"`), want: ReasonBadTS},
	{name: "ts date only", in: rec(`ts="2026-11-25"`), want: ReasonBadTS},
	{name: "ts empty", in: rec(`ts=""`), want: ReasonBadTS},
	{name: "ts Unix seconds as string", in: rec(`ts="1795617000"`), want: ReasonBadTS},
	{name: "ts RFC 1123", in: rec(`ts="Wed, 25 Nov 2026 14:30:00 GMT"`), want: ReasonBadTS},
	{name: "ts 5-digit year", in: rec(`ts="12026-11-25T14:30:00Z"`), want: ReasonBadTS},
	{name: "ts negative year", in: rec(`ts="-2026-11-25T14:30:00Z"`), want: ReasonBadTS},
	{name: "ts trailing space", in: rec(`ts="2026-11-25T14:30:00Z "`), want: ReasonBadTS},

	// Size and depth limits.
	{name: "payload over MaxPayload", in: goodJSON + strings.Repeat(" ", MaxPayload-len(goodJSON)+1), want: ReasonTooLarge},
	{name: "payload far over MaxPayload", in: strings.Repeat("x", 1<<20), want: ReasonTooLarge},
	{name: "unknown value over the nesting limit", in: rec(`x=` + nest(maxDepth+2)), want: ReasonMalformedJSON},
	{name: "unknown scalar over the nesting limit", in: rec(`x=` + strings.Repeat("[", maxDepth+1) + "1" + strings.Repeat("]", maxDepth+1)), want: ReasonMalformedJSON},
	{name: "unknown value nested 1000 deep", in: rec(`x=` + nest(1000)), want: ReasonMalformedJSON},
	{name: "unknown objects nested 500 deep", in: rec(`x=` + strings.Repeat(`{"a":`, 500) + "1" + strings.Repeat("}", 500)), want: ReasonMalformedJSON},
	{name: "unknown value nested to MaxPayload", in: `{"x":` + nest((MaxPayload-6)/2) + `}`, want: ReasonMalformedJSON},
	{name: "unclosed nesting", in: `{"x":` + strings.Repeat("[", MaxPayload-5), want: ReasonMalformedJSON},
	{name: "wrong-type value nested deep", in: rec(`price=` + nest(1000)), want: ReasonMalformedJSON},
}

// reasonOf returns the Reason of err, "" for nil, and "not a *Rejection"
// for any other error.
func reasonOf(err error) Reason {
	if err == nil {
		return ""
	}
	var r *Rejection
	if !errors.As(err, &r) {
		return "not a *Rejection: " + Reason(err.Error())
	}
	return r.Reason
}

// sameTick compares ticks exactly: floats bit for bit (so -0 is not 0), and
// ts as an instant that must be in UTC.
func sameTick(got, want Tick) bool {
	return got.Symbol == want.Symbol &&
		got.TS.Equal(want.TS) && got.TS.Location() == time.UTC &&
		got.Seq == want.Seq && got.Size == want.Size &&
		math.Float64bits(got.Price) == math.Float64bits(want.Price) &&
		math.Float64bits(got.Bid) == math.Float64bits(want.Bid) &&
		math.Float64bits(got.Ask) == math.Float64bits(want.Ask)
}

func TestDecode(t *testing.T) {
	names := map[string]bool{}
	for _, c := range decodeCases {
		if names[c.name] {
			t.Fatalf("duplicate case name %q", c.name)
		}
		names[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			d := NewDecoder()
			var got Tick
			err := d.Decode([]byte(c.in), &got)
			if r := reasonOf(err); r != c.want {
				t.Fatalf("Decode(%.200q) = %v, want reason %q", c.in, err, c.want)
			}
			if err != nil {
				var rj *Rejection
				if err.Error() == "" || !errors.As(err, &rj) || rj.Detail == "" {
					t.Errorf("rejection %#v has no detail", err)
				}
				return
			}
			want := goodTick()
			if c.tick != nil {
				c.tick(&want)
			}
			if !sameTick(got, want) {
				t.Errorf("Decode(%.200q)\n got %+v\nwant %+v", c.in, got, want)
			}
		})
	}
}

// TestDecodeReusedTick checks that a Tick reused across records carries
// nothing over: every field is set by every successful Decode, the quote
// too when the record has none.
func TestDecodeReusedTick(t *testing.T) {
	d := NewDecoder()
	tk := Tick{Symbol: "OLD", TS: time.Unix(1, 0), Seq: 9, Price: 9, Size: 9, Bid: 9, Ask: 9}
	if err := d.Decode([]byte(goodJSON), &tk); err != nil {
		t.Fatal(err)
	}
	if !sameTick(tk, goodTick()) {
		t.Fatalf("got %+v, want %+v", tk, goodTick())
	}
	for _, in := range []string{rec(`-bid`, `-ask`), rec(`bid=null`, `ask=null`)} {
		tk.Bid, tk.Ask = 9, 9
		if err := d.Decode([]byte(in), &tk); err != nil {
			t.Fatal(err)
		}
		want := goodTick()
		noQuote(&want)
		if !sameTick(tk, want) || tk.HasQuote() {
			t.Fatalf("%s after a quoted tick: got %+v, want %+v", in, tk, want)
		}
	}
}

// TestDecodeQuoteDetail checks that half a quote is rejected with a detail
// that says which half and what the rule is.
func TestDecodeQuoteDetail(t *testing.T) {
	for in, want := range map[string]string{
		rec(`-ask`):             "bid without ask: a tick has both or neither",
		rec(`ask=null`):         "bid without ask: a tick has both or neither",
		rec(`-bid`):             "ask without bid: a tick has both or neither",
		rec(`bid=null`):         "ask without bid: a tick has both or neither",
		rec(`bid=0`, `ask=0`):   "bid 0 and ask 0 must be above 0; a tick without a quote leaves both out",
		rec(`bid=-0`, `ask=-0`): "bid -0 and ask -0 must be above 0; a tick without a quote leaves both out",
	} {
		var rj *Rejection
		if err := NewDecoder().Decode([]byte(in), new(Tick)); !errors.As(err, &rj) || rj.Reason != ReasonBadQuote || rj.Detail != want {
			t.Errorf("Decode(%s) = %v, want bad_quote: %s", in, err, want)
		}
	}
}

// TestNoQuoteIsValid follows a tick without a quote through the rules: it
// passes, whether the record left bid and ask out or sent them as null.
func TestNoQuoteIsValid(t *testing.T) {
	for _, in := range []string{rec(`-bid`, `-ask`), rec(`bid=null`, `ask=null`)} {
		var tk Tick
		if err := NewDecoder().Decode([]byte(in), &tk); err != nil {
			t.Fatalf("Decode(%s): %v", in, err)
		}
		if tk.HasQuote() {
			t.Errorf("Decode(%s) has a quote: %+v", in, tk)
		}
		if err := DefaultRules().Check(&tk, tk.TS); err != nil {
			t.Errorf("Check of %s: %v", in, err)
		}
	}
}

func TestZeroDecoder(t *testing.T) {
	var d Decoder
	var tk Tick
	for range 2 {
		if err := d.Decode([]byte(goodJSON), &tk); err != nil {
			t.Fatal(err)
		}
	}
	if !sameTick(tk, goodTick()) {
		t.Fatalf("got %+v, want %+v", tk, goodTick())
	}
}

// TestInternBounded checks that a stream of distinct symbols cannot grow the
// symbol table past maxInterned, and that symbols decode right after it is
// full.
func TestInternBounded(t *testing.T) {
	d := NewDecoder()
	var tk Tick
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	n := 0
	for _, a := range letters {
		for _, b := range letters {
			for _, c := range letters {
				for _, e := range letters[:4] {
					sym := string([]rune{a, b, c, e})
					if err := d.Decode([]byte(rec(`symbol="`+sym+`"`)), &tk); err != nil {
						t.Fatal(err)
					}
					if tk.Symbol != sym {
						t.Fatalf("symbol %q decoded as %q", sym, tk.Symbol)
					}
					n++
				}
			}
		}
	}
	if n <= maxInterned {
		t.Fatalf("test sent only %d symbols", n)
	}
	if len(d.symbols) != maxInterned {
		t.Fatalf("symbol table holds %d symbols, want %d", len(d.symbols), maxInterned)
	}
}

// TestUnquote compares the scanner's string decoding with encoding/json's,
// in particular for surrogate escapes: a lone surrogate is U+FFFD and must
// not swallow the escape after it.
func TestUnquote(t *testing.T) {
	for _, in := range []string{
		`""`,
		`"plain"`,
		`"a\"b\\c\/d\be\ff\ng\rh\ti"`,
		`"\u0041\u00e9\u20ac\uFFFF"`,
		`"\ud83d\ude00"`,
		`"\ud800"`,
		`"\udc00"`,
		`"x\ud800y"`,
		`"A\ud800\u0041"`,
		`"\ud800\u00e9"`,
		`"\udc00\ud83d\ude00"`,
		`"\ud800\ud800\udc00"`,
		`"\ud83d\ud83d\ude00\ude00"`,
		`"\ud800\\u0041"`,
		`"\ud800\n"`,
		`"€\u20ac"`,
	} {
		var want string
		if err := json.Unmarshal([]byte(in), &want); err != nil {
			t.Fatalf("encoding/json rejects %s: %v", in, err)
		}
		for _, capacity := range []int{0, 1, 4, 256} {
			p := scanner{b: []byte(in)}
			got, fits, err := p.rawString(make([]byte, 0, capacity))
			if err != nil {
				t.Fatalf("rawString(%s): %v", in, err)
			}
			if p.i != len(in) {
				t.Errorf("rawString(%s) consumed %d bytes, want %d", in, p.i, len(in))
			}
			wantFits := len(want) <= capacity || !strings.Contains(in, `\`)
			if fits != wantFits {
				t.Errorf("rawString(%s) with capacity %d: fits = %v, want %v", in, capacity, fits, wantFits)
			}
			if fits && string(got) != want {
				t.Errorf("rawString(%s) = %q, want %q", in, got, want)
			}
			if !fits && !strings.HasPrefix(want, string(got)) {
				t.Errorf("rawString(%s) with capacity %d = %q, not a prefix of %q", in, capacity, got, want)
			}
		}
	}
}

// TestDecodeNegativeZero pins what happens to -0 after decoding: it is a
// number, so Decode accepts it, and the rules reject it as not positive.
// (A bid of -0 here comes with the good ask, so the tick has a quote; both
// at 0 is Decode's to reject, see "bid and ask negative zero".)
func TestDecodeNegativeZero(t *testing.T) {
	for _, c := range []struct {
		field string
		want  Reason
	}{
		{"price", ReasonBadPrice},
		{"bid", ReasonBadQuote},
		{"ask", ReasonBadQuote},
		{"seq", ReasonBadSeq},
		{"size", ReasonBadSize},
	} {
		var tk Tick
		if err := NewDecoder().Decode([]byte(rec(c.field+"=-0")), &tk); err != nil {
			t.Fatalf("%s -0: %v", c.field, err)
		}
		if got := reasonOf(DefaultRules().Check(&tk, tk.TS)); got != c.want {
			t.Errorf("%s -0: Check gives %q, want %q", c.field, got, c.want)
		}
	}
}

func TestValidSymbol(t *testing.T) {
	for s, want := range map[string]bool{
		"A": true, "AAPL": true, "BRK.B": true, "BF-B": true, "A1": true, "ABCDEFGHIJKL": true,
		"": false, "a": false, "1A": false, "-A": false, ".A": false, "ABCDEFGHIJKLM": false,
		"A B": false, "A_B": false, "A/B": false, "AÄ": false, "A\x00": false,
	} {
		if got := ValidSymbol(s); got != want {
			t.Errorf("ValidSymbol(%q) = %v, want %v", s, got, want)
		}
		if got := ValidSymbol([]byte(s)); got != want {
			t.Errorf("ValidSymbol([]byte(%q)) = %v, want %v", s, got, want)
		}
	}
}

func TestRejectionError(t *testing.T) {
	if got := (&Rejection{Reason: ReasonEmpty}).Error(); got != "empty" {
		t.Errorf("Error() = %q, want %q", got, "empty")
	}
	if got := (&Rejection{Reason: ReasonBadSeq, Detail: "seq 0 must be positive"}).Error(); got != "bad_seq: seq 0 must be positive" {
		t.Errorf("Error() = %q", got)
	}
}
