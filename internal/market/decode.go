package market

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"
)

// MaxPayload bounds a tick's encoded size. A tick is about 120 bytes; a
// record near this size is a producer bug, and the bound keeps one record
// from costing the processor megabytes.
const MaxPayload = 4096

// MaxSymbolLen is the longest accepted ticker.
const MaxSymbolLen = 12

// maxInterned bounds the symbol table so that a producer sending random
// symbols cannot grow the decoder's memory without limit.
const maxInterned = 1 << 16

const (
	fSymbol = 1 << iota
	fTS
	fSeq
	fPrice
	fSize
	fBid
	fAsk
	// fRequired are the fields every tick has; bid and ask come both or
	// neither.
	fRequired = fSymbol | fTS | fSeq | fPrice | fSize
)

// Decoder turns the tick wire format into Ticks. It is written by hand rather
// than with encoding/json because the per-tick path must stay under a
// microsecond with no allocation: the decoder scans the bytes once, parses
// numbers in place and interns symbols so that a steady stream of known
// symbols allocates nothing. It follows RFC 8259 strictly, plus the tick
// rules that belong to the format (see Decode).
//
// The zero Decoder is ready to use. A Decoder is not safe for concurrent use.
type Decoder struct {
	symbols map[string]string
}

// NewDecoder returns a Decoder with an empty symbol table.
func NewDecoder() *Decoder {
	return &Decoder{symbols: make(map[string]string, 64)}
}

// Decode parses b into t. On failure it returns a *Rejection saying why, and
// t is left partly filled.
//
// Beyond JSON syntax it enforces what the format promises: symbol, ts, seq,
// price and size present, and no known field more than once, each with the
// right JSON type (numbers are not accepted as strings, seq and size are
// integers), symbol matching ValidSymbol, ts in RFC 3339 (an offset other
// than Z is accepted and converted to UTC; digits beyond microseconds are
// truncated, the precision PostgreSQL keeps). Unknown fields are skipped.
// The literals NaN and Infinity, which some encoders write, are reported as
// bad_number rather than as malformed JSON.
//
// bid and ask are optional together: a tick from a trade-only feed has
// neither, and decodes with Bid and Ask 0 (no quote, see Tick.HasQuote).
// null for either counts as absent, since that is how many encoders write a
// missing value. One without the other is bad_quote, and so are both given
// as 0: that is no quote spelled as a quote, which would otherwise pass as
// none. Other values, negative ones included, are left to Rules.Check.
func (d *Decoder) Decode(b []byte, t *Tick) error {
	if len(b) == 0 {
		return reject(ReasonEmpty, "record has no value")
	}
	if len(b) > MaxPayload {
		return reject(ReasonTooLarge, "record is "+strconv.Itoa(len(b))+" bytes, the limit is "+strconv.Itoa(MaxPayload))
	}
	if !utf8.Valid(b) {
		return reject(ReasonInvalidUTF8, "record is not valid UTF-8")
	}
	p := scanner{b: b}
	p.ws()
	if !p.eat('{') {
		return p.syntax("expected a JSON object")
	}
	var seen, quote int // fields met; which of bid and ask have a number
	p.ws()
	if p.eat('}') {
		p.ws()
		if p.i != len(p.b) {
			return p.syntax("unexpected bytes after the object")
		}
		return missing(seen)
	}
	// keyBuf holds an escaped field name or symbol. Anything longer is
	// neither a known field name nor a valid symbol, so the scanner never
	// grows it.
	var keyBuf [32]byte
	for {
		p.ws()
		key, fits, err := p.key(keyBuf[:0])
		if err != nil {
			return err
		}
		if !fits {
			key = nil // too long to be a known field: skip it
		}
		p.ws()
		if !p.eat(':') {
			return p.syntax("expected ':' after a field name")
		}
		p.ws()
		var bit int
		switch string(key) {
		case "symbol":
			bit = fSymbol
		case "ts":
			bit = fTS
		case "seq":
			bit = fSeq
		case "price":
			bit = fPrice
		case "size":
			bit = fSize
		case "bid":
			bit = fBid
		case "ask":
			bit = fAsk
		}
		if bit != 0 && seen&bit != 0 {
			return reject(ReasonDuplicateKey, "field "+strconv.Quote(string(key))+" appears more than once")
		}
		seen |= bit
		switch bit {
		case 0:
			if err := p.skip(0); err != nil {
				return err
			}
		case fSymbol:
			s, fits, err := p.str(keyBuf[:0], "symbol")
			if err != nil {
				return err
			}
			if !fits {
				return reject(ReasonBadSymbol, "symbol starting "+strconv.Quote(string(s))+" is longer than "+strconv.Itoa(MaxSymbolLen)+" bytes")
			}
			if !ValidSymbol(s) {
				return reject(ReasonBadSymbol, "symbol "+strconv.Quote(string(s))+" must be 1 to 12 upper-case letters, digits, '.' or '-', starting with a letter")
			}
			t.Symbol = d.intern(s)
		case fTS:
			var tsBuf [64]byte
			start := p.i
			s, fits, err := p.str(tsBuf[:0], "ts")
			if err != nil {
				return err
			}
			if !fits {
				// An escaped ts with dozens of fraction digits: valid RFC
				// 3339, absurd in practice, so it may allocate. The decoded
				// string is never longer than the encoded one.
				p.i = start
				if s, _, err = p.str(make([]byte, 0, len(p.b)-start), "ts"); err != nil {
					return err
				}
			}
			ts, ok := ParseTime(s)
			if !ok {
				return reject(ReasonBadTS, "ts "+strconv.Quote(string(s))+" is not an RFC 3339 time such as 2026-11-25T14:30:00.123456Z")
			}
			t.TS = ts
		case fSeq:
			n, err := p.integer("seq")
			if err != nil {
				return err
			}
			t.Seq = n
		case fSize:
			n, err := p.integer("size")
			if err != nil {
				return err
			}
			t.Size = n
		case fPrice:
			f, err := p.float("price")
			if err != nil {
				return err
			}
			t.Price = f
		case fBid:
			if p.null() {
				break
			}
			f, err := p.float("bid")
			if err != nil {
				return err
			}
			t.Bid = f
			quote |= fBid
		case fAsk:
			if p.null() {
				break
			}
			f, err := p.float("ask")
			if err != nil {
				return err
			}
			t.Ask = f
			quote |= fAsk
		}
		p.ws()
		if p.eat(',') {
			continue
		}
		if p.eat('}') {
			break
		}
		return p.syntax("expected ',' or '}' after a value")
	}
	p.ws()
	if p.i != len(p.b) {
		return p.syntax("unexpected bytes after the object")
	}
	if seen&fRequired != fRequired {
		return missing(seen)
	}
	switch quote {
	case 0:
		// No quote. Zeroed here because the fields may hold an earlier
		// record's quote when the caller reuses t.
		t.Bid, t.Ask = 0, 0
	case fBid:
		return reject(ReasonBadQuote, "bid without ask: a tick has both or neither")
	case fAsk:
		return reject(ReasonBadQuote, "ask without bid: a tick has both or neither")
	default:
		if !t.HasQuote() {
			return reject(ReasonBadQuote, "bid "+fmtFloat(t.Bid)+" and ask "+fmtFloat(t.Ask)+
				" must be above 0; a tick without a quote leaves both out")
		}
	}
	return nil
}

func missing(seen int) error {
	names := [...]string{"symbol", "ts", "seq", "price", "size"}
	for i, n := range names {
		if seen&(1<<i) == 0 {
			return reject(ReasonMissingField, "field "+strconv.Quote(n)+" is missing")
		}
	}
	return nil
}

func (d *Decoder) intern(s []byte) string {
	if v, ok := d.symbols[string(s)]; ok { // no allocation: the compiler special-cases this lookup
		return v
	}
	v := string(s)
	if d.symbols == nil {
		d.symbols = make(map[string]string, 64)
	}
	if len(d.symbols) < maxInterned {
		d.symbols[v] = v
	}
	return v
}

// ValidSymbol reports whether s is an acceptable ticker: 1 to MaxSymbolLen
// bytes of A-Z, 0-9, '.' and '-', starting with a letter (BRK.B, BF-B).
func ValidSymbol[T ~string | ~[]byte](s T) bool {
	if len(s) == 0 || len(s) > MaxSymbolLen || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// scanner walks a JSON document held in memory.
type scanner struct {
	b []byte
	i int
}

func (p *scanner) syntax(what string) error {
	return reject(ReasonMalformedJSON, what+" at byte "+strconv.Itoa(p.i))
}

func (p *scanner) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *scanner) eat(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// null consumes the literal null if it comes next.
func (p *scanner) null() bool {
	if len(p.b)-p.i >= 4 && string(p.b[p.i:p.i+4]) == "null" {
		p.i += 4
		return true
	}
	return false
}

func (p *scanner) peek() byte {
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

// key reads a field name. Names with escapes are unescaped into buf, so
// "pri\u0063e" is price as any JSON reader would see it. fits is as for
// rawString.
func (p *scanner) key(buf []byte) (key []byte, fits bool, err error) {
	if p.peek() != '"' {
		return nil, false, p.syntax("expected a field name")
	}
	return p.rawString(buf)
}

// str reads a string value for the named field. fits is as for rawString.
func (p *scanner) str(buf []byte, field string) (s []byte, fits bool, err error) {
	if p.peek() != '"' {
		if err := p.skip(0); err != nil {
			return nil, false, err
		}
		return nil, false, reject(ReasonWrongType, field+" must be a string")
	}
	return p.rawString(buf)
}

// rawString reads a JSON string starting at the opening quote. Without
// escapes it returns a sub-slice of the input. With escapes it decodes into
// buf but never grows it, so that reading a string never allocates: if the
// decoded string does not fit in cap(buf), fits is false and s holds a
// prefix of it. The whole string is checked and consumed either way; pass a
// nil buf to only check it.
func (p *scanner) rawString(buf []byte) (s []byte, fits bool, err error) {
	p.i++ // opening quote
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			return s, true, nil
		case c == '\\':
			out, fits := appendFit(buf, true, p.b[start:p.i]...)
			return p.escapedString(out, fits)
		case c < 0x20:
			return nil, false, p.syntax("control character in a string")
		}
		p.i++
	}
	return nil, false, p.syntax("unterminated string")
}

// appendFit appends s to out if out is still whole and s fits in its
// capacity; otherwise it reports that out is incomplete.
func appendFit(out []byte, fits bool, s ...byte) ([]byte, bool) {
	if !fits || len(s) > cap(out)-len(out) {
		return out, false
	}
	return append(out, s...), true
}

func (p *scanner) escapedString(out []byte, fits bool) ([]byte, bool, error) {
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return out, fits, nil
		case c < 0x20:
			return nil, false, p.syntax("control character in a string")
		case c != '\\':
			out, fits = appendFit(out, fits, c)
			p.i++
			continue
		}
		p.i++
		if p.i >= len(p.b) {
			break
		}
		e := p.b[p.i]
		p.i++
		switch e {
		case '"', '\\', '/':
			out, fits = appendFit(out, fits, e)
		case 'b':
			out, fits = appendFit(out, fits, '\b')
		case 'f':
			out, fits = appendFit(out, fits, '\f')
		case 'n':
			out, fits = appendFit(out, fits, '\n')
		case 'r':
			out, fits = appendFit(out, fits, '\r')
		case 't':
			out, fits = appendFit(out, fits, '\t')
		case 'u':
			r, ok := hex4(p.b[p.i:])
			if !ok {
				return nil, false, p.syntax("bad \\u escape")
			}
			p.i += 4
			if utf16IsSurrogate(r) {
				// A surrogate pair is one character. A lone surrogate
				// becomes U+FFFD and an escape after it is read on its
				// own, as encoding/json does.
				r2 := rune(-1)
				if len(p.b)-p.i >= 6 && p.b[p.i] == '\\' && p.b[p.i+1] == 'u' {
					r2, _ = hex4(p.b[p.i+2:])
				}
				r = utf16Decode(r, r2)
				if r != utf8.RuneError {
					p.i += 6
				}
			}
			var enc [utf8.UTFMax]byte
			out, fits = appendFit(out, fits, enc[:utf8.EncodeRune(enc[:], r)]...)
		default:
			return nil, false, p.syntax("bad escape in a string")
		}
	}
	return nil, false, p.syntax("unterminated string")
}

// hex4 decodes the four hex digits at the start of b.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}

func utf16IsSurrogate(r rune) bool { return r >= 0xd800 && r < 0xe000 }

// utf16Decode combines a surrogate pair, or yields U+FFFD if r1, r2 is not
// one.
func utf16Decode(r1, r2 rune) rune {
	if r1 >= 0xd800 && r1 < 0xdc00 && r2 >= 0xdc00 && r2 < 0xe000 {
		return (r1-0xd800)<<10 | (r2 - 0xdc00) + 0x10000
	}
	return utf8.RuneError
}

// number reads a JSON number's bytes and whether it is an integer literal.
func (p *scanner) number() (raw []byte, integer bool, err error) {
	start := p.i
	p.eat('-')
	switch {
	case p.eat('0'):
	case p.i < len(p.b) && p.b[p.i] >= '1' && p.b[p.i] <= '9':
		p.digits()
	default:
		return nil, false, p.syntax("bad number")
	}
	integer = true
	if p.eat('.') {
		integer = false
		if p.digits() == 0 {
			return nil, false, p.syntax("bad number")
		}
	}
	if p.eat('e') || p.eat('E') {
		integer = false
		if !p.eat('+') {
			p.eat('-')
		}
		if p.digits() == 0 {
			return nil, false, p.syntax("bad number")
		}
	}
	return p.b[start:p.i], integer, nil
}

func (p *scanner) digits() int {
	n := 0
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
		n++
	}
	return n
}

// nonNumber reports the literals NaN, Infinity and -Infinity, which are not
// JSON but are what Python's json module and others write for non-finite
// floats; naming them beats calling the record malformed.
func (p *scanner) nonNumber() (string, bool) {
	for _, lit := range [...]string{"NaN", "Infinity", "-Infinity"} {
		if len(p.b)-p.i >= len(lit) && string(p.b[p.i:p.i+len(lit)]) == lit {
			p.i += len(lit)
			return lit, true
		}
	}
	return "", false
}

func (p *scanner) numberToken(field string) ([]byte, bool, error) {
	c := p.peek()
	if c == '-' || c >= '0' && c <= '9' {
		if lit, ok := p.nonNumber(); ok {
			return nil, false, reject(ReasonBadNumber, field+" is "+lit)
		}
		return p.number()
	}
	if lit, ok := p.nonNumber(); ok {
		return nil, false, reject(ReasonBadNumber, field+" is "+lit)
	}
	if err := p.skip(0); err != nil {
		return nil, false, err
	}
	return nil, false, reject(ReasonWrongType, field+" must be a number")
}

func (p *scanner) float(field string) (float64, error) {
	raw, _, err := p.numberToken(field)
	if err != nil {
		return 0, err
	}
	// raw viewed as a string without copying: string(raw) allocates for
	// literals over 32 bytes. ParseFloat does not keep its argument, and
	// perr is dropped here, so nothing outlives this call.
	f, perr := strconv.ParseFloat(unsafe.String(unsafe.SliceData(raw), len(raw)), 64) //nolint:gosec // audited: see the comment above
	if perr != nil || math.IsInf(f, 0) {
		return 0, reject(ReasonBadNumber, field+" "+string(raw)+" is out of range")
	}
	return f, nil
}

func (p *scanner) integer(field string) (int64, error) {
	raw, isInt, err := p.numberToken(field)
	if err != nil {
		return 0, err
	}
	if !isInt {
		return 0, reject(ReasonWrongType, field+" must be an integer, got "+string(raw))
	}
	neg := raw[0] == '-'
	limit := uint64(math.MaxInt64)
	if neg {
		raw = raw[1:]
		limit++ // -9223372036854775808 is an int64
	}
	var n uint64
	for _, c := range raw {
		d := uint64(c - '0')
		if n > (limit-d)/10 {
			return 0, reject(ReasonBadNumber, field+" is out of range")
		}
		n = n*10 + d
	}
	if neg {
		return int64(-n), nil
	}
	return int64(n), nil
}

// maxDepth bounds nesting in skipped values so a hostile record cannot
// exhaust the stack.
const maxDepth = 32

// skip passes over any JSON value, checking its syntax.
func (p *scanner) skip(depth int) error {
	if depth > maxDepth {
		return p.syntax("nesting too deep")
	}
	switch c := p.peek(); {
	case c == '"':
		_, _, err := p.rawString(nil)
		return err
	case c == '-' || c >= '0' && c <= '9':
		_, _, err := p.number()
		return err
	case c == '{':
		p.i++
		p.ws()
		if p.eat('}') {
			return nil
		}
		for {
			p.ws()
			if p.peek() != '"' {
				return p.syntax("expected a field name")
			}
			if _, _, err := p.rawString(nil); err != nil {
				return err
			}
			p.ws()
			if !p.eat(':') {
				return p.syntax("expected ':' after a field name")
			}
			p.ws()
			if err := p.skip(depth + 1); err != nil {
				return err
			}
			p.ws()
			if p.eat(',') {
				continue
			}
			if p.eat('}') {
				return nil
			}
			return p.syntax("expected ',' or '}' in an object")
		}
	case c == '[':
		p.i++
		p.ws()
		if p.eat(']') {
			return nil
		}
		for {
			p.ws()
			if err := p.skip(depth + 1); err != nil {
				return err
			}
			p.ws()
			if p.eat(',') {
				continue
			}
			if p.eat(']') {
				return nil
			}
			return p.syntax("expected ',' or ']' in an array")
		}
	default:
		for _, lit := range [...]string{"true", "false", "null"} {
			if len(p.b)-p.i >= len(lit) && string(p.b[p.i:p.i+len(lit)]) == lit {
				p.i += len(lit)
				return nil
			}
		}
		return p.syntax("expected a value")
	}
}

// ParseTime parses an RFC 3339 timestamp such as 2026-11-25T14:30:00.123456Z
// or 2026-11-25T09:30:00-05:00 and returns it in UTC, truncated to the
// microsecond. It is hand-written because time.Parse is several times slower
// on the per-tick path.
func ParseTime[T ~string | ~[]byte](s T) (time.Time, bool) {
	if len(s) < len("2006-01-02T15:04:05Z") || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return time.Time{}, false
	}
	year, ok1 := atoi(s[0:4])
	month, ok2 := atoi(s[5:7])
	day, ok3 := atoi(s[8:10])
	hour, ok4 := atoi(s[11:13])
	minute, ok5 := atoi(s[14:16])
	sec, ok6 := atoi(s[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	i := 19
	nanos := 0
	if i < len(s) && s[i] == '.' {
		i++
		start := i
		scale := 100000000
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			if i-start < 9 {
				nanos += int(s[i]-'0') * scale
				scale /= 10
			}
			i++
		}
		if i == start {
			return time.Time{}, false
		}
	}
	if i >= len(s) {
		return time.Time{}, false
	}
	offset := 0
	switch s[i] {
	case 'Z':
		i++
	case '+', '-':
		if len(s)-i != 6 || s[i+3] != ':' {
			return time.Time{}, false
		}
		oh, ok1 := atoi(s[i+1 : i+3])
		om, ok2 := atoi(s[i+4 : i+6])
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return time.Time{}, false
		}
		offset = (oh*60 + om) * 60
		if s[i] == '-' {
			offset = -offset
		}
		i += 6
	default:
		return time.Time{}, false
	}
	if i != len(s) {
		return time.Time{}, false
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nanos/1000*1000, time.UTC)
	if t.Day() != day { // time.Date normalises 2026-02-30 to March; RFC 3339 does not
		return time.Time{}, false
	}
	return t.Add(-time.Duration(offset) * time.Second), true
}

func atoi[T ~string | ~[]byte](s T) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
