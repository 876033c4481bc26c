package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/store"
)

// BenchmarkSinkCommit commits batches of 10,000 new ticks with their
// offsets through the sink into the test cluster (which runs with fsync off,
// so this measures the insert path, not the disk).
func BenchmarkSinkCommit(b *testing.B) {
	pool := openMigrated(b)
	sink := store.NewSink(pool)
	const batch = 10_000
	syms := []string{"AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "JPM"}
	seq := map[string]int64{}
	next := int64(-1)
	ts := time.Date(2026, 11, 2, 14, 30, 0, 0, time.UTC)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		bt := &store.Batch{Group: "bench", Topic: "ticks"}
		for i := range batch {
			s := syms[i%len(syms)]
			seq[s]++
			ts = ts.Add(time.Microsecond)
			bt.Ticks = append(bt.Ticks, store.TickRow{Tick: market.Tick{Symbol: s, Seq: seq[s], TS: ts,
				Price: 100 + float64(i%100)/100, Size: 100, Bid: 99.99, Ask: 100.01}})
		}
		off := next
		if off < 0 {
			off = 0
		}
		bt.Offsets = []store.PartitionCommit{{Partition: 0, Expected: next, Next: off + batch}}
		if _, err := sink.Commit(context.Background(), bt); err != nil {
			b.Fatal(err)
		}
		next = off + batch
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "ticks/s")
}
