package fake

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/vmihailenco/msgpack/v5"
)

// alpacaWriteTimeout bounds one frame's write to one client, so a client
// that stopped reading cannot hang a test.
const alpacaWriteTimeout = 5 * time.Second

// alpacaAuthTimeout is how long a connection may stay unauthenticated
// before the server answers 404 auth timeout and closes it: Alpaca's
// documented 10 seconds.
const alpacaAuthTimeout = 10 * time.Second

// AlpacaTrade is one trade as Alpaca's stream ("T":"t") and historical
// trades API send it. The wire name of each field is in its comment.
type AlpacaTrade struct {
	Symbol   string  // "S"; the historical API names the symbol outside the trade instead
	ID       int64   // "i"
	Exchange string  // "x"
	Price    float64 // "p"
	Size     uint32  // "s"
	// TS is "t": in msgpack a timestamp extension (type -1), as the SDK's
	// DecodeTime reads it; in JSON RFC 3339 with nanoseconds.
	TS         time.Time
	Conditions []string // "c"
	Tape       string   // "z"
}

// AlpacaQuote is one quote as Alpaca's stream ("T":"q") and historical
// quotes API send it.
type AlpacaQuote struct {
	Symbol      string    // "S"; the historical API names the symbol outside the quote instead
	BidExchange string    // "bx"
	BidPrice    float64   // "bp"
	BidSize     uint32    // "bs"
	AskExchange string    // "ax"
	AskPrice    float64   // "ap"
	AskSize     uint32    // "as"
	TS          time.Time // "t", encoded as AlpacaTrade.TS
	Conditions  []string  // "c"
	Tape        string    // "z"
}

// AlpacaError is a stream error message {"T":"error","code":…,"msg":…},
// for Alpaca.Send.
type AlpacaError struct {
	Code int
	Msg  string
}

// The stream's wire shapes. "T" is each struct's first field because the
// SDK's msgpack decoder requires it to be the first key of every message
// (marketdata/stream/message.go: "first key is not T").
type (
	alpacaTradeWire struct {
		T    string    `msgpack:"T" json:"T"`
		S    string    `msgpack:"S" json:"S"`
		I    int64     `msgpack:"i" json:"i"`
		X    string    `msgpack:"x" json:"x"`
		P    float64   `msgpack:"p" json:"p"`
		Size uint32    `msgpack:"s" json:"s"`
		TS   time.Time `msgpack:"t" json:"t"`
		C    []string  `msgpack:"c" json:"c"`
		Z    string    `msgpack:"z" json:"z"`
	}
	alpacaQuoteWire struct {
		T  string    `msgpack:"T" json:"T"`
		S  string    `msgpack:"S" json:"S"`
		BX string    `msgpack:"bx" json:"bx"`
		BP float64   `msgpack:"bp" json:"bp"`
		BS uint32    `msgpack:"bs" json:"bs"`
		AX string    `msgpack:"ax" json:"ax"`
		AP float64   `msgpack:"ap" json:"ap"`
		AS uint32    `msgpack:"as" json:"as"`
		TS time.Time `msgpack:"t" json:"t"`
		C  []string  `msgpack:"c" json:"c"`
		Z  string    `msgpack:"z" json:"z"`
	}
	alpacaStatusWire struct {
		T   string `msgpack:"T" json:"T"`
		Msg string `msgpack:"msg" json:"msg"`
	}
	alpacaErrorWire struct {
		T    string `msgpack:"T" json:"T"`
		Code int    `msgpack:"code" json:"code"`
		Msg  string `msgpack:"msg" json:"msg"`
	}
	// alpacaSubscriptionWire lists every channel, empty ones as [], as
	// Alpaca's subscription message does; corrections and cancelErrors
	// follow trades.
	alpacaSubscriptionWire struct {
		T            string   `msgpack:"T" json:"T"`
		Trades       []string `msgpack:"trades" json:"trades"`
		Quotes       []string `msgpack:"quotes" json:"quotes"`
		Bars         []string `msgpack:"bars" json:"bars"`
		UpdatedBars  []string `msgpack:"updatedBars" json:"updatedBars"`
		DailyBars    []string `msgpack:"dailyBars" json:"dailyBars"`
		Statuses     []string `msgpack:"statuses" json:"statuses"`
		LULDs        []string `msgpack:"lulds" json:"lulds"`
		Corrections  []string `msgpack:"corrections" json:"corrections"`
		CancelErrors []string `msgpack:"cancelErrors" json:"cancelErrors"`
	}
)

func (t AlpacaTrade) wire() alpacaTradeWire {
	return alpacaTradeWire{T: "t", S: t.Symbol, I: t.ID, X: t.Exchange, P: t.Price, Size: t.Size, TS: t.TS.UTC(),
		C: alpacaNonNil(t.Conditions), Z: t.Tape}
}

func (q AlpacaQuote) wire() alpacaQuoteWire {
	return alpacaQuoteWire{T: "q", S: q.Symbol, BX: q.BidExchange, BP: q.BidPrice, BS: q.BidSize, AX: q.AskExchange,
		AP: q.AskPrice, AS: q.AskSize, TS: q.TS.UTC(), C: alpacaNonNil(q.Conditions), Z: q.Tape}
}

// alpacaNonNil makes an absent list [] rather than null, as Alpaca sends.
func alpacaNonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Alpaca is a fake of Alpaca's real-time stock data stream
// (https://docs.alpaca.markets/docs/streaming-market-data and
// https://docs.alpaca.markets/docs/real-time-stock-pricing-data) on a
// loopback port, for tests of a connector over a real WebSocket.
//
// It follows the documented flow: on connect [{"T":"success","msg":"connected"}];
// {"action":"auth","key":…,"secret":…} is answered with
// [{"T":"success","msg":"authenticated"}] or [{"T":"error","code":402,"msg":"auth failed"}]
// (the connection stays open, so the client may try again; 10 s without
// authenticating ends it with 404 auth timeout); {"action":"subscribe"|"unsubscribe","trades":[…],"quotes":[…]}
// changes the connection's subscription and is answered with the whole
// subscription ([{"T":"subscription","trades":[…],"quotes":[…],"bars":[],…}]).
//
// It speaks msgpack to a client whose handshake carries
// "Content-Type: application/msgpack" (as Alpaca's Go SDK sends; binary
// frames) and JSON to any other (text frames). A client message is read as
// JSON when it starts with '{' and as msgpack otherwise. It accepts any
// /v2/{feed} path.
//
// It sends no market data on its own, only what a test tells it to, to
// each authenticated connection, and of trades and quotes only those of
// symbols the connection subscribed to (or "*"), as Alpaca does. Safe for
// concurrent use.
type Alpaca struct {
	key, secret string
	srv         *httptest.Server
	ctx         context.Context
	cancel      context.CancelFunc

	// sendMu keeps the frames of concurrent Send calls whole and in one
	// order on every connection.
	sendMu sync.Mutex

	mu       sync.Mutex
	conns    map[*alpacaConn]struct{}
	accepted int
	refuse   *AlpacaError
	closed   bool
}

// alpacaConn is one accepted connection; authed, trades and quotes are
// guarded by Alpaca.mu.
type alpacaConn struct {
	ws      *websocket.Conn
	msgpack bool
	authed  bool
	trades  map[string]bool
	quotes  map[string]bool
}

// NewAlpaca starts a fake Alpaca stream accepting key and secret on
// 127.0.0.1 at a random port. Close stops it.
func NewAlpaca(key, secret string) *Alpaca {
	a := &Alpaca{key: key, secret: secret, conns: make(map[*alpacaConn]struct{})}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	return a
}

// URL is the stream URL of the iex feed, ws://127.0.0.1:port/v2/iex, in
// the form of Alpaca's wss://stream.data.alpaca.markets/v2/iex: what
// alpaca.StreamConfig.URL takes. (The SDK's WithBaseURL takes it without
// the final /iex, which the SDK appends itself.)
func (a *Alpaca) URL() string {
	return "ws://" + strings.TrimPrefix(a.srv.URL, "http://") + "/v2/iex"
}

// serve is one client's connection: the handshake, the welcome, then its
// requests until it goes.
func (a *Alpaca) serve(w http.ResponseWriter, r *http.Request) {
	feed, ok := strings.CutPrefix(r.URL.Path, "/v2/")
	if !ok || feed == "" || strings.Contains(feed, "/") {
		http.NotFound(w, r)
		return
	}
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered the request with the reason.
	}
	ws.SetReadLimit(1 << 20)
	ct := r.Header.Get("Content-Type")
	c := &alpacaConn{ws: ws, msgpack: strings.HasPrefix(strings.TrimSpace(ct), "application/msgpack"),
		trades: map[string]bool{}, quotes: map[string]bool{}}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		_ = ws.CloseNow()
		return
	}
	a.accepted++
	a.conns[c] = struct{}{}
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.conns, c)
		a.mu.Unlock()
		_ = ws.CloseNow()
	}()

	a.write(c, []any{alpacaStatusWire{T: "success", Msg: "connected"}})
	authTimer := time.AfterFunc(alpacaAuthTimeout, func() {
		a.mu.Lock()
		authed := c.authed
		a.mu.Unlock()
		if !authed {
			a.write(c, []any{alpacaErrorWire{T: "error", Code: 404, Msg: "auth timeout"}})
			_ = ws.Close(websocket.StatusPolicyViolation, "auth timeout")
		}
	})
	defer authTimer.Stop()

	for {
		_, msg, err := ws.Read(a.ctx)
		if err != nil {
			return
		}
		a.request(c, msg)
	}
}

// request answers one client message.
func (a *Alpaca) request(c *alpacaConn, msg []byte) {
	var m map[string]any
	var err error
	if bytes.HasPrefix(bytes.TrimSpace(msg), []byte("{")) {
		err = json.Unmarshal(msg, &m)
	} else {
		err = msgpack.Unmarshal(msg, &m)
	}
	if err != nil {
		a.write(c, []any{alpacaErrorWire{T: "error", Code: 400, Msg: "invalid syntax"}})
		return
	}
	action, _ := m["action"].(string)
	switch action {
	case "auth":
		a.auth(c, m)
	case "subscribe", "unsubscribe":
		a.subscribe(c, action == "subscribe", m)
	default:
		a.write(c, []any{alpacaErrorWire{T: "error", Code: 400, Msg: "invalid syntax"}})
	}
}

func (a *Alpaca) auth(c *alpacaConn, m map[string]any) {
	key, _ := m["key"].(string)
	secret, _ := m["secret"].(string)
	a.mu.Lock()
	refuse := a.refuse
	a.refuse = nil
	var reply any
	switch {
	case refuse != nil:
		reply = alpacaErrorWire{T: "error", Code: refuse.Code, Msg: refuse.Msg}
	case c.authed:
		reply = alpacaErrorWire{T: "error", Code: 403, Msg: "already authenticated"}
	case key == a.key && secret == a.secret:
		c.authed = true
		reply = alpacaStatusWire{T: "success", Msg: "authenticated"}
	default:
		reply = alpacaErrorWire{T: "error", Code: 402, Msg: "auth failed"}
	}
	a.mu.Unlock()
	a.write(c, []any{reply})
}

func (a *Alpaca) subscribe(c *alpacaConn, add bool, m map[string]any) {
	a.mu.Lock()
	if !c.authed {
		a.mu.Unlock()
		a.write(c, []any{alpacaErrorWire{T: "error", Code: 401, Msg: "not authenticated"}})
		return
	}
	trades, quotes := alpacaCopySet(c.trades), alpacaCopySet(c.quotes)
	a.mu.Unlock()
	for _, s := range alpacaStrings(m["trades"]) {
		trades[s] = add
	}
	for _, s := range alpacaStrings(m["quotes"]) {
		quotes[s] = add
	}
	sub := alpacaSubscriptionWire{T: "subscription", Trades: alpacaKeys(trades), Quotes: alpacaKeys(quotes),
		Bars: []string{}, UpdatedBars: []string{}, DailyBars: []string{}, Statuses: []string{}, LULDs: []string{},
		Corrections: alpacaKeys(trades), CancelErrors: alpacaKeys(trades)}
	// The reply goes out before the subscription takes effect, so that no
	// Send can put a trade ahead of it: a client reads the frame after its
	// subscribe request as the answer.
	a.write(c, []any{sub})
	a.mu.Lock()
	c.trades, c.quotes = trades, quotes
	a.mu.Unlock()
}

// alpacaCopySet copies a subscription set.
func alpacaCopySet(m map[string]bool) map[string]bool {
	c := make(map[string]bool, len(m))
	for k, v := range m {
		if v {
			c[k] = true
		}
	}
	return c
}

// alpacaKeys is the sorted list of a subscription set's symbols.
func alpacaKeys(m map[string]bool) []string {
	out := []string{}
	for k, v := range m {
		if v {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// alpacaStrings reads a list of symbols from a decoded message; nil (the
// SDK sends nil for channels it does not change) is none.
func alpacaStrings(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, e := range l {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// write sends msgs as one frame in c's encoding, closing c if that fails.
func (a *Alpaca) write(c *alpacaConn, msgs []any) {
	var b []byte
	var err error
	typ := websocket.MessageText
	if c.msgpack {
		typ = websocket.MessageBinary
		b, err = msgpack.Marshal(msgs)
	} else {
		b, err = json.Marshal(msgs)
	}
	if err != nil {
		panic(fmt.Sprintf("fake alpaca: encoding %v: %v", msgs, err))
	}
	ctx, cancel := context.WithTimeout(a.ctx, alpacaWriteTimeout)
	defer cancel()
	if err := c.ws.Write(ctx, typ, b); err != nil {
		_ = c.ws.CloseNow()
	}
}

// SendTrades sends trades as one frame (one array) to every connection,
// each getting those of symbols it subscribed trades of.
func (a *Alpaca) SendTrades(trades ...AlpacaTrade) {
	msgs := make([]any, len(trades))
	for i, t := range trades {
		msgs[i] = t
	}
	a.Send(msgs...)
}

// SendQuotes sends quotes as one frame to every connection, each getting
// those of symbols it subscribed quotes of.
func (a *Alpaca) SendQuotes(quotes ...AlpacaQuote) {
	msgs := make([]any, len(quotes))
	for i, q := range quotes {
		msgs[i] = q
	}
	a.Send(msgs...)
}

// Send sends msgs as one frame (one array, in order) to every
// authenticated connection. An AlpacaTrade or AlpacaQuote is sent in
// Alpaca's shape, and only to connections subscribed to its symbol; an
// AlpacaError as an error message; any other value as it encodes (for
// messages the fake does not model). A connection left with nothing to
// get gets no frame.
func (a *Alpaca) Send(msgs ...any) {
	a.sendMu.Lock()
	defer a.sendMu.Unlock()
	type target struct {
		c    *alpacaConn
		msgs []any
	}
	var targets []target
	a.mu.Lock()
	for c := range a.conns {
		if !c.authed {
			continue
		}
		var out []any
		for _, m := range msgs {
			switch m := m.(type) {
			case AlpacaTrade:
				if c.trades[m.Symbol] || c.trades["*"] {
					out = append(out, m.wire())
				}
			case AlpacaQuote:
				if c.quotes[m.Symbol] || c.quotes["*"] {
					out = append(out, m.wire())
				}
			case AlpacaError:
				out = append(out, alpacaErrorWire{T: "error", Code: m.Code, Msg: m.Msg})
			default:
				out = append(out, m)
			}
		}
		if len(out) > 0 {
			targets = append(targets, target{c, out})
		}
	}
	a.mu.Unlock()
	for _, t := range targets {
		a.write(t.c, t.msgs)
	}
}

// SendError sends [{"T":"error","code":code,"msg":msg}] to every
// connection, authenticated or not. After 407 slow client it closes the
// connections (gone from Subscribed at once, as with DropConnections), as
// Alpaca disconnects a client it finds too slow.
func (a *Alpaca) SendError(code int, msg string) {
	a.sendMu.Lock()
	defer a.sendMu.Unlock()
	var conns []*alpacaConn
	if code == 407 {
		conns = a.takeConns()
	} else {
		a.mu.Lock()
		for c := range a.conns {
			conns = append(conns, c)
		}
		a.mu.Unlock()
	}
	for _, c := range conns {
		a.write(c, []any{alpacaErrorWire{T: "error", Code: code, Msg: msg}})
		if code == 407 {
			_ = c.ws.Close(websocket.StatusPolicyViolation, msg)
		}
	}
}

// Subscribed returns the symbols whose trades and whose quotes the open
// connections are subscribed to (their union, sorted). A connection's
// subscription ends with it, so after DropConnections this is empty until
// a client subscribes again.
func (a *Alpaca) Subscribed() (trades, quotes []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, q := map[string]bool{}, map[string]bool{}
	for c := range a.conns {
		for s, ok := range c.trades {
			t[s] = t[s] || ok
		}
		for s, ok := range c.quotes {
			q[s] = q[s] || ok
		}
	}
	return alpacaKeys(t), alpacaKeys(q)
}

// Connections is how many WebSocket connections the server has accepted
// since it started.
func (a *Alpaca) Connections() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.accepted
}

// DropConnections closes every open connection at once, without a close
// frame, as a network failure would. They are gone from Subscribed and
// get nothing Send sends from the moment it returns.
func (a *Alpaca) DropConnections() {
	for _, c := range a.takeConns() {
		_ = c.ws.CloseNow()
	}
}

// takeConns removes every open connection from the server's set and
// returns them.
func (a *Alpaca) takeConns() []*alpacaConn {
	a.mu.Lock()
	defer a.mu.Unlock()
	conns := make([]*alpacaConn, 0, len(a.conns))
	for c := range a.conns {
		conns = append(conns, c)
		delete(a.conns, c)
	}
	return conns
}

// RefuseNext makes the server answer the next auth request, whatever its
// credentials, with [{"T":"error","code":code,"msg":msg}] — 406
// connection limit exceeded and 409 insufficient subscription are what
// Alpaca answers there. The connection stays open, as after any refused
// auth.
func (a *Alpaca) RefuseNext(code int, msg string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.refuse = &AlpacaError{Code: code, Msg: msg}
}

// Close closes every connection and stops the server.
func (a *Alpaca) Close() {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.cancel()
	a.DropConnections()
	a.srv.Close()
}
