package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/anomaly"
	"github.com/stockpipe/stockpipe/internal/market"
)

// ErrUnknownSymbol is returned by reads about a symbol the stream has never
// seen.
var ErrUnknownSymbol = errors.New("unknown symbol")

// Candle is a candle row as the API and the live stream show it.
type Candle struct {
	Symbol   string    `json:"symbol,omitempty"`
	Interval string    `json:"interval,omitempty"`
	T        int64     `json:"t"` // bucket in Unix seconds, what charts take
	Bucket   time.Time `json:"bucket"`
	Open     float64   `json:"open"`
	High     float64   `json:"high"`
	Low      float64   `json:"low"`
	Close    float64   `json:"close"`
	Volume   int64     `json:"volume"`
	VWAP     *float64  `json:"vwap"`
	Trades   int64     `json:"trades"`
	SMA5     *float64  `json:"sma_5"`
	SMA20    *float64  `json:"sma_20"`
	EMA12    *float64  `json:"ema_12"`
	EMA26    *float64  `json:"ema_26"`
	BBUpper  *float64  `json:"bb_upper"`
	BBLower  *float64  `json:"bb_lower"`
	RSI14    *float64  `json:"rsi_14"`
	Final    bool      `json:"final"`
}

// Trade is a stored tick as the API shows it. Bid and Ask are both nil
// (null in JSON) for a tick without a quote, from a trade-only feed.
type Trade struct {
	TS    time.Time `json:"ts"`
	Seq   int64     `json:"seq"`
	Price float64   `json:"price"`
	Size  int64     `json:"size"`
	Bid   *float64  `json:"bid"`
	Ask   *float64  `json:"ask"`
}

// TradeFromTick is t as the API shows it.
func TradeFromTick(t *market.Tick) Trade {
	tr := Trade{TS: t.TS, Seq: t.Seq, Price: t.Price, Size: t.Size}
	if t.HasQuote() {
		bid, ask := t.Bid, t.Ask
		tr.Bid, tr.Ask = &bid, &ask
	}
	return tr
}

// Anomaly is a stored anomaly as the API shows it.
type Anomaly struct {
	Symbol    string    `json:"symbol"`
	TS        time.Time `json:"ts"`
	Kind      string    `json:"kind"`
	Severity  string    `json:"severity"`
	Value     float64   `json:"value"`
	Threshold float64   `json:"threshold"`
	Detail    string    `json:"detail"`
}

// Quote is one line of the watchlist.
type Quote struct {
	Symbol       string    `json:"symbol"`
	Last         float64   `json:"last"`
	TS           time.Time `json:"ts"`
	DayOpen      float64   `json:"day_open"`
	Change       float64   `json:"change"`
	ChangePct    float64   `json:"change_pct"`
	Volume       int64     `json:"volume"`
	Bucket       time.Time `json:"bucket"`
	BucketVolume int64     `json:"bucket_volume"`
	Spark        []float64 `json:"spark"`
	// PrevClose is the close of the symbol's previous trading day: its
	// last 1d candle before the day of Bucket (the regular session's
	// close), else its last 1m candle before that day; nil when it has
	// no earlier day.
	PrevClose *float64 `json:"prev_close"`
}

// Reader runs the read queries behind the API. Every query is parameterised.
type Reader struct {
	pool *pgxpool.Pool
}

// NewReader returns a Reader on pool.
func NewReader(pool *pgxpool.Pool) *Reader { return &Reader{pool: pool} }

// Ping checks that the database answers.
func (r *Reader) Ping(ctx context.Context) error { return r.pool.Ping(ctx) }

// KnownSymbol reports whether the stream has seen sym.
func (r *Reader) KnownSymbol(ctx context.Context, sym string) (bool, error) {
	var ok bool
	err := r.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM symbols WHERE symbol = $1)`, sym).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("looking up symbol: %w", err)
	}
	return ok, nil
}

// Quotes returns the watchlist: per symbol the last trade, the change since
// the day's first trade (New York day of the last trade), the day's volume
// and the closes of the latest 60 one-minute candles. With sym not empty,
// only that symbol's line (none if the symbol has no trades yet).
func (r *Reader) Quotes(ctx context.Context, sym string) ([]Quote, error) {
	var symArg *string
	if sym != "" {
		symArg = &sym
	}
	rows, err := r.pool.Query(ctx, `
		SELECT s.symbol, t.price, t.ts, l.bucket, l.volume, d.open, d.volume, sp.closes,
		       coalesce(pd.close, pm.close)
		FROM symbols s
		CROSS JOIN LATERAL (SELECT price, ts FROM ticks WHERE symbol = s.symbol ORDER BY ts DESC, seq DESC LIMIT 1) t
		CROSS JOIN LATERAL (SELECT bucket, volume FROM candles
			WHERE symbol = s.symbol AND interval = '1m' ORDER BY bucket DESC LIMIT 1) l
		CROSS JOIN LATERAL (SELECT (array_agg(open ORDER BY bucket))[1] AS open, sum(volume)::bigint AS volume FROM candles
			WHERE symbol = s.symbol AND interval = '1m'
			  AND bucket >= (date_trunc('day', l.bucket AT TIME ZONE $2) AT TIME ZONE $2)) d
		CROSS JOIN LATERAL (SELECT array_agg(close ORDER BY bucket) AS closes FROM (
			SELECT bucket, close FROM candles WHERE symbol = s.symbol AND interval = '1m'
			ORDER BY bucket DESC LIMIT 60) x) sp
		LEFT JOIN LATERAL (SELECT close FROM candles WHERE symbol = s.symbol AND interval = '1d'
			AND bucket < (date_trunc('day', l.bucket AT TIME ZONE $2) AT TIME ZONE $2)
			ORDER BY bucket DESC LIMIT 1) pd ON true
		LEFT JOIN LATERAL (SELECT close FROM candles WHERE symbol = s.symbol AND interval = '1m'
			AND bucket < (date_trunc('day', l.bucket AT TIME ZONE $2) AT TIME ZONE $2)
			ORDER BY bucket DESC LIMIT 1) pm ON true
		WHERE $1::text IS NULL OR s.symbol = $1
		ORDER BY s.symbol`, symArg, market.ExchangeZone)
	if err != nil {
		return nil, fmt.Errorf("reading quotes: %w", err)
	}
	out := []Quote{}
	var q Quote
	_, err = pgx.ForEachRow(rows, []any{&q.Symbol, &q.Last, &q.TS, &q.Bucket, &q.BucketVolume, &q.DayOpen, &q.Volume, &q.Spark, &q.PrevClose}, func() error {
		q.Change = q.Last - q.DayOpen
		if q.DayOpen != 0 {
			q.ChangePct = 100 * q.Change / q.DayOpen
		}
		out = append(out, q)
		q.Spark, q.PrevClose = nil, nil
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading quotes: %w", err)
	}
	return out, nil
}

// CandleQuery selects candles: those of Symbol and Interval with From <=
// bucket <= To (a zero From or To is open-ended), at most Limit of them.
// With From, they are the oldest from From on, so that a client pages
// forward by asking again from after the last one; without From, the
// newest up to To (or the latest), which is what a chart shows, and a
// client pages backward by asking again up to before the first one.
type CandleQuery struct {
	Symbol   string
	Interval string
	From, To time.Time
	Limit    int
}

// Forward reports whether q pages forward in time: it has a From.
func (q CandleQuery) Forward() bool { return !q.From.IsZero() }

// Candles returns the candles q selects, in ascending bucket order, and
// whether more candles beyond them match q's bounds in its direction:
// after the last one when q.Forward(), before the first one otherwise.
func (r *Reader) Candles(ctx context.Context, q CandleQuery) (candles []Candle, more bool, err error) {
	var from, to *time.Time
	if !q.From.IsZero() {
		from = &q.From
	}
	if !q.To.IsZero() {
		to = &q.To
	}
	order := "DESC"
	if q.Forward() {
		order = "ASC"
	}
	// One row more than asked tells whether the answer is truncated, so
	// that a page that ends exactly at the last candle does not announce
	// an empty next page.
	rows, err := r.pool.Query(ctx, `
		SELECT bucket, open, high, low, close, volume, vwap, trades,
		       sma_5, sma_20, ema_12, ema_26, bb_upper, bb_lower, rsi_14, final
		FROM candles
		WHERE symbol = $1 AND interval = $2
		  AND ($3::timestamptz IS NULL OR bucket >= $3) AND ($4::timestamptz IS NULL OR bucket <= $4)
		ORDER BY bucket `+order+` LIMIT $5`, q.Symbol, q.Interval, from, to, q.Limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("reading candles: %w", err)
	}
	out := []Candle{}
	var c Candle
	_, err = pgx.ForEachRow(rows, []any{&c.Bucket, &c.Open, &c.High, &c.Low, &c.Close, &c.Volume, &c.VWAP, &c.Trades,
		&c.SMA5, &c.SMA20, &c.EMA12, &c.EMA26, &c.BBUpper, &c.BBLower, &c.RSI14, &c.Final}, func() error {
		c.Bucket = c.Bucket.UTC()
		c.T = c.Bucket.Unix()
		out = append(out, c)
		c = Candle{}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("reading candles: %w", err)
	}
	if more = len(out) > q.Limit; more {
		out = out[:q.Limit]
	}
	if order == "DESC" {
		slices.Reverse(out)
	}
	return out, more, nil
}

// Trades returns a symbol's latest trades, newest first.
func (r *Reader) Trades(ctx context.Context, sym string, limit int) ([]Trade, error) {
	rows, err := r.pool.Query(ctx, `SELECT ts, seq, price, size, bid, ask FROM ticks
		WHERE symbol = $1 ORDER BY ts DESC, seq DESC LIMIT $2`, sym, limit)
	if err != nil {
		return nil, fmt.Errorf("reading trades: %w", err)
	}
	out := []Trade{}
	var t Trade
	// Bid and Ask scan as nil from the NULLs of a tick without a quote,
	// and into a new float64 each otherwise, so rows share nothing.
	_, err = pgx.ForEachRow(rows, []any{&t.TS, &t.Seq, &t.Price, &t.Size, &t.Bid, &t.Ask}, func() error {
		t.TS = t.TS.UTC()
		out = append(out, t)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading trades: %w", err)
	}
	return out, nil
}

// Anomalies returns anomalies newest first, of one symbol if sym is not
// empty, since the given time if it is not zero.
func (r *Reader) Anomalies(ctx context.Context, sym string, since time.Time, limit int) ([]Anomaly, error) {
	var symArg *string
	if sym != "" {
		symArg = &sym
	}
	var sinceArg *time.Time
	if !since.IsZero() {
		sinceArg = &since
	}
	rows, err := r.pool.Query(ctx, `SELECT symbol, ts, kind, severity, value, threshold, detail FROM anomalies
		WHERE ($1::text IS NULL OR symbol = $1) AND ($2::timestamptz IS NULL OR ts >= $2)
		ORDER BY ts DESC, id DESC LIMIT $3`, symArg, sinceArg, limit)
	if err != nil {
		return nil, fmt.Errorf("reading anomalies: %w", err)
	}
	out := []Anomaly{}
	var a Anomaly
	_, err = pgx.ForEachRow(rows, []any{&a.Symbol, &a.TS, &a.Kind, &a.Severity, &a.Value, &a.Threshold, &a.Detail}, func() error {
		a.TS = a.TS.UTC()
		out = append(out, a)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading anomalies: %w", err)
	}
	return out, nil
}

// ReasonCount is how many records were rejected for one reason.
type ReasonCount struct {
	Reason string `json:"reason"`
	Count  int64  `json:"count"`
}

// RejectedByReason counts rejected records by reason, most frequent first.
func (r *Reader) RejectedByReason(ctx context.Context) ([]ReasonCount, error) {
	rows, err := r.pool.Query(ctx, `SELECT reason, count(*) FROM rejected_ticks GROUP BY reason ORDER BY 2 DESC, 1`)
	if err != nil {
		return nil, fmt.Errorf("counting rejected records: %w", err)
	}
	out := []ReasonCount{}
	var rc ReasonCount
	_, err = pgx.ForEachRow(rows, []any{&rc.Reason, &rc.Count}, func() error {
		out = append(out, rc)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("counting rejected records: %w", err)
	}
	return out, nil
}

// Rejection is a rejected record as the pipeline page shows it. Raw holds
// the original bytes escaped (Go-quoted, at most 512 bytes of the input), so
// invalid UTF-8 and control characters are visible rather than mangled.
type Rejection struct {
	ReceivedAt time.Time `json:"received_at"`
	Topic      string    `json:"topic"`
	Partition  int32     `json:"partition"`
	Offset     int64     `json:"offset"`
	Reason     string    `json:"reason"`
	Detail     string    `json:"detail"`
	Raw        string    `json:"raw"`
}

// LatestRejected returns the newest rejected records.
func (r *Reader) LatestRejected(ctx context.Context, limit int) ([]Rejection, error) {
	rows, err := r.pool.Query(ctx, `SELECT received_at, topic, partition, "offset", reason, detail, substring(raw FROM 1 FOR 513)
		FROM rejected_ticks ORDER BY id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("reading rejected records: %w", err)
	}
	out := []Rejection{}
	var x Rejection
	var raw []byte
	_, err = pgx.ForEachRow(rows, []any{&x.ReceivedAt, &x.Topic, &x.Partition, &x.Offset, &x.Reason, &x.Detail, &raw}, func() error {
		more := len(raw) > 512
		if more {
			raw = raw[:512]
		}
		x.Raw = strconv.QuoteToASCII(string(raw))
		x.Raw = x.Raw[1 : len(x.Raw)-1]
		if more {
			x.Raw += "…"
		}
		x.ReceivedAt = x.ReceivedAt.UTC()
		out = append(out, x)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading rejected records: %w", err)
	}
	return out, nil
}

// Table is a table's size on disk and its row count: exact for small
// tables, PostgreSQL's live-row statistic for large ones.
type Table struct {
	Name      string `json:"name"`
	SizeBytes int64  `json:"size_bytes"`
	Rows      int64  `json:"rows"`
	// RowsExact is false when Rows is pg_stat_user_tables.n_live_tup:
	// kept current by every insert and delete (no ANALYZE needed), but
	// it can trail the truth by the last second's writes.
	RowsExact bool `json:"rows_exact"`
}

// ExactRowsBelow is the heap size under which Tables counts a table's rows
// exactly. Counting a few MiB takes milliseconds; above that a count(*)
// every sample would scan ever more, and the statistic is close enough.
const ExactRowsBelow = 16 << 20

// Tables returns the sizes and row counts of stockpipe's tables, largest
// first. The planner's estimate (pg_class.reltuples) is not used: it is
// zero until the first ANALYZE, which made small tables look empty. A
// partitioned table (ticks and rejected_ticks, by day) is the sum of its
// partitions, which hold its rows: the table itself has no storage.
func (r *Reader) Tables(ctx context.Context) ([]Table, error) {
	rows, err := r.pool.Query(ctx, `SELECT c.relname, coalesce(p.bytes, 0)::bigint, coalesce(p.heap < $1, true), coalesce(p.live, 0)::bigint
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		CROSS JOIN LATERAL (
			SELECT sum(pg_total_relation_size(l.oid)) AS bytes, sum(pg_relation_size(l.oid)) AS heap, sum(s.n_live_tup) AS live
			FROM (SELECT c.oid WHERE c.relkind = 'r'
			      UNION ALL SELECT relid FROM pg_partition_tree(c.oid) WHERE isleaf) l (oid)
			LEFT JOIN pg_stat_user_tables s ON s.relid = l.oid) p
		WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname = current_schema()
		  AND c.relname IN ('ticks', 'candles', 'anomalies', 'rejected_ticks', 'consumer_offsets', 'symbols')
		ORDER BY 2 DESC, 1`, ExactRowsBelow)
	if err != nil {
		return nil, fmt.Errorf("reading table sizes: %w", err)
	}
	out := []Table{}
	var t Table
	_, err = pgx.ForEachRow(rows, []any{&t.Name, &t.SizeBytes, &t.RowsExact, &t.Rows}, func() error {
		out = append(out, t)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading table sizes: %w", err)
	}
	// One statement counts every small table.
	var counts []string
	idx := map[string]int{}
	for i, t := range out {
		if t.RowsExact {
			idx[t.Name] = i
			counts = append(counts, "SELECT "+quoteLiteral(t.Name)+"::text, count(*) FROM "+pgx.Identifier{t.Name}.Sanitize())
		}
	}
	if len(counts) == 0 {
		return out, nil
	}
	rows, err = r.pool.Query(ctx, strings.Join(counts, " UNION ALL "))
	if err != nil {
		return nil, fmt.Errorf("counting rows: %w", err)
	}
	var name string
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&name, &n}, func() error {
		out[idx[name]].Rows = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("counting rows: %w", err)
	}
	return out, nil
}

// quoteLiteral quotes one of the fixed table names above as an SQL string.
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// FailedRuns counts the DAG runs that failed since the given time, dated by
// when they finished (or started, or were created, for a run that failed
// before reaching those steps).
func (r *Reader) FailedRuns(ctx context.Context, since time.Time) (int64, error) {
	var n int64
	err := r.pool.QueryRow(ctx, `SELECT count(*) FROM dag_runs
		WHERE state = 'failed' AND coalesce(finished_at, started_at, created_at) >= $1`, since).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting failed DAG runs: %w", err)
	}
	return n, nil
}

// Detections returns stored anomalies of the given kinds (all kinds if none)
// with ts in [from, to] (open-ended where zero), reduced to what scoring
// against ground truth matches on.
func (r *Reader) Detections(ctx context.Context, kinds []string, from, to time.Time) ([]anomaly.Labeled, error) {
	var fromArg, toArg *time.Time
	if !from.IsZero() {
		fromArg = &from
	}
	if !to.IsZero() {
		toArg = &to
	}
	rows, err := r.pool.Query(ctx, `SELECT symbol, kind, ts FROM anomalies
		WHERE ($1::text[] IS NULL OR cardinality($1::text[]) = 0 OR kind = ANY($1))
		  AND ($2::timestamptz IS NULL OR ts >= $2) AND ($3::timestamptz IS NULL OR ts <= $3)`, kinds, fromArg, toArg)
	if err != nil {
		return nil, fmt.Errorf("reading anomalies: %w", err)
	}
	var out []anomaly.Labeled
	var l anomaly.Labeled
	var kind string
	_, err = pgx.ForEachRow(rows, []any{&l.Symbol, &kind, &l.TS}, func() error {
		l.Kind = anomaly.Kind(kind)
		out = append(out, l)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading anomalies: %w", err)
	}
	return out, nil
}
