// Package finnhub streams trades from Finnhub's WebSocket API
// (https://finnhub.io/docs/api/websocket-trades) as feed.Trade values.
//
// Finnhub sends trades without quotes and without trade ids, so the
// connector delivers only trades, with an empty ID.
package finnhub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/stockpipe/stockpipe/internal/feed"
	"github.com/stockpipe/stockpipe/internal/retry"
)

// Source names Finnhub in recordings (the source of each recorded message),
// in statistics and in errors.
const Source = "finnhub"

// DefaultURL is Finnhub's WebSocket endpoint, used when Config.URL is empty.
const DefaultURL = "wss://ws.finnhub.io"

// DefaultIdle is how long a connection may stay silent before it is taken
// for dead, used when Config.Idle is zero. Finnhub pings every 20–30 s even
// when no trade arrives, so 60 s of silence means a connection that died
// without closing (a NAT or proxy that forgot it).
const DefaultIdle = 60 * time.Second

// TokenFix is the FatalError.Fix of a refused token.
const TokenFix = "check FINNHUB_TOKEN or --token (a free key: https://finnhub.io/register)" //nolint:gosec // G101 takes the variable names in this text for a credential

const (
	// dialTimeout bounds the TCP, TLS and HTTP handshake, which otherwise
	// has no end of its own.
	dialTimeout = 30 * time.Second
	// writeTimeout bounds sending one subscription.
	writeTimeout = 10 * time.Second
	// readLimit is the largest frame accepted. The library's default of
	// 32 KiB is less than a busy second of trades in one Finnhub frame.
	readLimit = 4 << 20
	// masked replaces the token wherever the URL or an error is shown.
	masked = "****"
)

// Config is what a Connector needs.
type Config struct {
	// URL is the WebSocket endpoint without the token; empty means
	// DefaultURL. Tests point it at a fake server.
	URL string
	// Token is the Finnhub API key. It is sent only in the connection's
	// query string, and never appears in a log line or an error.
	Token string
	// Symbols are the tickers to subscribe to (upper-cased; duplicates
	// and blanks dropped).
	Symbols []string
	// Recorder, if not nil, records every frame as it arrived.
	Recorder *feed.Recorder
	// Logger receives connection events; nil means slog.Default().
	Logger *slog.Logger
	// Idle is how long a connection may receive nothing before it is
	// dropped and reconnected; zero means DefaultIdle.
	Idle time.Duration
}

// Connector streams Finnhub trades; it implements feed.Connector. Create it
// with New.
type Connector struct {
	cfg     Config
	log     *slog.Logger
	symbols []string
}

var _ feed.Connector = (*Connector)(nil)

// New returns a connector for cfg, filling in the defaults of URL, Logger
// and Idle. It does not connect: Run does.
func New(cfg Config) *Connector {
	if cfg.URL == "" {
		cfg.URL = DefaultURL
	}
	if cfg.Idle <= 0 {
		cfg.Idle = DefaultIdle
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	seen := make(map[string]bool)
	var symbols []string
	for _, s := range cfg.Symbols {
		s = strings.ToUpper(strings.TrimSpace(s))
		if s != "" && !seen[s] {
			seen[s] = true
			symbols = append(symbols, s)
		}
	}
	return &Connector{cfg: cfg, log: cfg.Logger.With("source", Source), symbols: symbols}
}

// errIdle is the cause of a read that ended because nothing arrived for
// Config.Idle.
var errIdle = errors.New("connection idle")

// handlerError carries an error of the Handler out of a session, so that
// Run returns it instead of reconnecting.
type handlerError struct{ err error }

func (e handlerError) Error() string { return e.err.Error() }

// Run connects to Finnhub, subscribes to every symbol and delivers each
// trade to h until ctx is done, and then closes the connection normally
// and returns nil. A lost connection, a failed connection attempt or a
// connection silent for Config.Idle is logged (one WARN line), counted in
// st, and retried after retry.Feed's delay; the attempts count anew after
// a connection that received something. Run returns a *feed.FatalError
// when Finnhub refuses the token (HTTP 401 or 403 at the handshake) or the
// configuration cannot work, and an error of h as h returned it.
func (c *Connector) Run(ctx context.Context, h feed.Handler, st *feed.Stats) error {
	dialURL, shownURL, err := c.urls()
	if err != nil {
		return err
	}
	if len(c.symbols) == 0 {
		return &feed.FatalError{Source: Source, Msg: "no symbols to subscribe to", Fix: "name at least one symbol"}
	}
	defer st.SetState(feed.StateStopped)
	attempt := 0
	for {
		connected, received, err := c.session(ctx, dialURL, shownURL, h, st)
		if ctx.Err() != nil {
			return nil
		}
		var fatal *feed.FatalError
		if errors.As(err, &fatal) {
			// Not logged here: the caller reports what Run returns.
			return fatal
		}
		var herr handlerError
		if errors.As(err, &herr) {
			return herr.err
		}
		if err == nil {
			// A session ends only with an error or with ctx; this is
			// not reached, but a nil error must not make a silent loop.
			err = errors.New("connection ended")
		}
		if received {
			attempt = 0
		}
		attempt++
		wait := retry.Feed.Delay(attempt)
		if connected {
			st.Disconnected(err)
			c.log.Warn("finnhub connection lost; reconnecting", "url", shownURL, "err", err, "attempt", attempt, "wait", wait)
		} else {
			// Not Disconnected: the state stays what it was (connecting
			// or reconnecting), and only a connection that comes up
			// counts as a reconnect.
			st.Error(err)
			c.log.Warn("finnhub connection failed; retrying", "url", shownURL, "err", err, "attempt", attempt, "wait", wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// urls returns the URL to dial, holding the token, and the same URL with
// the token masked, for logs and errors.
func (c *Connector) urls() (dial, shown string, err error) {
	if c.cfg.Token == "" {
		return "", "", &feed.FatalError{Source: Source, Msg: "no API token", Fix: TokenFix}
	}
	u, err := url.Parse(c.cfg.URL)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		// The parse error is not wrapped: it may quote the URL, and the
		// URL may hold a token.
		return "", "", &feed.FatalError{Source: Source, Msg: "the URL is not a ws:// or wss:// URL", Fix: "check the Finnhub URL"}
	}
	q := u.Query()
	q.Del("token")
	rest := q.Encode()
	if rest != "" {
		rest += "&"
	}
	// Built by hand rather than with url.Values so the mask reads "****"
	// and not its escaped form.
	u.RawQuery = rest + "token=" + url.QueryEscape(c.cfg.Token)
	dial = u.String()
	u.RawQuery = rest + "token=" + masked
	return dial, u.String(), nil
}

// session makes one connection: dial, subscribe, read until the connection
// fails or ctx is done. connected says whether the subscriptions were sent
// (st then shows a connection); received, whether a well-formed message
// other than an error arrived. The error is nil when ctx ended the session.
func (c *Connector) session(ctx context.Context, dialURL, shownURL string, h feed.Handler, st *feed.Stats) (connected, received bool, err error) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	// coder/websocket hands back the handshake's response with its body
	// already closed (its Dial doc): there is nothing to close here.
	conn, resp, err := websocket.Dial(dctx, dialURL, nil) //nolint:bodyclose // closed by websocket.Dial

	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return false, false, nil
		}
		if resp != nil && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) {
			return false, false, &feed.FatalError{Source: Source, Code: resp.StatusCode, Msg: http.StatusText(resp.StatusCode), Fix: TokenFix}
		}
		// net/http's errors quote the URL it requested, token and all.
		return false, false, fmt.Errorf("connecting to %s: %w", shownURL, c.redact(err))
	}
	conn.SetReadLimit(readLimit)

	// ctx ending closes the connection with a close handshake, from
	// here rather than from a read's context: the library drops the
	// connection without one when a read's context ends.
	closed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(closed)
		_ = conn.Close(websocket.StatusNormalClosure, "")
	})
	defer func() {
		if !stop() {
			<-closed
			return
		}
		var herr handlerError
		if errors.As(err, &herr) {
			// The connection is healthy: leave politely.
			_ = conn.Close(websocket.StatusNormalClosure, "")
			return
		}
		_ = conn.CloseNow()
	}()
	// Writes and reads end with their own timeouts, not with ctx, so that
	// ctx ending reaches the connection only through the close above.
	live := context.WithoutCancel(ctx)

	for _, s := range c.symbols {
		msg, _ := json.Marshal(subscribe{Type: "subscribe", Symbol: s})
		wctx, cancel := context.WithTimeout(live, writeTimeout)
		err := conn.Write(wctx, websocket.MessageText, msg)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return false, false, nil
			}
			return false, false, fmt.Errorf("subscribing to %s: %w", s, c.redact(err))
		}
	}
	st.Connected(time.Now())
	c.log.Info("finnhub connected", "url", shownURL, "symbols", len(c.symbols))

	for {
		rctx, cancel := context.WithTimeoutCause(live, c.cfg.Idle, errIdle)
		_, frame, err := conn.Read(rctx)
		idle := errors.Is(context.Cause(rctx), errIdle)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return true, received, nil
			}
			if idle {
				return true, received, fmt.Errorf("nothing arrived from finnhub for %v: %w", c.cfg.Idle, errIdle)
			}
			return true, received, fmt.Errorf("reading from finnhub: %w", c.redact(err))
		}
		now := time.Now()
		c.cfg.Recorder.Record(Source, now, frame)
		st.Messages(1, now)
		m, evs, err := decode(frame)
		if err != nil {
			// Counted, not logged: a provider sending garbage would
			// flood the log, and the count and last error show on
			// the pipeline page.
			st.Error(err)
			c.log.Debug("finnhub message not understood", "err", err)
			continue
		}
		if m.Type == "error" {
			// Finnhub reports e.g. too many subscriptions this way and
			// keeps the connection, so neither does the connector drop it.
			msg := c.redactString(m.Msg)
			st.Error(fmt.Errorf("finnhub reported an error: %s", msg))
			c.log.Warn("finnhub reported an error", "msg", msg)
			continue
		}
		received = true
		if err := feed.Deliver(h, evs); err != nil {
			return true, received, handlerError{err}
		}
	}
}

// redact returns err with the token masked in its message; errors.Is and
// errors.As still see err.
func (c *Connector) redact(err error) error {
	return &redactedError{err: err, msg: c.redactString(err.Error())}
}

// redactString masks the token in s, raw and query-escaped.
func (c *Connector) redactString(s string) string {
	if c.cfg.Token == "" {
		return s
	}
	s = strings.ReplaceAll(s, c.cfg.Token, masked)
	return strings.ReplaceAll(s, url.QueryEscape(c.cfg.Token), masked)
}

// redactedError is an error whose message has the token masked.
type redactedError struct {
	err error
	msg string
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// subscribe is a subscription request.
type subscribe struct {
	Type   string `json:"type"`
	Symbol string `json:"symbol"`
}

// message is any Finnhub message: a trade message holds Data, an error
// message Msg, a ping nothing else.
type message struct {
	Type string      `json:"type"`
	Data *[]rawTrade `json:"data"`
	Msg  string      `json:"msg"`
}

// rawTrade is one trade of a trade message. Pointers tell a missing field
// from a zero. The conditions ("c") are not read: a feed.Trade has no place
// for them, and they must not make a frame undecodable.
type rawTrade struct {
	P *float64     `json:"p"`
	S *string      `json:"s"`
	T *json.Number `json:"t"`
	V *float64     `json:"v"`
}

// Decode is the feed.Decoder of one Finnhub frame. A trade message gives a
// trade event per trade, in the message's order: TS is t (UNIX
// milliseconds) in UTC, Size is v rounded to whole shares, ID is empty.
// Trades that round to less than one share or have a price ≤ 0 are left
// out without an error (some instruments trade fractions; such prints are
// not ticks the pipeline can store). A ping, an error message or a
// subscription acknowledgement gives no events and no error. An unknown
// message type, a trade missing p, s, t or v, or invalid JSON is an error.
func Decode(msg []byte) ([]feed.Event, error) {
	_, evs, err := decode(msg)
	return evs, err
}

// decode is Decode that also returns the message, for the connector to see
// its type and an error's text.
func decode(msg []byte) (message, []feed.Event, error) {
	var m message
	if err := json.Unmarshal(msg, &m); err != nil {
		return m, nil, fmt.Errorf("a finnhub message that is not a JSON object: %w", err)
	}
	switch m.Type {
	case "ping", "error", "subscribe", "unsubscribe":
		return m, nil, nil
	case "trade":
	case "":
		return m, nil, errors.New("a finnhub message without a type")
	default:
		return m, nil, fmt.Errorf("a finnhub message of unknown type %q", m.Type)
	}
	if m.Data == nil {
		return m, nil, errors.New("a finnhub trade message without data")
	}
	evs := make([]feed.Event, 0, len(*m.Data))
	for i, r := range *m.Data {
		tr, ok, err := r.trade()
		if err != nil {
			return m, nil, fmt.Errorf("finnhub trade %d of %d: %w", i+1, len(*m.Data), err)
		}
		if ok {
			evs = append(evs, feed.Event{Trade: &tr})
		}
	}
	return m, evs, nil
}

// trade returns r as a feed.Trade, or ok=false when r is a print to leave
// out (under one share, or no positive price).
func (r rawTrade) trade() (feed.Trade, bool, error) {
	switch {
	case r.S == nil || *r.S == "":
		return feed.Trade{}, false, errors.New("no symbol (s)")
	case r.P == nil:
		return feed.Trade{}, false, errors.New("no price (p)")
	case r.T == nil:
		return feed.Trade{}, false, errors.New("no time (t)")
	case r.V == nil:
		return feed.Trade{}, false, errors.New("no volume (v)")
	}
	ms, err := r.T.Int64()
	if err != nil {
		// A time written as a float (1.575526691134e12) is still whole
		// milliseconds; float64 holds such numbers exactly.
		f, ferr := r.T.Float64()
		if ferr != nil || math.Abs(f) > 1<<53 {
			return feed.Trade{}, false, fmt.Errorf("time (t) %s is not UNIX milliseconds", r.T.String())
		}
		ms = int64(math.Round(f))
	}
	size := math.Round(*r.V)
	if size >= math.MaxInt64 {
		return feed.Trade{}, false, fmt.Errorf("volume (v) %g out of range", *r.V)
	}
	if size < 1 || *r.P <= 0 {
		return feed.Trade{}, false, nil
	}
	return feed.Trade{Symbol: *r.S, TS: time.UnixMilli(ms).UTC(), Price: *r.P, Size: int64(size)}, true, nil
}
