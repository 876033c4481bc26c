package store

import (
	"math"
	"time"

	"github.com/stockpipe/stockpipe/internal/analytics"
	"github.com/stockpipe/stockpipe/internal/anomaly"
	"github.com/stockpipe/stockpipe/internal/indicator"
)

// candleColumns holds a batch's candles column by column for unnest.
// Undefined indicators are NULL, sent as nil pointers.
type candleColumns struct {
	symbol, interval             []string
	bucket                       []time.Time
	open, high, low, close, vwap []float64
	volume, trades               []int64
	sma5, sma20, ema12, ema26    []*float64
	bbUpper, bbLower, rsi14      []*float64
	final                        []bool
	vals                         []float64 // backing store for the pointers
}

func (c *candleColumns) fill(rows []analytics.CandleRow) *candleColumns {
	n := len(rows)
	c.symbol, c.interval, c.bucket = c.symbol[:0], c.interval[:0], c.bucket[:0]
	c.open, c.high, c.low, c.close, c.vwap = c.open[:0], c.high[:0], c.low[:0], c.close[:0], c.vwap[:0]
	c.volume, c.trades, c.final = c.volume[:0], c.trades[:0], c.final[:0]
	c.sma5, c.sma20, c.ema12, c.ema26 = c.sma5[:0], c.sma20[:0], c.ema12[:0], c.ema26[:0]
	c.bbUpper, c.bbLower, c.rsi14 = c.bbUpper[:0], c.bbLower[:0], c.rsi14[:0]
	if cap(c.vals) < 7*n {
		c.vals = make([]float64, 7*n)
	}
	c.vals = c.vals[:7*n]
	for i := range rows {
		r := &rows[i]
		c.symbol = append(c.symbol, r.Symbol)
		c.interval = append(c.interval, r.Interval)
		c.bucket = append(c.bucket, r.Bucket)
		c.open = append(c.open, r.Open)
		c.high = append(c.high, r.High)
		c.low = append(c.low, r.Low)
		c.close = append(c.close, r.Close)
		vwap := r.VWAP()
		if math.IsNaN(vwap) {
			vwap = r.Close
		}
		c.vwap = append(c.vwap, vwap)
		c.volume = append(c.volume, r.Volume)
		c.trades = append(c.trades, r.Trades)
		c.final = append(c.final, r.Final)
		v := c.vals[7*i : 7*i+7 : 7*i+7]
		c.sma5 = append(c.sma5, opt(v, 0, r.Ind.SMA5, r.Ind.Has&indicator.HasSMA5 != 0))
		c.sma20 = append(c.sma20, opt(v, 1, r.Ind.SMA20, r.Ind.Has&indicator.HasSMA20 != 0))
		c.ema12 = append(c.ema12, opt(v, 2, r.Ind.EMA12, r.Ind.Has&indicator.HasEMA12 != 0))
		c.ema26 = append(c.ema26, opt(v, 3, r.Ind.EMA26, r.Ind.Has&indicator.HasEMA26 != 0))
		c.bbUpper = append(c.bbUpper, opt(v, 4, r.Ind.BBUpper, r.Ind.Has&indicator.HasBB != 0))
		c.bbLower = append(c.bbLower, opt(v, 5, r.Ind.BBLower, r.Ind.Has&indicator.HasBB != 0))
		c.rsi14 = append(c.rsi14, opt(v, 6, r.Ind.RSI14, r.Ind.Has&indicator.HasRSI14 != 0))
	}
	return c
}

func opt(store []float64, i int, v float64, ok bool) *float64 {
	if !ok {
		return nil
	}
	store[i] = v
	return &store[i]
}

type anomalyColumns struct {
	symbol, kind, severity, detail []string
	ts                             []time.Time
	value, threshold               []float64
}

func (c *anomalyColumns) fill(rows []anomaly.Anomaly) *anomalyColumns {
	c.symbol, c.kind, c.severity, c.detail = c.symbol[:0], c.kind[:0], c.severity[:0], c.detail[:0]
	c.ts, c.value, c.threshold = c.ts[:0], c.value[:0], c.threshold[:0]
	for i := range rows {
		r := &rows[i]
		c.symbol = append(c.symbol, r.Symbol)
		c.ts = append(c.ts, r.TS)
		c.kind = append(c.kind, string(r.Kind))
		c.severity = append(c.severity, string(r.Severity))
		c.value = append(c.value, r.Value)
		c.threshold = append(c.threshold, r.Threshold)
		c.detail = append(c.detail, r.Detail)
	}
	return c
}
