package web

import (
	"strconv"
	"testing"
)

// TestCandleCacheGenerations: an answer is served from the cache until a
// bump of its series, of every symbol of its interval, or a drop; bumps of
// other series leave it.
func TestCandleCacheGenerations(t *testing.T) {
	c := newCandleCache()
	fills := 0
	get := func(series, key string) string {
		t.Helper()
		a, err := c.get(series, key, func() (cachedAnswer, error) {
			fills++
			return cachedAnswer{body: []byte(strconv.Itoa(fills))}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return string(a.body)
	}
	for _, step := range []struct {
		do     func()
		series string
		want   string // the answer's fill number
	}{
		{nil, "AAPL|1m", "1"},
		{nil, "AAPL|1m", "1"},
		{func() { c.bump("MSFT|1m") }, "AAPL|1m", "1"},
		{func() { c.bump("*|1d") }, "AAPL|1m", "1"},
		{func() { c.bump("AAPL|1m") }, "AAPL|1m", "2"},
		{func() { c.bump("*|1m") }, "AAPL|1m", "3"},
		{nil, "AAPL|1m", "3"},
		{func() { c.drop() }, "AAPL|1m", "4"},
		{nil, "AAPL|1m", "4"},
	} {
		if step.do != nil {
			step.do()
		}
		if got := get(step.series, step.series+"|q"); got != step.want {
			t.Fatalf("after %d fills: answer of fill %s, want %s", fills, got, step.want)
		}
	}

	// A fill that began before a drop is not kept: it may have read the
	// database before changes that nobody announced.
	c.get("AAPL|5m", "k", func() (cachedAnswer, error) {
		c.drop()
		return cachedAnswer{body: []byte("old")}, nil
	})
	a, _ := c.get("AAPL|5m", "k", func() (cachedAnswer, error) { return cachedAnswer{body: []byte("new")}, nil })
	if string(a.body) != "new" {
		t.Fatalf("an answer read before the drop was kept: %s", a.body)
	}
}
