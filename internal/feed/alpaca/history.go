package alpaca

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	alpacaapi "github.com/alpacahq/alpaca-trade-api-go/v3/alpaca"
	"github.com/alpacahq/alpaca-trade-api-go/v3/marketdata"

	"github.com/stockpipe/stockpipe/internal/feed"
	"github.com/stockpipe/stockpipe/internal/retry"
)

// DefaultHistoryURL is Alpaca's market data API, used when
// HistoryConfig.URL is empty.
const DefaultHistoryURL = "https://data.alpaca.markets"

// MaxPageSize is the most trades or quotes Alpaca's historical API returns
// in one page, and the default HistoryConfig.PageSize.
const MaxPageSize = 10000

const (
	// quoteLookback is how far before from History looks for the quote
	// in force at from: a day reaches the previous session's last quote
	// except across a weekend, when a quote that old is stale anyway.
	quoteLookback = 24 * time.Hour
	// maxRateLimitWait caps one wait for a rate limit to lift: Alpaca's
	// limit is per minute, so a header asking for more is not believed.
	maxRateLimitWait = 2 * time.Minute
	// rateLimitRetries is how many 429s in a row one request waits out
	// before the SDK is shown the 429.
	rateLimitRetries = 20
	// responseHeaderTimeout bounds the wait for a response's headers; the
	// http.Client gets no overall timeout, which would count the waits
	// for rate limits too.
	responseHeaderTimeout = 60 * time.Second
)

// HistoryConfig is what a History needs.
type HistoryConfig struct {
	// URL is the market data API's base URL; empty means
	// DefaultHistoryURL. Tests point it at a fake server.
	URL string
	// Key and Secret are the API key pair. Empty ones make the SDK read
	// APCA_API_KEY_ID and APCA_API_SECRET_KEY. They are sent only in
	// request headers and never appear in a log line or an error.
	Key, Secret string
	// Feed is "iex" (DefaultFeed, when empty) or "sip".
	Feed string
	// PageSize is how many trades (or quotes) one request asks for; 0
	// means MaxPageSize. It bounds what is held in memory at once.
	PageSize int
	// Logger receives rate-limit waits; nil means slog.Default().
	Logger *slog.Logger
}

// History reads historical trades and quotes through the SDK's market data
// REST client. Create it with NewHistory; it is safe for concurrent use.
type History struct {
	cfg       HistoryConfig
	log       *slog.Logger
	mask      *strings.Replacer
	transport http.RoundTripper // shared, so calls reuse connections
}

// NewHistory returns a History for cfg, filling in the defaults of URL,
// Feed, PageSize and Logger. It does not connect: Trades does.
func NewHistory(cfg HistoryConfig) *History {
	if cfg.URL == "" {
		cfg.URL = DefaultHistoryURL
	}
	cfg.URL = strings.TrimRight(cfg.URL, "/")
	if cfg.Feed == "" {
		cfg.Feed = DefaultFeed
	}
	if cfg.PageSize <= 0 || cfg.PageSize > MaxPageSize {
		cfg.PageSize = MaxPageSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = responseHeaderTimeout
	return &History{cfg: cfg, log: cfg.Logger.With("source", Source), mask: newRedactor(cfg.Key, cfg.Secret), transport: t}
}

// Trades delivers symbol's trades with from <= ts < to to fn.Trade, in
// time order (trades with equal timestamps in Alpaca's order), and returns
// how many it delivered. from is inclusive and to exclusive, so that
// consecutive ranges neither overlap nor leave a gap. A caller resuming
// after its newest stored tick passes that tick's time: it then gets the
// stored trade again, with the same ID, together with any others of the
// same timestamp it may lack, and must drop what it has by ID (as a
// feed.Assembler that saw those trades does); or it passes that time plus
// a nanosecond, and trades sharing the stored tick's timestamp but not
// stored are not fetched.
//
// With withQuotes, fn.Quote gets the symbol's quotes as well, interleaved
// in time order so that each trade comes after the quote in force at its
// time: first the last quote before from (looked for up to a day back),
// then every quote with from <= ts up to the last trade, a quote before a
// trade of the same timestamp. Quotes after the last trade are not
// fetched: they would be in force for no trade.
//
// The SDK's GetTrades and GetQuotes return a whole range at once, having
// followed next_page_token themselves, and offer no page-level call. So
// that a day of quotes is not held in memory, Trades asks for at most
// PageSize items at a time (TotalLimit, one request each) and continues
// from the timestamp of the last item it got, inclusive, skipping what it
// delivered already. A 429 is waited out as its Retry-After or
// X-RateLimit-Reset header says, for as long as it lasts (left to itself
// the SDK retries a 429 a fixed RetryDelay later, 10 times by default,
// ignoring the headers, and then fails); a 500 is retried by the SDK,
// 3 times a second apart. ctx cancels a request in flight and a wait.
//
// Bad credentials (HTTP 401 or 403) are a *feed.FatalError, and so is a
// 403 for a feed the plan does not include. An error of fn is returned as
// fn returned it.
func (h *History) Trades(ctx context.Context, symbol string, from, to time.Time, withQuotes bool, fn feed.Handler) (n int64, err error) {
	if !from.Before(to) {
		return 0, nil
	}
	client := marketdata.NewClient(marketdata.ClientOpts{
		APIKey:    h.cfg.Key,
		APISecret: h.cfg.Secret,
		BaseURL:   h.cfg.URL,
		Feed:      h.cfg.Feed,
		// The SDK retries 500s (and the 429s the transport gives up on)
		// this many times, a RetryDelay apart.
		RetryLimit: 3,
		RetryDelay: time.Second,
		HTTPClient: &http.Client{Transport: &rateLimited{ctx: ctx, base: h.transport, log: h.log}},
	})
	// End is inclusive in the API; the pagers drop what is at to.
	trades := &pager[marketdata.Trade]{
		to: to, cursor: from, base: h.cfg.PageSize,
		ts:  func(t marketdata.Trade) time.Time { return t.Timestamp },
		key: func(t marketdata.Trade) string { return tradeID(t.Exchange, t.ID) },
		fetch: func(start time.Time, limit int) ([]marketdata.Trade, error) {
			return client.GetTrades(symbol, marketdata.GetTradesRequest{Start: start, End: to, TotalLimit: limit,
				PageLimit: min(limit, MaxPageSize), Sort: marketdata.SortAsc})
		},
	}
	var quotes *pager[marketdata.Quote]
	if withQuotes {
		quotes = &pager[marketdata.Quote]{
			to: to, cursor: from, base: h.cfg.PageSize,
			ts:  func(q marketdata.Quote) time.Time { return q.Timestamp },
			key: quoteKey,
			fetch: func(start time.Time, limit int) ([]marketdata.Quote, error) {
				return client.GetQuotes(symbol, marketdata.GetQuotesRequest{Start: start, End: to, TotalLimit: limit,
					PageLimit: min(limit, MaxPageSize), Sort: marketdata.SortAsc})
			},
		}
	}
	fail := func(what string, err error) error {
		if f := historyFatal(err); f != nil {
			return f
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s %s from alpaca: %w", what, symbol, ctx.Err())
		}
		return fmt.Errorf("%s %s from alpaca: %w", what, symbol, redact(h.mask, err))
	}

	t, tok, err := trades.next()
	if err != nil {
		return 0, fail("fetching trades of", err)
	}
	if !tok {
		return 0, nil
	}
	var q marketdata.Quote
	var qok bool
	if withQuotes {
		prior, err := client.GetQuotes(symbol, marketdata.GetQuotesRequest{Start: from.Add(-quoteLookback),
			End: from.Add(-time.Nanosecond), TotalLimit: 1, PageLimit: 1, Sort: marketdata.SortDesc})
		if err != nil {
			return 0, fail("fetching the quote before the range of", err)
		}
		if len(prior) > 0 {
			if err := fn.Quote(toQuote(symbol, prior[0])); err != nil {
				return 0, err
			}
		}
		if q, qok, err = quotes.next(); err != nil {
			return 0, fail("fetching quotes of", err)
		}
	}
	for tok {
		if qok && !q.Timestamp.After(t.Timestamp) {
			if err := fn.Quote(toQuote(symbol, q)); err != nil {
				return n, err
			}
			if q, qok, err = quotes.next(); err != nil {
				return n, fail("fetching quotes of", err)
			}
			continue
		}
		if err := fn.Trade(feed.Trade{Symbol: symbol, TS: t.Timestamp.UTC(), Price: t.Price, Size: int64(t.Size),
			ID: tradeID(t.Exchange, t.ID)}); err != nil {
			return n, err
		}
		n++
		if t, tok, err = trades.next(); err != nil {
			return n, fail("fetching trades of", err)
		}
	}
	return n, nil
}

// toQuote is a historical quote as a feed.Quote.
func toQuote(symbol string, q marketdata.Quote) feed.Quote {
	return feed.Quote{Symbol: symbol, TS: q.Timestamp.UTC(), Bid: q.BidPrice, Ask: q.AskPrice}
}

// quoteKey identifies a quote among those of one timestamp; quotes have no
// id, and two quotes alike in everything are one for a trade's purposes.
func quoteKey(q marketdata.Quote) string {
	return fmt.Sprint(q.BidExchange, q.BidPrice, q.BidSize, q.AskExchange, q.AskPrice, q.AskSize, q.Conditions, q.Tape)
}

// historyFatal returns the *feed.FatalError for an API error that a retry
// cannot cure, or nil.
func historyFatal(err error) *feed.FatalError {
	var apiErr *alpacaapi.APIError
	if !errors.As(err, &apiErr) {
		return nil
	}
	switch apiErr.StatusCode {
	case http.StatusUnauthorized:
		return &feed.FatalError{Source: Source, Code: apiErr.StatusCode, Msg: apiErr.Message, Fix: CredentialsFix}
	case http.StatusForbidden:
		// Alpaca answers 403 both for a key it does not accept and for
		// SIP data the plan does not include ("subscription does not
		// permit querying recent SIP data").
		fix := CredentialsFix
		if strings.Contains(strings.ToLower(apiErr.Message), "subscription") {
			fix = SubscriptionFix
		}
		return &feed.FatalError{Source: Source, Code: apiErr.StatusCode, Msg: apiErr.Message, Fix: fix}
	}
	return nil
}

// pager yields one symbol's trades or quotes with cursor <= ts < to in time
// order, fetching at most limit at a time and continuing from the last
// item's timestamp. Items at that timestamp come again in the next fetch;
// key tells which of them were delivered.
type pager[T any] struct {
	fetch func(start time.Time, limit int) ([]T, error)
	ts    func(T) time.Time
	key   func(T) string
	to    time.Time

	cursor    time.Time           // the timestamp of the last item delivered, or from
	seen      map[string]struct{} // the keys of the items delivered at cursor
	base      int                 // the page size asked for
	limit     int                 // the page size asked for last
	fetched   bool                // a fetch was made
	from      time.Time           // where the last fetch started
	buf       []T
	exhausted bool // buf is the last fetch
}

// next returns the next item, or ok=false when there is none before to.
func (p *pager[T]) next() (item T, ok bool, err error) {
	for {
		for len(p.buf) > 0 {
			it := p.buf[0]
			p.buf = p.buf[1:]
			ts := p.ts(it)
			if !ts.Before(p.to) {
				p.buf, p.exhausted = nil, true
				break
			}
			if ts.Before(p.cursor) {
				continue
			}
			k := p.key(it)
			if ts.Equal(p.cursor) {
				if _, dup := p.seen[k]; dup {
					continue
				}
			} else {
				p.cursor = ts
				clear(p.seen)
			}
			if p.seen == nil {
				p.seen = make(map[string]struct{})
			}
			p.seen[k] = struct{}{}
			return it, true, nil
		}
		if p.exhausted {
			return item, false, nil
		}
		if p.fetched && !p.cursor.After(p.from) {
			// A whole page at the timestamp the fetch started from:
			// the same request would bring the same page, so only a
			// bigger one gets past it.
			p.limit *= 2
		} else {
			p.limit = p.base
		}
		p.fetched, p.from = true, p.cursor
		items, err := p.fetch(p.cursor, p.limit)
		if err != nil {
			return item, false, err
		}
		p.exhausted = len(items) < p.limit
		p.buf = items
	}
}

// rateLimited is an http.RoundTripper that waits out HTTP 429 as the
// response's headers say, and ties each request to ctx (the SDK's
// requests have no context of their own).
type rateLimited struct {
	ctx  context.Context
	base http.RoundTripper
	log  *slog.Logger
}

// RoundTrip sends req, and again after each 429 once the wait its headers
// ask for has passed, up to rateLimitRetries times; the response after
// that is returned as it is.
func (t *rateLimited) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.WithContext(t.ctx)
	for attempt := 1; ; attempt++ {
		resp, err := t.base.RoundTrip(req)
		if err != nil || resp.StatusCode != http.StatusTooManyRequests || attempt > rateLimitRetries {
			return resp, err
		}
		wait := rateLimitWait(resp.Header, time.Now(), attempt)
		// The body is drained so the connection can be used again.
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		t.log.Warn("alpaca rate limit reached; waiting", "wait", wait, "attempt", attempt)
		timer := time.NewTimer(wait)
		select {
		case <-t.ctx.Done():
			timer.Stop()
			return nil, t.ctx.Err()
		case <-timer.C:
		}
	}
}

// rateLimitWait is how long a 429 asks to wait: Retry-After (seconds or an
// HTTP date), else until X-RateLimit-Reset (Unix seconds, Alpaca's
// header), else retry.Feed's delay after attempt; capped at
// maxRateLimitWait.
func rateLimitWait(h http.Header, now time.Time, attempt int) time.Duration {
	wait := time.Duration(-1)
	if s := strings.TrimSpace(h.Get("Retry-After")); s != "" {
		if secs, err := strconv.Atoi(s); err == nil {
			wait = time.Duration(secs) * time.Second
		} else if at, err := http.ParseTime(s); err == nil {
			wait = at.Sub(now)
		}
	}
	if wait < 0 {
		if s := strings.TrimSpace(h.Get("X-RateLimit-Reset")); s != "" {
			if secs, err := strconv.ParseInt(s, 10, 64); err == nil {
				wait = time.Unix(secs, 0).Sub(now)
			}
		}
	}
	if wait <= 0 {
		// No header, or a reset already past (clocks differ): back off
		// rather than ask again at once.
		wait = retry.Feed.Delay(attempt)
	}
	return min(wait, maxRateLimitWait)
}
