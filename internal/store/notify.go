package store

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/stockpipe/stockpipe/internal/analytics"
	"github.com/stockpipe/stockpipe/internal/anomaly"
	"github.com/stockpipe/stockpipe/internal/indicator"
)

// Channel is the PostgreSQL NOTIFY channel on which each committed batch is
// announced, and every other write of candles (see NotifyCandlesChanged).
// Because the notifications are sent inside the writing transaction, a
// listener sees exactly what was committed, when it was committed — and
// serve can run as its own process.
const Channel = "stockpipe_events"

// TickEvent is a symbol's part of one committed batch.
type TickEvent struct {
	Symbol string  `json:"symbol"`
	Price  float64 `json:"price"` // the latest trade by event time
	TS     string  `json:"ts"`
	Count  int     `json:"count"`  // trades in the batch
	Trades []Trade `json:"trades"` // the latest, newest first, up to maxEventTrades
}

// BatchMeta describes a committed batch for the pipeline monitor. The
// commit time and latencies are those of the previous batch, the last one
// whose commit had finished when this one was built.
type BatchMeta struct {
	Records      int     `json:"records"`
	Ticks        int     `json:"ticks"`
	Rejected     int     `json:"rejected"`
	PrevCommitMs float64 `json:"prev_commit_ms"`
	PrevE2EP50Ms float64 `json:"prev_e2e_p50_ms"`
	PrevE2EP99Ms float64 `json:"prev_e2e_p99_ms"`
}

const (
	maxEventTrades = 20
	// maxPayload keeps each notification under PostgreSQL's 8000-byte
	// limit.
	maxPayload = 7800
)

// payloads encodes the batch's live updates as notification payloads.
func payloads(b *Batch) ([]string, error) {
	var events []Event
	// Ticks per symbol, in batch order (partition order).
	bySym := map[string][]int{}
	var syms []string
	for i := range b.Ticks {
		s := b.Ticks[i].Symbol
		if _, ok := bySym[s]; !ok {
			syms = append(syms, s)
		}
		bySym[s] = append(bySym[s], i)
	}
	slices.Sort(syms)
	for _, s := range syms {
		idx := bySym[s]
		slices.SortStableFunc(idx, func(a, c int) int {
			if d := b.Ticks[c].TS.Compare(b.Ticks[a].TS); d != 0 {
				return d
			}
			return int(b.Ticks[c].Seq - b.Ticks[a].Seq)
		})
		ev := TickEvent{Symbol: s, Count: len(idx)}
		for _, i := range idx[:min(len(idx), maxEventTrades)] {
			t := &b.Ticks[i]
			ev.Trades = append(ev.Trades, TradeFromTick(&t.Tick))
		}
		ev.Price, ev.TS = ev.Trades[0].Price, ev.Trades[0].TS.Format("2006-01-02T15:04:05.000000Z07:00")
		events = append(events, TickUpdate(&ev))
	}
	for i := range b.Candles {
		c := CandleFromRow(&b.Candles[i])
		events = append(events, CandleUpdate(&c))
	}
	for i := range b.Anomalies {
		a := AnomalyFromDetected(&b.Anomalies[i])
		e, err := AnomalyUpdate(&a)
		if err != nil {
			return nil, err
		}
		events = append(events, e)
	}
	if b.Meta != nil {
		e, err := BatchUpdate(b.Meta)
		if err != nil {
			return nil, err
		}
		events = append(events, e)
	}
	return Encode(events), nil
}

// CandleFromRow converts a computed candle to its API form.
func CandleFromRow(r *analytics.CandleRow) Candle {
	c := Candle{
		Symbol: r.Symbol, Interval: r.Interval, T: r.Bucket.Unix(), Bucket: r.Bucket,
		Open: r.Open, High: r.High, Low: r.Low, Close: r.Close, Volume: r.Volume, Trades: r.Trades, Final: r.Final,
	}
	if v := r.VWAP(); !math.IsNaN(v) {
		c.VWAP = &v
	}
	ptr := func(v float64, bit uint8) *float64 {
		if r.Ind.Has&bit == 0 {
			return nil
		}
		return &v
	}
	c.SMA5 = ptr(r.Ind.SMA5, indicator.HasSMA5)
	c.SMA20 = ptr(r.Ind.SMA20, indicator.HasSMA20)
	c.EMA12 = ptr(r.Ind.EMA12, indicator.HasEMA12)
	c.EMA26 = ptr(r.Ind.EMA26, indicator.HasEMA26)
	c.BBUpper = ptr(r.Ind.BBUpper, indicator.HasBB)
	c.BBLower = ptr(r.Ind.BBLower, indicator.HasBB)
	c.RSI14 = ptr(r.Ind.RSI14, indicator.HasRSI14)
	return c
}

// AnomalyFromDetected converts a detected anomaly to its API form.
func AnomalyFromDetected(a *anomaly.Anomaly) Anomaly {
	return Anomaly{Symbol: a.Symbol, TS: a.TS, Kind: string(a.Kind), Severity: string(a.Severity),
		Value: a.Value, Threshold: a.Threshold, Detail: a.Detail}
}

// CandlesChanged is the data of a "candles_changed" event: the stored
// candles of Symbol ("*": every symbol) and Interval were rewritten by
// something other than the stream, such as the scheduler's 1d candles or
// a backfill. Listeners that keep candles (the API's cache, an open chart)
// re-read them.
type CandlesChanged struct {
	Symbol   string `json:"symbol"`
	Interval string `json:"interval"`
}

// AllSymbols is the Symbol of a CandlesChanged that concerns every symbol.
const AllSymbols = "*"

// NotifyCandlesChanged announces on Channel that the candles of symbols
// (every symbol when symbols is empty) and interval changed, as events of
// kind "candles_changed". It must be called inside the transaction that
// writes the candles: PostgreSQL delivers the notification when, and only
// when, that transaction commits, so a listener never re-reads before the
// new rows are visible, and a rolled-back write announces nothing. The
// events are split into as many notifications as PostgreSQL's payload
// limit needs.
func NotifyCandlesChanged(ctx context.Context, tx pgx.Tx, interval string, symbols []string) error {
	notes, err := candlesChangedPayloads(interval, symbols)
	if err != nil {
		return fmt.Errorf("encoding the candles_changed notification: %w", err)
	}
	for _, n := range notes {
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, Channel, n); err != nil {
			return fmt.Errorf("notifying that %s candles changed: %w", interval, err)
		}
	}
	return nil
}

// candlesChangedPayloads encodes one candles_changed event per symbol (one
// for AllSymbols when there are none) into payloads under maxPayload.
func candlesChangedPayloads(interval string, symbols []string) ([]string, error) {
	if len(symbols) == 0 {
		symbols = []string{AllSymbols}
	}
	events := make([]Event, 0, len(symbols))
	for _, sym := range symbols {
		e, err := CandlesChangedUpdate(sym, interval)
		if err != nil {
			return nil, err
		}
		events = append(events, e)
	}
	return Encode(events), nil
}
