package anomaly

import (
	"bytes"
	"encoding/binary"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/market"
)

// fuzzSteps turns bytes into detector calls, ten bytes a call. Most ticks are
// plausible moves from the previous one; some carry values the stream would
// have rejected (zero, negative, NaN and infinite prices, crossed quotes,
// sizes of 0 or 2^63−1, times far from the others), because Observe must not
// panic or produce NaN whatever it is given.
func fuzzSteps(data []byte) []step {
	var steps []step
	price, seq := 100.0, int64(1)
	ts := t0
	specials := [...]float64{0, -1, math.NaN(), math.Inf(1), math.Inf(-1), 5e-324, 1e-300, 1e300, math.MaxFloat64}
	for len(data) >= 10 {
		b := data[:10]
		data = data[10:]
		op, kind := b[0]&7, b[0]>>3&7
		if op == 7 {
			wm := ts.Add(time.Duration(int16(binary.LittleEndian.Uint16(b[1:]))) * 10 * time.Millisecond)
			if kind == 1 {
				wm = time.Time{}
			}
			steps = append(steps, step{idle: wm})
			continue
		}
		seq += int64(int8(b[1]))
		ts = ts.Add(time.Duration(int16(binary.LittleEndian.Uint16(b[2:]))) * 100 * time.Microsecond)
		price *= math.Exp(float64(int8(b[4])) / 2000)
		if op == 6 {
			price *= 1.03 // a jump
		}
		tk := market.Tick{Symbol: "EVT", TS: ts, Seq: seq, Price: cents(price), Size: 1 + int64(b[5])*20}
		spread := math.Max(0.01, cents(price*float64(b[6])*1e-4))
		tk.Bid = cents(tk.Price - spread*float64(b[7]&3)/3)
		tk.Ask = cents(tk.Bid + spread)
		var c Context
		if b[9]&1 != 0 {
			half := price * float64(b[8]) * 1e-4
			c.BBLower, c.BBUpper, c.HasBands = price-half, price+half, true
		}
		if b[9]&2 != 0 {
			c.SessionVWAP, c.HasVWAP = price*(1+float64(int8(b[8]))*1e-3), true
		}
		sp := specials[int(b[9]>>2)%len(specials)]
		switch kind {
		case 1:
			tk.Price = sp
		case 2:
			tk.Bid, tk.Ask = tk.Ask, sp
		case 3:
			tk.Size = [...]int64{0, -5, math.MaxInt64}[int(b[9])%3]
		case 4:
			tk.TS = [...]time.Time{{}, time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}[int(b[9])%3]
		case 5:
			c = Context{BBLower: sp, BBUpper: -sp, HasBands: true, SessionVWAP: sp, HasVWAP: true}
		case 6:
			tk.Seq = [...]int64{math.MinInt64, math.MaxInt64, 0}[int(b[9])%3]
		}
		steps = append(steps, step{tick: tk, ctx: c})
	}
	return steps
}

// FuzzDetector checks that no input makes a detector panic, report a
// non-finite value or repeat a (TS, Kind), and that a checkpoint in the
// middle changes nothing.
func FuzzDetector(f *testing.F) {
	var seed []byte
	for i := range 400 {
		op := byte(i % 7)
		if i%40 == 39 {
			op = 7
		}
		seed = append(seed, op, 1, 150, 0, byte(i*7), 5, 2, byte(i), 20, byte(i%4))
	}
	f.Add(seed)
	f.Add(bytes.Repeat([]byte{0, 1, 100, 0, 0, 5, 2, 1, 10, 3}, 100))
	f.Add(append(bytes.Repeat([]byte{0, 1, 100, 0, 0, 5, 2, 1, 10, 3}, 60), 6, 1, 100, 0, 0, 5, 2, 1, 10, 3))
	f.Fuzz(func(t *testing.T, data []byte) {
		steps := fuzzSteps(data)
		want := play(NewDetector(DefaultConfig()), steps)
		checkSane(t, want)
		for _, cut := range []int{len(steps) / 3, len(steps) / 2} {
			d := NewDetector(DefaultConfig())
			got := play(d, steps[:cut])
			b, err := d.AppendBinary(nil)
			if err != nil {
				t.Fatal(err)
			}
			var r Detector
			if err := r.UnmarshalBinary(b); err != nil {
				t.Fatalf("cut %d: restoring a state just written: %v", cut, err)
			}
			got = append(got, play(&r, steps[cut:])...)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("cut %d: %d anomalies after a checkpoint, %d without", cut, len(got), len(want))
			}
		}
	})
}

// FuzzUnmarshal checks that arbitrary bytes never make UnmarshalBinary panic,
// and that whatever it accepts is a state the detector can run on and that
// encodes back to the same bytes.
func FuzzUnmarshal(f *testing.F) {
	d := NewDetector(DefaultConfig())
	play(d, eventful(7, 2000))
	good, _ := d.AppendBinary(nil)
	f.Add(good)
	fresh, _ := NewDetector(DefaultConfig()).AppendBinary(nil)
	f.Add(fresh)
	f.Fuzz(func(t *testing.T, b []byte) {
		var d Detector
		if err := d.UnmarshalBinary(b); err != nil {
			return
		}
		again, _ := d.AppendBinary(nil)
		if !bytes.Equal(again, b) {
			t.Fatalf("accepted state re-encodes differently")
		}
		out := play(&d, eventful(8, 300))
		checkSane(t, out)
	})
}
