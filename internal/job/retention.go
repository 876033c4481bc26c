package job

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stockpipe/stockpipe/internal/dag"
)

// retention: raw ticks and rejected records older than the retention are
// deleted (drop_old_ticks), candles kept; then the tables are vacuumed and
// analysed (vacuum_analyze).

// retentionDAG declares retention. Its retention parameter defaults to the
// Deps' (the executing node's --retention).
func (s *shipped) retentionDAG() dag.DAG {
	return dag.DAG{
		Name: DAGRetention,
		Description: "Deletes raw ticks and rejected records older than the retention " +
			"(candles are kept), then vacuums and analyses the tables.",
		// Hourly, so that a short retention (up keeps six hours) bounds the
		// tables closely.
		Schedule: "15 * * * *",
		Location: s.ny,
		Params: []dag.Param{
			{Name: "retention", Type: dag.Duration, Default: s.d.Retention.String(), Min: "1s",
				Doc: "ticks and rejected records older than this are deleted (whole days count from midnight New York)"},
			{Name: "batch_size", Type: dag.Integer, Default: "50000", Min: "1",
				Doc: "rows deleted per statement, each its own transaction"},
		},
		Tasks: []dag.Task{
			{Name: "drop_old_ticks", Run: s.dropOldTicks, Retries: 3, Timeout: 2 * time.Hour},
			{Name: "vacuum_analyze", Deps: []string{"drop_old_ticks"}, Run: s.vacuumAnalyze, Retries: 1, Timeout: 2 * time.Hour},
		},
	}
}

const (
	// sqlTickSymbols lists every symbol with ticks by a skip scan of the
	// primary key: one index probe per symbol rather than a scan of the
	// table.
	sqlTickSymbols = `
		WITH RECURSIVE s AS (
			(SELECT symbol FROM ticks ORDER BY symbol LIMIT 1)
			UNION ALL
			SELECT (SELECT t.symbol FROM ticks t WHERE t.symbol > s.symbol ORDER BY t.symbol LIMIT 1)
			FROM s WHERE s.symbol IS NOT NULL)
		SELECT symbol FROM s WHERE symbol IS NOT NULL`
	// sqlDeleteOldTicks deletes up to $3 of symbol $1's ticks before $2,
	// oldest first, through the (symbol, ts) index.
	sqlDeleteOldTicks = `
		DELETE FROM ticks WHERE symbol = $1 AND seq IN (
			SELECT seq FROM ticks WHERE symbol = $1 AND ts < $2 ORDER BY ts LIMIT $3)`
	// sqlDeleteOldRejected deletes up to $2 rejected records received
	// before $1.
	sqlDeleteOldRejected = `
		DELETE FROM rejected_ticks WHERE id IN (
			SELECT id FROM rejected_ticks WHERE received_at < $1 ORDER BY received_at LIMIT $2)`
)

// retainedTables are the tables vacuumAnalyze vacuums: those retention and
// the stream churn. The names are fixed here: nothing to parameterise.
var retainedTables = []string{"ticks", "rejected_ticks", "candles"}

// retentionCutoff is the logical date's midnight New York minus the
// retention: whole days are counted on the calendar, so that the cutoff
// stays at midnight across daylight-saving changes.
func (s *shipped) retentionCutoff(tc *dag.TaskContext) (time.Time, time.Duration) {
	keep := tc.Params.Duration("retention")
	// Whole days count from midnight New York, so each of a day's hourly
	// runs keeps the same calendar days; a shorter retention (up's six
	// hours) counts back from the run's own slot.
	if keep%(24*time.Hour) == 0 {
		_, start, _ := s.tradingDay(tc.LogicalDate)
		return start.AddDate(0, 0, -int(keep/(24*time.Hour))), keep
	}
	return tc.LogicalDate.Add(-keep), keep
}

// dropOldTicks deletes ticks with ts, and rejected records with
// received_at, before the cutoff, batch_size rows per statement, each
// statement its own transaction, so no transaction holds millions of row
// locks or keeps vacuum from reclaiming what is already deleted. Candles
// are kept.
//
// Ticks are deleted symbol by symbol through the (symbol, ts) index, oldest
// first: each batch starts where the last one ended in the index, instead
// of scanning the table again past the rows already deleted (which vacuum
// has not yet removed), which would make a large deletion quadratic.
func (s *shipped) dropOldTicks(ctx context.Context, tc *dag.TaskContext) error {
	pool, err := s.pool(tc)
	if err != nil {
		return err
	}
	log := s.log(tc)
	cutoff, keep := s.retentionCutoff(tc)
	batch := tc.Params.Int("batch_size")
	log.Info("deleting old raw data", "before", cutoff.UTC().Format(time.RFC3339), "retention", keep, "batch_size", batch)

	began := time.Now()
	var statements int64
	deleteAll := func(what, sql string, args ...any) (total int64, err error) {
		for {
			if err := ctx.Err(); err != nil {
				return total, fmt.Errorf("deleting old %s after %d rows: %w", what, total, err)
			}
			tag, err := pool.Exec(ctx, sql, args...)
			if err != nil {
				return total, fmt.Errorf("deleting old %s after %d rows: %w", what, total, err)
			}
			statements++
			total += tag.RowsAffected()
			if tag.RowsAffected() < batch {
				return total, nil
			}
		}
	}

	rows, err := pool.Query(ctx, sqlTickSymbols)
	if err != nil {
		return fmt.Errorf("listing the symbols with ticks: %w", err)
	}
	symbols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("listing the symbols with ticks: %w", err)
	}
	var ticks int64
	for _, sym := range symbols {
		n, err := deleteAll("ticks of "+sym, sqlDeleteOldTicks, sym, cutoff, batch)
		ticks += n
		if err != nil {
			return err
		}
	}
	rejected, err := deleteAll("rejected records", sqlDeleteOldRejected, cutoff, batch)
	if err != nil {
		return err
	}
	log.Info("old raw data deleted", "ticks", ticks, "symbols", len(symbols), "rejected", rejected,
		"statements", statements, "took", time.Since(began).Round(time.Millisecond))
	return nil
}

// vacuumAnalyze vacuums and analyses the tables retention and the stream
// churn. VACUUM cannot run inside a transaction block, so each is one
// statement on the pool, outside any transaction.
func (s *shipped) vacuumAnalyze(ctx context.Context, tc *dag.TaskContext) error {
	pool, err := s.pool(tc)
	if err != nil {
		return err
	}
	began := time.Now()
	for _, table := range retainedTables {
		if _, err := pool.Exec(ctx, "VACUUM (ANALYZE) "+table); err != nil {
			return fmt.Errorf("vacuuming %s: %w", table, err)
		}
	}
	s.log(tc).Info("vacuumed and analysed", "tables", strings.Join(retainedTables, ","), "took", time.Since(began).Round(time.Millisecond))
	return nil
}
