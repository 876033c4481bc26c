package market

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func BenchmarkDecode(b *testing.B) {
	benchDecode(b, []byte(goodJSON))
}

// BenchmarkDecodeNoQuote decodes a trade-only feed's tick, without bid and
// ask.
func BenchmarkDecodeNoQuote(b *testing.B) {
	benchDecode(b, []byte(rec(`-bid`, `-ask`)))
}

func benchDecode(b *testing.B, rec []byte) {
	d := NewDecoder()
	var tk Tick
	b.SetBytes(int64(len(rec)))
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Decode(rec, &tk); err != nil {
			b.Fatal(err)
		}
	}
	reportTickRate(b)
}

// tickJSON is Tick as encoding/json decodes it.
type tickJSON struct {
	Symbol string    `json:"symbol"`
	TS     time.Time `json:"ts"`
	Seq    int64     `json:"seq"`
	Price  float64   `json:"price"`
	Size   int64     `json:"size"`
	Bid    float64   `json:"bid"`
	Ask    float64   `json:"ask"`
}

// BenchmarkDecodeStd decodes the records of BenchmarkDecode with
// encoding/json, the measure of what the hand-written Decoder is worth.
// It flatters encoding/json: that checks less (no duplicate or missing
// fields, no bound on the record's size or depth, no wrong-type reasons).
func BenchmarkDecodeStd(b *testing.B) {
	rec := []byte(goodJSON)
	var v tickJSON
	if err := json.Unmarshal(rec, &v); err != nil {
		b.Fatal(err)
	}
	if tk := (Tick{Symbol: v.Symbol, TS: v.TS.UTC(), Seq: v.Seq, Price: v.Price, Size: v.Size, Bid: v.Bid, Ask: v.Ask}); tk != goodTick() {
		b.Fatalf("encoding/json decoded %+v, want %+v", tk, goodTick())
	}
	b.SetBytes(int64(len(rec)))
	b.ReportAllocs()
	for b.Loop() {
		v = tickJSON{}
		if err := json.Unmarshal(rec, &v); err != nil {
			b.Fatal(err)
		}
	}
	reportTickRate(b)
}

func BenchmarkDecodeAndCheck(b *testing.B) {
	rec := []byte(goodJSON)
	d := NewDecoder()
	rules := DefaultRules()
	now := goodTick().TS
	var tk Tick
	b.SetBytes(int64(len(rec)))
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Decode(rec, &tk); err != nil {
			b.Fatal(err)
		}
		if err := rules.Check(&tk, now); err != nil {
			b.Fatal(err)
		}
	}
	reportTickRate(b)
}

func reportTickRate(b *testing.B) {
	if s := b.Elapsed().Seconds(); s > 0 && b.N > 0 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/op")
		b.ReportMetric(float64(b.N)/s, "ticks/s")
	}
}

// TestDecodeAllocs checks the promise that decoding a valid record with a
// known symbol allocates nothing, including records with the rarer things a
// producer may legitimately send.
func TestDecodeAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts need a normal build")
	}
	d := NewDecoder()
	rules := DefaultRules()
	now := goodTick().TS
	for _, in := range []string{
		goodJSON,
		rec(`symbol="BRK.B"`),
		rec(`ts="2026-11-25T09:30:00.123456789-05:00"`),
		rec(`venue="XNAS"`, `conds=["@","F",{"x":[1,2.5e3,true,null]}]`),
		rec(`note="escaped \"quotes\" and \u00e9 \ud83d\ude00"`),
		rec(`a_long_unknown_field_name_with_an_escape_\n_in_it=1`),
		rec(`-price`, `pri\u0063e=189.23`),
		rec(`symbol="\u0041APL"`),
		rec(`ts="2026-11-25T14:30:00.123456\u005a"`),
		rec(`price=189.230000000000000000000000000000000000000000000000001`),
		rec(`x=` + nest(maxDepth)),
		rec(`-bid`, `-ask`),
		rec(`bid=null`, `ask=null`),
		" \n" + goodJSON + strings.Repeat(" ", 100),
	} {
		b := []byte(in)
		var tk Tick
		if err := d.Decode(b, &tk); err != nil { // and intern the symbol
			t.Fatalf("Decode(%s): %v", in, err)
		}
		if n := testing.AllocsPerRun(100, func() {
			if err := d.Decode(b, &tk); err != nil {
				t.Fatal(err)
			}
			if err := rules.Check(&tk, now.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("Decode and Check of %s: %v allocations, want 0", in, n)
		}
	}
}
