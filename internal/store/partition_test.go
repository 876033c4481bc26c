package store_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/stockpipe/stockpipe/internal/fixture"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
	"github.com/stockpipe/stockpipe/internal/store"
)

// tickAt is a tick of sym with seq at ts, from Kafka partition 0 at offset
// seq.
func tickAt(sym string, seq int64, ts time.Time) store.TickRow {
	return store.TickRow{Tick: market.Tick{Symbol: sym, Seq: seq, TS: ts, Price: 100, Size: 100, Bid: 99.99, Ask: 100.01},
		Offset: seq}
}

// rowsByPartition counts table's rows by the partition holding them.
func rowsByPartition(t *testing.T, pool *pgxpool.Pool, table string) map[string]int64 {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT tableoid::regclass::text, count(*) FROM `+table+` GROUP BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	var name string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&name, &n}, func() error { out[name] = n; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSinkMakesDayPartitions: a batch spanning midnight, with a tick of a
// day years back and one of tomorrow, is stored whole, each row in its UTC
// day's partition, made by the sink with the table's keys and checks; no
// DEFAULT partition exists. Rejected records go by their record time.
func TestSinkMakesDayPartitions(t *testing.T) {
	pool := openMigrated(t)
	ctx := context.Background()
	sink := store.NewSink(pool)
	midnight := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	b := &store.Batch{Group: "g", Topic: "ticks"}
	// 100 ticks a millisecond apart across midnight: enough for COPY.
	for i := range 100 {
		b.Ticks = append(b.Ticks, tickAt("AAPL", int64(i+1), midnight.Add(time.Duration(i-50)*time.Millisecond)))
	}
	farPast := time.Date(1999, 3, 4, 15, 0, 0, 0, time.UTC)
	tomorrow := time.Now().UTC().AddDate(0, 0, 1)
	b.Ticks = append(b.Ticks, tickAt("OLD", 1, farPast), tickAt("NEXT", 1, tomorrow))
	b.Rejected = []store.Rejected{
		{Topic: "ticks", Offset: 1, RecordTS: midnight.Add(-time.Microsecond), Reason: market.ReasonMalformedJSON},
		{Topic: "ticks", Offset: 2, RecordTS: midnight, Reason: market.ReasonMalformedJSON},
		{Topic: "ticks", Offset: 3, RecordTS: farPast, Reason: market.ReasonMalformedJSON},
		{Topic: "ticks", Offset: 4, Reason: market.ReasonMalformedJSON}, // no timestamp
	}
	b.Offsets = []store.PartitionCommit{{Partition: 0, Expected: -1, Next: 102}}
	res, err := sink.Commit(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if res.Inserted != 102 || res.Duplicates != 0 {
		t.Fatalf("commit %+v, want 102 ticks inserted", res)
	}
	want := map[string]int64{"ticks_p20261102": 50, "ticks_p20261103": 50, "ticks_p19990304": 1,
		store.PartitionName(store.TicksTable, tomorrow): 1}
	if got := rowsByPartition(t, pool, "ticks"); !equalCounts(got, want) {
		t.Errorf("ticks by partition %v, want %v", got, want)
	}
	want = map[string]int64{"rejected_ticks_p20261102": 1, "rejected_ticks_p20261103": 1,
		"rejected_ticks_p19990304": 1, "rejected_ticks_p19700101": 1}
	if got := rowsByPartition(t, pool, "rejected_ticks"); !equalCounts(got, want) {
		t.Errorf("rejected records by partition %v, want %v", got, want)
	}
	if n := count(t, pool, `SELECT count(*) FROM pg_partitioned_table WHERE partdefid <> 0`); n != 0 {
		t.Errorf("%d DEFAULT partitions", n)
	}
	// A partition the sink made has the table's key and checks.
	if n := count(t, pool, `SELECT count(*) FROM pg_constraint
		WHERE conrelid = 'ticks_p19990304'::regclass AND contype = 'p'
		  AND pg_get_constraintdef(oid) = 'PRIMARY KEY (symbol, ts, seq)'`); n != 1 {
		t.Error("ticks_p19990304 lacks the primary key (symbol, ts, seq)")
	}
	_, err = pool.Exec(ctx, `INSERT INTO ticks (symbol, seq, ts, price, size, bid, ask, kafka_partition, kafka_offset)
		VALUES ('OLD', 2, '1999-03-04 16:00:00+00', 10, 1, 10.02, 10.01, 0, 0)`)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.ConstraintName != "ticks_bid_le_ask" {
		t.Errorf("bid above ask into a made partition: %v, want a violation of ticks_bid_le_ask", err)
	}
	// Another batch of those days.
	b2 := &store.Batch{Group: "g", Topic: "ticks", Ticks: []store.TickRow{tickAt("AAPL", 101, midnight.Add(time.Second))},
		Offsets: []store.PartitionCommit{{Partition: 0, Expected: 102, Next: 103}}}
	if _, err := sink.Commit(ctx, b2); err != nil {
		t.Fatal(err)
	}
}

func equalCounts(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestConcurrentSinksMakeTheSameDay: lanes of two processors (two sinks,
// each with its own memory of the days) committing at once ticks of days
// that have no partition yet all succeed, each day made once.
func TestConcurrentSinksMakeTheSameDay(t *testing.T) {
	pool := fixture.DB(t, 20)
	ctx := context.Background()
	sinks := []*store.Sink{store.NewSink(pool), store.NewSink(pool)}
	const lanes, days = 8, 4
	var wg sync.WaitGroup
	errs := make(chan error, lanes)
	start := make(chan struct{})
	for lane := range lanes {
		wg.Go(func() {
			<-start
			expected := int64(-1)
			for d := range days {
				day := time.Date(2025, 6, 1+d, 9, 0, 0, 0, time.UTC)
				b := &store.Batch{Group: "g", Topic: "ticks"}
				for i := range 80 {
					b.Ticks = append(b.Ticks, tickAt(fmt.Sprintf("L%d", lane), int64(d*1000+i+1), day.Add(time.Duration(i)*time.Second)))
				}
				next := int64((d + 1) * 80)
				b.Offsets = []store.PartitionCommit{{Partition: int32(lane), Expected: expected, Next: next}}
				if _, err := sinks[lane%2].Commit(ctx, b); err != nil {
					errs <- fmt.Errorf("lane %d, day %d: %w", lane, d, err)
					return
				}
				expected = next
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := count(t, pool, `SELECT count(*) FROM ticks`); n != lanes*days*80 {
		t.Errorf("%d ticks stored, want %d", n, lanes*days*80)
	}
	if n := count(t, pool, `SELECT count(*) FROM pg_inherits WHERE inhparent = 'ticks'::regclass
		AND inhrelid::regclass::text LIKE 'ticks_p202506%'`); n != days {
		t.Errorf("%d partitions of June 2025, want %d", n, days)
	}
}

// TestDuplicatesAcrossMidnight: ticks spanning midnight sent again, half of
// them with new ones, are stored once: COPY meets the stored ones in both
// day partitions and the batch is redone with ON CONFLICT (symbol, ts,
// seq).
func TestDuplicatesAcrossMidnight(t *testing.T) {
	pool := openMigrated(t)
	ctx := context.Background()
	sink := store.NewSink(pool)
	midnight := time.Date(2026, 11, 4, 0, 0, 0, 0, time.UTC)
	at := func(seq int64) time.Time { return midnight.Add(time.Duration(seq-150) * time.Millisecond) }
	first := &store.Batch{Group: "g", Topic: "ticks", Offsets: []store.PartitionCommit{{Partition: 0, Expected: -1, Next: 200}}}
	for seq := int64(1); seq <= 200; seq++ {
		first.Ticks = append(first.Ticks, tickAt("MSFT", seq, at(seq)))
	}
	if res, err := sink.Commit(ctx, first); err != nil || res.Inserted != 200 {
		t.Fatalf("first commit %+v, %v", res, err)
	}
	// Seqs 101–300: 101–200 (both sides of midnight) stored already.
	second := &store.Batch{Group: "g", Topic: "ticks", Offsets: []store.PartitionCommit{{Partition: 0, Expected: 200, Next: 400}}}
	for seq := int64(101); seq <= 300; seq++ {
		second.Ticks = append(second.Ticks, tickAt("MSFT", seq, at(seq)))
	}
	res, err := sink.Commit(ctx, second)
	if err != nil {
		t.Fatal(err)
	}
	if res.Inserted != 100 || res.Duplicates != 100 {
		t.Fatalf("second commit %+v, want 100 inserted and 100 duplicates", res)
	}
	if n := count(t, pool, `SELECT count(*) FROM ticks`); n != 300 {
		t.Fatalf("%d ticks, want 300", n)
	}
	if n := count(t, pool, `SELECT count(*) - count(DISTINCT (symbol, ts, seq)) FROM ticks`); n != 0 {
		t.Fatalf("%d ticks stored twice", n)
	}
	want := map[string]int64{"ticks_p20261103": 149, "ticks_p20261104": 151}
	if got := rowsByPartition(t, pool, "ticks"); !equalCounts(got, want) {
		t.Errorf("ticks by partition %v, want %v", got, want)
	}
	// The ON CONFLICT path alone, below COPY's batch size, across midnight.
	small := &store.Batch{Group: "g", Topic: "ticks", Ticks: []store.TickRow{tickAt("MSFT", 149, at(149)), tickAt("MSFT", 151, at(151))},
		Offsets: []store.PartitionCommit{{Partition: 0, Expected: 400, Next: 402}}}
	if res, err := sink.Commit(ctx, small); err != nil || res.Inserted != 0 || res.Duplicates != 2 {
		t.Fatalf("resend of two stored ticks: %+v, %v; want 2 duplicates", res, err)
	}
}

// TestSameSeqOtherTS: a tick with a stored (symbol, seq) but another ts (a
// producer's bug) is another tick to the database: FindTick, which looks
// up (symbol, ts, seq), does not find it, and the sink stores it as a
// second row. The same tick again is a duplicate.
func TestSameSeqOtherTS(t *testing.T) {
	pool := openMigrated(t)
	ctx := context.Background()
	sink := store.NewSink(pool)
	ts1 := time.Date(2026, 11, 2, 15, 0, 0, 0, time.UTC)
	ts2 := ts1.Add(time.Second)
	ts3 := ts1.AddDate(0, 0, 2) // another day partition
	commit := func(next int64, rows ...store.TickRow) store.CommitResult {
		t.Helper()
		res, err := sink.Commit(ctx, &store.Batch{Group: "g", Topic: "ticks", Ticks: rows,
			Offsets: []store.PartitionCommit{{Partition: 0, Expected: next - 1, Next: next}}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	first := tickAt("NVDA", 7, ts1)
	first.Offset = 0
	if res := commit(0, first); res.Inserted != 1 {
		t.Fatalf("first commit %+v", res)
	}
	if st, ok, err := sink.FindTick(ctx, "NVDA", ts1, 7); err != nil || !ok || st.Offset != 0 {
		t.Fatalf("FindTick of the stored tick: %+v, %v, %v", st, ok, err)
	}
	for _, ts := range []time.Time{ts2, ts3} {
		if _, ok, err := sink.FindTick(ctx, "NVDA", ts, 7); err != nil || ok {
			t.Fatalf("FindTick of seq 7 at %v: found %v, %v; want not found", ts, ok, err)
		}
	}
	other := tickAt("NVDA", 7, ts2)
	other.Offset = 1
	if res := commit(1, other); res.Inserted != 1 || res.Duplicates != 0 {
		t.Fatalf("seq 7 with another ts: %+v, want it stored", res)
	}
	far := tickAt("NVDA", 7, ts3)
	far.Offset = 2
	if res := commit(2, far); res.Inserted != 1 {
		t.Fatalf("seq 7 on another day: %+v, want it stored", res)
	}
	again := tickAt("NVDA", 7, ts2)
	again.Offset = 3
	if res := commit(3, again); res.Inserted != 0 || res.Duplicates != 1 {
		t.Fatalf("the same (symbol, ts, seq) again: %+v, want a duplicate", res)
	}
	if n := count(t, pool, `SELECT count(*) FROM ticks WHERE symbol = 'NVDA' AND seq = 7`); n != 3 {
		t.Fatalf("%d rows of NVDA seq 7, want 3", n)
	}
}

// TestSinkRemakesADroppedPartition: retention dropping a day the sink has
// seen does not make a later tick of that day (a replay) fail, nor look
// refused: the sink makes the partition again.
func TestSinkRemakesADroppedPartition(t *testing.T) {
	pool := openMigrated(t)
	ctx := context.Background()
	sink := store.NewSink(pool)
	day := time.Date(2026, 9, 9, 12, 0, 0, 0, time.UTC)
	batch := func(seq, next int64) *store.Batch {
		return &store.Batch{Group: "g", Topic: "ticks", Ticks: []store.TickRow{tickAt("IBM", seq, day.Add(time.Duration(seq)*time.Second))},
			Rejected: []store.Rejected{{Topic: "ticks", Offset: next + 100, RecordTS: day, Reason: market.ReasonMalformedJSON}},
			Offsets:  []store.PartitionCommit{{Partition: 0, Expected: next - 1, Next: next}}}
	}
	if _, err := sink.Commit(ctx, batch(1, 0)); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{store.TicksTable, store.RejectedTable} {
		parts, err := store.DayPartitions(ctx, pool, table)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(parts, func(p store.DayPartition) bool { return p.Day.Equal(store.Day(day)) })
		if i < 0 {
			t.Fatalf("no %s partition of %v in %+v", table, day, parts)
		}
		if err := store.DropDayPartition(ctx, pool, parts[i]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := sink.Commit(ctx, batch(2, 1)); err != nil {
		t.Fatalf("a tick of a dropped day: %v", err)
	}
	if n := count(t, pool, `SELECT count(*) FROM ticks`); n != 1 {
		t.Fatalf("%d ticks, want the one after the drop", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM rejected_ticks`); n != 1 {
		t.Fatalf("%d rejected records, want the one after the drop", n)
	}
	// FindRefused makes the days it probes: a tick of a day without a
	// partition is not refused.
	bad, err := sink.FindRefused(ctx, []store.TickRow{tickAt("IBM", 3, time.Date(2024, 2, 29, 9, 0, 0, 0, time.UTC))})
	if err != nil || len(bad) != 0 {
		t.Fatalf("FindRefused of a tick of a new day: %v, %v; want none refused", bad, err)
	}
}

// TestRejectedStoredOncePerRecord: a rejected record delivered again (after
// a crash) is stored once, whenever it comes: the partition key is the
// record's own timestamp, received_at plays no part.
func TestRejectedStoredOncePerRecord(t *testing.T) {
	pool := openMigrated(t)
	ctx := context.Background()
	sink := store.NewSink(pool)
	recordTS := time.Date(2026, 11, 2, 23, 59, 59, 999_999_600, time.UTC) // below PostgreSQL's microsecond
	rj := store.Rejected{Topic: "ticks", Partition: 3, Offset: 77, RecordTS: recordTS, Reason: market.ReasonBadPrice, Raw: []byte(`{}`)}
	for i, next := range []int64{78, 79} {
		b := &store.Batch{Group: "g", Topic: "ticks", Rejected: []store.Rejected{rj},
			Offsets: []store.PartitionCommit{{Partition: 3, Expected: next - 1, Next: next}}}
		if i == 0 {
			b.Offsets[0].Expected = -1
		}
		if _, err := sink.Commit(ctx, b); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // another received_at
	}
	if n := count(t, pool, `SELECT count(*) FROM rejected_ticks`); n != 1 {
		t.Fatalf("%d rows for one record delivered twice, want 1", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM rejected_ticks_p20261102 WHERE record_ts = '2026-11-02 23:59:59.999999+00'`); n != 1 {
		t.Fatal("the record is not in its record time's partition, to the microsecond")
	}
}

// TestTablesSumsPartitions: the pipeline page's table sizes and rows count
// a partitioned table's partitions.
func TestTablesSumsPartitions(t *testing.T) {
	pool := openMigrated(t)
	ctx := context.Background()
	b := &store.Batch{Group: "g", Topic: "ticks", Offsets: []store.PartitionCommit{{Partition: 0, Expected: -1, Next: 3}}}
	for i := range 3 {
		b.Ticks = append(b.Ticks, tickAt("AMD", int64(i+1), time.Date(2026, 1, 1+i, 12, 0, 0, 0, time.UTC)))
	}
	if _, err := store.NewSink(pool).Commit(ctx, b); err != nil {
		t.Fatal(err)
	}
	tables, err := store.NewReader(pool).Tables(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(tables, func(t store.Table) bool { return t.Name == "ticks" })
	if i < 0 || tables[i].Rows != 3 || !tables[i].RowsExact || tables[i].SizeBytes < 3*8192 {
		t.Fatalf("ticks in Tables: %+v", tables)
	}
	if slices.ContainsFunc(tables, func(t store.Table) bool { return strings.HasPrefix(t.Name, "ticks_p") }) {
		t.Errorf("Tables lists partitions: %+v", tables)
	}
}

// TestPruningToTheDaysOfTheRange: a symbol's time-range read of ticks (the
// shape of the backfill's and the archive's reads, and of FindTick) plans
// and runs over the partitions of the range only, whether its bounds are
// known when planning or only when it runs (a generic plan).
func TestPruningToTheDaysOfTheRange(t *testing.T) {
	pool := openMigrated(t)
	ctx := context.Background()
	b := &store.Batch{Group: "g", Topic: "ticks", Offsets: []store.PartitionCommit{{Partition: 0, Expected: -1, Next: 60}}}
	for d := range 6 { // 2026-11-02 to 2026-11-07
		for i := range 10 {
			b.Ticks = append(b.Ticks, tickAt("AAPL", int64(d*10+i+1), time.Date(2026, 11, 2+d, 14, 30, i, 0, time.UTC)))
		}
	}
	if _, err := store.NewSink(pool).Commit(ctx, b); err != nil {
		t.Fatal(err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	// The partitions a plan names.
	plan := func(query string, args ...any) []string {
		t.Helper()
		rows, err := conn.Query(ctx, query, args...)
		if err != nil {
			t.Fatal(err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s\n%s", query, strings.Join(lines, "\n"))
		var out []string
		for _, l := range lines {
			for _, f := range strings.FieldsFunc(l, func(r rune) bool { return r == ' ' || r == '(' || r == ')' }) {
				if strings.HasPrefix(f, "ticks_p") && !slices.Contains(out, strings.TrimSuffix(f, "_pkey")) {
					out = append(out, strings.TrimSuffix(f, "_pkey"))
				}
			}
		}
		slices.Sort(out)
		return out
	}
	from, to := time.Date(2026, 11, 3, 20, 0, 0, 0, time.UTC), time.Date(2026, 11, 5, 1, 0, 0, 0, time.UTC)
	want := []string{"ticks_p20261103", "ticks_p20261104", "ticks_p20261105"}
	rangeQuery := `SELECT ts, seq, price, size FROM ticks WHERE symbol = $1 AND ts >= $2 AND ts < $3 ORDER BY ts, seq`
	if got := plan(`EXPLAIN (COSTS OFF) `+rangeQuery, "AAPL", from, to); !slices.Equal(got, want) {
		t.Errorf("range %v–%v plans over %v, want %v", from, to, got, want)
	}
	// A generic plan (a prepared statement's, once PostgreSQL settles on
	// one) prunes when it starts, and runs only the range's.
	if _, err := conn.Exec(ctx, `SET plan_cache_mode = force_generic_plan`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `PREPARE ranged (text, timestamptz, timestamptz) AS `+rangeQuery); err != nil {
		t.Fatal(err)
	}
	generic := fmt.Sprintf(`EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE ranged ('AAPL', '%s', '%s')`,
		from.Format(time.RFC3339), to.Format(time.RFC3339))
	if got := plan(generic); !slices.Equal(got, want) {
		t.Errorf("generic plan of range %v–%v runs over %v, want %v", from, to, got, want)
	}
	// FindTick's lookup: one partition, through its primary key.
	lookup := `SELECT kafka_partition, kafka_offset FROM ticks WHERE symbol = $1 AND ts = $2 AND seq = $3`
	if got := plan(`EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) `+lookup, "AAPL", time.Date(2026, 11, 6, 14, 30, 3, 0, time.UTC), int64(44)); !slices.Equal(got, []string{"ticks_p20261106"}) {
		t.Errorf("FindTick's lookup runs over %v, want ticks_p20261106 alone", got)
	}
}

// TestMigrationToDayPartitionsKeepsEveryRow migrates a database of the
// layout before day partitions (version 9) holding ticks of several days
// and rejected records: every row is kept, column for column, in the
// partition of its day, with the new keys; new rows continue the ids.
// Migrating down gives the old layout with the same rows, and up again.
func TestMigrationToDayPartitionsKeepsEveryRow(t *testing.T) {
	const before = 9 // the last version with ticks in one table
	ctx := context.Background()
	pool, err := store.Open(ctx, pgtest.New(t), 4)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, os.DirFS("migrations"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, before); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `
		INSERT INTO ticks (symbol, seq, ts, price, size, bid, ask, kafka_partition, kafka_offset, ingested_at)
		SELECT sym, g, timestamptz '2026-11-02 22:00:00+00' + g * interval '37 seconds' + (length(sym) * interval '1 microsecond'),
		       100 + g % 13 / 8.0, 1 + g % 7,
		       CASE WHEN g % 5 = 0 THEN NULL ELSE 99.5 END, CASE WHEN g % 5 = 0 THEN NULL ELSE 100.5 + g % 3 END,
		       length(sym) % 6, g, timestamptz '2026-11-05 00:00:00+00' + g * interval '1 millisecond'
		FROM unnest(ARRAY['AAPL', 'BRK.B', 'X']) sym, generate_series(1, 6000) g;
		INSERT INTO ticks (symbol, seq, ts, price, size, bid, ask, kafka_partition, kafka_offset)
		VALUES ('HIST', 1, '2001-09-10 13:30:00+00', 25.5, 300, 25.49, 25.51, 2, 99);
		INSERT INTO rejected_ticks (topic, partition, "offset", reason, detail, key, raw, received_at)
		SELECT 'ticks', g % 6, g, 'malformed_json', 'detail ' || g, 'K'::bytea, decode(md5(g::text), 'hex'),
		       timestamptz '2026-11-02 23:00:00+00' + g * interval '1 minute'
		FROM generate_series(1, 300) g;
		DELETE FROM rejected_ticks WHERE id = 300; -- the highest id gone: ids must not be reused`); err != nil {
		t.Fatal(err)
	}
	const ticksQ = `SELECT symbol, seq, ts, price, size, bid, ask, kafka_partition, kafka_offset, ingested_at FROM ticks ORDER BY symbol, seq`
	const rejectedQ = `SELECT id, topic, partition, "offset", reason, detail, key, raw, received_at FROM rejected_ticks ORDER BY id`
	ticksBefore, rejectedBefore := pgtest.Rows(t, pool, ticksQ), pgtest.Rows(t, pool, rejectedQ)
	if len(ticksBefore) != 18001 || len(rejectedBefore) != 299 {
		t.Fatalf("fixture: %d ticks, %d rejected", len(ticksBefore), len(rejectedBefore))
	}

	if err := store.Migrate(ctx, pool, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if got := pgtest.Rows(t, pool, ticksQ); !slices.Equal(got, ticksBefore) {
		t.Errorf("ticks changed in the migration: %d rows, %d before", len(got), len(ticksBefore))
	}
	if got := pgtest.Rows(t, pool, rejectedQ); !slices.Equal(got, rejectedBefore) {
		t.Errorf("rejected records changed in the migration: %d rows, %d before", len(got), len(rejectedBefore))
	}
	if n := count(t, pool, `SELECT count(*) FROM rejected_ticks WHERE record_ts <> received_at`); n != 0 {
		t.Errorf("%d rejected records with record_ts other than received_at", n)
	}
	// Each row in its day's partition, and the days around the present.
	byPart := rowsByPartition(t, pool, "ticks")
	if byPart["ticks_p20010910"] != 1 || byPart["ticks_p20261102"]+byPart["ticks_p20261103"]+byPart["ticks_p20261104"]+
		byPart["ticks_p20261105"] != 18000 {
		t.Errorf("ticks by partition: %v", byPart)
	}
	if n := count(t, pool, `SELECT count(*) FROM ticks WHERE tableoid::regclass::text <> 'ticks_p' || to_char(ts AT TIME ZONE 'UTC', 'YYYYMMDD')`); n != 0 {
		t.Errorf("%d ticks outside their day's partition", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM rejected_ticks WHERE tableoid::regclass::text <> 'rejected_ticks_p' || to_char(record_ts AT TIME ZONE 'UTC', 'YYYYMMDD')`); n != 0 {
		t.Errorf("%d rejected records outside their day's partition", n)
	}
	for _, table := range []string{store.TicksTable, store.RejectedTable} {
		for i := -1; i <= 2; i++ {
			name := store.PartitionName(table, time.Now().AddDate(0, 0, i))
			if n := count(t, pool, `SELECT count(*) FROM pg_inherits WHERE inhrelid = to_regclass('`+name+`')`); n != 1 {
				t.Errorf("no partition %s around the present", name)
			}
		}
	}
	// The keys and indexes of the new layout.
	defs := pgtest.Rows(t, pool, `SELECT conrelid::regclass::text, conname::text, pg_get_constraintdef(oid) FROM pg_constraint
		WHERE conrelid IN ('ticks'::regclass, 'rejected_ticks'::regclass) AND contype IN ('p', 'u') ORDER BY 1, 2`)
	wantDefs := []string{
		"rejected_ticks|rejected_ticks_pkey|PRIMARY KEY (id, record_ts)|",
		"rejected_ticks|rejected_ticks_record_key|UNIQUE (topic, partition, \"offset\", record_ts)|",
		"ticks|ticks_pkey|PRIMARY KEY (symbol, ts, seq)|",
	}
	if !slices.Equal(defs, wantDefs) {
		t.Errorf("keys:\n%s\nwant\n%s", strings.Join(defs, "\n"), strings.Join(wantDefs, "\n"))
	}
	if got := pgtest.Rows(t, pool, `SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'ticks'::regclass`); !slices.Equal(got, []string{"ticks_pkey|"}) {
		t.Errorf("indexes of ticks: %v, want the primary key alone", got)
	}
	if got := pgtest.Rows(t, pool, `SELECT attname::text FROM pg_attribute WHERE attrelid = 'ticks'::regclass AND attnum > 0 ORDER BY attnum`); !slices.Equal(got, []string{
		"ts|", "seq|", "price|", "size|", "bid|", "ask|", "kafka_offset|", "ingested_at|", "kafka_partition|", "symbol|"}) {
		t.Errorf("columns of ticks: %v", got)
	}
	// New rows: ticks through the sink, and ids after the old ones.
	rj := store.Rejected{Topic: "ticks", Offset: 301, RecordTS: time.Now(), Reason: market.ReasonEmpty}
	if _, err := store.NewSink(pool).Commit(ctx, &store.Batch{Group: "g", Topic: "ticks",
		Ticks: []store.TickRow{tickAt("AAPL", 6001, time.Now())}, Rejected: []store.Rejected{rj}}); err != nil {
		t.Fatal(err)
	}
	if n := count(t, pool, `SELECT id FROM rejected_ticks WHERE "offset" = 301`); n != 301 {
		t.Errorf("the next rejected record got id %d, want 301", n)
	}

	// Down and up again: the same rows (and the two new ones).
	if _, err := pool.Exec(ctx, `DELETE FROM ticks WHERE seq = 6001; DELETE FROM rejected_ticks WHERE "offset" = 301`); err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(ctx, before); err != nil {
		t.Fatal(err)
	}
	if got := pgtest.Rows(t, pool, ticksQ); !slices.Equal(got, ticksBefore) {
		t.Errorf("ticks changed migrating down: %d rows, %d before", len(got), len(ticksBefore))
	}
	if got := pgtest.Rows(t, pool, rejectedQ); !slices.Equal(got, rejectedBefore) {
		t.Errorf("rejected records changed migrating down: %d rows, %d before", len(got), len(rejectedBefore))
	}
	if got := pgtest.Rows(t, pool, `SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'ticks'::regclass ORDER BY 1`); !slices.Equal(got, []string{
		"ticks_pkey|", "ticks_symbol_ts|", "ticks_ts_brin|"}) {
		t.Errorf("indexes of ticks after migrating down: %v", got)
	}
	if err := store.Migrate(ctx, pool, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if got := pgtest.Rows(t, pool, ticksQ); !slices.Equal(got, ticksBefore) {
		t.Errorf("ticks changed migrating up again: %d rows, %d before", len(got), len(ticksBefore))
	}
}
