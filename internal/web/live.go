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

// clientBuffer is how many events a slow browser may fall behind before it
// is disconnected; EventSource reconnects it and the page reloads its state.
const clientBuffer = 1024

// message is one SSE event, already encoded.
type message struct {
	symbol string // "" for events every client gets
	frame  []byte // "event: …\ndata: …\n\n"
}

type client struct {
	symbol string // "" = every symbol
	ch     chan []byte
	gone   chan struct{} // closed when the hub drops a slow client
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

func (h *hub) subscribe(symbol string) *client {
	c := &client{symbol: symbol, ch: make(chan []byte, clientBuffer), gone: make(chan struct{})}
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

// publish hands m to every interested client without ever blocking on one.
func (h *hub) publish(m message) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		if m.symbol != "" && c.symbol != "" && c.symbol != m.symbol {
			continue
		}
		select {
		case c.ch <- m.frame:
		default:
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

// deliver publishes one notification payload.
func (h *hub) deliver(payload string) error {
	var events []store.Event
	if err := json.Unmarshal([]byte(payload), &events); err != nil {
		return fmt.Errorf("decoding notification: %w", err)
	}
	var bad error
	for _, e := range events {
		if e.Kind == "batch" {
			if h.onBatch != nil {
				h.onBatch(e.Data)
			}
			continue
		}
		if e.Kind == "candles_changed" {
			// The scheduler rewrote stored candles (1d bars, a backfill).
			// Browsers get it too, so that an open chart re-reads them.
			var c store.CandlesChanged
			if err := json.Unmarshal(e.Data, &c); err != nil || c.Symbol == "" || c.Interval == "" {
				// The payload's other events still count.
				bad = fmt.Errorf("decoding candles_changed %s: %w", e.Data, err)
				continue
			}
			if h.onCandle != nil {
				h.onCandle(c.Symbol, c.Interval)
			}
			sym := c.Symbol
			if sym == store.AllSymbols {
				sym = "" // every client
			}
			h.publish(message{symbol: sym, frame: frame(e.Kind, e.Data)})
			continue
		}
		if e.Kind == "candle" && h.onCandle != nil {
			var c struct {
				Interval string `json:"interval"`
			}
			if json.Unmarshal(e.Data, &c) == nil {
				h.onCandle(e.Symbol, c.Interval)
			}
		}
		if e.Kind == "tick" {
			var t struct {
				Count int       `json:"count"`
				TS    time.Time `json:"ts"`
			}
			if json.Unmarshal(e.Data, &t) == nil {
				h.trades.Add(int64(t.Count))
				for {
					old := h.lastTick.Load()
					if t.TS.UnixNano() <= old || h.lastTick.CompareAndSwap(old, t.TS.UnixNano()) {
						break
					}
				}
			}
		}
		h.publish(message{symbol: e.Symbol, frame: frame(e.Kind, e.Data)})
	}
	return bad
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
		s.hub.publish(message{frame: frame("status", data)})
	}
}

// apiStream is the Server-Sent Events endpoint.
func (s *Server) apiStream(w http.ResponseWriter, r *http.Request) {
	sym, err := s.symbolParam(r, false)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	c := s.hub.subscribe(sym)
	defer s.hub.unsubscribe(c)
	// Tell EventSource how soon to come back after a drop.
	if _, err := w.Write([]byte("retry: 1000\n: connected\n\n")); err != nil {
		return
	}
	_ = rc.Flush()
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		var b []byte
		select {
		case <-r.Context().Done():
			return
		case <-c.gone:
			return
		case <-keepalive.C:
			b = []byte(": keepalive\n\n")
		case b = <-c.ch:
		}
		// A browser that stops reading must not hold the handler forever.
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := w.Write(b); err != nil {
			return
		}
		// Send what is queued in one flush.
	drain:
		for range 64 {
			select {
			case b = <-c.ch:
				if _, err := w.Write(b); err != nil {
					return
				}
			default:
				break drain
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}
