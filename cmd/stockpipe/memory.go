package main

import (
	"os"
	"runtime/debug"
	"time"
)

// The processor's memory grows with the symbols it holds (candle windows,
// indicators and detector windows: about 11 KB each), and Go's collector
// by default lets the heap grow to twice what is live: 250 MiB at 5,000
// symbols. A soft limit sized to the symbols keeps it near what is needed
// (about 150 MiB there) at the price of more frequent collections when
// close to it. GOMEMLIMIT, when set, is the user's choice and wins.
const (
	memoryBase      = 64 << 20 // batches, buffers and the runtime
	memoryPerSymbol = 12 << 10
)

// memoryLimit is the soft limit for a processor holding symbols.
func memoryLimit(symbols int) int64 { return memoryBase + int64(symbols)*memoryPerSymbol }

// limitMemory keeps the runtime's soft memory limit at memoryLimit of the
// symbols held, checking every few seconds, until stop is called. It does
// nothing when GOMEMLIMIT is set.
func limitMemory(rc *runCtx, symbols func() int) (stop func()) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		var last int64
		for {
			limit := memoryLimit(symbols())
			if limit != last {
				debug.SetMemoryLimit(limit)
				if last != 0 && limit>>20 != last>>20 {
					rc.log.Debug("memory limit sized to the symbols held", "limit_mib", limit>>20)
				}
				last = limit
			}
			select {
			case <-done:
				return
			case <-rc.ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done) }
}
