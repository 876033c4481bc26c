package job

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/store"
)

// retention: raw ticks and rejected records older than the retention are
// removed (drop_old_ticks), candles kept; then the tables are vacuumed and
// analysed (vacuum_analyze).

// retentionDAG declares retention. Its retention parameter defaults to the
// Deps' (the executing node's --retention).
func (s *shipped) retentionDAG() dag.DAG {
	return dag.DAG{
		Name: DAGRetention,
		Description: "Drops the day partitions of raw ticks and rejected records older than the retention " +
			"(candles are kept) and makes the coming days' partitions, then vacuums and analyses the tables.",
		// Hourly, so that a short retention (up keeps six hours) bounds the
		// tables closely.
		Schedule: "15 * * * *",
		Location: s.ny,
		Params: []dag.Param{
			{Name: "retention", Type: dag.Duration, Default: s.d.Retention.String(), Min: "1s",
				Doc: "ticks and rejected records older than this are removed, a UTC day's partition once the whole day is " +
					"(whole days count from midnight New York); under a day, the older rows of the day the cutoff falls in are deleted too"},
			{Name: "batch_size", Type: dag.Integer, Default: "50000", Min: "1",
				Doc: "rows deleted per statement, each its own transaction, where a day is trimmed (a retention under a day)"},
		},
		Tasks: []dag.Task{
			{Name: "drop_old_ticks", Run: s.dropOldTicks, Retries: 3, Timeout: 2 * time.Hour},
			{Name: "vacuum_analyze", Deps: []string{"drop_old_ticks"}, Run: s.vacuumAnalyze, Retries: 1, Timeout: 2 * time.Hour},
		},
	}
}

const (
	// sqlTickSymbols lists the symbols with ticks in [$1, $2), one day
	// partition, by a skip scan of its primary key: one index probe per
	// symbol rather than a scan of the partition.
	sqlTickSymbols = `
		WITH RECURSIVE s AS (
			(SELECT symbol FROM ticks WHERE ts >= $1 AND ts < $2 ORDER BY symbol LIMIT 1)
			UNION ALL
			SELECT (SELECT t.symbol FROM ticks t WHERE t.ts >= $1 AND t.ts < $2 AND t.symbol > s.symbol
			        ORDER BY t.symbol LIMIT 1)
			FROM s WHERE s.symbol IS NOT NULL)
		SELECT symbol FROM s WHERE symbol IS NOT NULL`
	// sqlTrimTicks deletes up to $4 of symbol $1's ticks in [$2, $3),
	// oldest first, through the primary key (symbol, ts, seq) of the one
	// partition the range prunes to.
	sqlTrimTicks = `
		DELETE FROM ticks WHERE symbol = $1 AND ts >= $2 AND ts < $3 AND (ts, seq) IN (
			SELECT ts, seq FROM ticks WHERE symbol = $1 AND ts >= $2 AND ts < $3 ORDER BY ts LIMIT $4)`
	// sqlTrimRejected deletes up to $3 rejected records of record_ts in
	// [$1, $2), one day partition.
	sqlTrimRejected = `
		DELETE FROM rejected_ticks WHERE record_ts >= $1 AND record_ts < $2 AND id IN (
			SELECT id FROM rejected_ticks WHERE record_ts >= $1 AND record_ts < $2 ORDER BY id LIMIT $3)`
	// sqlPartitionRows is PostgreSQL's estimate of a partition's rows, as
	// of its last VACUUM or ANALYZE, for the log: counting a day of ticks
	// before dropping it would read it all. A partition never vacuumed nor
	// analysed (reltuples -1), which the hourly vacuum_analyze makes rare
	// by the time a day expires, is counted.
	sqlPartitionRows = `SELECT CASE WHEN reltuples >= 0 THEN reltuples::bigint
		ELSE (SELECT count(*) FROM ONLY %s) END FROM pg_class WHERE oid = $1::regclass`
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

// dropOldTicks removes ticks (by ts) and rejected records (by record_ts)
// older than the cutoff, and makes the partitions of the present day and
// the next two (store.EnsureAhead), so that a day never begins without
// its partitions. Candles are kept.
//
// Both tables are partitioned by UTC day: each partition whose whole day
// ends at or before the cutoff is dropped (store.DropDayPartition: detached
// concurrently, then dropped), which takes an instant whatever it holds
// and leaves nothing for vacuum. The partition the cutoff falls in is kept
// whole while the retention is a day or more: its rows older than the
// cutoff go a day later, with it, so a day's hours between midnight UTC
// and the cutoff (midnight New York, for whole days) are kept up to a day
// longer than the retention. A retention under a day (up's six hours)
// would keep up to a day more than itself that way, so there the rows of
// that one partition older than the cutoff are deleted, batch_size rows
// per statement, each statement its own transaction: less than a day of
// rows, where deleting used to reach back over the whole retention.
// Trimmed ticks go symbol by symbol through the primary key, oldest first,
// so that each batch starts where the last one ended in the index.
func (s *shipped) dropOldTicks(ctx context.Context, tc *dag.TaskContext) error {
	pool, err := s.pool(tc)
	if err != nil {
		return err
	}
	log := s.log(tc)
	cutoff, keep := s.retentionCutoff(tc)
	batch := tc.Params.Int("batch_size")
	trim := keep < 24*time.Hour
	log.Info("removing old raw data", "before", cutoff.UTC().Format(time.RFC3339), "retention", keep,
		"trim_partial_day", trim, "batch_size", batch)

	began := time.Now()
	if err := store.EnsureAhead(ctx, pool, s.d.Now(), 0); err != nil {
		return err
	}
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

	// removed is what went of one table: whole day partitions (with
	// PostgreSQL's estimate of their rows) and rows deleted from the day
	// the cutoff falls in.
	type removed struct {
		partitions, estimatedRows, deleted int64
		days                               []string
	}
	var ticks, rejected removed
	var archived int
	for _, t := range []struct {
		table string
		out   *removed
		trim  func(from, to time.Time) (int64, error)
	}{
		{store.TicksTable, &ticks, func(from, to time.Time) (int64, error) {
			rows, err := pool.Query(ctx, sqlTickSymbols, from, from.AddDate(0, 0, 1))
			if err != nil {
				return 0, fmt.Errorf("listing the symbols with ticks on %s: %w", from.Format(time.DateOnly), err)
			}
			symbols, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return 0, fmt.Errorf("listing the symbols with ticks on %s: %w", from.Format(time.DateOnly), err)
			}
			var total int64
			for _, sym := range symbols {
				n, err := deleteAll("ticks of "+sym, sqlTrimTicks, sym, from, to, batch)
				total += n
				if err != nil {
					return total, err
				}
			}
			return total, nil
		}},
		{store.RejectedTable, &rejected, func(from, to time.Time) (int64, error) {
			return deleteAll("rejected records", sqlTrimRejected, from, to, batch)
		}},
	} {
		parts, err := store.DayPartitions(ctx, pool, t.table)
		if err != nil {
			return err
		}
		for _, p := range parts {
			switch {
			case !p.End().After(cutoff):
				var rows int64
				q := fmt.Sprintf(sqlPartitionRows, pgx.Identifier{p.Name}.Sanitize())
				if err := pool.QueryRow(ctx, q, p.Name).Scan(&rows); err != nil {
					return fmt.Errorf("reading the size of %s: %w", p.Name, err)
				}
				// The cold tier first: a day is dropped only once its
				// archive is written and verified. A partition already
				// detaching was archived by the run that began to detach
				// it (this order), and is no longer readable to archive.
				if t.table == store.TicksTable && s.d.Archive != nil && p.Attached && !p.Detaching {
					if err := s.d.Archive(ctx, p.Day); err != nil {
						return fmt.Errorf("archiving %s before dropping it (the day is kept): %w", p.Day.Format(time.DateOnly), err)
					}
					archived++
				}
				if err := store.DropDayPartition(ctx, pool, p); err != nil {
					return err
				}
				t.out.partitions++
				t.out.estimatedRows += rows
				t.out.days = append(t.out.days, p.Day.Format(time.DateOnly))
			case trim && p.Attached && !p.Detaching && p.Day.Before(cutoff):
				n, err := t.trim(p.Day, cutoff)
				t.out.deleted += n
				if err != nil {
					return err
				}
			}
		}
	}
	log.Info("old raw data removed",
		"ticks_partitions_dropped", ticks.partitions, "ticks_days", daysList(ticks.days),
		"ticks_rows_dropped_estimate", ticks.estimatedRows, "ticks_rows_deleted", ticks.deleted,
		"rejected_partitions_dropped", rejected.partitions, "rejected_days", daysList(rejected.days),
		"rejected_rows_dropped_estimate", rejected.estimatedRows, "rejected_rows_deleted", rejected.deleted,
		"days_archived", archived, "delete_statements", statements, "took", time.Since(began).Round(time.Millisecond))
	return nil
}

// daysList lists days for a log line: all of a few, the first and last of
// many (years of replayed history expire at once).
func daysList(days []string) string {
	if len(days) <= 8 {
		return strings.Join(days, ",")
	}
	return fmt.Sprintf("%s,%s,…,%s,%s (%d days)", days[0], days[1], days[len(days)-2], days[len(days)-1], len(days))
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
