package loadtest

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// tickRow is one stored tick, as read back for the baselines.
type tickRow struct {
	symbol    string
	seq       int64
	ts        time.Time
	price     float64
	size      int64
	bid, ask  *float64 // nil (NULL) for a tick without a quote
	partition int32
	offset    int64
	ingested  time.Time
}

var tickColumns = []string{"symbol", "seq", "ts", "price", "size", "bid", "ask", "kafka_partition", "kafka_offset", "ingested_at"}

func (r *tickRow) values(dst []any) []any {
	return append(dst[:0], r.symbol, r.seq, r.ts, r.price, r.size, r.bid, r.ask, r.partition, r.offset, r.ingested)
}

const (
	copyTable  = "ticks_loadtest_copy"
	naiveTable = "ticks_loadtest_naive"
)

// runBaselines writes the stored ticks again, once with a binary COPY and
// once (the first naiveRows of them) with one autocommitted INSERT per row,
// each into a copy of the ticks table with its keys, checks and indexes.
func runBaselines(ctx context.Context, pool *pgxpool.Pool, naiveRows int, rep *Report) (err error) {
	rows, err := pool.Query(ctx, "SELECT symbol, seq, ts, price, size, bid, ask, kafka_partition, kafka_offset, ingested_at FROM ticks")
	if err != nil {
		return fmt.Errorf("reading ticks back: %w", err)
	}
	ticks := make([]tickRow, 0, rep.Stored)
	var r tickRow
	_, err = pgx.ForEachRow(rows, []any{&r.symbol, &r.seq, &r.ts, &r.price, &r.size, &r.bid, &r.ask, &r.partition, &r.offset, &r.ingested}, func() error {
		ticks = append(ticks, r)
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading ticks back: %w", err)
	}
	if len(ticks) == 0 {
		return fmt.Errorf("no ticks were stored")
	}

	for _, t := range []string{copyTable, naiveTable} {
		if _, err := pool.Exec(ctx, "DROP TABLE IF EXISTS "+t+"; CREATE TABLE "+t+" (LIKE ticks INCLUDING ALL)"); err != nil {
			return fmt.Errorf("creating %s: %w", t, err)
		}
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, derr := pool.Exec(dctx, "DROP TABLE IF EXISTS "+copyTable+", "+naiveTable); derr != nil && err == nil {
			err = fmt.Errorf("dropping the baseline tables: %w", derr)
		}
	}()

	// (a) Raw binary COPY of every row.
	i := 0
	row := make([]any, 0, len(tickColumns))
	start := time.Now()
	n, err := pool.CopyFrom(ctx, pgx.Identifier{copyTable}, tickColumns, pgx.CopyFromFunc(func() ([]any, error) {
		if i == len(ticks) {
			return nil, nil
		}
		i++
		return ticks[i-1].values(row), nil
	}))
	if err != nil {
		return fmt.Errorf("COPY baseline: %w", err)
	}
	took := time.Since(start)
	rep.CopyRows, rep.CopySeconds = n, took.Seconds()
	rep.CopyRate = float64(n) / took.Seconds()

	// (b) Naive consumer: one INSERT, and so one commit, per row.
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	insert := "INSERT INTO " + naiveTable + " (symbol, seq, ts, price, size, bid, ask, kafka_partition, kafka_offset, ingested_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
	naive := ticks[:min(naiveRows, len(ticks))]
	start = time.Now()
	for k := range naive {
		if _, err := conn.Exec(ctx, insert, naive[k].values(row)...); err != nil {
			return fmt.Errorf("naive baseline: %w", err)
		}
	}
	took = time.Since(start)
	rep.NaiveRows, rep.NaiveSeconds = int64(len(naive)), took.Seconds()
	rep.NaiveRate = float64(len(naive)) / took.Seconds()
	return nil
}
