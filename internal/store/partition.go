package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Day partitions. ticks is range-partitioned by ts and rejected_ticks by
// record_ts (the Kafka record's timestamp), one partition per UTC day named
// TABLE_pYYYYMMDD, so that retention drops whole days (migration 00010).
//
// A row can only be stored once its day's partition exists: there is no
// DEFAULT partition, which would catch rows of a day without one but then
// keep that day's partition from ever being created (PostgreSQL refuses a
// partition whose range holds rows of the default one). So partitions are
// made before rows need them:
//
//   - the sink makes those of each batch's days before its transaction
//     (ensure), remembering which exist, so that the common case is a map
//     lookup per batch; a tick of any day, years back included, gets its
//     partition the same way;
//   - Migrate (so `up`, `process` and the other commands at start) makes
//     the day before the present, the present day and the next two, and
//     the retention DAG the present day and the next two every hour, so
//     that the sink's path seldom needs one.
//
// A partition is made in a short transaction of its own, outside any
// batch's: under a transaction-level advisory lock, so that lanes,
// processors and the scheduler making the same day at once wait for one
// another and the others then find it made, with a lock timeout so that a
// long reader cannot hold the pipeline up. It is created as a plain table
// (LIKE the parent, with its checks and defaults) and attached: ATTACH
// PARTITION takes only a SHARE UPDATE EXCLUSIVE lock on the parent, which
// lets reads and writes of the other days go on, where CREATE TABLE …
// PARTITION OF would take an ACCESS EXCLUSIVE one and queue every reader
// and writer of ticks behind the longest query running on it. Both
// statements are in one transaction, so a half-made partition is never
// left behind.

// The day-partitioned tables.
const (
	TicksTable    = "ticks"
	RejectedTable = "rejected_ticks"
)

// partitionLock is the key of the advisory lock partitions are made under.
const partitionLock int64 = 0x73746b7061727473 // "stkparts"

// partitionLockTimeout bounds how long making a partition waits for a lock
// on the parent table; the caller retries.
const partitionLockTimeout = "5s"

// dayLayout is the day in a partition's name.
const dayLayout = "20060102"

const secondsPerDay = 24 * 60 * 60

// dayNumber is the UTC day of t, in days since 1970-01-01.
func dayNumber(t time.Time) int64 {
	s := t.Unix()
	d := s / secondsPerDay
	if s%secondsPerDay < 0 {
		d--
	}
	return d
}

// dayStart is the midnight (UTC) that begins day number d.
func dayStart(d int64) time.Time { return time.Unix(d*secondsPerDay, 0).UTC() }

// Day returns the midnight (UTC) that begins the day of t: the lower bound
// of the partition that holds t.
func Day(t time.Time) time.Time { return dayStart(dayNumber(t)) }

// PartitionName is the name of table's partition for the UTC day of t.
func PartitionName(table string, t time.Time) string {
	return table + "_p" + Day(t).Format(dayLayout)
}

// appendDays appends to dst the day numbers of times that it does not hold
// yet. A batch's rows are mostly of one day, so the last day is checked
// first.
func appendDays(dst []int64, n int, at func(int) time.Time) []int64 {
	for i := range n {
		d := dayNumber(at(i))
		if len(dst) > 0 && dst[len(dst)-1] == d || slices.Contains(dst, d) {
			continue
		}
		dst = append(dst, d)
	}
	return dst
}

// EnsureDays makes sure table (TicksTable or RejectedTable) has the
// partitions of the UTC days of times, making those it lacks.
func EnsureDays(ctx context.Context, pool *pgxpool.Pool, table string, times ...time.Time) error {
	return ensureDays(ctx, pool, table, appendDays(nil, len(times), func(i int) time.Time { return times[i] }))
}

// EnsureAhead makes the partitions of both tables for the UTC day of now
// and the next two, and the days before back to from days before now.
func EnsureAhead(ctx context.Context, pool *pgxpool.Pool, now time.Time, before int) error {
	var times []time.Time
	for i := -before; i <= 2; i++ {
		times = append(times, now.AddDate(0, 0, i))
	}
	for _, table := range []string{TicksTable, RejectedTable} {
		if err := EnsureDays(ctx, pool, table, times...); err != nil {
			return err
		}
	}
	return nil
}

// ensureDays makes the partitions of table for the day numbers that it
// lacks: one query finds which exist, and each missing one is made on its
// own (makePartition).
func ensureDays(ctx context.Context, pool *pgxpool.Pool, table string, days []int64) error {
	if len(days) == 0 {
		return nil
	}
	names := make([]string, len(days))
	for i, d := range days {
		names[i] = table + "_p" + dayStart(d).Format(dayLayout)
	}
	rows, err := pool.Query(ctx, `SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = $1::regclass AND NOT i.inhdetachpending AND c.relname = ANY($2)`, table, names)
	if err != nil {
		return fmt.Errorf("looking up the day partitions of %s: %w", table, err)
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("looking up the day partitions of %s: %w", table, err)
	}
	for i, d := range days {
		if slices.Contains(have, names[i]) {
			continue
		}
		if err := makePartition(ctx, pool, table, d); err != nil {
			return err
		}
	}
	return nil
}

// makePartition makes table's partition for day number d, in a
// transaction of its own under the partition lock (see the top of this
// file). Finding it made already, by another lane or process, is success.
func makePartition(ctx context.Context, pool *pgxpool.Pool, table string, d int64) error {
	from := dayStart(d)
	name := table + "_p" + from.Format(dayLayout)
	bound := func(t time.Time) string { return "'" + t.Format("2006-01-02 15:04:05") + "+00'" }
	ident, parent := pgx.Identifier{name}.Sanitize(), pgx.Identifier{table}.Sanitize()
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, partitionLock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '`+partitionLockTimeout+`'`); err != nil {
			return err
		}
		var state string
		err := tx.QueryRow(ctx, `SELECT CASE WHEN r.oid IS NULL THEN 'missing' WHEN i.inhrelid IS NULL THEN 'detached'
				WHEN i.inhdetachpending THEN 'detaching' ELSE 'attached' END
			FROM (SELECT to_regclass($1) AS oid) r
			LEFT JOIN pg_inherits i ON i.inhrelid = r.oid AND i.inhparent = $2::regclass`, name, table).Scan(&state)
		if err != nil {
			return err
		}
		switch state {
		case "attached":
			return nil
		case "detaching":
			// Retention is dropping the day (or was cut short doing so,
			// and its next run finishes it): the caller retries.
			return errors.New("it is being detached by retention; try again once that is done")
		case "missing":
			if _, err := tx.Exec(ctx, `CREATE TABLE `+ident+` (LIKE `+parent+` INCLUDING DEFAULTS INCLUDING CONSTRAINTS)`); err != nil {
				return err
			}
		}
		// "detached": retention detached it and was cut short before
		// dropping it; attached again, it takes the new rows, and the
		// next retention run drops it if it is still expired.
		_, err = tx.Exec(ctx, `ALTER TABLE `+parent+` ATTACH PARTITION `+ident+
			` FOR VALUES FROM (`+bound(from)+`) TO (`+bound(from.AddDate(0, 0, 1))+`)`)
		return err
	})
	if err != nil {
		return fmt.Errorf("making partition %s of %s: %w", name, table, err)
	}
	return nil
}

// isNoPartition reports whether err is PostgreSQL finding no partition for
// a row: a day without one, or one dropped (by retention) after the sink
// had seen it. A check_violation like a refused row, but no property of
// the row: making the partition cures it.
func isNoPartition(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23514" && pe.ConstraintName == "" &&
		strings.HasPrefix(pe.Message, "no partition of relation")
}

// partitionCache remembers the days whose partitions a sink has seen made,
// per table.
type partitionCache struct {
	mu   sync.Mutex
	days map[string][]int64
}

// missing appends to dst those of days that are not known to have a
// partition of table.
func (c *partitionCache) missing(dst []int64, table string, days []int64) []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range days {
		if !slices.Contains(c.days[table], d) {
			dst = append(dst, d)
		}
	}
	return dst
}

func (c *partitionCache) add(table string, days []int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.days == nil {
		c.days = map[string][]int64{}
	}
	for _, d := range days {
		if !slices.Contains(c.days[table], d) {
			c.days[table] = append(c.days[table], d)
		}
	}
}

// forget drops what the cache knows, after a partition it knew was found
// gone.
func (c *partitionCache) forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.days = nil
}

// DayPartition is one day partition of TicksTable or RejectedTable, or a
// table of such a name that a retention run detached and did not get to
// drop.
type DayPartition struct {
	Table string    // the partitioned table
	Name  string    // TABLE_pYYYYMMDD
	Day   time.Time // its rows are of [Day, Day + 24 h)
	// Attached is false for a table detached but not dropped.
	Attached bool
	// Detaching is true when DETACH … CONCURRENTLY began and did not
	// finish.
	Detaching bool
}

// End is the end of the partition's day.
func (p DayPartition) End() time.Time { return p.Day.AddDate(0, 0, 1) }

// DayPartitions lists table's day partitions, oldest first, with the
// detached ones not yet dropped.
func DayPartitions(ctx context.Context, pool *pgxpool.Pool, table string) ([]DayPartition, error) {
	rows, err := pool.Query(ctx, `SELECT c.relname::text, i.inhrelid IS NOT NULL, coalesce(i.inhdetachpending, false)
		FROM pg_class c
		LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND i.inhparent = $1::regclass
		WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'
		  AND c.relname ~ ('^' || $2 || '_p[0-9]{8}$')
		  AND (i.inhrelid IS NOT NULL OR NOT c.relispartition)
		ORDER BY 1`, table, table)
	if err != nil {
		return nil, fmt.Errorf("listing the day partitions of %s: %w", table, err)
	}
	var out []DayPartition
	var p DayPartition
	_, err = pgx.ForEachRow(rows, []any{&p.Name, &p.Attached, &p.Detaching}, func() error {
		day, err := time.Parse(dayLayout, strings.TrimPrefix(p.Name, table+"_p"))
		if err != nil {
			return nil // not a day: not one of ours
		}
		p.Table, p.Day = table, day
		out = append(out, p)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing the day partitions of %s: %w", table, err)
	}
	return out, nil
}

// DropDayPartition removes a day partition and its rows: detached with
// DETACH PARTITION … CONCURRENTLY, which lets readers and writers of the
// table go on (it waits for the queries that may still read the partition
// instead of blocking everyone), finishing a detach left half-done, then
// dropped. Each step is a statement of its own, outside any transaction.
func DropDayPartition(ctx context.Context, pool *pgxpool.Pool, p DayPartition) error {
	ident, parent := pgx.Identifier{p.Name}.Sanitize(), pgx.Identifier{p.Table}.Sanitize()
	var detach string
	switch {
	case p.Detaching:
		detach = `ALTER TABLE ` + parent + ` DETACH PARTITION ` + ident + ` FINALIZE`
	case p.Attached:
		detach = `ALTER TABLE ` + parent + ` DETACH PARTITION ` + ident + ` CONCURRENTLY`
	}
	if detach != "" {
		if _, err := pool.Exec(ctx, detach); err != nil {
			return fmt.Errorf("detaching %s from %s: %w", p.Name, p.Table, err)
		}
	}
	if _, err := pool.Exec(ctx, `DROP TABLE IF EXISTS `+ident); err != nil {
		return fmt.Errorf("dropping %s: %w", p.Name, err)
	}
	return nil
}
