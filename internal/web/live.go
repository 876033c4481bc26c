package web

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/retry"
	"github.com/stockpipe/stockpipe/internal/store"
)

// clientBuffer is how many events that must all arrive a slow browser may
// fall behind before it is disconnected; EventSource reconnects it and the
// page reloads its state. Conflated updates do not count: they wait in the
// client's slots, one per symbol (see conflate.go).
const clientBuffer = 1024

// message is one SSE event, already encoded, with what the hub needs to
// route and conflate it.
type message struct {
	event    string // the SSE event name: tick, candle, anomaly, candles_changed, status, pipeline, dagrun
	symbol   string // "" for events every client gets
	interval string // candle and candles_changed events
	frame    []byte // "event: …\ndata: …\n\n"

	tick   *tickUpdate // tick events, decoded for conflation; nil if undecodable
	bucket int64       // candle events: the bucket, Unix seconds
	final  bool        // candle events: the candle is final
}

// hub fans live events out to the connected browsers.
type hub struct {
	// onCandle is called for every candle update before it is published,
	// and for every candles_changed event, whose symbol may be "*"
	// (store.AllSymbols): every symbol of the interval.
	onCandle func(symbol, interval string)
	// onBatch receives the processors' batch announcements, which are not
	// forwarded to browsers.
	onBatch func(data []byte)

	mu      sync.Mutex
	clients map[*client]struct{}

	trades   atomic.Int64 // trades announced, for ticks/s
	lastTick atomic.Int64 // newest trade time seen, Unix nanoseconds
	lag      atomic.Int64 // consumer lag, -1 unknown
}

func newHub() *hub {
	h := &hub{clients: make(map[*client]struct{})}
	h.lag.Store(-1)
	return h
}

// subscribe adds a client asking for sub, whose ticks and forming candles
// are conflated to one update per period (0: none).
func (h *hub) subscribe(sub subscription, period time.Duration) *client {
	c := newClient(sub, period)
	h.mu.Lock()
	h.clients[c] = struct{}{}
	h.mu.Unlock()
	return c
}

func (h *hub) unsubscribe(c *client) {
	h.mu.Lock()
	if _, ok := h.clients[c]; ok {
		delete(h.clients, c)
		close(c.gone)
	}
	h.mu.Unlock()
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

// publish hands m to every client that asked for it without ever blocking
// on one: a client whose queue is full is dropped.
func (h *hub) publish(m *message) {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		if !c.sub.wants(m) {
			continue
		}
		if !c.offer(m, now) {
			delete(h.clients, c)
			close(c.gone)
		}
	}
}

func frame(event string, data []byte) []byte {
	b := make([]byte, 0, len(event)+len(data)+16)
	b = append(b, "event: "...)
	b = append(b, event...)
	b = append(b, "\ndata: "...)
	b = append(b, data...)
	return append(b, "\n\n"...)
}

// deliver publishes one notification payload. It routes by the events'
// routing fields and forwards their JSON as it came, decoding none of it.
func (h *hub) deliver(payload string) error {
	events, bad := store.Decode(payload)
	for i := range events {
		e := &events[i]
		m := &message{event: e.Kind, symbol: e.Symbol}
		switch e.Kind {
		case "batch":
			if h.onBatch != nil {
				h.onBatch(e.Data)
			}
			continue
		case "candles_changed":
			// The scheduler rewrote stored candles (1d bars, a backfill).
			// Browsers get it too, so that an open chart re-reads them.
			if e.Symbol == "" || e.Interval == "" {
				// The payload's other events still count.
				bad = fmt.Errorf("candles_changed without symbol or interval: %s", e.Data)
				continue
			}
			if h.onCandle != nil {
				h.onCandle(e.Symbol, e.Interval)
			}
			m.symbol, m.interval = e.Symbol, e.Interval
			if m.symbol == store.AllSymbols {
				m.symbol = "" // every client
			}
		case "candle":
			if h.onCandle != nil {
				h.onCandle(e.Symbol, e.Interval)
			}
			m.interval, m.bucket, m.final = e.Interval, e.Bucket, e.Final
		case "tick":
			m.tick = h.tickUpdate(e)
		}
		m.frame = frame(e.Kind, e.Data)
		if m.tick != nil {
			m.tick.full = m.frame
		}
		h.publish(m)
	}
	return bad
}

// tickUpdate prepares a tick event once for every client, counts its
// trades for the status events, and encodes its price-only frame. It
// returns nil for an event it cannot read, which is then sent as it is.
func (h *hub) tickUpdate(e *store.Event) *tickUpdate {
	ts, err := time.Parse(time.RFC3339Nano, e.TS)
	if err != nil {
		return nil
	}
	t := &tickUpdate{ev: store.TickEvent{Symbol: e.Symbol, Price: e.Price, TS: e.TS, Count: e.Count}, raw: store.TradesJSON(e.Data)}
	h.trades.Add(int64(e.Count))
	for {
		old := h.lastTick.Load()
		if ts.UnixNano() <= old || h.lastTick.CompareAndSwap(old, ts.UnixNano()) {
			break
		}
	}
	slim := t.ev // no trades: the price-only frame
	t.ts, t.slim = ts, frame("tick", slim.AppendSlimJSON(nil))
	return t
}

// listen holds a connection LISTENing on the notification channel and
// delivers what arrives, reconnecting with backoff when the database goes
// away.
func (s *Server) listen(ctx context.Context) error {
	for attempt := 1; ctx.Err() == nil; attempt++ {
		err := s.listenOnce(ctx, s.cfg.Pool)
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("live updates interrupted; reconnecting", "err", err, "in", retry.Listen.Delay(attempt))
		_ = retry.Listen.Wait(ctx, attempt)
	}
	return nil
}

func (s *Server) listenOnce(ctx context.Context, pool *pgxpool.Pool) error {
	pc, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection goes into LISTEN mode; it must not go back to the
	// pool.
	conn := pc.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+store.Channel); err != nil {
		return err
	}
	s.log.Info("listening for live updates", "channel", store.Channel)
	// Whatever was committed while no LISTEN was in place notified nobody,
	// so no cached answer can be trusted; from here on, every write is
	// announced.
	s.cache.drop()
	s.live.Store(true)
	defer s.live.Store(false)
	s.listeningOnce.Do(func() { close(s.listening) })
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if err := s.hub.deliver(n.Payload); err != nil {
			s.log.Warn("dropping a live update", "err", err)
		}
	}
}

// status publishes ticks/s, the age of the newest trade and the consumer
// lag (sampled by the pipeline monitor) once a second.
func (s *Server) status(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last, lastAt := s.hub.trades.Load(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		n := s.hub.trades.Load()
		st := struct {
			TPS   float64  `json:"ticks_per_s"`
			Age   *float64 `json:"last_tick_age_s"`
			Lag   *int64   `json:"consumer_lag"`
			Conns int      `json:"clients"`
		}{TPS: float64(n-last) / now.Sub(lastAt).Seconds(), Conns: s.hub.count()}
		last, lastAt = n, now
		if lt := s.hub.lastTick.Load(); lt > 0 {
			age := now.Sub(time.Unix(0, lt)).Seconds()
			st.Age = &age
		}
		if lag := s.hub.lag.Load(); lag >= 0 {
			st.Lag = &lag
		}
		data, _ := json.Marshal(st)
		s.hub.publish(&message{event: "status", frame: frame("status", data)})
	}
}

// apiStream is the Server-Sent Events endpoint. Its parameters say which
// events the client wants (see parseSubscription); with none, it gets every
// event, as before they existed. When the server has a live rate, ticks
// and forming candles are conflated (see conflate.go).
func (s *Server) apiStream(w http.ResponseWriter, r *http.Request) {
	sub, err := parseSubscription(r.URL.Query())
	if err == nil {
		sub.symbol, err = s.symbolParam(r, false)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	c := s.hub.subscribe(sub, s.livePeriod)
	defer s.hub.unsubscribe(c)
	// Tell EventSource how soon to come back after a drop.
	if _, err := w.Write([]byte("retry: 1000\n: connected\n\n")); err != nil {
		return
	}
	_ = rc.Flush()
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	// One timer per client, set while conflated updates wait for their
	// turn: no goroutine or timer per symbol.
	flush := time.NewTimer(time.Hour)
	flush.Stop()
	defer flush.Stop()
	var flushC <-chan time.Time
	var out []outgoing
	for {
		ping := false
		select {
		case <-r.Context().Done():
			return
		case <-c.gone:
			return
		case <-keepalive.C:
			ping = true
		case <-c.wake:
		case <-flushC:
			flushC = nil
		}
		var wait time.Duration
		out, wait = c.take(time.Now(), out[:0])
		if wait > 0 {
			// Reset, not only set: a slot may have become due sooner.
			flush.Reset(wait)
			flushC = flush.C
		}
		if len(out) == 0 && !ping {
			continue
		}
		// A browser that stops reading must not hold the handler forever.
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if ping {
			if _, err := w.Write([]byte(": keepalive\n\n")); err != nil {
				return
			}
		}
		// Send what is due in one flush.
		for _, o := range out {
			b := o.frame
			if o.tick != nil {
				b = frame("tick", o.tick.AppendJSON(nil))
			}
			if _, err := w.Write(b); err != nil {
				return
			}
		}
		clear(out)
		if err := rc.Flush(); err != nil {
			return
		}
	}
}
