package web

import (
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/stockpipe/stockpipe/internal/store"
)

// DefaultLiveRate is the updates per symbol per second a browser gets of a
// symbol's price and of each of its forming candles when serve and up are
// not told otherwise: faster than a person reads a changing number, and a
// small fraction of what a busy feed commits.
const DefaultLiveRate = 4

// maxMergedTrades is how many trades a conflated tick event carries, as
// many as one batch's event does (the store's maxEventTrades).
const maxMergedTrades = 20

// A client's outgoing events take one of two paths. Those that must all
// arrive (final candles, anomalies, candles_changed, status, pipeline,
// dagrun; every event when nothing is conflated) join its queue, in order.
// Ticks and forming candles are conflated when the server has a live rate:
// each kind+symbol(+interval) has one slot holding the newest update not
// yet sent, and a slot is sent at most once per period. A slot whose
// period has passed goes at once, so a symbol that trades now and then is
// not delayed; one updated faster waits out its period, its newest update
// winning. The waiting slots are grouped by when they may go, so one timer
// per client serves them all, and what is due is written together. A
// client that reads slowly therefore holds at most one pending update per
// slot — O(symbols), never a growing queue — and one that falls a whole
// queue behind on the events that must arrive is dropped, as before;
// EventSource reconnects it and the page reloads.

// slotKey names a conflation slot.
type slotKey struct {
	event    string // "tick" or "candle"
	symbol   string
	interval string // candles only
}

// slot is one kind+symbol(+interval) of a client. It stays after it is
// sent, remembering when it may go again, so a client holds at most one
// per key.
type slot struct {
	dirty  bool      // holds an update not sent yet
	listed bool      // in client.ready or a client.waiting group
	next   time.Time // when it may be sent again: a period after it last was

	// Tick slots.
	tick   *tickUpdate // the newest by trade time of the updates merged
	sent   time.Time   // trade time of the newest price sent to the client
	merged int         // updates merged since the last send
	count  int         // their trades
	// trades (ticksTrades clients) are the merged updates' newest trades,
	// newest first; nil while only one update is merged (then they are
	// its own). Owned by the slot until handed over to be encoded.
	trades []store.Trade

	// Candle slots.
	frame  []byte
	bucket int64 // Unix seconds
}

// tickUpdate is a tick event decoded once for every client.
type tickUpdate struct {
	ev   store.TickEvent // without its trades: see trades
	ts   time.Time       // ev.TS
	full []byte          // the frame as the processor sent it, trades included
	slim []byte          // the frame with the price only: symbol, price, ts

	// The trades are decoded only when a client merges two updates of a
	// symbol: most clients (the overview) never need them.
	raw         json.RawMessage
	tradesOnce  sync.Once
	tradeValues []store.Trade
}

// trades returns the update's trades, newest first.
func (t *tickUpdate) trades() []store.Trade {
	t.tradesOnce.Do(func() { _ = json.Unmarshal(t.raw, &t.tradeValues) })
	return t.tradeValues
}

// outgoing is a frame to write, or a merged tick event to encode first
// (outside the client's lock).
type outgoing struct {
	frame []byte
	tick  *store.TickEvent
}

// group is the waiting slots that may be sent at the same time: those
// last sent together.
type group struct {
	at    time.Time
	slots []*slot
}

type client struct {
	sub subscription
	// period is the least time between two updates of a slot; 0
	// conflates nothing.
	period time.Duration
	// gather is the least time between two writes of conflated updates,
	// so that slots falling due one after another go out together.
	gather time.Duration
	wake   chan struct{} // capacity 1: see signal
	gone   chan struct{} // closed when the hub drops the client

	mu       sync.Mutex
	queue    [][]byte // frames to send in order, at most clientBuffer
	slots    map[slotKey]*slot
	ready    []*slot  // slots that may be sent now, in the order they became so
	waiting  []*group // slots sent less than a period ago, earliest first
	ndirty   int      // slots holding an update not sent
	lastSent time.Time
	scratch  []store.Trade // for merging trades, under mu
}

func newClient(sub subscription, period time.Duration) *client {
	return &client{sub: sub, period: period, gather: period / 10, wake: make(chan struct{}, 1), gone: make(chan struct{}),
		slots: map[slotKey]*slot{}}
}

// offer takes m for the client. It returns false when the client has let
// its queue fill: it is to be dropped.
func (c *client) offer(m *message, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.period > 0 {
		switch {
		case m.tick != nil:
			c.offerTick(m.tick, now)
			return true
		case m.event == "candle" && m.interval != "":
			return c.offerCandle(m, now)
		}
	}
	return c.enqueue(m.frame)
}

func (c *client) enqueue(f []byte) bool {
	if len(c.queue) >= clientBuffer {
		return false
	}
	c.queue = append(c.queue, f)
	if len(c.queue) == 1 {
		c.signal()
	}
	return true
}

// signal wakes the client's writer. It needs waking when the queue or the
// ready slots become non-empty, or a slot must go sooner than its timer is
// set for: otherwise it is awake already, or its timer is set.
func (c *client) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *client) slot(k slotKey) *slot {
	s := c.slots[k]
	if s == nil {
		s = &slot{}
		c.slots[k] = s
	}
	return s
}

// markDirty notes that s holds an update to send: now if its period has
// passed, else in the group of slots that may go when it may.
func (c *client) markDirty(s *slot, now time.Time) {
	if s.dirty {
		return
	}
	s.dirty = true
	c.ndirty++
	if s.listed {
		return // cleaned and dirtied again before it was taken: still where it was
	}
	s.listed = true
	if !s.next.After(now) {
		c.ready = append(c.ready, s)
		if len(c.ready) == 1 {
			c.signal()
		}
		return
	}
	// Slots sent together may go again together; there are few groups
	// (a period's writes at most), newest last.
	i := len(c.waiting)
	for i > 0 && c.waiting[i-1].at.After(s.next) {
		i--
	}
	if i > 0 && c.waiting[i-1].at.Equal(s.next) {
		c.waiting[i-1].slots = append(c.waiting[i-1].slots, s)
		return
	}
	c.waiting = slices.Insert(c.waiting, i, &group{at: s.next, slots: []*slot{s}})
	if i == 0 {
		c.signal() // sooner than the writer's timer
	}
}

func (c *client) markClean(s *slot) {
	if s.dirty {
		s.dirty = false
		c.ndirty--
	}
	s.frame, s.tick, s.trades = nil, nil, nil
}

// offerTick merges t into its symbol's slot: the price with the newest
// trade time wins, trade counts add up, and a trades client keeps the
// newest trades of all the merged updates.
func (c *client) offerTick(t *tickUpdate, now time.Time) {
	s := c.slot(slotKey{event: "tick", symbol: t.ev.Symbol})
	if t.ts.Before(s.sent) {
		// A late batch: the client shows a newer price already, and its
		// pages show no trade older than the newest they have.
		return
	}
	if !s.dirty {
		s.tick, s.merged, s.count, s.trades = t, 1, t.ev.Count, nil
		c.markDirty(s, now)
		return
	}
	if c.sub.ticks == ticksTrades {
		cur := s.trades
		if cur == nil {
			cur = s.tick.trades()
		}
		s.trades = c.mergeTrades(s.trades, cur, t.trades())
	}
	s.merged++
	s.count += t.ev.Count
	if !t.ts.Before(s.tick.ts) {
		s.tick = t
	}
}

// newerTrade orders trades newest first, as tick events list them.
func newerTrade(a, b *store.Trade) int {
	if c := b.TS.Compare(a.TS); c != 0 {
		return c
	}
	switch {
	case a.Seq > b.Seq:
		return -1
	case a.Seq < b.Seq:
		return 1
	}
	return 0
}

// mergeTrades merges two newest-first lists into owned (allocated when
// nil; cur may be owned itself), keeping the newest maxMergedTrades.
func (c *client) mergeTrades(owned, cur, add []store.Trade) []store.Trade {
	m := c.scratch[:0]
	i, j := 0, 0
	for len(m) < maxMergedTrades && (i < len(cur) || j < len(add)) {
		switch {
		case j == len(add):
			m = append(m, cur[i])
			i++
		case i == len(cur):
			m = append(m, add[j])
			j++
		default:
			switch d := newerTrade(&cur[i], &add[j]); {
			case d < 0:
				m = append(m, cur[i])
				i++
			case d > 0:
				m = append(m, add[j])
				j++
			default: // the same trade twice
				m = append(m, cur[i])
				i++
				j++
			}
		}
	}
	c.scratch = m
	if owned == nil {
		owned = make([]store.Trade, 0, maxMergedTrades)
	}
	return append(owned[:0], m...)
}

// offerCandle conflates a forming candle with its series' pending one,
// and queues a final one, which is never dropped, after any older update
// of its series still pending: a client never gets a candle's state after
// a newer state of the same candle.
func (c *client) offerCandle(m *message, now time.Time) bool {
	k := slotKey{event: "candle", symbol: m.symbol, interval: m.interval}
	s := c.slots[k]
	if !m.final {
		if s != nil && s.dirty && s.bucket > m.bucket {
			// A newer bucket's update waits: it is what a page shows.
			// This older candle's final state follows when it closes.
			return true
		}
		if s == nil {
			s = c.slot(k)
		}
		s.frame, s.bucket = m.frame, m.bucket
		c.markDirty(s, now)
		return true
	}
	if s != nil && s.dirty {
		switch {
		case s.bucket == m.bucket:
			c.markClean(s) // superseded by its final state
		case s.bucket < m.bucket:
			if !c.enqueue(s.frame) {
				return false
			}
			c.markClean(s)
		}
		// A newer bucket's update stays pending: it goes after this.
	}
	return c.enqueue(m.frame)
}

// take moves what is to be sent now into out: the queue, then the slots
// that may go. Taking the two under one lock keeps their order: a key's
// pending update is always newer than what the queue holds of it. It
// returns how long until more slots may go, 0 when none wait.
func (c *client) take(now time.Time, out []outgoing) ([]outgoing, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.queue {
		out = append(out, outgoing{frame: f})
	}
	clear(c.queue)
	c.queue = c.queue[:0]
	n := 0
	for n < len(c.waiting) && !c.waiting[n].at.After(now) {
		c.ready = append(c.ready, c.waiting[n].slots...)
		n++
	}
	if n > 0 {
		rest := copy(c.waiting, c.waiting[n:])
		clear(c.waiting[rest:])
		c.waiting = c.waiting[:rest]
	}
	var wait time.Duration
	if len(c.ready) > 0 {
		if at := c.lastSent.Add(c.gather); at.After(now) {
			wait = at.Sub(now)
		} else {
			for _, s := range c.ready {
				s.listed = false
				if s.dirty {
					out = append(out, c.flush(s, now))
					c.lastSent = now
				}
			}
			clear(c.ready)
			c.ready = c.ready[:0]
		}
	}
	if len(c.waiting) > 0 {
		if w := c.waiting[0].at.Sub(now); wait == 0 || w < wait {
			wait = w
		}
	}
	return out, wait
}

// flush returns a dirty slot's update and marks it sent.
func (c *client) flush(s *slot, now time.Time) outgoing {
	s.dirty = false
	c.ndirty--
	s.next = now.Add(c.period)
	if s.tick == nil {
		f := s.frame
		s.frame = nil
		return outgoing{frame: f}
	}
	t := s.tick
	s.sent = t.ts
	var o outgoing
	switch {
	case c.sub.ticks != ticksTrades:
		o.frame = t.slim
	case s.merged == 1:
		o.frame = t.full
	default:
		// The slot's trades are handed over: the next merge allocates.
		o.tick = &store.TickEvent{Symbol: t.ev.Symbol, Price: t.ev.Price, TS: t.ev.TS, Count: s.count, Trades: s.trades}
	}
	s.tick, s.trades = nil, nil
	return o
}

// pending returns how many slots hold an update not yet sent, and how
// many slots the client has; for tests.
func (c *client) pending() (dirty, slots int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ndirty, len(c.slots)
}
