package analytics_test

import (
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/analytics"
	"github.com/stockpipe/stockpipe/internal/generate"
	"github.com/stockpipe/stockpipe/internal/market"
)

// records returns n simulated tick records (no faults) and their keys.
func records(tb testing.TB, n int, symbols []generate.Symbol, rate float64) [][]byte {
	tb.Helper()
	sim, err := generate.NewSimulator(generate.SimConfig{Symbols: symbols, Rate: rate, Count: int64(n), Seed: 1,
		Start: time.Date(2026, 11, 2, 14, 30, 0, 0, time.UTC), AnomalyRate: 2})
	if err != nil {
		tb.Fatal(err)
	}
	out := make([][]byte, 0, n)
	for {
		r, ok, err := sim.Next()
		if err != nil {
			tb.Fatal(err)
		}
		if !ok {
			return out
		}
		out = append(out, append([]byte(nil), r.Value...))
	}
}

// BenchmarkTickPath is the whole per-tick path without I/O: decode, check
// the rules, deduplicate, watermark, 1m and 5m candles, indicators, session
// VWAP and every anomaly detector, with a Flush and a state snapshot every
// 10,000 ticks as the processor does per batch.
func BenchmarkTickPath(b *testing.B) {
	recs := records(b, 200_000, generate.DefaultUniverse(), 2000)
	dec := market.NewDecoder()
	rules := market.DefaultRules()
	now := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	p, err := analytics.New(analytics.Config{})
	if err != nil {
		b.Fatal(err)
	}
	var out analytics.Output
	var snap []byte
	// Warm up: symbols created, buffers grown.
	for _, r := range recs {
		var t market.Tick
		if dec.Decode(r, &t) == nil && rules.Check(&t, now) == nil {
			p.Apply(&t, &out)
		}
	}
	// Replaying the same records is all duplicates; shift seqs and times
	// instead by building a fresh partition per pass.
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if i == len(recs) {
			b.StopTimer()
			p, _ = analytics.New(analytics.Config{})
			i = 0
			b.StartTimer()
		}
		var t market.Tick
		if err := dec.Decode(recs[i], &t); err != nil {
			b.Fatal(err)
		}
		if err := rules.Check(&t, now); err != nil {
			b.Fatal(err)
		}
		p.Apply(&t, &out)
		i++
		if i%10_000 == 0 {
			p.Flush(&out)
			snap, _ = p.AppendBinary(snap[:0])
			out.Reset()
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/tick")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ticks/s")
}
