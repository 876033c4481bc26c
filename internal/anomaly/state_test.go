package anomaly

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/market"
)

// step is one call on a detector: Observe the tick, or, when idle is set,
// report what that watermark reveals (idle).
type step struct {
	tick market.Tick
	ctx  Context
	idle time.Time
}

// eventful builds a series that exercises every detector: jumps, bursts,
// blow-outs, band and VWAP context (with breaks), dropped seqs (some
// delivered late), silences and watermarks.
func eventful(seed uint64, n int) []step {
	rng := rand.New(rand.NewPCG(seed, 99))
	w := newWalk(seed, "EVT", 150)
	var steps []step
	var held []market.Tick
	var vwapNum, vwapDen float64
	bandMid := w.mid // lags the price, so a jump breaks the band
	for i := 0; i < n; i++ {
		burst, blow := false, false
		switch u := rng.Float64(); {
		case u < 0.002:
			w.jump((rng.Float64() - 0.5) * 0.08)
		case u < 0.004:
			burst = true
		case u < 0.006:
			blow = true
		case u < 0.007:
			// A silence, with the watermark passing through it.
			steps = append(steps, step{idle: w.tick.TS.Add(35 * time.Second)})
			w.tick.TS = w.tick.TS.Add(time.Duration(40+rng.IntN(50)) * time.Second)
		}
		for k := 0; k < 1 || (burst || blow) && k < 8; k++ {
			t := w.next()
			if burst {
				t.Size = 3000
			}
			if blow {
				t.Ask = cents(t.Bid * 1.01)
			}
			switch u := rng.Float64(); {
			case u < 0.003:
				continue // dropped for good
			case u < 0.006:
				held = append(held, t) // delivered a few ticks late
				continue
			}
			vwapNum += t.Price * float64(t.Size)
			vwapDen += float64(t.Size)
			c := Context{SessionVWAP: vwapNum / vwapDen, HasVWAP: true}
			bandMid += (w.mid - bandMid) / 200
			if i > 100 {
				half := bandMid * 0.001 * (0.5 + rng.Float64())
				c.BBLower, c.BBUpper, c.HasBands = bandMid-half, bandMid+half, true
			}
			steps = append(steps, step{tick: t, ctx: c})
			if len(held) > 0 && rng.IntN(4) == 0 {
				steps = append(steps, step{tick: held[0]})
				held = held[1:]
			}
		}
		if i%50 == 0 {
			steps = append(steps, step{idle: w.tick.TS.Add(-time.Second)})
		}
	}
	return append(steps, step{idle: w.tick.TS.Add(time.Hour)})
}

func play(d *Detector, steps []step) []Anomaly {
	var out []Anomaly
	for i := range steps {
		s := &steps[i]
		if !s.idle.IsZero() {
			out = d.idle(out, "EVT", s.idle)
		} else {
			out = d.Observe(out, &s.tick, s.ctx)
		}
	}
	return out
}

func TestStateRoundTrip(t *testing.T) {
	cfg := DefaultConfig()
	cfg.VolumeWindow = 50 // not the default, to show the config travels
	for seed := uint64(1); seed <= 3; seed++ {
		steps := eventful(seed, 20_000)
		want := play(NewDetector(cfg), steps)
		checkSane(t, want)
		kinds := map[Kind]int{}
		for _, a := range want {
			kinds[a.Kind]++
		}
		t.Logf("seed %d: %d steps, %v", seed, len(steps), kinds)
		if len(kinds) != 7 {
			t.Fatalf("seed %d: the series raised %v; want every kind, so the round trip covers every state", seed, kinds)
		}
		for _, cut := range []int{0, 1, 777, len(steps) / 2, len(steps) - 1} {
			d := NewDetector(cfg)
			got := play(d, steps[:cut])
			// Concatenate two states, as a checkpoint of several symbols
			// would, and read them back with Decode.
			other := NewDetector(DefaultConfig())
			play(other, eventful(seed+100, 500))
			blob, err := d.AppendBinary(nil)
			if err != nil {
				t.Fatal(err)
			}
			blob, _ = other.AppendBinary(blob)
			var r1, r2 Detector
			rest, err := r1.Decode(blob)
			if err != nil {
				t.Fatalf("seed %d cut %d: %v", seed, cut, err)
			}
			if rest, err = r2.Decode(rest); err != nil || len(rest) != 0 {
				t.Fatalf("seed %d cut %d: second state: %v, %d bytes left", seed, cut, err, len(rest))
			}
			// Bit-for-bit: encoding the restored detector gives the same bytes.
			again, _ := r1.AppendBinary(nil)
			if orig, _ := d.MarshalBinary(); !bytes.Equal(again, orig) {
				t.Fatalf("seed %d cut %d: re-encoded state differs", seed, cut)
			}
			var r3 Detector
			if err := r3.UnmarshalBinary(again); err != nil {
				t.Fatal(err)
			}
			got3 := append([]Anomaly(nil), got...)
			got = append(got, play(&r1, steps[cut:])...)
			got3 = append(got3, play(&r3, steps[cut:])...)
			if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(got3, want) {
				t.Fatalf("seed %d cut %d: %d anomalies after the round trip, want %d", seed, cut, len(got), len(want))
			}
		}
	}
}

func TestDecodeRejectsCorruption(t *testing.T) {
	d := NewDetector(DefaultConfig())
	play(d, eventful(5, 3000))
	good, _ := d.AppendBinary(nil)
	before, _ := d.AppendBinary(nil)
	for n := range len(good) {
		if err := d.UnmarshalBinary(good[:n]); err == nil {
			t.Fatalf("a state cut to %d of %d bytes decoded", n, len(good))
		}
	}
	if err := d.UnmarshalBinary(append(good[:len(good):len(good)], 0)); err == nil {
		t.Fatal("a state with a trailing byte decoded")
	}
	if after, _ := d.AppendBinary(nil); !bytes.Equal(before, after) {
		t.Fatal("a failed decode changed the detector")
	}
	bad := bytes.Clone(good)
	bad[3] = 99 // version
	if err := d.UnmarshalBinary(bad); err == nil {
		t.Fatal("an unknown version decoded")
	}
	// A configuration Validate rejects: JumpLambda is the first field.
	bad = bytes.Clone(good)
	copy(bad[4:12], []byte{0, 0, 0, 0, 0, 0, 0xf0, 0x3f}) // 1.0
	if err := d.UnmarshalBinary(bad); err == nil {
		t.Fatal("a state with JumpLambda 1 decoded")
	}
}

// TestDecodeKeepsReceiverConfig checks which configuration a restored
// detector runs with: the saved one for a zero Detector, its own for one
// made by NewDetector, with the state fitted to it.
func TestDecodeKeepsReceiverConfig(t *testing.T) {
	saved := DefaultConfig()
	d := NewDetector(saved)
	steps := eventful(6, 3000)
	play(d, steps)
	// Leave three gaps pending.
	seq, ts := d.maxSeq, time.Unix(0, d.lastNs).UTC()
	for i := range int64(3) {
		tk := market.Tick{Symbol: "EVT", TS: ts.Add(time.Duration(i+1) * time.Millisecond), Seq: seq + 2*(i+1), Price: d.prevPrice, Size: 100, Bid: d.prevPrice, Ask: d.prevPrice + 0.01}
		d.Observe(nil, &tk, Context{})
	}
	if len(d.gaps) != 3 {
		t.Fatalf("%d gaps pending, want 3", len(d.gaps))
	}
	state, _ := d.AppendBinary(nil)

	var zero Detector
	if err := zero.UnmarshalBinary(state); err != nil || zero.Config() != saved {
		t.Fatalf("zero Detector: err %v, config changed: %v", err, zero.Config() != saved)
	}

	smaller := saved
	smaller.VolumeWindow, smaller.VolumeWarmup, smaller.GapMaxPending = 16, 8, 1
	smaller.JumpMinMoveBps = 20
	r := NewDetector(smaller)
	if _, err := r.Decode(state); err != nil {
		t.Fatal(err)
	}
	if r.Config() != smaller || r.vol.n != 16 || len(r.gaps) != 3 {
		t.Fatalf("config kept: %v, window %d values, %d gaps", r.Config() == smaller, r.vol.n, len(r.gaps))
	}
	// The newest 16 sizes are the ones kept.
	for k := range 16 {
		if r.vol.recent(k) != d.vol.recent(k) {
			t.Fatalf("recent(%d) = %v, want %v", k, r.vol.recent(k), d.vol.recent(k))
		}
	}
	// The next gap pushes out all three older ones at once.
	tk := market.Tick{Symbol: "EVT", TS: ts.Add(time.Second), Seq: r.maxSeq + 2, Price: d.prevPrice, Size: 100, Bid: d.prevPrice, Ask: d.prevPrice + 0.01}
	out := r.Observe(nil, &tk, Context{})
	if got := ofKind(out, KindSeqGap); len(got) != 3 || len(r.gaps) != 1 {
		t.Fatalf("got %+v and %d pending, want 3 reported and 1 pending", out, len(r.gaps))
	}
}
