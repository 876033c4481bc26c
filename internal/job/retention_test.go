package job

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/archive"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/store"
)

// partitions lists the day partitions of table that hold rows for the
// table (attached), by day.
func (e *dagsEnv) partitions(table string) []string {
	e.t.Helper()
	parts, err := store.DayPartitions(context.Background(), e.pool, table)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, p := range parts {
		if !p.Attached || p.Detaching {
			e.t.Errorf("%s is left detached (attached %v, detaching %v)", p.Name, p.Attached, p.Detaching)
			continue
		}
		out = append(out, p.Day.Format(time.DateOnly))
	}
	return out
}

// storeTicks stores one AAPL tick at each of times through the sink, seqs
// from seq on, as the processor would.
func (e *dagsEnv) storeTicks(seq int64, times ...time.Time) {
	e.t.Helper()
	b := &store.Batch{Group: "retention-test", Topic: "ticks"}
	for i, at := range times {
		b.Ticks = append(b.Ticks, store.TickRow{Tick: market.Tick{Symbol: "AAPL", Seq: seq + int64(i), TS: at,
			Price: 100, Size: 10, Bid: 99.99, Ask: 100.01}})
	}
	if _, err := store.NewSink(e.pool).Commit(context.Background(), b); err != nil {
		e.t.Fatal(err)
	}
}

// TestDAGRetention: whole UTC days older than the retention are dropped as
// partitions, of ticks (by ts) and rejected records (by record_ts); with a
// retention of whole days the day the cutoff falls in is kept whole, and
// under a day its rows older than the cutoff are deleted; candles stay;
// the coming days' partitions are made; the tables are vacuumed.
func TestDAGRetention(t *testing.T) {
	t.Parallel()
	e := newDagsEnv(t, Deps{Retention: 24 * time.Hour})
	e.simulate(sixDays()...) // 2026-11-02 to 2026-11-07, 14:30 UTC on
	// Rejected records: half from a day long past.
	if err := store.EnsureDays(context.Background(), e.pool, store.RejectedTable, time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	e.exec(`UPDATE rejected_ticks SET record_ts = '2026-11-03 15:00:00+00' WHERE id % 2 = 0`)
	// Ticks the sessions do not have: years back (a partition of its own),
	// and between midnight UTC and the cutoffs below (midnight New York,
	// 05:00 UTC) of 2026-11-06 and 2026-11-07.
	farPast := time.Date(2019, 5, 1, 12, 0, 0, 0, time.UTC)
	early6 := time.Date(2026, 11, 6, 2, 0, 0, 0, time.UTC)
	early7 := time.Date(2026, 11, 7, 3, 0, 0, 0, time.UTC)
	e.storeTicks(1_000_000, farPast, early6, early7)
	logical := dagsDate(7)
	cutoff := dagsDate(6) // one day before the logical date: 2026-11-06 05:00 UTC
	cutoffDay := store.Day(cutoff)
	ticksKept := e.count(`SELECT count(*) FROM ticks WHERE ts >= $1`, cutoffDay)
	ticksOld := e.count(`SELECT count(*) FROM ticks WHERE ts < $1`, cutoffDay)
	rejKept := e.count(`SELECT count(*) FROM rejected_ticks WHERE record_ts >= $1`, cutoffDay)
	rejOld := e.count(`SELECT count(*) FROM rejected_ticks WHERE record_ts < $1`, cutoffDay)
	candles := e.dump(`SELECT * FROM candles ORDER BY symbol, interval, bucket`)
	if ticksKept == 0 || ticksOld == 0 || rejKept == 0 || rejOld == 0 {
		t.Fatalf("fixture: %d/%d ticks, %d/%d rejected kept/old", ticksKept, ticksOld, rejKept, rejOld)
	}
	if got := e.partitions(store.TicksTable); !slices.Contains(got, "2019-05-01") || !slices.Contains(got, "2026-11-02") {
		t.Fatalf("fixture: tick partitions %v", got)
	}

	// Small batches, so that any deleting would take many statements.
	e.run(DAGRetention, logical, map[string]string{"batch_size": "1000"})
	if n := e.count(`SELECT count(*) FROM ticks WHERE ts < $1`, cutoffDay); n != 0 {
		t.Errorf("%d ticks of days before the cutoff's remain", n)
	}
	// The cutoff's own UTC day is kept whole: its tick from before the
	// cutoff too.
	if n := e.count(`SELECT count(*) FROM ticks`); n != ticksKept {
		t.Errorf("%d ticks remain, want the %d since the cutoff's day", n, ticksKept)
	}
	if n := e.count(`SELECT count(*) FROM ticks WHERE ts = $1`, early6); n != 1 {
		t.Errorf("the tick of the cutoff's day before the cutoff: %d, want it kept", n)
	}
	if n := e.count(`SELECT count(*) FROM rejected_ticks`); n != rejKept {
		t.Errorf("%d rejected records remain, want %d", n, rejKept)
	}
	today := store.Day(time.Now())
	for _, table := range []string{store.TicksTable, store.RejectedTable} {
		got := e.partitions(table)
		for _, day := range got {
			if day < "2026-11-06" {
				t.Errorf("%s: the partition of %s was not dropped (cutoff %v)", table, day, cutoff)
			}
		}
		if !slices.Contains(got, "2026-11-06") || !slices.Contains(got, "2026-11-07") {
			t.Errorf("%s: partitions %v; want those of 2026-11-06 and 2026-11-07 kept", table, got)
		}
		for i := range 3 { // today and the next two, made ahead
			if day := today.AddDate(0, 0, i).Format(time.DateOnly); !slices.Contains(got, day) {
				t.Errorf("%s: no partition of %s made ahead (have %v)", table, day, got)
			}
		}
	}
	if got := e.dump(`SELECT * FROM candles ORDER BY symbol, interval, bucket`); !slices.Equal(got, candles) {
		t.Error("retention changed the candles")
	}
	if n := e.count(`SELECT count(*) FROM pg_stat_user_tables WHERE (relname = 'candles'
			OR relid IN (SELECT relid FROM pg_partition_tree('ticks') WHERE isleaf
			             UNION ALL SELECT relid FROM pg_partition_tree('rejected_ticks') WHERE isleaf))
		AND (last_vacuum IS NULL OR last_analyze IS NULL)`); n != 0 {
		t.Errorf("%d tables or partitions not vacuumed and analysed", n)
	}
	// Running it again removes nothing more; a retention parameter
	// overrides the default.
	e.run(DAGRetention, logical, nil)
	if n := e.count(`SELECT count(*) FROM ticks`); n != ticksKept {
		t.Errorf("a re-run left %d ticks, want %d", n, ticksKept)
	}
	// Half an hour before the logical date's midnight (04:30 UTC): the
	// partition of 2026-11-06 goes whole, and the rows of 2026-11-07 before
	// 04:30 are deleted: only the last session's ticks remain.
	lastDay := e.count(`SELECT count(*) FROM ticks WHERE ts >= $1`, logical)
	e.run(DAGRetention, logical, map[string]string{"retention": "30m"})
	if n := e.count(`SELECT count(*) FROM ticks`); n != lastDay || n == 0 {
		t.Errorf("a retention of 30m left %d ticks, want the %d of the logical date", n, lastDay)
	}
	if n := e.count(`SELECT count(*) FROM ticks WHERE ts = $1`, early7); n != 0 {
		t.Error("a retention of 30m kept a tick of the cutoff's day from before the cutoff")
	}
	if got := e.partitions(store.TicksTable); slices.Contains(got, "2026-11-06") || !slices.Contains(got, "2026-11-07") {
		t.Errorf("after a retention of 30m: tick partitions %v", got)
	}
	// An hourly run with a retention shorter than a day (up's) counts back
	// from its own slot: at 15:35 New York, six hours keep 09:35 on, and
	// the rest of the day's partition is deleted in batches.
	slot := time.Date(2026, 11, 7, 15, 35, 0, 0, dagsNY)
	since := slot.Add(-6 * time.Hour)
	recent := e.count(`SELECT count(*) FROM ticks WHERE ts >= $1`, since)
	if recent == 0 || recent == lastDay {
		t.Fatalf("fixture: %d of the last day's %d ticks after %v", recent, lastDay, since)
	}
	rejRecent := e.count(`SELECT count(*) FROM rejected_ticks WHERE record_ts >= $1`, since)
	rejLastDay := e.count(`SELECT count(*) FROM rejected_ticks`)
	if rejRecent == 0 || rejRecent == rejLastDay {
		t.Fatalf("fixture: %d of the last day's %d rejected records after %v", rejRecent, rejLastDay, since)
	}
	e.run(DAGRetention, slot, map[string]string{"retention": "6h", "batch_size": "7"})
	if n := e.count(`SELECT count(*) FROM ticks`); n != recent {
		t.Errorf("6h at %v left %d ticks, want the %d since %v", slot, n, recent, since)
	}
	if n := e.count(`SELECT count(*) FROM rejected_ticks`); n != rejRecent {
		t.Errorf("6h at %v left %d rejected records, want the %d since %v", slot, n, rejRecent, since)
	}
	if err := e.runTask(DAGRetention, "drop_old_ticks", logical, map[string]string{"batch_size": "0"}); err == nil {
		t.Error("batch_size 0 was accepted")
	}
}

// TestDAGRetentionFinishesCutShortDrops: a partition left detached by a
// run cut short between detaching and dropping it is dropped by the next
// run if its day is past; the sink, meanwhile, attaches it again to store
// a tick of its day, rather than fail.
func TestDAGRetentionFinishesCutShortDrops(t *testing.T) {
	t.Parallel()
	e := newDagsEnv(t, Deps{Retention: 24 * time.Hour})
	d1 := time.Date(2026, 10, 1, 12, 0, 0, 0, time.UTC)
	d2 := time.Date(2026, 10, 2, 12, 0, 0, 0, time.UTC)
	e.storeTicks(1, d1, d2)
	// As a run cut short between detaching and dropping leaves it.
	e.exec(`ALTER TABLE ticks DETACH PARTITION ticks_p20261001`)
	if n := e.count(`SELECT count(*) FROM ticks`); n != 1 {
		t.Fatalf("%d ticks after detaching a day, want 1", n)
	}
	// A tick of the detached day (a replay) attaches it again.
	e.storeTicks(3, d1.Add(time.Hour))
	if n := e.count(`SELECT count(*) FROM ticks WHERE ts < $1`, d2); n != 2 {
		t.Fatalf("%d ticks of the re-attached day, want 2", n)
	}
	e.exec(`ALTER TABLE ticks DETACH PARTITION ticks_p20261001`)
	e.run(DAGRetention, dagsDate(7), nil)
	if n := e.count(`SELECT count(*) FROM pg_class WHERE relname IN ('ticks_p20261001', 'ticks_p20261002')`); n != 0 {
		t.Errorf("%d expired partitions, detached or not, survived retention", n)
	}
	if n := e.count(`SELECT count(*) FROM ticks`); n != 0 {
		t.Errorf("%d expired ticks survived retention", n)
	}
}

// TestDAGRetentionArchivesBeforeDropping: with a cold tier, each expired
// day is written to Parquet (and verified) before its partition goes; a day
// whose archive fails is kept, the task fails and says so, and the next
// run archives and drops it.
func TestDAGRetentionArchivesBeforeDropping(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var failDay atomic.Value // the day (YYYY-MM-DD) whose archive fails, if any
	failDay.Store("")
	var archived []string
	var mu sync.Mutex
	var pool *pgxpool.Pool // the environment's, set below
	e := newDagsEnv(t, Deps{Retention: 24 * time.Hour, Archive: func(ctx context.Context, day time.Time) error {
		if day.Format(time.DateOnly) == failDay.Load() {
			return errors.New("disk full")
		}
		if _, err := archive.WriteDay(ctx, pool, dir, day); err != nil {
			return err
		}
		mu.Lock()
		archived = append(archived, day.Format(time.DateOnly))
		mu.Unlock()
		return nil
	}})
	pool = e.pool
	e.simulate(sixDays()...)
	want := map[string]int64{}
	for _, day := range []string{"2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"} {
		d, _ := time.Parse(time.DateOnly, day)
		want[day] = e.count(`SELECT count(*) FROM ticks WHERE ts >= $1 AND ts < $2`, d, d.AddDate(0, 0, 1))
	}

	failDay.Store("2026-11-04")
	if err := e.runTask(DAGRetention, "drop_old_ticks", dagsDate(7), nil); err == nil || !strings.Contains(err.Error(), "archiving 2026-11-04 before dropping it") {
		t.Fatalf("a failed archive: %v", err)
	}
	if got := e.partitions(store.TicksTable); !slices.Contains(got, "2026-11-04") {
		t.Fatalf("the day whose archive failed was dropped: partitions %v", got)
	}
	failDay.Store("")
	e.run(DAGRetention, dagsDate(7), nil)
	slices.Sort(archived)
	if !slices.Equal(archived, []string{"2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"}) {
		t.Fatalf("archived %v", archived)
	}
	for day, n := range want {
		d, _ := time.Parse(time.DateOnly, day)
		var got int64
		if _, err := archive.Read(context.Background(), dir, d, d, func(market.Tick) error { got++; return nil }); err != nil || got != n || n == 0 {
			t.Errorf("%s: %d ticks read back from the archive (%v), want the %d dropped", day, got, err, n)
		}
	}
	if got := e.partitions(store.TicksTable); slices.Contains(got, "2026-11-04") {
		t.Errorf("2026-11-04 kept after its archive succeeded: %v", got)
	}
}
