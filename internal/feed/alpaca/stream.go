// Package alpaca connects stockpipe to Alpaca's stock market data through
// Alpaca's official Go SDK (github.com/alpacahq/alpaca-trade-api-go/v3):
// the real-time stream of trades and quotes (Stream, a feed.Connector),
// the decoder of what it records (Decode), and historical trades and
// quotes (History).
//
// A trade's feed.Trade.ID is its exchange and Alpaca trade id, "x:i" (for
// example "V:96921"), so that a trade sent again after a reconnect can be
// recognised (feed.Assembler drops it).
package alpaca

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/alpacahq/alpaca-trade-api-go/v3/marketdata/stream"

	"github.com/stockpipe/stockpipe/internal/feed"
	"github.com/stockpipe/stockpipe/internal/retry"
)

// Source names Alpaca in recordings (the source of each recorded message),
// in statistics and in errors.
const Source = "alpaca"

// DefaultFeed is the feed streamed when StreamConfig.Feed is empty: IEX,
// the one the free plan includes.
const DefaultFeed = "iex"

// DefaultStreamURL is Alpaca's stream URL without the feed
// (https://docs.alpaca.markets/docs/streaming-market-data:
// wss://stream.data.alpaca.markets/{version}/{feed}).
const DefaultStreamURL = "wss://stream.data.alpaca.markets/v2"

// The FatalError.Fix of each refusal that a reconnect cannot cure.
const (
	// CredentialsFix: 402 auth failed on the stream, HTTP 401/403 from the
	// historical API.
	CredentialsFix = "check APCA_API_KEY_ID and APCA_API_SECRET_KEY (or --key/--secret)" //nolint:gosec // G101: names where credentials go, not credentials
	// ConnectionLimitFix: 406 connection limit exceeded.
	ConnectionLimitFix = "another connection uses this key: the free plan allows one; stop the other client"
	// SubscriptionFix: 409 insufficient subscription (and the historical
	// API's 403 for SIP data the plan does not include).
	SubscriptionFix = "your plan has no access to this feed: use --feed iex (free) or subscribe to SIP"
	// SymbolLimitFix: 405 symbol limit exceeded.
	SymbolLimitFix = "subscribe to fewer symbols: your plan limits how many one connection may stream"
	// ScopeFix: 411 insufficient scope.
	ScopeFix = "this key may not read market data: create a key with market-data access"
	// FeedFix: 410 invalid subscribe action for this feed, or a stream URL
	// refused at the handshake.
	FeedFix = "check --feed (iex or sip) and the stream URL"
)

// sdkRetries is what the SDK is told of reconnecting: give up after one
// failed attempt, with no delay. The SDK's own backoff is linear without a
// cap or jitter and sleeps without looking at the context (client.go,
// maintainConnection), so Run retries instead, with retry.Feed, by
// building a new client. The SDK still makes one immediate attempt after a
// connection drops — resubscribing to what the server last confirmed
// (flow.go: writeSub sends c.sub, set from the subscription reply) — which
// is what a dropped connection wants first anyway.
const sdkRetries = 1

// StreamConfig is what a Stream needs.
type StreamConfig struct {
	// URL is the stream's URL including the feed, as Alpaca documents it;
	// empty means DefaultStreamURL + "/" + Feed. Its last path element is
	// the feed actually streamed (the SDK takes the URL without it and
	// appends the feed itself). Tests point it at a fake server.
	URL string
	// Feed is "iex" (DefaultFeed, when empty) or "sip"; it only matters
	// when URL is empty.
	Feed string
	// Key and Secret are the API key pair. Empty ones make the SDK read
	// APCA_API_KEY_ID and APCA_API_SECRET_KEY. They are sent only in the
	// auth message and never appear in a log line or an error.
	Key, Secret string
	// Symbols are the tickers whose trades and quotes are streamed
	// (upper-cased; duplicates and blanks dropped).
	Symbols []string
	// Recorder, if not nil, records every trade and quote as it arrived.
	Recorder *feed.Recorder
	// Logger receives connection events; nil means slog.Default().
	Logger *slog.Logger
}

// Stream streams Alpaca trades and quotes through the SDK's stock stream
// client; it implements feed.Connector. Create it with NewStream.
type Stream struct {
	cfg     StreamConfig
	base    string // the URL without the feed, for stream.WithBaseURL
	feed    string // the URL's last element, which the SDK appends
	shown   string // the URL for logs and errors
	symbols []string
	log     *slog.Logger
	mask    *strings.Replacer // masks the credentials
	err     error             // a configuration Run cannot work with
}

var _ feed.Connector = (*Stream)(nil)

// NewStream returns a stream for cfg, filling in the defaults of Feed, URL
// and Logger. It does not connect: Run does.
func NewStream(cfg StreamConfig) *Stream {
	if cfg.Feed == "" {
		cfg.Feed = DefaultFeed
	}
	if cfg.URL == "" {
		cfg.URL = DefaultStreamURL + "/" + cfg.Feed
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Stream{cfg: cfg, log: cfg.Logger.With("source", Source), symbols: normalize(cfg.Symbols),
		mask: newRedactor(cfg.Key, cfg.Secret)}
	u, err := url.Parse(strings.TrimRight(cfg.URL, "/"))
	i := -1
	if err == nil {
		i = strings.LastIndex(u.Path, "/")
	}
	if err != nil || u.Host == "" || i < 0 || i == len(u.Path)-1 ||
		(u.Scheme != "ws" && u.Scheme != "wss" && u.Scheme != "http" && u.Scheme != "https") {
		// The parse error is not wrapped: it quotes the URL, which might
		// hold credentials.
		s.err = &feed.FatalError{Source: Source, Msg: "the stream URL is not of the form wss://host/v2/{feed}", Fix: FeedFix}
		return s
	}
	s.feed = u.Path[i+1:]
	u.Path, u.RawQuery, u.User = u.Path[:i], "", nil
	s.base = u.String()
	s.shown = s.base + "/" + s.feed
	if len(s.symbols) == 0 {
		s.err = &feed.FatalError{Source: Source, Msg: "no symbols to subscribe to", Fix: "name at least one symbol"}
	}
	return s
}

// normalize upper-cases symbols and drops blanks and duplicates.
func normalize(symbols []string) []string {
	seen := make(map[string]bool)
	var out []string
	for _, s := range symbols {
		s = strings.ToUpper(strings.TrimSpace(s))
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// Run connects, authenticates, subscribes to the trades and quotes of
// every symbol and delivers them to h until ctx is done; it then returns
// nil. Each arriving trade and quote counts as one message in st and is
// recorded, as a one-element array in Alpaca's JSON shape (Decode reads
// it), with the time it arrived.
//
// h is called from the SDK's one message processor (WithProcessors(1), so
// arrival order is kept), never concurrently. If h returns an error, Run
// stops the client and returns that error. The SDK reads on into a buffer
// of 100000 messages while h blocks, and drops messages when it is full;
// each drop counts as an error in st.
//
// A lost connection is retried at once by the SDK, resubscribing; a failed
// attempt is retried by Run after retry.Feed's delay (backoff with
// jitter), without limit; the attempts count anew after a connection that
// came up. Run returns a *feed.FatalError, without retrying, when Alpaca
// refuses the key (402), the plan (409 insufficient subscription, 411
// insufficient scope, 410 a feed the request is invalid for), the number
// of symbols (405), or the connection because another one uses the key
// (406, at once when no connection of this Run has come up yet; after one
// has, 406 may be the server still counting the connection just lost, and
// only a 406 that outlasts the SDK's 15 auth retries is fatal). 407 slow
// client is not fatal: Alpaca drops the connection, which is logged as too
// slow and reconnected.
func (s *Stream) Run(ctx context.Context, h feed.Handler, st *feed.Stats) error {
	if s.err != nil {
		return s.err
	}
	defer st.SetState(feed.StateStopped)
	everConnected := false
	attempt := 0
	for {
		res := s.session(ctx, h, st, everConnected)
		if ctx.Err() != nil {
			return nil
		}
		if res.herr != nil {
			return res.herr
		}
		if res.fatal != nil {
			// Not logged here: the caller reports what Run returns.
			return res.fatal
		}
		err := res.err
		if err == nil {
			// A session ends only with an error or with ctx; this is
			// not reached, but a nil error must not make a silent loop.
			err = errors.New("the connection ended")
		}
		if res.connected {
			everConnected = true
			attempt = 0
		}
		attempt++
		wait := retry.Feed.Delay(attempt)
		if res.up {
			st.Disconnected(err)
		} else {
			// Not Disconnected: the state stays what it was (connecting
			// or reconnecting), and only a connection that comes up
			// counts as a reconnect.
			st.Error(err)
		}
		s.log.Warn("alpaca stream connection failed; retrying", "url", s.shown, "err", err, "attempt", attempt, "wait", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// session is one SDK client's life: from Connect until it terminates.
// Its fields after mu are guarded by mu.
type session struct {
	s             *Stream
	h             feed.Handler
	st            *feed.Stats
	ctx           context.Context
	cancel        context.CancelFunc
	everConnected bool // a connection of this Run came up before this session

	mu sync.Mutex
	// connects and disconnects count the SDK's callbacks; applied, the
	// connection events applied to st. The SDK runs each callback in a
	// goroutine of its own, so they may arrive out of order; applying
	// them as the strict alternation connect, disconnect, connect … they
	// stand for keeps st right.
	connects, disconnects, applied int
	ended                          bool
	up                             bool  // st shows this session's connection as up
	lastErr                        error // the SDK's last reported error
	serverErr                      error // Alpaca's last error message on this connection
	fatal                          *feed.FatalError
	herr                           error // h's error
	lastDrop                       time.Time
}

// session runs one SDK client until it terminates, and reports how it
// ended.
func (s *Stream) session(ctx context.Context, h feed.Handler, st *feed.Stats, everConnected bool) sessionResult {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ss := &session{s: s, h: h, st: st, ctx: sctx, cancel: cancel, everConnected: everConnected}
	client := stream.NewStocksClient(s.feed,
		stream.WithBaseURL(s.base),
		stream.WithCredentials(s.cfg.Key, s.cfg.Secret),
		stream.WithTrades(ss.trade, s.symbols...),
		stream.WithQuotes(ss.quote, s.symbols...),
		stream.WithProcessors(1),
		stream.WithReconnectSettings(sdkRetries, 0),
		stream.WithConnectCallback(ss.onConnect),
		stream.WithDisconnectCallback(ss.onDisconnect),
		stream.WithBufferFillCallback(ss.onBufferFull),
		stream.WithLogger(&sdkLogger{ss: ss, log: s.log, redact: s.mask}),
	)
	err := client.Connect(sctx)
	if err == nil {
		// Terminated yields the client's error (nil when sctx ended it)
		// and is closed once its message processor has returned, so h
		// is not called after this loop.
		for e := range client.Terminated() {
			if e != nil {
				err = e
			}
		}
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	// Callbacks still running change nothing from here on.
	ss.ended = true
	res := sessionResult{connected: ss.connects > 0, up: ss.up, fatal: ss.fatal, herr: ss.herr}
	if err != nil && res.fatal == nil && res.herr == nil {
		res.fatal = fatalOf(err)
		res.err = redact(s.mask, fmt.Errorf("alpaca stream %s: %w", s.shown, err))
	}
	return res
}

// sessionResult is how a session ended.
type sessionResult struct {
	connected bool             // a connection came up
	up        bool             // st still shows it as up: its loss is not recorded yet
	fatal     *feed.FatalError // a refusal a reconnect cannot cure
	herr      error            // h's error
	err       error            // what ended the client otherwise
}

// trade delivers one trade from the SDK.
func (ss *session) trade(t stream.Trade) {
	if ss.stopped() {
		return
	}
	now := time.Now()
	ss.s.record(now, tradeWire{T: "t", S: t.Symbol, I: t.ID, X: t.Exchange, P: t.Price, Size: t.Size,
		TS: t.Timestamp.UTC(), C: nonNil(t.Conditions), Z: t.Tape})
	ss.st.Messages(1, now)
	tr := feed.Trade{Symbol: t.Symbol, TS: t.Timestamp.UTC(), Price: t.Price, Size: int64(t.Size), ID: tradeID(t.Exchange, t.ID)}
	if err := ss.h.Trade(tr); err != nil {
		ss.handlerFailed(err)
	}
}

// quote delivers one quote from the SDK.
func (ss *session) quote(q stream.Quote) {
	if ss.stopped() {
		return
	}
	now := time.Now()
	ss.s.record(now, quoteWire{T: "q", S: q.Symbol, BX: q.BidExchange, BP: q.BidPrice, BS: q.BidSize,
		AX: q.AskExchange, AP: q.AskPrice, AS: q.AskSize, TS: q.Timestamp.UTC(), C: nonNil(q.Conditions), Z: q.Tape})
	ss.st.Messages(1, now)
	if err := ss.h.Quote(feed.Quote{Symbol: q.Symbol, TS: q.Timestamp.UTC(), Bid: q.BidPrice, Ask: q.AskPrice}); err != nil {
		ss.handlerFailed(err)
	}
}

// stopped reports whether nothing more is to be delivered: h failed, or
// the session is ending.
func (ss *session) stopped() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.herr != nil || ss.fatal != nil || ss.ctx.Err() != nil
}

// handlerFailed stops the session with h's error.
func (ss *session) handlerFailed(err error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.herr == nil {
		ss.herr = err
	}
	ss.cancel()
}

// record writes one trade or quote to the recorder as a one-element
// array, the shape of Alpaca's JSON messages: the SDK hands over decoded
// values, not the frames (which it reads as msgpack).
func (s *Stream) record(at time.Time, msg any) {
	if s.cfg.Recorder == nil {
		return
	}
	b, err := json.Marshal([]any{msg})
	if err != nil {
		// Not reached: the wire types always encode.
		return
	}
	s.cfg.Recorder.Record(Source, at, b)
}

// onConnect is the SDK's connect callback: a connection is up and
// subscribed.
func (ss *session) onConnect() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.connects++
	ss.apply()
}

// onDisconnect is the SDK's disconnect callback: the connection is gone.
func (ss *session) onDisconnect() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.disconnects++
	ss.apply()
}

// apply applies the connection events that have arrived to st, in their
// order (ss.mu held). After the session ended, or while it is being
// stopped, Run accounts for the connection instead.
func (ss *session) apply() {
	for !ss.ended && ss.ctx.Err() == nil {
		due := ss.applied/2 + 1 // the number of the connect or disconnect due
		if ss.applied%2 == 0 {
			if ss.connects < due {
				return
			}
			ss.serverErr = nil
			ss.up = true
			ss.st.Connected(time.Now())
			ss.s.log.Info("alpaca stream connected", "url", ss.s.shown, "symbols", len(ss.s.symbols))
		} else {
			if ss.disconnects < due {
				return
			}
			cause := ss.serverErr
			if cause == nil {
				cause = ss.lastErr
			}
			if cause == nil {
				cause = errors.New("connection lost")
			}
			ss.lastErr, ss.serverErr = nil, nil
			ss.up = false
			ss.st.Disconnected(cause)
			ss.s.log.Warn("alpaca stream connection lost; reconnecting", "url", ss.s.shown, "err", cause)
		}
		ss.applied++
	}
}

// onBufferFull is the SDK's buffer-fill callback: a message was dropped
// because h has not kept up with 100000 buffered ones.
func (ss *session) onBufferFull([]byte) {
	ss.st.Error(errors.New("a message was dropped: the pipeline did not keep up with the stream"))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if now := time.Now(); now.Sub(ss.lastDrop) >= 10*time.Second {
		ss.lastDrop = now
		ss.s.log.Warn("alpaca stream messages dropped: the pipeline does not keep up with the stream")
	}
}

// sdkError sees each error the SDK logs: the only way to learn of 406 and
// 407, which the SDK handles itself, and of the cause of a lost
// connection.
func (ss *session) sdkError(format string, err error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended {
		return
	}
	switch {
	case errors.Is(err, stream.ErrConnectionLimitExceeded):
		// The SDK retries auth on 406 for about 45 s (flow.go), as the
		// server may still count a connection just lost. With no
		// connection of this Run up yet, the other connection is
		// someone else's: stop now.
		if !ss.everConnected && ss.connects == 0 {
			if ss.fatal == nil {
				ss.fatal = fatalOf(err)
				ss.cancel()
			}
		} else {
			ss.s.log.Warn("alpaca stream: 406 connection limit exceeded after a reconnect; retrying auth, as Alpaca may still count the connection just lost",
				"url", ss.s.shown)
		}
	case errors.Is(err, stream.ErrSlowClient):
		ss.s.log.Warn("alpaca stream: Alpaca found this client too slow to read the stream (407 slow client) and drops the connection; reconnecting",
			"url", ss.s.shown)
	}
	if strings.Contains(format, sdkServerError) || strings.Contains(format, sdkUnhandled) {
		// An error message from Alpaca, or a frame the SDK could not
		// decode: counted, as the connection goes on (until Alpaca
		// closes it).
		ss.st.Error(redact(ss.s.mask, err))
		if strings.Contains(format, sdkServerError) {
			ss.serverErr = err
		}
	}
	ss.lastErr = err
}

// Texts of the SDK's log formats (v3.9.1, message.go and client.go) that
// say which kind of error an argument is. They only decide what is
// counted as an error and at which level a line is logged: a changed text
// loses a count, never a connection.
const (
	sdkServerError   = "got error from server"
	sdkUnhandled     = "could not handle message"
	sdkReconnectStop = "max reconnect limit has been reached"
)

// sdkLogger adapts slog to the SDK's Logger, masking the credentials, and
// shows Run each error the SDK logs. The SDK's info and warnings go to
// DEBUG — Run logs connections, losses and retries itself, with their
// causes — and its errors to WARN, except the end of its one reconnect
// attempt, which is Run's business.
type sdkLogger struct {
	ss     *session
	log    *slog.Logger
	redact *strings.Replacer
}

func (l *sdkLogger) Infof(format string, v ...any) { l.emit(slog.LevelDebug, format, v) }
func (l *sdkLogger) Warnf(format string, v ...any) { l.emit(slog.LevelDebug, format, v) }
func (l *sdkLogger) Errorf(format string, v ...any) {
	level := slog.LevelWarn
	if strings.Contains(format, sdkReconnectStop) || l.ss.ctx.Err() != nil {
		level = slog.LevelDebug
	}
	l.emit(level, format, v)
}

func (l *sdkLogger) emit(level slog.Level, format string, v []any) {
	for _, a := range v {
		if err, ok := a.(error); ok {
			l.ss.sdkError(format, err)
		}
	}
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	msg := strings.TrimPrefix(fmt.Sprintf(format, v...), "datav2stream: ")
	l.log.Log(context.Background(), level, "alpaca sdk: "+l.redact.Replace(msg))
}

// masked replaces the credentials wherever the SDK's text might show them.
const masked = "****"

// newRedactor masks key and secret; credentials too short to be real are
// left alone rather than masking every occurrence of a letter.
func newRedactor(key, secret string) *strings.Replacer {
	var pairs []string
	for _, c := range []string{secret, key} {
		if len(c) >= 4 {
			pairs = append(pairs, c, masked)
		}
	}
	return strings.NewReplacer(pairs...)
}

// redact returns err with what mask masks masked in its message;
// errors.Is and errors.As still see err.
func redact(mask *strings.Replacer, err error) error {
	msg := mask.Replace(err.Error())
	if msg == err.Error() {
		return err
	}
	return &redactedError{err: err, msg: msg}
}

// redactedError is an error whose message has the credentials masked.
type redactedError struct {
	err error
	msg string
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// handshakeStatus finds the HTTP status of a refused WebSocket handshake
// in the WebSocket library's error, which has no type of its own (the SDK
// matches the same text, client.go isHTTP4xx).
var handshakeStatus = regexp.MustCompile(`expected handshake response status code 101 but got (\d{3})`)

// fatalOf returns the *feed.FatalError for an error that a reconnect
// cannot cure, or nil. Alpaca's error messages are matched as the SDK
// matches them, by its sentinel errors (errors.go), which compare code and
// text.
func fatalOf(err error) *feed.FatalError {
	for _, f := range []struct {
		sentinel error
		code     int
		msg      string
		fix      string
	}{
		{stream.ErrInvalidCredentials, 402, "auth failed", CredentialsFix},
		{stream.ErrConnectionLimitExceeded, 406, "connection limit exceeded", ConnectionLimitFix},
		{stream.ErrInsufficientSubscription, 409, "insufficient subscription", SubscriptionFix},
		{stream.ErrSymbolLimitExceeded, 405, "symbol limit exceeded", SymbolLimitFix},
		{stream.ErrInsufficientScope, 411, "insufficient scope", ScopeFix},
		{stream.ErrSubscriptionChangeInvalidForFeed, 410, "invalid subscribe action for this feed", FeedFix},
	} {
		if errors.Is(err, f.sentinel) {
			return &feed.FatalError{Source: Source, Code: f.code, Msg: f.msg, Fix: f.fix}
		}
	}
	if m := handshakeStatus.FindStringSubmatch(err.Error()); m != nil {
		code, _ := strconv.Atoi(m[1])
		switch {
		case code == 401 || code == 403:
			return &feed.FatalError{Source: Source, Msg: fmt.Sprintf("the stream refused the connection with HTTP %d", code), Fix: CredentialsFix}
		case code >= 400 && code < 500 && code != 429:
			return &feed.FatalError{Source: Source, Msg: fmt.Sprintf("the stream URL was refused with HTTP %d", code), Fix: FeedFix}
		}
	}
	return nil
}

// tradeID is a trade's feed.Trade.ID: Alpaca's trade ids are unique per
// exchange, so the exchange code goes with the id.
func tradeID(exchange string, id int64) string {
	return exchange + ":" + strconv.FormatInt(id, 10)
}

// nonNil makes absent conditions [] rather than null, as Alpaca sends.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// tradeWire and quoteWire are Alpaca's JSON trade and quote messages
// (https://docs.alpaca.markets/docs/real-time-stock-pricing-data), in which
// recordings keep what the stream delivered.
type (
	tradeWire struct {
		T    string    `json:"T"`
		S    string    `json:"S"`
		I    int64     `json:"i"`
		X    string    `json:"x"`
		P    float64   `json:"p"`
		Size uint32    `json:"s"`
		TS   time.Time `json:"t"`
		C    []string  `json:"c"`
		Z    string    `json:"z"`
	}
	quoteWire struct {
		T  string    `json:"T"`
		S  string    `json:"S"`
		BX string    `json:"bx"`
		BP float64   `json:"bp"`
		BS uint32    `json:"bs"`
		AX string    `json:"ax"`
		AP float64   `json:"ap"`
		AS uint32    `json:"as"`
		TS time.Time `json:"t"`
		C  []string  `json:"c"`
		Z  string    `json:"z"`
	}
)
