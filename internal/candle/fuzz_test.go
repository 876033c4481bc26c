package candle

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// genTicks returns n ticks of one symbol in arrival order: generated in
// event order with gaps averaging spacing (one in eight is zero, so equal
// timestamps occur), seq rising with event time, then each delayed by up
// to 1.5 × lateness, so some arrive out of order within the lateness and
// some too late.
func genTicks(seed uint64, n int, spacing, lateness time.Duration) []tk {
	rng := rand.New(rand.NewPCG(seed, 7))
	type arriving struct {
		tk
		arrival time.Time
	}
	ts, price := t0, 100.0
	as := make([]arriving, n)
	for i := range as {
		if rng.IntN(8) != 0 {
			ts = ts.Add(time.Duration(rng.Int64N(int64(2*spacing) + 1)))
		}
		price = math.Max(0.01, math.Round(price*math.Exp(0.001*rng.NormFloat64())*100)/100)
		k := tk{ts: ts, seq: int64(i + 1), price: price, size: 1 + rng.Int64N(500)}
		as[i] = arriving{k, ts.Add(time.Duration(rng.Int64N(int64(lateness)*3/2 + 1)))}
	}
	slices.SortStableFunc(as, func(a, b arriving) int { return a.arrival.Compare(b.arrival) })
	out := make([]tk, n)
	for i, a := range as {
		out[i] = a.tk
	}
	return out
}

// ticksFromFuzz builds ticks in arrival order from fuzz bytes, four a tick:
// the gap since the previous tick in event time (a multiple of interval/64,
// up to four intervals, zero for equal timestamps, or, with the top bit of
// the first byte, a step back so the tick arrives out of order), a price
// step, a size, and a flag to let the symbol go idle before the tick.
func ticksFromFuzz(data []byte, interval time.Duration) (ticks []tk, idle []bool) {
	ts, price := t0, 100.0
	for i := 0; len(data) >= 4; i, data = i+1, data[4:] {
		step := time.Duration(data[0]&0x7f) * interval / 32
		if data[0]&0x80 != 0 {
			step = -step / 4
		}
		ts = ts.Add(step)
		price = math.Max(0.01, price+float64(int8(data[1]))/100)
		ticks = append(ticks, tk{ts: ts, seq: int64(i + 1), price: price, size: 1 + int64(data[2])})
		idle = append(idle, data[3] == 0xff)
	}
	return ticks, idle
}

// naiveCandles is the batch computation over accepted ticks: group by
// window, found here from the nanosecond count (fine for these dates) rather
// than as Window does; then Open and Close from the ticks sorted by (ts,
// seq), the rest by plain aggregation in that order, as SQL's
// first_value/last_value … ORDER BY ts, seq and sum/min/max would.
func naiveCandles(accepted []tk, interval time.Duration) []Candle {
	groups := map[int64][]tk{}
	for _, k := range accepted {
		ns := k.ts.UnixNano()
		b := ns - ((ns%int64(interval))+int64(interval))%int64(interval)
		groups[b] = append(groups[b], k)
	}
	var out []Candle
	for b, ks := range groups {
		slices.SortFunc(ks, func(x, y tk) int {
			return cmp.Or(x.ts.Compare(y.ts), cmp.Compare(x.seq, y.seq))
		})
		c := Candle{
			Bucket: time.Unix(0, b).UTC(),
			Open:   ks[0].price, OpenTS: ks[0].ts, OpenSeq: ks[0].seq,
			Close: ks[len(ks)-1].price, CloseTS: ks[len(ks)-1].ts, CloseSeq: ks[len(ks)-1].seq,
			High: math.Inf(-1), Low: math.Inf(1),
			Final: true,
		}
		for _, k := range ks {
			c.High = math.Max(c.High, k.price)
			c.Low = math.Min(c.Low, k.price)
			c.Volume += k.size
			c.Turnover += k.price * float64(k.size)
			c.Trades++
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(x, y Candle) int { return x.Bucket.Compare(y.Bucket) })
	return out
}

// arrivalTurnover sums Turnover per window in arrival order, which is what
// Window does, so that its sums can be checked exactly too.
func arrivalTurnover(accepted []tk, interval time.Duration) map[time.Time]float64 {
	m := map[time.Time]float64{}
	for _, k := range accepted {
		m[align(k.ts, interval)] += k.price * float64(k.size)
	}
	return m
}

// checkAgainstBatch runs ticks (in arrival order) through a pipeline,
// rejecting late ones by an independent reading of the watermark rule, and
// compares its final candles with the batch computation over the accepted
// ticks. cut, if in range, is where the state is saved and restored into a
// fresh pipeline, whose output must equal an uninterrupted one's. It
// returns how many ticks were late and how many were accepted behind a tick
// with a later (ts, seq).
func checkAgainstBatch(t *testing.T, ticks []tk, idle []bool, lateness time.Duration, cut int, intervals ...time.Duration) (late, reordered int) {
	p := newPipeline(t, lateness, intervals...)
	var q *pipeline // restored at cut
	var accepted []tk
	var maxTS, mark time.Time
	seen := false
	for i, k := range ticks {
		if i == cut {
			q = restore(t, p.snapshot(t), len(intervals))
			for j := range q.final {
				q.final[j] = slices.Clone(p.final[j])
			}
		}
		if idle != nil && idle[i] {
			// A quiet symbol's candles are sealed by another clock:
			// that marks them final and changes nothing else, lateness
			// included.
			to := maxTS.Add(time.Duration(i%3) * intervals[0])
			p.seal(to)
			if q != nil {
				q.seal(to)
			}
		}
		late := seen && k.ts.Before(mark)
		if got := p.feed(t, k); got == late {
			t.Fatalf("tick %d %+v: accepted %v, but the watermark is %v", i, k, got, mark)
		}
		if q != nil && q.feed(t, k) == late {
			t.Fatalf("tick %d: restored pipeline disagrees on lateness", i)
		}
		if late {
			continue
		}
		if n := len(accepted); n > 0 && before(k.ts, k.seq, accepted[n-1].ts, accepted[n-1].seq) {
			reordered++
		}
		accepted = append(accepted, k)
		if !seen || k.ts.After(maxTS) {
			maxTS = k.ts
		}
		if m := maxTS.Add(-lateness); !seen || m.After(mark) {
			mark = m
		}
		seen = true
	}
	if q == nil {
		q = p
	}
	end := maxTS.Add(2 * slices.Max(intervals))
	p.idle(t, end)
	q.idle(t, end)
	for i, iv := range intervals {
		if !slices.Equal(p.final[i], q.final[i]) {
			t.Fatalf("%v: output after restore at %d differs from the uninterrupted one", iv, cut)
		}
		want := naiveCandles(accepted, iv)
		got := p.final[i]
		if len(got) != len(want) {
			t.Fatalf("%v: %d final candles, batch %d", iv, len(got), len(want))
		}
		sums := arrivalTurnover(accepted, iv)
		for j := range got {
			g, w := got[j], want[j]
			if math.Abs(g.Turnover-w.Turnover) > 1e-12*w.Turnover || g.Turnover != sums[g.Bucket] {
				t.Fatalf("%v candle %v: Turnover %v, batch %v, arrival order %v", iv, g.Bucket, g.Turnover, w.Turnover, sums[g.Bucket])
			}
			g.Turnover = w.Turnover
			if g != w {
				t.Fatalf("%v candle %d:\n got   %+v\n batch %+v", iv, j, g, w)
			}
		}
	}
	return len(ticks) - len(accepted), reordered
}

func TestWindowMatchesBatch(t *testing.T) {
	for seed := range uint64(20) {
		lateness := []time.Duration{0, time.Second, 2 * time.Second}[seed%3]
		ticks := genTicks(seed, 4000, 150*time.Millisecond, lateness)
		late, reordered := checkAgainstBatch(t, ticks, nil, lateness, int(seed*199), time.Second, time.Minute, 5*time.Minute)
		if lateness > 0 && (late == 0 || reordered == 0) {
			t.Errorf("seed %d: %d late, %d accepted out of order: the test lost its teeth", seed, late, reordered)
		}
		t.Logf("seed %d, lateness %v: %d late, %d accepted out of order", seed, lateness, late, reordered)
	}
}

// FuzzWindow compares a Window's final candles with the batch computation
// over the ticks the watermark accepted, and a run restored mid-stream with
// an uninterrupted one.
func FuzzWindow(f *testing.F) {
	f.Add([]byte{}, uint8(0), uint16(0))
	f.Add([]byte{10, 1, 5, 0, 0, 2, 5, 0, 0x85, 3, 7, 0, 40, 255, 1, 0, 20, 4, 4, 0xff, 1, 1, 1, 1}, uint8(1), uint16(3))
	seed := make([]byte, 0, 4*200)
	for i := range 200 {
		seed = append(seed, byte(i*29), byte(i*7), byte(i), byte(i%50))
	}
	f.Add(seed, uint8(5), uint16(77))
	f.Fuzz(func(t *testing.T, data []byte, cfg uint8, cut uint16) {
		intervals := []time.Duration{time.Second, 250 * time.Millisecond, time.Minute, 5 * time.Minute}
		iv := intervals[cfg%4]
		// Lateness from none to the most a Window of the shortest interval
		// holds.
		lateness := time.Duration(cfg/4%9) * iv / 4
		ticks, idle := ticksFromFuzz(data, iv)
		others := []time.Duration{iv, 2 * iv, 60 * iv}
		checkAgainstBatch(t, ticks, idle, lateness, int(cut), others...)
	})
}
