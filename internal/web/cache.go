package web

import (
	"sync"

	"golang.org/x/sync/singleflight"
)

// candleCache keeps encoded /api/candles answers until a live update for
// the same symbol and interval arrives. A chart's history is read far more
// often than it changes, and a symbol's candles change at most once per
// committed batch; so many browsers asking at once cost one query and one
// encoding. Generations are bumped when a notification is delivered, a few
// milliseconds after the commit, which bounds how stale an answer can be.
type candleCache struct {
	mu      sync.Mutex
	gens    map[string]uint64 // symbol + "|" + interval → generation
	entries map[string]cacheEntry
	group   singleflight.Group
}

type cacheEntry struct {
	gen  uint64
	body []byte
}

// maxCacheEntries bounds memory; past it the cache starts over.
const maxCacheEntries = 512

func newCandleCache() *candleCache {
	return &candleCache{gens: map[string]uint64{}, entries: map[string]cacheEntry{}}
}

func (c *candleCache) bump(series string) {
	c.mu.Lock()
	c.gens[series]++
	c.mu.Unlock()
}

// get returns the cached answer for key (a request of series), computing
// it with fill on a miss; concurrent misses share one fill.
func (c *candleCache) get(series, key string, fill func() ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	gen := c.gens[series]
	if e, ok := c.entries[key]; ok && e.gen == gen {
		c.mu.Unlock()
		return e.body, nil
	}
	c.mu.Unlock()
	v, err, _ := c.group.Do(key, func() (any, error) {
		body, err := fill()
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		if len(c.entries) >= maxCacheEntries {
			clear(c.entries)
		}
		// Stored under the generation read before the query: if an
		// update arrived meanwhile, the next request refills.
		c.entries[key] = cacheEntry{gen: gen, body: body}
		c.mu.Unlock()
		return body, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}
