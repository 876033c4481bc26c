package candle

import (
	"math/rand/v2"
	"testing"
	"time"
)

// benchJitter delays one tick in eight by up to 1.5 s, within the 2 s
// lateness, so the benchmarks include out-of-order ticks.
var benchJitter = func() (j [4096]time.Duration) {
	rng := rand.New(rand.NewPCG(3, 3))
	for i := range j {
		if rng.IntN(8) == 0 {
			j[i] = time.Duration(rng.Int64N(int64(1500 * time.Millisecond)))
		}
	}
	return j
}()

// BenchmarkWindowAdd measures one tick through one 1m window as the package
// documentation lays out: lateness check, Observe, Add, Advance, at 1000
// ticks per second of event time.
func BenchmarkWindowAdd(b *testing.B) {
	wm, _ := NewWatermark(2 * time.Second)
	w := mustWindow(b, time.Minute, 2*time.Second)
	finals := 0
	emit := func(Candle) { finals++ }
	base := t0
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		base = base.Add(time.Millisecond)
		ts := base.Add(-benchJitter[i&4095])
		if !wm.Late(ts) {
			wm.Observe(ts)
			if w.Add(ts, int64(i), 100+float64(i&63)/100, 100) == nil {
				b.Fatal("refused")
			}
			w.Advance(wm.Time(), emit)
		}
		i++
	}
	if b.N > 200_000 && finals == 0 {
		b.Fatal("no candle was finalised")
	}
}

// BenchmarkSymbolTick is the same with the 1s, 1m and 5m windows of a
// symbol sharing its watermark.
func BenchmarkSymbolTick(b *testing.B) {
	wm, _ := NewWatermark(2 * time.Second)
	ws := [3]Window{
		mustWindow(b, time.Second, 2*time.Second),
		mustWindow(b, time.Minute, 2*time.Second),
		mustWindow(b, 5*time.Minute, 2*time.Second),
	}
	emit := func(Candle) {}
	base := t0
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		base = base.Add(time.Millisecond)
		ts := base.Add(-benchJitter[i&4095])
		if !wm.Late(ts) {
			wm.Observe(ts)
			for j := range ws {
				if ws[j].Add(ts, int64(i), 100+float64(i&63)/100, 100) == nil {
					b.Fatal("refused")
				}
				ws[j].Advance(wm.Time(), emit)
			}
		}
		i++
	}
}

func BenchmarkWindowAppendBinary(b *testing.B) {
	w := mustWindow(b, time.Minute, 2*time.Second)
	w.Add(t0.Add(59*time.Second), 1, 100, 1)
	w.Add(t0.Add(61*time.Second), 2, 100, 1)
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = w.AppendBinary(buf[:0])
	}
	b.SetBytes(int64(len(buf)))
}
