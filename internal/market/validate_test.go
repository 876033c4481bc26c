package market

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestRulesCheck(t *testing.T) {
	rules := DefaultRules()
	// now is a minute after goodTick's ts.
	now := time.Date(2026, 11, 25, 14, 31, 0, 123456000, time.UTC)
	inf := math.Inf(1)
	nan := math.NaN()

	for _, c := range []struct {
		name string
		edit func(*Tick)
		want Reason // "" means the tick passes
	}{
		{"valid", func(*Tick) {}, ""},

		{"seq 1", func(t *Tick) { t.Seq = 1 }, ""},
		{"seq max int64", func(t *Tick) { t.Seq = math.MaxInt64 }, ""},
		{"seq 0", func(t *Tick) { t.Seq = 0 }, ReasonBadSeq},
		{"seq negative", func(t *Tick) { t.Seq = -1 }, ReasonBadSeq},
		{"seq min int64", func(t *Tick) { t.Seq = math.MinInt64 }, ReasonBadSeq},

		{"price zero", func(t *Tick) { t.Price = 0 }, ReasonBadPrice},
		{"price negative zero", func(t *Tick) { t.Price = math.Copysign(0, -1) }, ReasonBadPrice},
		{"price negative", func(t *Tick) { t.Price = -189.23 }, ReasonBadPrice},
		{"price NaN", func(t *Tick) { t.Price = nan }, ReasonBadPrice},
		{"price +Inf", func(t *Tick) { t.Price = inf }, ReasonBadPrice},
		{"price -Inf", func(t *Tick) { t.Price = -inf }, ReasonBadPrice},
		{"price smallest positive", func(t *Tick) { t.Price, t.Bid, t.Ask = math.SmallestNonzeroFloat64, math.SmallestNonzeroFloat64, 1 }, ""},
		{"price at MaxPrice", func(t *Tick) { t.Price, t.Bid, t.Ask = rules.MaxPrice, rules.MaxPrice, rules.MaxPrice }, ""},
		{"price above MaxPrice", func(t *Tick) { t.Price = rules.MaxPrice * (1 + 1e-15) }, ReasonBadPrice},
		{"price far above MaxPrice", func(t *Tick) { t.Price = math.MaxFloat64 }, ReasonBadPrice},

		{"size 1", func(t *Tick) { t.Size = 1 }, ""},
		{"size at MaxSize", func(t *Tick) { t.Size = rules.MaxSize }, ""},
		{"size zero", func(t *Tick) { t.Size = 0 }, ReasonBadSize},
		{"size negative", func(t *Tick) { t.Size = -100 }, ReasonBadSize},
		{"size above MaxSize", func(t *Tick) { t.Size = rules.MaxSize + 1 }, ReasonBadSize},
		{"size max int64", func(t *Tick) { t.Size = math.MaxInt64 }, ReasonBadSize},

		{"bid above ask", func(t *Tick) { t.Bid, t.Ask = 189.25, 189.24 }, ReasonCrossedQuote},
		{"bid above ask by one ulp", func(t *Tick) { t.Bid = math.Nextafter(t.Ask, inf) }, ReasonCrossedQuote},
		{"bid equals ask", func(t *Tick) { t.Bid = t.Ask }, ""},
		{"price outside the quote", func(t *Tick) { t.Price = 200 }, ""},
		{"bid zero", func(t *Tick) { t.Bid = 0 }, ReasonBadQuote},
		{"bid negative", func(t *Tick) { t.Bid = -1 }, ReasonBadQuote},
		{"bid negative zero", func(t *Tick) { t.Bid = math.Copysign(0, -1) }, ReasonBadQuote},
		{"ask zero", func(t *Tick) { t.Ask = 0 }, ReasonBadQuote},
		{"ask negative", func(t *Tick) { t.Ask = -189.24 }, ReasonBadQuote},
		{"no quote", func(t *Tick) { t.Bid, t.Ask = 0, 0 }, ""},
		{"no quote, -0 and 0", func(t *Tick) { t.Bid, t.Ask = math.Copysign(0, -1), 0 }, ""},
		{"no quote, price far from any quote", func(t *Tick) { t.Bid, t.Ask, t.Price = 0, 0, 5 }, ""},
		{"bid without ask", func(t *Tick) { t.Ask = 0 }, ReasonBadQuote},
		{"ask without bid", func(t *Tick) { t.Bid = 0 }, ReasonBadQuote},
		{"bid negative, ask zero", func(t *Tick) { t.Bid, t.Ask = -1, 0 }, ReasonBadQuote},
		{"bid NaN, ask zero", func(t *Tick) { t.Bid, t.Ask = nan, 0 }, ReasonBadQuote},
		{"bid NaN", func(t *Tick) { t.Bid = nan }, ReasonBadQuote},
		{"ask NaN", func(t *Tick) { t.Ask = nan }, ReasonBadQuote},
		{"ask +Inf", func(t *Tick) { t.Ask = inf }, ReasonBadQuote},
		{"ask above MaxPrice", func(t *Tick) { t.Ask = 2 * rules.MaxPrice }, ReasonBadQuote},
		{"bid above MaxPrice", func(t *Tick) { t.Bid, t.Ask = 2*rules.MaxPrice, 3*rules.MaxPrice }, ReasonBadQuote},

		{"ts now", func(t *Tick) { t.TS = now }, ""},
		{"ts within MaxFuture", func(t *Tick) { t.TS = now.Add(59 * time.Second) }, ""},
		{"ts exactly MaxFuture ahead", func(t *Tick) { t.TS = now.Add(rules.MaxFuture) }, ""},
		{"ts just over MaxFuture ahead", func(t *Tick) { t.TS = now.Add(rules.MaxFuture + time.Microsecond) }, ReasonFutureTS},
		{"ts an hour ahead", func(t *Tick) { t.TS = now.Add(time.Hour) }, ReasonFutureTS},
		{"ts far future", func(t *Tick) { t.TS = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC) }, ReasonFutureTS},
		{"ts 1970-01-01", func(t *Tick) { t.TS = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC) }, ReasonAncientTS},
		{"ts zero time", func(t *Tick) { t.TS = time.Time{} }, ReasonAncientTS},
		{"ts just before MinTS", func(t *Tick) { t.TS = rules.MinTS.Add(-time.Microsecond) }, ReasonAncientTS},
		{"ts at MinTS", func(t *Tick) { t.TS = rules.MinTS }, ""},
		{"ts 1990", func(t *Tick) { t.TS = time.Date(1990, 6, 15, 12, 0, 0, 0, time.UTC) }, ""},
		{"ts a year ago", func(t *Tick) { t.TS = now.AddDate(-1, 0, 0) }, ""},
		{"ts in another zone", func(t *Tick) { t.TS = now.In(time.FixedZone("EST", -5*3600)) }, ""},

		// Several rules broken: the first in Check's order is named.
		{"seq and price bad", func(t *Tick) { t.Seq, t.Price = 0, 0 }, ReasonBadSeq},
		{"price and quote bad", func(t *Tick) { t.Price, t.Bid = 0, 0 }, ReasonBadPrice},
		{"no quote and ts ancient", func(t *Tick) { t.Bid, t.Ask, t.TS = 0, 0, time.Time{} }, ReasonAncientTS},
		{"no quote and size bad", func(t *Tick) { t.Bid, t.Ask, t.Size = 0, 0, 0 }, ReasonBadSize},
		{"quote crossed and ts ancient", func(t *Tick) { t.Bid, t.TS = 200, time.Time{} }, ReasonCrossedQuote},
	} {
		t.Run(c.name, func(t *testing.T) {
			tk := goodTick()
			c.edit(&tk)
			err := rules.Check(&tk, now)
			if got := reasonOf(err); got != c.want {
				t.Fatalf("Check(%+v) = %v, want reason %q", tk, err, c.want)
			}
			if err != nil {
				var rj *Rejection
				if !errors.As(err, &rj) || rj.Detail == "" || !strings.Contains(err.Error(), rj.Detail) {
					t.Errorf("rejection %q has no detail", err)
				}
			}
		})
	}
}

// TestRulesCheckCustom checks that Check uses the Rules' fields, not the
// defaults.
func TestRulesCheckCustom(t *testing.T) {
	now := time.Date(2026, 11, 25, 14, 30, 0, 0, time.UTC)
	rules := Rules{
		MaxFuture: time.Second,
		MinTS:     time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		MaxPrice:  500,
		MaxSize:   1000,
	}
	for _, c := range []struct {
		name string
		edit func(*Tick)
		want Reason
	}{
		{"valid", func(*Tick) {}, ""},
		{"price over custom max", func(t *Tick) { t.Price = 501 }, ReasonBadPrice},
		{"ask over custom max", func(t *Tick) { t.Ask = 501 }, ReasonBadQuote},
		{"size over custom max", func(t *Tick) { t.Size = 1001 }, ReasonBadSize},
		{"ts before custom MinTS", func(t *Tick) { t.TS = time.Date(2025, 12, 31, 0, 0, 0, 0, time.UTC) }, ReasonAncientTS},
		{"ts 2s ahead", func(t *Tick) { t.TS = now.Add(2 * time.Second) }, ReasonFutureTS},
	} {
		tk := goodTick()
		tk.TS = now
		c.edit(&tk)
		if got := reasonOf(rules.Check(&tk, now)); got != c.want {
			t.Errorf("%s: Check gives %q, want %q", c.name, got, c.want)
		}
	}
}
