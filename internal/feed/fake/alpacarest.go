package fake

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Alpaca's documented page sizes for historical trades and quotes: 1000
// when the request names none, at most 10000.
const (
	alpacaDefaultLimit = 1000
	alpacaMaxLimit     = 10000
)

// AlpacaREST is a fake of Alpaca's historical stock data API (Market Data
// API v2, https://data.alpaca.markets) on a loopback port. It serves
//
//	GET /v2/stocks/trades?symbols=A,B   {"trades":{"A":[…],…},"next_page_token":…}
//	GET /v2/stocks/{symbol}/trades      {"trades":[…],"symbol":…,"next_page_token":…}
//	GET /v2/stocks/quotes?symbols=A,B   {"quotes":{"A":[…],…},"next_page_token":…}
//	GET /v2/stocks/{symbol}/quotes      {"quotes":[…],"symbol":…,"next_page_token":…}
//
// with start and end (RFC 3339 or a date; both inclusive, as documented),
// limit (page size, default 1000, at most 10000), sort (asc or desc),
// page_token (from the previous page's next_page_token, null on the last
// page) and feed (accepted, not checked). The multi-symbol endpoints page
// through the symbols in alphabetical order, each symbol's items in time
// order, as Alpaca does. The Go SDK calls only the multi-symbol endpoints,
// also for one symbol.
//
// Requests must carry APCA-API-KEY-ID and APCA-API-SECRET-KEY; others are
// answered 401 {"message":"unauthorized."}. Safe for concurrent use.
type AlpacaREST struct {
	key, secret string
	srv         *httptest.Server

	mu             sync.Mutex
	trades         map[string][]AlpacaTrade
	quotes         map[string][]AlpacaQuote
	rateLimitFirst bool
	limited        map[string]bool
	requests       int
}

// NewAlpacaREST starts a fake Alpaca historical API accepting key and
// secret on 127.0.0.1 at a random port. Close stops it.
func NewAlpacaREST(key, secret string) *AlpacaREST {
	a := &AlpacaREST{key: key, secret: secret, trades: map[string][]AlpacaTrade{},
		quotes: map[string][]AlpacaQuote{}, limited: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v2/stocks/trades", a.serveTrades)
	mux.HandleFunc("GET /v2/stocks/{symbol}/trades", a.serveTrades)
	mux.HandleFunc("GET /v2/stocks/quotes", a.serveQuotes)
	mux.HandleFunc("GET /v2/stocks/{symbol}/quotes", a.serveQuotes)
	a.srv = httptest.NewServer(mux)
	return a
}

// URL is the API's base URL, http://127.0.0.1:port, as Alpaca's is
// https://data.alpaca.markets: what marketdata.ClientOpts.BaseURL and
// alpaca.HistoryConfig.URL take.
func (a *AlpacaREST) URL() string { return a.srv.URL }

// SetTrades makes trades the symbol's trades, replacing any before; they
// are served in time order (equal times in the order given).
func (a *AlpacaREST) SetTrades(symbol string, trades []AlpacaTrade) {
	trades = slices.Clone(trades)
	slices.SortStableFunc(trades, func(x, y AlpacaTrade) int { return x.TS.Compare(y.TS) })
	a.mu.Lock()
	defer a.mu.Unlock()
	a.trades[symbol] = trades
}

// SetQuotes makes quotes the symbol's quotes, replacing any before; they
// are served in time order (equal times in the order given).
func (a *AlpacaREST) SetQuotes(symbol string, quotes []AlpacaQuote) {
	quotes = slices.Clone(quotes)
	slices.SortStableFunc(quotes, func(x, y AlpacaQuote) int { return x.TS.Compare(y.TS) })
	a.mu.Lock()
	defer a.mu.Unlock()
	a.quotes[symbol] = quotes
}

// RateLimitFirst makes the server answer the first request for each
// symbol (the first one named, on either endpoint) with one HTTP 429 Too
// Many Requests carrying Retry-After: 1 and X-RateLimit-Reset one second
// ahead (Unix seconds), as Alpaca's rate limiter does; the retry is then
// served.
func (a *AlpacaREST) RateLimitFirst() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.rateLimitFirst = true
}

// Requests is how many requests the server has answered, refused ones
// (401, 429) included.
func (a *AlpacaREST) Requests() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.requests
}

// Close stops the server.
func (a *AlpacaREST) Close() { a.srv.Close() }

// The historical API's item shapes: the stream's without "T" and "S".
type (
	alpacaRESTTrade struct {
		TS   time.Time `json:"t"`
		X    string    `json:"x"`
		P    float64   `json:"p"`
		Size uint32    `json:"s"`
		C    []string  `json:"c"`
		I    int64     `json:"i"`
		Z    string    `json:"z"`
	}
	alpacaRESTQuote struct {
		TS time.Time `json:"t"`
		AX string    `json:"ax"`
		AP float64   `json:"ap"`
		AS uint32    `json:"as"`
		BX string    `json:"bx"`
		BP float64   `json:"bp"`
		BS uint32    `json:"bs"`
		C  []string  `json:"c"`
		Z  string    `json:"z"`
	}
)

// alpacaItem is one served trade or quote with its symbol and time.
type alpacaItem struct {
	symbol string
	ts     time.Time
	v      any
}

func (a *AlpacaREST) serveTrades(w http.ResponseWriter, r *http.Request) {
	a.serve(w, r, "trades", func(symbol string) []alpacaItem {
		var out []alpacaItem
		for _, t := range a.trades[symbol] {
			out = append(out, alpacaItem{symbol, t.TS, alpacaRESTTrade{TS: t.TS.UTC(), X: t.Exchange, P: t.Price,
				Size: t.Size, C: alpacaNonNil(t.Conditions), I: t.ID, Z: t.Tape}})
		}
		return out
	})
}

func (a *AlpacaREST) serveQuotes(w http.ResponseWriter, r *http.Request) {
	a.serve(w, r, "quotes", func(symbol string) []alpacaItem {
		var out []alpacaItem
		for _, q := range a.quotes[symbol] {
			out = append(out, alpacaItem{symbol, q.TS, alpacaRESTQuote{TS: q.TS.UTC(), AX: q.AskExchange,
				AP: q.AskPrice, AS: q.AskSize, BX: q.BidExchange, BP: q.BidPrice, BS: q.BidSize,
				C: alpacaNonNil(q.Conditions), Z: q.Tape}})
		}
		return out
	})
}

// serve answers one request for kind ("trades" or "quotes") with the items
// items gives per symbol (called with a.mu held).
func (a *AlpacaREST) serve(w http.ResponseWriter, r *http.Request, kind string, items func(string) []alpacaItem) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.requests++
	w.Header().Set("X-RateLimit-Limit", "200")

	if r.Header.Get("APCA-API-KEY-ID") != a.key || r.Header.Get("APCA-API-SECRET-KEY") != a.secret {
		alpacaRESTError(w, http.StatusUnauthorized, "unauthorized.")
		return
	}
	single := r.PathValue("symbol")
	symbols := []string{single}
	if single == "" {
		symbols = nil
		for _, s := range strings.Split(r.URL.Query().Get("symbols"), ",") {
			if s = strings.TrimSpace(s); s != "" {
				symbols = append(symbols, s)
			}
		}
		if len(symbols) == 0 {
			alpacaRESTError(w, http.StatusBadRequest, "missing symbols")
			return
		}
	}
	if a.rateLimitFirst && !a.limited[symbols[0]] {
		a.limited[symbols[0]] = true
		w.Header().Set("Retry-After", "1")
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(time.Second).Unix(), 10))
		alpacaRESTError(w, http.StatusTooManyRequests, "too many requests.")
		return
	}
	w.Header().Set("X-RateLimit-Remaining", "199")

	q := r.URL.Query()
	start, err := alpacaParseTime(q.Get("start"), time.Time{})
	if err != nil {
		alpacaRESTError(w, http.StatusBadRequest, "invalid start: "+err.Error())
		return
	}
	end, err := alpacaParseTime(q.Get("end"), time.Now())
	if err != nil {
		alpacaRESTError(w, http.StatusBadRequest, "invalid end: "+err.Error())
		return
	}
	limit := alpacaDefaultLimit
	if s := q.Get("limit"); s != "" {
		limit, err = strconv.Atoi(s)
		if err != nil || limit < 1 || limit > alpacaMaxLimit {
			alpacaRESTError(w, http.StatusUnprocessableEntity, "invalid limit: "+s)
			return
		}
	}
	desc := false
	switch q.Get("sort") {
	case "", "asc":
	case "desc":
		desc = true
	default:
		alpacaRESTError(w, http.StatusBadRequest, "invalid sort: "+q.Get("sort"))
		return
	}
	offset := 0
	if tok := q.Get("page_token"); tok != "" {
		b, err := base64.StdEncoding.DecodeString(tok)
		if err == nil {
			offset, err = strconv.Atoi(string(b))
		}
		if err != nil || offset < 0 {
			alpacaRESTError(w, http.StatusBadRequest, "invalid page token")
			return
		}
	}

	sorted := slices.Clone(symbols)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	var all []alpacaItem
	for _, s := range sorted {
		var mine []alpacaItem
		for _, it := range items(s) {
			if !it.ts.Before(start) && !it.ts.After(end) {
				mine = append(mine, it)
			}
		}
		if desc {
			slices.Reverse(mine)
		}
		all = append(all, mine...)
	}
	page := all[min(offset, len(all)):min(offset+limit, len(all))]
	var next *string
	if offset+limit < len(all) {
		tok := base64.StdEncoding.EncodeToString([]byte(strconv.Itoa(offset + limit)))
		next = &tok
	}

	var body map[string]any
	if single != "" {
		list := make([]any, 0, len(page))
		for _, it := range page {
			list = append(list, it.v)
		}
		body = map[string]any{kind: list, "symbol": single, "next_page_token": next}
	} else {
		bySymbol := map[string][]any{}
		for _, it := range page {
			bySymbol[it.symbol] = append(bySymbol[it.symbol], it.v)
		}
		body = map[string]any{kind: bySymbol, "next_page_token": next}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(body)
}

// alpacaParseTime reads a start or end parameter: RFC 3339 (with or
// without fractions) or a date; empty is def.
func alpacaParseTime(s string, def time.Time) (time.Time, error) {
	if s == "" {
		return def, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Parse(time.DateOnly, s)
}

// alpacaRESTError answers with Alpaca's error body {"message":…}.
func alpacaRESTError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": msg})
}
