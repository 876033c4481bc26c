package store

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/analytics"
	"github.com/stockpipe/stockpipe/internal/anomaly"
	"github.com/stockpipe/stockpipe/internal/market"
)

// ErrFenced means another consumer committed a partition since this one read
// its offset: the partition has moved, and this batch must not be stored.
var ErrFenced = errors.New("partition offset moved: another processor owns it now")

// TickRow is a valid tick and where it came from.
type TickRow struct {
	market.Tick
	Partition int32
	Offset    int64
	// Raw is the record as it arrived, and RecordTS its Kafka timestamp,
	// not stored with the tick: they are what the dead-letter path gets if
	// PostgreSQL refuses the row.
	Raw      []byte
	RecordTS time.Time
}

// Rejected is a record that did not become a tick.
type Rejected struct {
	Topic     string
	Partition int32
	Offset    int64
	// RecordTS is the Kafka record's timestamp: the same on every
	// delivery of the record, it is rejected_ticks' partition key and
	// part of its unique key (topic, partition, offset, record_ts), which
	// keeps a record delivered again after a crash from being stored
	// twice. One before 1970 or after 9999 (none given) is stored as
	// 1970-01-01 (see RecordTime).
	RecordTS time.Time
	Reason   market.Reason
	Detail   string
	Key      []byte
	Raw      []byte
}

var (
	minRecordTS = time.Unix(0, 0).UTC()
	maxRecordTS = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
)

// RecordTime is the record_ts a rejected record with Kafka timestamp t is
// stored with: t to the microsecond PostgreSQL keeps, or 1970-01-01 for a
// timestamp outside 1970–9999 (a record without one reads as 1969), which
// a timestamptz may not hold or which would make a partition for any
// garbage value. It depends on t alone, so every delivery of a record gets
// the same.
func RecordTime(t time.Time) time.Time {
	if t.Before(minRecordTS) || !t.Before(maxRecordTS) {
		return minRecordTS
	}
	return t.UTC().Truncate(time.Microsecond)
}

// PartitionCommit moves one partition's stored position from Expected to
// Next. Expected is the next_offset the processor read when it was assigned
// the partition (or last committed), -1 if there was no row.
type PartitionCommit struct {
	Partition int32
	Expected  int64
	Next      int64
	// State, if not nil, is a checkpoint of the partition's analytics
	// state as it stands at StateOffset (every record before it applied).
	// Nil keeps the stored checkpoint.
	State       []byte
	StateOffset int64
}

// Batch is everything one processor transaction stores.
type Batch struct {
	Group    string
	Topic    string
	Ticks    []TickRow
	Rejected []Rejected
	Offsets  []PartitionCommit
	// Candles are upserted by (symbol, interval, bucket); a key must not
	// appear twice in one batch.
	Candles   []analytics.CandleRow
	Anomalies []anomaly.Anomaly
	// Meta, if set, is announced to live listeners with the batch.
	Meta *BatchMeta

	// column buffers reused across commits
	cols tickColumns
	rej  rejectedColumns
	cnd  candleColumns
	anm  anomalyColumns
	// the UTC days of the ticks and of the rejected records, and those
	// without a known partition (see Sink.ensure)
	tickDays, rejDays, missing []int64
}

// Reset empties b for reuse, keeping its buffers.
func (b *Batch) Reset() {
	b.Ticks = b.Ticks[:0]
	b.Rejected = b.Rejected[:0]
	b.Offsets = b.Offsets[:0]
	b.Candles = b.Candles[:0]
	b.Anomalies = b.Anomalies[:0]
	b.Meta = nil
}

// CommitResult says what a commit stored.
type CommitResult struct {
	Inserted   int64 // new tick rows
	Duplicates int64 // ticks whose (symbol, ts, seq) was already stored
	Anomalies  int64 // new anomaly rows
}

// Offset is a stored consumer position and the last checkpoint of the
// partition's state.
type Offset struct {
	Next int64
	// State stands at StateOffset ≤ Next: the records from StateOffset to
	// Next are stored but must be replayed to rebuild the state.
	State       []byte
	StateOffset int64
}

// Sink writes processor batches to PostgreSQL exactly once.
type Sink struct {
	pool *pgxpool.Pool
	// conflictFree counts batches since COPY last met a stored tick; below
	// zero, COPY is paused.
	conflictFree atomic.Int64
	// parts remembers the day partitions known to exist.
	parts partitionCache
}

// NewSink returns a Sink writing through pool.
func NewSink(pool *pgxpool.Pool) *Sink { return &Sink{pool: pool} }

// LoadOffsets returns the stored positions of group in topic for the given
// partitions; a partition without a row is absent from the map.
func (s *Sink) LoadOffsets(ctx context.Context, group, topic string, partitions []int32) (map[int32]Offset, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT partition, next_offset, state, coalesce(state_offset, next_offset) FROM consumer_offsets
		 WHERE group_id = $1 AND topic = $2 AND partition = ANY($3)`, group, topic, partitions)
	if err != nil {
		return nil, fmt.Errorf("loading offsets of group %s: %w", group, err)
	}
	out := make(map[int32]Offset, len(partitions))
	var (
		p  int32
		o  Offset
		st []byte
	)
	_, err = pgx.ForEachRow(rows, []any{&p, &o.Next, &st, &o.StateOffset}, func() error {
		out[p] = Offset{Next: o.Next, State: append([]byte(nil), st...), StateOffset: min(o.StateOffset, o.Next)}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("loading offsets of group %s: %w", group, err)
	}
	return out, nil
}

// StoredTick says where a stored tick came from: its Kafka partition and
// offset.
type StoredTick struct {
	Partition int32
	Offset    int64
}

// FindTick returns where the tick (symbol, ts, seq) was stored from, and
// false if it is not stored. The processor asks for seqs older than it
// remembers, to tell a resend (stored by an earlier record) from a tick it
// has never taken. A resend carries the tick's ts, which makes the lookup
// one probe of the primary key in one day partition; a stored (symbol,
// seq) with another ts is another tick.
func (s *Sink) FindTick(ctx context.Context, symbol string, ts time.Time, seq int64) (StoredTick, bool, error) {
	var st StoredTick
	err := s.pool.QueryRow(ctx, `SELECT kafka_partition, kafka_offset FROM ticks WHERE symbol = $1 AND ts = $2 AND seq = $3`,
		symbol, ts, seq).Scan(&st.Partition, &st.Offset)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, false, nil
	}
	if err != nil {
		return st, false, fmt.Errorf("looking up tick %s %d at %s: %w", symbol, seq, ts.Format(time.RFC3339Nano), err)
	}
	return st, true, nil
}

// ensure makes sure the day partitions the batch's ticks and rejected
// records go to exist, before its transaction: days the sink has seen
// made cost a lookup in memory, others a query and, where missing, a short
// transaction of their own (see partition.go).
func (s *Sink) ensure(ctx context.Context, b *Batch) error {
	b.tickDays = appendDays(b.tickDays[:0], len(b.Ticks), func(i int) time.Time { return b.Ticks[i].TS })
	b.rejDays = appendDays(b.rejDays[:0], len(b.Rejected), func(i int) time.Time { return RecordTime(b.Rejected[i].RecordTS) })
	for _, t := range []struct {
		table string
		days  []int64
	}{{TicksTable, b.tickDays}, {RejectedTable, b.rejDays}} {
		b.missing = s.parts.missing(b.missing[:0], t.table, t.days)
		if len(b.missing) == 0 {
			continue
		}
		if err := ensureDays(ctx, s.pool, t.table, b.missing); err != nil {
			return err
		}
		s.parts.add(t.table, b.missing)
	}
	return nil
}

// Commit stores the batch in one transaction: tick rows (duplicates of stored
// (symbol, ts, seq) skipped), rejected records, and the partitions' new
// offsets and state. If any partition's stored offset is not the one the
// batch expects, nothing is stored and the error wraps ErrFenced.
//
// The day partitions the rows go to are made first, each in a short
// transaction of its own (ensure). Should one the sink knew be gone —
// retention dropped the day since — the sink forgets what it knew and
// makes them again.
//
// The ticks go straight into their table by binary COPY, PostgreSQL's
// fastest way in (multi-row heap inserts, no per-row executor), and the
// rest of the batch follows in one pipelined round trip. COPY cannot skip a
// tick already stored; the processor drops resends it remembers, so that is
// rare, and when it happens the transaction is redone with INSERT … SELECT
// FROM unnest($arrays) ON CONFLICT DO NOTHING, which the sink then keeps
// using for a while.
func (s *Sink) Commit(ctx context.Context, b *Batch) (CommitResult, error) {
	if err := s.ensure(ctx, b); err != nil {
		return CommitResult{}, err
	}
	res, err := s.commitRows(ctx, b)
	if isNoPartition(err) {
		s.parts.forget()
		if err := s.ensure(ctx, b); err != nil {
			return CommitResult{}, err
		}
		res, err = s.commitRows(ctx, b)
	}
	return res, err
}

// commitRows is Commit once the partitions are made.
func (s *Sink) commitRows(ctx context.Context, b *Batch) (CommitResult, error) {
	useCopy := len(b.Ticks) >= minCopy && s.conflictFree.Load() >= 0
	if useCopy {
		res, err := s.commit(ctx, b, true)
		if !errors.Is(err, errTickConflict) {
			return res, err
		}
		// Skip COPY for the next batches: resends come in runs.
		s.conflictFree.Store(-copyPause)
	} else if len(b.Ticks) >= minCopy {
		s.conflictFree.Add(1)
	}
	return s.commit(ctx, b, false)
}

const (
	// minCopy is the batch size from which COPY pays for its extra round
	// trip.
	minCopy = 64
	// copyPause is how many batches go the ON CONFLICT way after COPY met
	// a stored tick.
	copyPause = 50
)

// errTickConflict is COPY meeting a (symbol, ts, seq) already stored.
var errTickConflict = errors.New("a tick of the batch is already stored")

func (s *Sink) commit(ctx context.Context, b *Batch, copyTicks bool) (CommitResult, error) {
	var res CommitResult
	pb := &pgx.Batch{}
	for _, o := range b.Offsets {
		// A nil State leaves the stored checkpoint as it is.
		var state any
		if o.State != nil {
			state = o.State
		}
		var q *pgx.QueuedQuery
		if o.Expected < 0 {
			q = pb.Queue(`INSERT INTO consumer_offsets (group_id, topic, partition, next_offset, state, state_offset)
				VALUES ($1, $2, $3, $4, $5, CASE WHEN $5::bytea IS NULL THEN NULL ELSE $6::bigint END) ON CONFLICT DO NOTHING`,
				b.Group, b.Topic, o.Partition, o.Next, state, o.StateOffset)
		} else {
			q = pb.Queue(`UPDATE consumer_offsets SET next_offset = $4, updated_at = now(),
					state = coalesce($5::bytea, state),
					state_offset = CASE WHEN $5::bytea IS NULL THEN coalesce(state_offset, next_offset) ELSE $7::bigint END
				WHERE group_id = $1 AND topic = $2 AND partition = $3 AND next_offset = $6`,
				b.Group, b.Topic, o.Partition, o.Next, state, o.Expected, o.StateOffset)
		}
		onResult(q, func(tag pgconn.CommandTag, err error) error {
			if err != nil {
				return fmt.Errorf("storing offset of partition %d: %w", o.Partition, err)
			}
			// No row: the stored offset is not the one expected (or, for
			// a first commit, a row exists already), so another consumer
			// has committed the partition since.
			if tag.RowsAffected() != 1 {
				return fmt.Errorf("partition %d expected at offset %d: %w", o.Partition, o.Expected, ErrFenced)
			}
			return nil
		})
	}
	if len(b.Ticks) > 0 && !copyTicks {
		c := b.cols.fill(b.Ticks)
		onResult(pb.Queue(insertTicksSQL, c.symbol, c.seq, c.ts, c.price, c.size, c.bid, c.ask, c.partition, c.offset),
			func(tag pgconn.CommandTag, err error) error {
				if err != nil {
					return fmt.Errorf("inserting %d ticks: %w", len(b.Ticks), refused("ticks", err))
				}
				res.Inserted = tag.RowsAffected()
				res.Duplicates = int64(len(b.Ticks)) - res.Inserted
				return nil
			})
	}
	if len(b.Rejected) > 0 {
		r := b.rej.fill(b.Rejected)
		onResult(pb.Queue(`INSERT INTO rejected_ticks (topic, partition, "offset", record_ts, reason, detail, key, raw)
			SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::timestamptz[], $5::text[], $6::text[], $7::bytea[], $8::bytea[])
			ON CONFLICT (topic, partition, "offset", record_ts) DO NOTHING`,
			r.topic, r.partition, r.offset, r.recordTS, r.reason, r.detail, r.key, r.raw),
			func(_ pgconn.CommandTag, err error) error {
				if err != nil {
					return fmt.Errorf("inserting %d rejected records: %w", len(b.Rejected), refused("rejected_ticks", err))
				}
				return nil
			})
	}
	if len(b.Candles) > 0 {
		c := b.cnd.fill(b.Candles)
		onResult(pb.Queue(`INSERT INTO candles (symbol, interval, bucket, open, high, low, close, volume, vwap, trades,
				sma_5, sma_20, ema_12, ema_26, bb_upper, bb_lower, rsi_14, final)
			SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::float8[], $5::float8[], $6::float8[],
			                     $7::float8[], $8::bigint[], $9::float8[], $10::bigint[], $11::float8[], $12::float8[],
			                     $13::float8[], $14::float8[], $15::float8[], $16::float8[], $17::float8[], $18::bool[])
			ON CONFLICT (symbol, interval, bucket) DO UPDATE SET
				open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
				volume = excluded.volume, vwap = excluded.vwap, trades = excluded.trades,
				sma_5 = excluded.sma_5, sma_20 = excluded.sma_20, ema_12 = excluded.ema_12, ema_26 = excluded.ema_26,
				bb_upper = excluded.bb_upper, bb_lower = excluded.bb_lower, rsi_14 = excluded.rsi_14,
				final = excluded.final, updated_at = now()`,
			c.symbol, c.interval, c.bucket, c.open, c.high, c.low, c.close, c.volume, c.vwap, c.trades,
			c.sma5, c.sma20, c.ema12, c.ema26, c.bbUpper, c.bbLower, c.rsi14, c.final),
			func(_ pgconn.CommandTag, err error) error {
				if err != nil {
					return fmt.Errorf("upserting %d candles: %w", len(b.Candles), refused("candles", err))
				}
				return nil
			})
	}
	if len(b.Anomalies) > 0 {
		a := b.anm.fill(b.Anomalies)
		onResult(pb.Queue(`INSERT INTO anomalies (symbol, ts, kind, severity, value, threshold, detail)
			SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::float8[], $6::float8[], $7::text[])
			ON CONFLICT (symbol, ts, kind) DO NOTHING`,
			a.symbol, a.ts, a.kind, a.severity, a.value, a.threshold, a.detail),
			func(tag pgconn.CommandTag, err error) error {
				if err != nil {
					return fmt.Errorf("inserting %d anomalies: %w", len(b.Anomalies), refused("anomalies", err))
				}
				res.Anomalies = tag.RowsAffected()
				return nil
			})
	}
	if len(b.Candles) > 0 {
		// New symbols become listable; known ones cost an index probe.
		onResult(pb.Queue(`INSERT INTO symbols (symbol) SELECT DISTINCT unnest($1::text[]) ON CONFLICT DO NOTHING`, b.cnd.symbol),
			func(_ pgconn.CommandTag, err error) error {
				if err != nil {
					return fmt.Errorf("registering symbols: %w", err)
				}
				return nil
			})
	}
	notes, err := payloads(b)
	if err != nil {
		return CommitResult{}, fmt.Errorf("encoding live updates: %w", err)
	}
	for _, n := range notes {
		onResult(pb.Queue(`SELECT pg_notify($1, $2)`, Channel, n), func(_ pgconn.CommandTag, err error) error {
			if err != nil {
				return fmt.Errorf("notifying listeners: %w", err)
			}
			return nil
		})
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if copyTicks && len(b.Ticks) > 0 {
			n, err := tx.CopyFrom(ctx, pgx.Identifier{"ticks"}, tickCopyColumns, &tickSource{rows: b.Ticks, i: -1})
			if err != nil {
				var pe *pgconn.PgError
				if errors.As(err, &pe) && pe.Code == "23505" { // unique_violation
					return errTickConflict
				}
				return fmt.Errorf("copying %d ticks: %w", len(b.Ticks), refused("ticks", err))
			}
			res.Inserted = n
		}
		// Close reads the results in order and stops at the first
		// statement whose handler fails; the transaction is then rolled
		// back whole.
		return tx.SendBatch(ctx, pb).Close()
	})
	if err != nil {
		return CommitResult{}, err
	}
	return res, nil
}

// onResult has fn handle the outcome of the queued statement q, its command
// tag or its error, where the statement is queued. QueuedQuery.Exec would
// be the obvious callback, but it is called only on success: a failure
// comes back bare from BatchResults.Close, no longer saying which
// statement it belongs to — and whether it is the ticks that PostgreSQL
// refused decides whether the processor isolates the rows. Query's
// callback sees the failure too, and for a statement without rows reads
// the same single result.
func onResult(q *pgx.QueuedQuery, fn func(pgconn.CommandTag, error) error) {
	q.Query(func(rows pgx.Rows) error {
		rows.Close()
		return fn(rows.CommandTag(), rows.Err())
	})
}

const insertTicksSQL = `INSERT INTO ticks (symbol, seq, ts, price, size, bid, ask, kafka_partition, kafka_offset)
	SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::float8[], $5::bigint[],
	                     $6::float8[], $7::float8[], $8::int[], $9::bigint[])
	ON CONFLICT (symbol, ts, seq) DO NOTHING`

var tickCopyColumns = []string{"symbol", "seq", "ts", "price", "size", "bid", "ask", "kafka_partition", "kafka_offset"}

// tickSource feeds COPY from the rows in place, one reused row of values.
type tickSource struct {
	rows []TickRow
	i    int
	vals [9]any
}

func (t *tickSource) Next() bool { t.i++; return t.i < len(t.rows) }
func (t *tickSource) Err() error { return nil }
func (t *tickSource) Values() ([]any, error) {
	r := &t.rows[t.i]
	t.vals = [9]any{r.Symbol, r.Seq, r.TS, r.Price, r.Size, nil, nil, r.Partition, r.Offset}
	if r.HasQuote() {
		t.vals[5], t.vals[6] = r.Bid, r.Ask
	} // else NULL: a trade-only feed's tick has no quote
	return t.vals[:], nil
}

// tickColumns holds a batch's ticks column by column, the shape unnest takes.
type tickColumns struct {
	symbol    []string
	seq       []int64
	ts        []time.Time
	price     []float64
	size      []int64
	bid       []pgtype.Float8 // not Valid (NULL) for a tick without a quote
	ask       []pgtype.Float8
	partition []int32
	offset    []int64
}

func (c *tickColumns) fill(rows []TickRow) *tickColumns {
	c.symbol, c.seq, c.ts = c.symbol[:0], c.seq[:0], c.ts[:0]
	c.price, c.size, c.bid, c.ask = c.price[:0], c.size[:0], c.bid[:0], c.ask[:0]
	c.partition, c.offset = c.partition[:0], c.offset[:0]
	for i := range rows {
		r := &rows[i]
		c.symbol = append(c.symbol, r.Symbol)
		c.seq = append(c.seq, r.Seq)
		c.ts = append(c.ts, r.TS)
		c.price = append(c.price, r.Price)
		c.size = append(c.size, r.Size)
		q := r.HasQuote()
		c.bid = append(c.bid, pgtype.Float8{Float64: r.Bid, Valid: q})
		c.ask = append(c.ask, pgtype.Float8{Float64: r.Ask, Valid: q})
		c.partition = append(c.partition, r.Partition)
		c.offset = append(c.offset, r.Offset)
	}
	return c
}

type rejectedColumns struct {
	topic     []string
	partition []int32
	offset    []int64
	recordTS  []time.Time
	reason    []string
	detail    []string
	key       [][]byte
	raw       [][]byte
}

func (c *rejectedColumns) fill(rows []Rejected) *rejectedColumns {
	c.topic, c.partition, c.offset, c.recordTS = c.topic[:0], c.partition[:0], c.offset[:0], c.recordTS[:0]
	c.reason, c.detail, c.key, c.raw = c.reason[:0], c.detail[:0], c.key[:0], c.raw[:0]
	for i := range rows {
		r := &rows[i]
		c.topic = append(c.topic, r.Topic)
		c.partition = append(c.partition, r.Partition)
		c.offset = append(c.offset, r.Offset)
		c.recordTS = append(c.recordTS, RecordTime(r.RecordTS))
		c.reason = append(c.reason, string(r.Reason))
		c.detail = append(c.detail, r.Detail)
		c.key = append(c.key, r.Key)
		c.raw = append(c.raw, r.Raw)
	}
	return c
}
