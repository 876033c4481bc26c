package web_test

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"

	"github.com/stockpipe/stockpipe/internal/analytics"
	"github.com/stockpipe/stockpipe/internal/candle"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/store"
)

// sessionDay stores MSFT trading from 23:00 New York on 2 November 2026
// to 02:00 on the 3rd, three trades a minute on a steady climb, so that a
// bar's own VWAP and its session's lie far apart, and the session resets
// at New York midnight (05:00 UTC) inside the data. It returns the 1m
// buckets.
func sessionDay(t *testing.T, f *fixture) (start time.Time, buckets []int64) {
	t.Helper()
	start = time.Date(2026, 11, 2, 23, 0, 0, 0, newYork)
	b := &store.Batch{Group: "g", Topic: "ticks"}
	var seq int64
	for m := range 180 {
		bucket := start.Add(time.Duration(m) * time.Minute)
		b.Candles = append(b.Candles, msftCandle(bucket, m, &seq, &b.Ticks))
		buckets = append(buckets, bucket.Unix())
	}
	// And their 5m candles, from the same trades.
	minutes := slices.Clone(b.Candles)
	for i := 0; i < len(minutes); i += 5 {
		c := minutes[i].Candle
		for _, x := range minutes[i+1 : i+5] {
			c.High, c.Low, c.Close = max(c.High, x.High), min(c.Low, x.Low), x.Close
			c.Volume += x.Volume
			c.Turnover += x.Turnover
			c.Trades += x.Trades
		}
		b.Candles = append(b.Candles, analytics.CandleRow{Symbol: "MSFT", Interval: "5m", Candle: c})
	}
	f.commit(t, b)
	return start, buckets
}

// msftCandle makes minute m's three trades (appended to ticks) and their
// 1m candle.
func msftCandle(bucket time.Time, m int, seq *int64, ticks *[]store.TickRow) analytics.CandleRow {
	var c candle.Candle
	for k := range 3 {
		*seq++
		p := 300 + float64(m)/2 + float64(k)/10 + float64((m*7+k*3)%5)/8
		size := int64(100 + ((m*7+k*13)%9)*100)
		ts := bucket.Add(time.Duration(5+20*k) * time.Second)
		*ticks = append(*ticks, store.TickRow{Tick: market.Tick{Symbol: "MSFT", TS: ts, Seq: *seq, Price: p, Size: size,
			Bid: p - 0.01, Ask: p + 0.01}, Offset: 1000 + *seq})
		if k == 0 {
			c = candle.Candle{Bucket: bucket, Open: p, High: p, Low: p}
		}
		c.High, c.Low, c.Close = max(c.High, p), min(c.Low, p), p
		c.Volume += size
		c.Turnover += p * float64(size)
		c.Trades++
	}
	c.Final = true
	return analytics.CandleRow{Symbol: "MSFT", Interval: "1m", Candle: c}
}

// sessionVWAPFromTicks is the detector's session VWAP at the end of the bar
// that begins at bucket: every trade of the bar's New York day up to then.
// It also returns the session's first trade.
func sessionVWAPFromTicks(t *testing.T, f *fixture, bucket time.Time, width time.Duration) (float64, time.Time) {
	t.Helper()
	var v float64
	var first time.Time
	err := f.pool.QueryRow(context.Background(), `SELECT sum(price * size) / sum(size), min(ts) FROM ticks
		WHERE symbol = 'MSFT' AND ts >= date_trunc('day', $1 AT TIME ZONE 'America/New_York') AT TIME ZONE 'America/New_York'
		  AND ts < $2`, bucket, bucket.Add(width)).Scan(&v, &first)
	if err != nil {
		t.Fatal(err)
	}
	return v, first
}

// checkSessionVWAP compares the drawn session VWAP at bar times with the
// stored ticks'. Ten minutes or more into a session, the bar's own VWAP
// must be far from it, or the comparison would prove nothing.
func checkSessionVWAP(t *testing.T, ctx context.Context, f *fixture, width time.Duration, bars ...time.Time) {
	t.Helper()
	for _, bar := range bars {
		want, first := sessionVWAPFromTicks(t, f, bar, width)
		sec := strconv.FormatInt(bar.Unix(), 10)
		got := eval[*float64](t, ctx, `window.stockpipe.lineValue('vwap', `+sec+`)`)
		own := eval[float64](t, ctx, `window.stockpipe.candle(`+sec+`).vwap`)
		if got == nil || math.Abs(*got-want) > 2e-6 {
			t.Errorf("%s bar at %s (%s New York): session VWAP drawn %s, from the ticks %.6f (the bar's own %.6f)",
				width, bar.UTC().Format(time.RFC3339), bar.In(newYork).Format("15:04"), fmtPtr(got), want, own)
		}
		if bar.Sub(first) >= 10*time.Minute && math.Abs(own-want) < 1 {
			t.Fatalf("the fixture does not tell the session VWAP (%.4f) from the bar's (%.4f)", want, own)
		}
	}
}

func fmtPtr(v *float64) string {
	if v == nil {
		return "nothing"
	}
	return fmt.Sprint(*v)
}

// TestBrowserSessionVWAP opens MSFT's chart in Tokyo and reads the drawn
// "Session VWAP" line against the session VWAP computed from the stored
// ticks: across New York midnight (where it restarts), in a one-hour
// range that begins after the session did, at 5m, and on a live candle.
func TestBrowserSessionVWAP(t *testing.T) {
	f := newFixture(t)
	start, buckets := sessionDay(t, f)
	ctx := browser(t)
	timezone(t, ctx, "Asia/Tokyo")
	at := func(hhmm string) time.Time {
		d, _ := time.ParseDuration(hhmm)
		return start.Add(d)
	}

	navigate(t, ctx, f.srv.URL+"/symbol/MSFT?interval=1m&range=all")
	until(t, ctx, "180 candles", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.candleCount() === 180`)
	if got := eval[string](t, ctx, `document.querySelector('input[data-ind="vwap"]').parentElement.textContent.trim()`); got != "Session VWAP" {
		t.Errorf("the toggle reads %q", got)
	}
	// 23:00 and 23:59 on the 2nd, 00:00 (a new session), 00:01 and 01:30
	// on the 3rd.
	checkSessionVWAP(t, ctx, f, time.Minute, at("0m"), at("59m"), at("1h"), at("1h1m"), at("2h30m"))

	// One hour: the 60 bars from 01:00, whose session began at midnight.
	navigate(t, ctx, f.srv.URL+"/symbol/MSFT?interval=1m&range=1h")
	until(t, ctx, "the last hour", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.candleCount() === 60`)
	checkSessionVWAP(t, ctx, f, time.Minute, at("2h"), at("2h30m"), at("2h59m"))

	// Five-minute bars.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`button[data-interval="5m"]`))); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "5m candles", `window.stockpipe.interval === '5m' && window.stockpipe.loaded && window.stockpipe.candleCount() === 12`)
	checkSessionVWAP(t, ctx, f, 5*time.Minute, at("2h"), at("2h30m"), at("2h55m"))

	// A live candle at 02:00 extends the session.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`button[data-interval="1m"]`))); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "1m candles", `window.stockpipe.interval === '1m' && window.stockpipe.loaded && window.stockpipe.candleCount() === 60`)
	b := &store.Batch{Group: "g", Topic: "ticks"}
	seq := int64(3 * len(buckets))
	b.Candles = append(b.Candles, msftCandle(at("3h"), len(buckets), &seq, &b.Ticks))
	f.commit(t, b)
	until(t, ctx, "the live candle", `window.stockpipe.candleCount() === 61`)
	checkSessionVWAP(t, ctx, f, time.Minute, at("3h"))

	// Shown, with its legend.
	if !eval[bool](t, ctx, `document.querySelector('input[data-ind="vwap"]').checked`) {
		if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`input[data-ind="vwap"]`))); err != nil {
			t.Fatal(err)
		}
	}
	until(t, ctx, "the legend", `/Session VWAP/.test(document.querySelector('#legend').textContent) && /Bar VWAP/.test(document.querySelector('#legend').textContent)`)
	shots(t, ctx, "symbol-session-vwap")
}

// TestBrowserDailyMarkers: 1d candles begin at midnight New York; the
// anomalies of a symbol must be marked on their New York day's bar, also
// late in the evening (already the next day in UTC) and on both sides of
// the end of daylight saving time (1 November 2026); 1m and 5m keep their
// markers.
func TestBrowserDailyMarkers(t *testing.T) {
	f := newFixture(t)
	ctx0 := context.Background()
	days := []time.Time{
		time.Date(2026, 10, 29, 0, 0, 0, 0, newYork),
		time.Date(2026, 10, 30, 0, 0, 0, 0, newYork),
		time.Date(2026, 11, 2, 0, 0, 0, 0, newYork),
		time.Date(2026, 11, 3, 0, 0, 0, 0, newYork),
	}
	b := &store.Batch{Group: "g", Topic: "ticks"}
	for i, d := range days {
		p := 110 + float64(i)
		b.Candles = append(b.Candles, analytics.CandleRow{Symbol: "XOM", Interval: "1d", Candle: candle.Candle{
			Bucket: d, Open: p, High: p + 2, Low: p - 2, Close: p + 1, Volume: 10000, Turnover: 10000 * p, Trades: 100, Final: true}})
	}
	minute := time.Date(2026, 11, 3, 9, 30, 0, 0, newYork)
	for m := range 6 {
		p := 114 + float64(m)/10
		b.Candles = append(b.Candles, analytics.CandleRow{Symbol: "XOM", Interval: "1m", Candle: candle.Candle{
			Bucket: minute.Add(time.Duration(m) * time.Minute), Open: p, High: p, Low: p, Close: p, Volume: 100, Turnover: 100 * p, Trades: 1, Final: true}})
	}
	for _, m := range []int{0, 5} {
		p := 114 + float64(m)/10
		b.Candles = append(b.Candles, analytics.CandleRow{Symbol: "XOM", Interval: "5m", Candle: candle.Candle{
			Bucket: minute.Add(time.Duration(m) * time.Minute), Open: p, High: p, Low: p, Close: p, Volume: 500, Turnover: 500 * p, Trades: 5, Final: true}})
	}
	f.commit(t, b)
	for _, ts := range []time.Time{
		time.Date(2026, 10, 30, 23, 30, 0, 0, newYork), // 03:30 UTC on the 31st, a Saturday
		time.Date(2026, 11, 2, 23, 30, 0, 0, newYork),  // 04:30 UTC on the 3rd
		time.Date(2026, 11, 3, 9, 31, 20, 0, newYork),  // in the 1m candles
	} {
		if _, err := f.pool.Exec(ctx0, `INSERT INTO anomalies (symbol, ts, kind, severity, value, threshold, detail)
			VALUES ('XOM', $1, 'price_jump', 'high', 12.5, 6, 'XOM jumped')`, ts); err != nil {
			t.Fatal(err)
		}
	}

	ctx := browser(t)
	timezone(t, ctx, "Asia/Tokyo")
	for _, tc := range []struct {
		interval string
		bars     int
		want     []time.Time
	}{
		{"1d", 4, []time.Time{days[1], days[2], days[3]}},
		{"1m", 6, []time.Time{minute.Add(time.Minute)}},
		{"5m", 2, []time.Time{minute}},
	} {
		navigate(t, ctx, f.srv.URL+"/symbol/XOM?interval="+tc.interval+"&range=all")
		until(t, ctx, tc.interval+" candles", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.candleCount() === `+strconv.Itoa(tc.bars))
		var want []int64
		for _, w := range tc.want {
			want = append(want, w.Unix())
		}
		got := eval[[]int64](t, ctx, `window.stockpipe.markerTimes()`)
		if !slices.Equal(got, want) {
			t.Errorf("%s markers at %v, want %v", tc.interval, got, want)
		}
		if tc.interval == "1d" {
			shots(t, ctx, "symbol-1d-markers")
			if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 720)); err != nil {
				t.Fatal(err)
			}
		}
	}

	// The next day's candle, written the way market_close writes it: the
	// open 1d chart reloads and shows it.
	navigate(t, ctx, f.srv.URL+"/symbol/XOM?interval=1d&range=all")
	until(t, ctx, "1d candles", `window.stockpipe && window.stockpipe.loaded && window.stockpipe.candleCount() === 4`)
	next := time.Date(2026, 11, 4, 0, 0, 0, 0, newYork)
	err := pgx.BeginFunc(ctx0, f.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx0, `INSERT INTO candles (symbol, interval, bucket, open, high, low, close, volume, vwap, trades, final)
			VALUES ('XOM', '1d', $1, 114, 116, 113, 115, 10000, 114.5, 100, true)`, next); err != nil {
			return err
		}
		return store.NotifyCandlesChanged(ctx0, tx, "1d", []string{"XOM"})
	})
	if err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "the new day's candle", `window.stockpipe.loaded && window.stockpipe.candleCount() === 5 && window.stockpipe.lastCandle().time === `+strconv.FormatInt(next.Unix(), 10))
}
