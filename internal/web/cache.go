package web

import (
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sync/singleflight"
)

// candleCache keeps encoded /api/candles answers until the candles they
// were read from change. A chart's history is read far more often than it
// changes, and a symbol's candles change at most once per committed batch;
// so many browsers asking at once cost one query and one encoding.
//
// Every writer of candles announces its writes by NOTIFY inside its
// transaction: the processor's batches per symbol and interval, the
// scheduler's 1d candles and backfills with a candles_changed event, for
// some symbols or for every symbol of an interval. Generations are bumped
// when a notification is delivered, a few milliseconds after the commit,
// which bounds how stale an answer can be. Notifications sent while the
// server was not listening are lost, so the whole cache is dropped each
// time LISTEN is (re)established.
type candleCache struct {
	mu sync.Mutex
	// An answer is valid while the sum of the generations that cover its
	// series is what it was before the answer was read. Each counter only
	// grows, so a bump of any of them changes the sum.
	gens     map[string]uint64 // symbol + "|" + interval → generation
	interval map[string]uint64 // interval → generation, bumped for every symbol
	epoch    uint64            // bumped when the whole cache is dropped
	entries  map[string]cacheEntry
	group    singleflight.Group
}

// cachedAnswer is an encoded answer and the Link header that goes with it.
type cachedAnswer struct {
	body []byte
	link string
}

type cacheEntry struct {
	gen    uint64
	answer cachedAnswer
}

// maxCacheEntries bounds memory; past it the cache starts over.
const maxCacheEntries = 512

func newCandleCache() *candleCache {
	return &candleCache{gens: map[string]uint64{}, interval: map[string]uint64{}, entries: map[string]cacheEntry{}}
}

// bump invalidates the answers of series, symbol + "|" + interval; a
// symbol of "*" (store.AllSymbols) stands for every symbol of the interval.
func (c *candleCache) bump(series string) {
	c.mu.Lock()
	if iv, ok := strings.CutPrefix(series, "*|"); ok {
		c.interval[iv]++
	} else {
		c.gens[series]++
	}
	c.mu.Unlock()
}

// drop invalidates every answer, also those being read right now.
func (c *candleCache) drop() {
	c.mu.Lock()
	c.epoch++
	clear(c.entries)
	c.mu.Unlock()
}

// genLocked is the generation of series; c.mu must be held.
func (c *candleCache) genLocked(series string) uint64 {
	_, iv, _ := strings.Cut(series, "|")
	return c.epoch + c.interval[iv] + c.gens[series]
}

// get returns the cached answer for key (a request of series), computing
// it with fill on a miss; concurrent misses share one fill.
func (c *candleCache) get(series, key string, fill func() (cachedAnswer, error)) (cachedAnswer, error) {
	c.mu.Lock()
	gen := c.genLocked(series)
	if e, ok := c.entries[key]; ok && e.gen == gen {
		c.mu.Unlock()
		return e.answer, nil
	}
	c.mu.Unlock()
	// A request that comes after a bump must not share a read that began
	// before it: the generation is part of what is shared.
	v, err, _ := c.group.Do(key+"@"+strconv.FormatUint(gen, 10), func() (any, error) {
		a, err := fill()
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		if len(c.entries) >= maxCacheEntries {
			clear(c.entries)
		}
		// Stored under the generation read before the query: if an
		// update arrived meanwhile, the next request refills.
		c.entries[key] = cacheEntry{gen: gen, answer: a}
		c.mu.Unlock()
		return a, nil
	})
	if err != nil {
		return cachedAnswer{}, err
	}
	return v.(cachedAnswer), nil
}
