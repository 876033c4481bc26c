package alpaca

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/alpacahq/alpaca-trade-api-go/v3/marketdata/stream"
)

func TestFatalOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
		fix  string
	}{
		{fmt.Errorf("irrecoverable error: %w", stream.ErrInvalidCredentials), 402, CredentialsFix},
		{fmt.Errorf("max reconnect limit has been reached, last error: %w", stream.ErrConnectionLimitExceeded), 406, ConnectionLimitFix},
		{fmt.Errorf("irrecoverable error: %w", stream.ErrInsufficientSubscription), 409, SubscriptionFix},
		{fmt.Errorf("max reconnect limit has been reached, last error: failed to read subscribe response: %w", stream.ErrSymbolLimitExceeded), 405, SymbolLimitFix},
		{fmt.Errorf("irrecoverable error: %w", stream.ErrInsufficientScope), 411, ScopeFix},
		{fmt.Errorf("irrecoverable error: %w", stream.ErrSubscriptionChangeInvalidForFeed), 410, FeedFix},
		{errors.New("irrecoverable error: websocket dial: failed to WebSocket dial: expected handshake response status code 101 but got 404"), 0, FeedFix},
		{errors.New("irrecoverable error: websocket dial: failed to WebSocket dial: expected handshake response status code 101 but got 401"), 0, CredentialsFix},
	} {
		f := fatalOf(tc.err)
		if f == nil || f.Code != tc.code || f.Fix != tc.fix || f.Source != Source {
			t.Errorf("fatalOf(%v) = %+v, want code %d, fix %q", tc.err, f, tc.code, tc.fix)
		}
	}
	for _, err := range []error{
		stream.ErrSlowClient,
		errors.New("websocket dial: failed to WebSocket dial: expected handshake response status code 101 but got 429"),
		errors.New("max reconnect limit has been reached, last error: websocket dial: connection refused"),
		errors.New("internal error"),
	} {
		if f := fatalOf(err); f != nil {
			t.Errorf("fatalOf(%v) = %v, want nil: a reconnect may cure it", err, f)
		}
	}
}

func TestRateLimitWait(t *testing.T) {
	now := time.Date(2024, 3, 4, 14, 30, 0, 0, time.UTC)
	h := func(kv ...string) http.Header {
		hd := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			hd.Set(kv[i], kv[i+1])
		}
		return hd
	}
	for _, tc := range []struct {
		name     string
		h        http.Header
		min, max time.Duration
	}{
		{"Retry-After seconds", h("Retry-After", "3"), 3 * time.Second, 3 * time.Second},
		{"Retry-After date", h("Retry-After", now.Add(5*time.Second).Format(http.TimeFormat)), 5 * time.Second, 5 * time.Second},
		{"Retry-After before X-RateLimit-Reset", h("Retry-After", "2", "X-RateLimit-Reset", fmt.Sprint(now.Add(9*time.Second).Unix())), 2 * time.Second, 2 * time.Second},
		{"X-RateLimit-Reset", h("X-RateLimit-Reset", fmt.Sprint(now.Add(7*time.Second).Unix())), 7 * time.Second, 7 * time.Second},
		{"reset already past: backoff", h("X-RateLimit-Reset", fmt.Sprint(now.Add(-time.Second).Unix())), 250 * time.Millisecond, 500 * time.Millisecond},
		{"no header: backoff", h(), 250 * time.Millisecond, 500 * time.Millisecond},
		{"garbage: backoff", h("Retry-After", "soon"), 250 * time.Millisecond, 500 * time.Millisecond},
		{"capped", h("Retry-After", "3600"), maxRateLimitWait, maxRateLimitWait},
	} {
		if got := rateLimitWait(tc.h, now, 1); got < tc.min || got > tc.max {
			t.Errorf("%s: wait %v, want %v…%v", tc.name, got, tc.min, tc.max)
		}
	}
}

func TestNewStreamURL(t *testing.T) {
	for _, tc := range []struct {
		cfg        StreamConfig
		base, feed string
	}{
		{StreamConfig{Symbols: []string{"A"}}, "wss://stream.data.alpaca.markets/v2", "iex"},
		{StreamConfig{Feed: "sip", Symbols: []string{"A"}}, "wss://stream.data.alpaca.markets/v2", "sip"},
		{StreamConfig{URL: "ws://127.0.0.1:5000/v2/test/", Feed: "sip", Symbols: []string{"A"}}, "ws://127.0.0.1:5000/v2", "test"},
	} {
		s := NewStream(tc.cfg)
		if s.err != nil || s.base != tc.base || s.feed != tc.feed {
			t.Errorf("NewStream(%+v): base %q, feed %q, err %v; want %q, %q", tc.cfg, s.base, s.feed, s.err, tc.base, tc.feed)
		}
	}
}
