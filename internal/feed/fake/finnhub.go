package fake

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// finnhubWriteTimeout bounds one frame's write to one client, so a client
// that stopped reading cannot hang a test.
const finnhubWriteTimeout = 5 * time.Second

// FinnhubTrade is one trade of a Finnhub trade message.
type FinnhubTrade struct {
	Symbol string    // sent as "s"
	Price  float64   // sent as "p"
	TS     time.Time // sent as "t", in UNIX milliseconds
	// Volume is sent as "v"; Finnhub sends fractions for some
	// instruments.
	Volume float64
	// Conditions are sent as "c"; nil is sent as null, as Finnhub does
	// for trades without conditions.
	Conditions []string
}

// finnhubTradeWire is a trade as Finnhub's documentation shows it.
type finnhubTradeWire struct {
	P float64  `json:"p"`
	S string   `json:"s"`
	T int64    `json:"t"`
	V float64  `json:"v"`
	C []string `json:"c"`
}

// Finnhub is a fake of Finnhub's WebSocket trades API
// (https://finnhub.io/docs/api/websocket-trades) on a loopback port, for
// tests of a connector over a real WebSocket. It accepts connections at
// /?token=TOKEN, refusing another token with HTTP 401 at the handshake,
// records each connection's {"type":"subscribe","symbol":…} and
// {"type":"unsubscribe",…} requests, and answers any other request with
// {"type":"error","msg":…}. It sends nothing on its own — no trades, no
// pings — only what a test tells it to, to every connection. Safe for
// concurrent use.
type Finnhub struct {
	token string
	srv   *httptest.Server

	mu          sync.Mutex
	clients     map[*finnhubClient]struct{}
	current     *finnhubClient
	connections int
	rejected    int
	normal      int
	closed      bool
}

// finnhubClient is one accepted connection and what it subscribed to
// (guarded by Finnhub.mu).
type finnhubClient struct {
	ws         *websocket.Conn
	subscribed []string
}

// NewFinnhub starts a fake Finnhub accepting token on 127.0.0.1 at a
// random port. Close stops it.
func NewFinnhub(token string) *Finnhub {
	f := &Finnhub{token: token, clients: make(map[*finnhubClient]struct{})}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	return f
}

// URL is the server's WebSocket URL (ws://127.0.0.1:port), without a
// token.
func (f *Finnhub) URL() string { return "ws://" + strings.TrimPrefix(f.srv.URL, "http://") }

// serve is one client's connection: the token check, the handshake, then
// reading its requests until it goes.
func (f *Finnhub) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("token") != f.token {
		f.mu.Lock()
		f.rejected++
		f.mu.Unlock()
		http.Error(w, "Invalid API key", http.StatusUnauthorized)
		return
	}
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered the request with the reason.
	}
	c := &finnhubClient{ws: ws}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		_ = ws.CloseNow()
		return
	}
	f.connections++
	f.clients[c] = struct{}{}
	f.current = c
	f.mu.Unlock()

	// Reads end when the client goes or DropConnections or Close closes
	// the connection, not with a context.
	var rerr error
	for {
		var msg []byte
		_, msg, rerr = ws.Read(context.Background())
		if rerr != nil {
			break
		}
		f.request(c, msg)
	}
	f.mu.Lock()
	delete(f.clients, c)
	if f.current == c {
		f.current = nil
	}
	if websocket.CloseStatus(rerr) == websocket.StatusNormalClosure {
		f.normal++
	}
	f.mu.Unlock()
	_ = ws.CloseNow()
}

// request handles one message from client c.
func (f *Finnhub) request(c *finnhubClient, msg []byte) {
	var req struct {
		Type   string `json:"type"`
		Symbol string `json:"symbol"`
	}
	if err := json.Unmarshal(msg, &req); err != nil || req.Symbol == "" || (req.Type != "subscribe" && req.Type != "unsubscribe") {
		f.write(c.ws, finnhubError("Invalid message"))
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.Type == "subscribe" {
		// Subscribing twice is one subscription, as at Finnhub.
		if !slices.Contains(c.subscribed, req.Symbol) {
			c.subscribed = append(c.subscribed, req.Symbol)
		}
		return
	}
	c.subscribed = slices.DeleteFunc(c.subscribed, func(s string) bool { return s == req.Symbol })
}

// finnhubError is an error message with msg.
func finnhubError(msg string) []byte {
	b, _ := json.Marshal(struct {
		Type string `json:"type"`
		Msg  string `json:"msg"`
	}{"error", msg})
	return b
}

// Send sends one trade message holding trades, in their order, to every
// connected client — {"type":"trade","data":[{"p":…,"s":…,"t":…,"v":…,"c":…}]}
// — whatever the clients subscribed to. It returns when the frame is
// written to each.
func (f *Finnhub) Send(trades ...FinnhubTrade) {
	data := make([]finnhubTradeWire, len(trades))
	for i, t := range trades {
		data[i] = finnhubTradeWire{P: t.Price, S: t.Symbol, T: t.TS.UnixMilli(), V: t.Volume, C: t.Conditions}
	}
	b, err := json.Marshal(struct {
		Type string             `json:"type"`
		Data []finnhubTradeWire `json:"data"`
	}{"trade", data})
	if err != nil {
		panic("fake: a Finnhub trade that cannot be JSON: " + err.Error()) // only NaN or ±Inf, a test's mistake
	}
	f.SendRaw(b)
}

// SendPing sends Finnhub's keepalive, {"type":"ping"}, to every connected
// client.
func (f *Finnhub) SendPing() { f.SendRaw([]byte(`{"type":"ping"}`)) }

// SendError sends an error message, {"type":"error","msg":msg}, to every
// connected client, keeping the connections.
func (f *Finnhub) SendError(msg string) { f.SendRaw(finnhubError(msg)) }

// SendRaw sends frame as it is, as one text frame, to every connected
// client.
func (f *Finnhub) SendRaw(frame []byte) {
	f.mu.Lock()
	clients := make([]*finnhubClient, 0, len(f.clients))
	for c := range f.clients {
		clients = append(clients, c)
	}
	f.mu.Unlock()
	for _, c := range clients {
		f.write(c.ws, frame)
	}
}

// write sends frame to ws; a client that is gone is no error here, as its
// reader ends and forgets it.
func (f *Finnhub) write(ws *websocket.Conn, frame []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), finnhubWriteTimeout)
	defer cancel()
	_ = ws.Write(ctx, websocket.MessageText, frame)
}

// Subscribed returns the symbols the newest connection subscribed to, in
// the order it subscribed, or nil when no connection is open.
func (f *Finnhub) Subscribed() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.current == nil {
		return nil
	}
	return slices.Clone(f.current.subscribed)
}

// Connections returns how many handshakes have succeeded so far.
func (f *Finnhub) Connections() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.connections
}

// Rejected returns how many handshakes were refused for their token.
func (f *Finnhub) Rejected() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rejected
}

// ClosedNormally returns how many connections the client ended with a
// close handshake of status 1000 (normal closure), as against dropping
// them.
func (f *Finnhub) ClosedNormally() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.normal
}

// DropConnections closes every open connection without a close handshake,
// as a network failure would, so that clients reconnect. It returns
// without waiting for the clients to notice.
func (f *Finnhub) DropConnections() {
	f.mu.Lock()
	clients := make([]*finnhubClient, 0, len(f.clients))
	for c := range f.clients {
		clients = append(clients, c)
		delete(f.clients, c)
	}
	f.current = nil
	f.mu.Unlock()
	for _, c := range clients {
		_ = c.ws.CloseNow()
	}
}

// Close drops every connection and stops the server; connection attempts
// then fail. Closing again does nothing.
func (f *Finnhub) Close() {
	f.mu.Lock()
	was := f.closed
	f.closed = true
	f.mu.Unlock()
	if was {
		return
	}
	f.DropConnections()
	f.srv.Close()
}
