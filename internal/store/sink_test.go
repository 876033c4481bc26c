package store_test

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/anomaly"
	"github.com/stockpipe/stockpipe/internal/fixture"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
	"github.com/stockpipe/stockpipe/internal/store"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func openMigrated(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool := fixture.DB(t, 4)
	// Migrating twice is a no-op, as when several processes start at once.
	if err := store.Migrate(context.Background(), pool, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	return pool
}

func tick(sym string, seq int64) store.TickRow {
	return store.TickRow{Tick: market.Tick{
		Symbol: sym, Seq: seq, TS: time.Date(2026, 11, 2, 14, 30, 0, int(seq)*1000, time.UTC),
		Price: 100, Size: 100, Bid: 99.99, Ask: 100.01,
	}, Partition: 0, Offset: seq - 1}
}

func count(t *testing.T, pool *pgxpool.Pool, q string) int64 {
	t.Helper()
	var n int64
	if err := pool.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCommitStoresOnceAndFences(t *testing.T) {
	pool := openMigrated(t)
	sink := store.NewSink(pool)
	ctx := context.Background()

	b := &store.Batch{Group: "g", Topic: "ticks"}
	b.Ticks = append(b.Ticks, tick("AAPL", 1), tick("AAPL", 2), tick("AAPL", 2), tick("MSFT", 1))
	b.Rejected = append(b.Rejected, store.Rejected{Topic: "ticks", Partition: 0, Offset: 4,
		Reason: market.ReasonMalformedJSON, Detail: "expected a JSON object at byte 0", Raw: []byte{0xff, 0x00}})
	b.Offsets = append(b.Offsets, store.PartitionCommit{Partition: 0, Expected: -1, Next: 5, State: []byte("s1")})
	res, err := sink.Commit(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if res.Inserted != 3 || res.Duplicates != 1 {
		t.Fatalf("commit result %+v, want 3 inserted and 1 duplicate", res)
	}

	// A processor that read the partition before that commit is fenced:
	// nothing of its batch is stored.
	stale := &store.Batch{Group: "g", Topic: "ticks"}
	stale.Ticks = append(stale.Ticks, tick("AAPL", 3))
	stale.Offsets = append(stale.Offsets, store.PartitionCommit{Partition: 0, Expected: -1, Next: 6})
	if _, err := sink.Commit(ctx, stale); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("stale first commit: err = %v, want ErrFenced", err)
	}
	stale.Offsets[0].Expected = 3
	if _, err := sink.Commit(ctx, stale); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("stale commit: err = %v, want ErrFenced", err)
	}
	if n := count(t, pool, `SELECT count(*) FROM ticks WHERE seq = 3`); n != 0 {
		t.Fatalf("fenced batch stored %d rows", n)
	}

	// The owner continues from where it committed.
	stale.Offsets[0].Expected = 5
	if _, err := sink.Commit(ctx, stale); err != nil {
		t.Fatal(err)
	}
	got, err := sink.LoadOffsets(ctx, "g", "ticks", []int32{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Next != 6 {
		t.Fatalf("offsets = %+v, want partition 0 at 6 only", got)
	}
	if n := count(t, pool, `SELECT count(*) FROM rejected_ticks WHERE reason = 'malformed_json' AND raw = '\xff00'::bytea`); n != 1 {
		t.Fatalf("rejected rows with the raw bytes = %d, want 1", n)
	}
}

func TestSchemaRefusesInvalidTicks(t *testing.T) {
	pool := openMigrated(t)
	sink := store.NewSink(pool)
	for name, mutate := range map[string]func(*store.TickRow){
		"bid above ask":    func(r *store.TickRow) { r.Bid, r.Ask = 101, 100 },
		"NaN price":        func(r *store.TickRow) { r.Price = math.NaN() },
		"infinite ask":     func(r *store.TickRow) { r.Ask = math.Inf(1) },
		"zero size":        func(r *store.TickRow) { r.Size = 0 },
		"lower symbol":     func(r *store.TickRow) { r.Symbol = "aapl" },
		"non-positive seq": func(r *store.TickRow) { r.Seq = 0 },
	} {
		t.Run(name, func(t *testing.T) {
			r := tick("AAPL", 1)
			mutate(&r)
			b := &store.Batch{Group: "g", Topic: "ticks", Ticks: []store.TickRow{r}}
			if _, err := sink.Commit(context.Background(), b); err == nil {
				t.Fatal("the database accepted an invalid tick")
			}
		})
	}
}

func TestCheckURL(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"postgres://u@localhost:5432/db", true},
		{"postgresql://u:p@localhost/db?sslmode=require", true},
		{"host=localhost dbname=db", true},
		{"", false},
		{"mysql://u@localhost/db", false},
		{"postgres://u@localhost:notaport/db", false},
	} {
		if err := store.CheckURL(tc.url); (err == nil) != tc.ok {
			t.Errorf("CheckURL(%q) = %v, want ok=%v", tc.url, err, tc.ok)
		}
	}
	if got := store.Redact("postgres://u:secret@h/db"); got != "postgres://u:xxxxx@h/db" {
		t.Errorf("Redact = %q", got)
	}
}

// TestCommitFallsBackWhenCopyMeetsStoredTicks: COPY cannot skip a stored
// (symbol, seq); the sink must redo the batch with ON CONFLICT and store
// exactly the new rows.
func TestCommitFallsBackWhenCopyMeetsStoredTicks(t *testing.T) {
	pool := openMigrated(t)
	sink := store.NewSink(pool)
	ctx := context.Background()

	first := &store.Batch{Group: "g", Topic: "ticks"}
	for seq := int64(1); seq <= 200; seq++ {
		first.Ticks = append(first.Ticks, tick("AAPL", seq))
	}
	first.Offsets = append(first.Offsets, store.PartitionCommit{Partition: 0, Expected: -1, Next: 200})
	res, err := sink.Commit(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	if res.Inserted != 200 || res.Duplicates != 0 {
		t.Fatalf("first commit %+v, want 200 inserted", res)
	}

	// Seqs 101–300: half already stored.
	second := &store.Batch{Group: "g", Topic: "ticks"}
	for seq := int64(101); seq <= 300; seq++ {
		second.Ticks = append(second.Ticks, tick("AAPL", seq))
	}
	second.Offsets = append(second.Offsets, store.PartitionCommit{Partition: 0, Expected: 200, Next: 400})
	if res, err = sink.Commit(ctx, second); err != nil {
		t.Fatal(err)
	}
	if res.Inserted != 100 || res.Duplicates != 100 {
		t.Fatalf("second commit %+v, want 100 inserted and 100 duplicates", res)
	}
	if n := count(t, pool, `SELECT count(*) FROM ticks`); n != 300 {
		t.Fatalf("ticks rows = %d, want 300", n)
	}
	if n := count(t, pool, `SELECT next_offset FROM consumer_offsets`); n != 400 {
		t.Fatalf("next_offset = %d, want 400", n)
	}
}

// TestFindRefusedIsolatesBadRows: with a constraint the validator does not
// know, the refused rows are found exactly and nothing is stored.
func TestFindRefusedIsolatesBadRows(t *testing.T) {
	pool := openMigrated(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `ALTER TABLE ticks ADD CONSTRAINT price_not_13 CHECK (price <> 13)`); err != nil {
		t.Fatal(err)
	}
	sink := store.NewSink(pool)
	var rows []store.TickRow
	wantBad := map[int]bool{0: true, 517: true, 518: true, 999: true}
	for i := range 1000 {
		r := tick("MSFT", int64(i+1))
		if wantBad[i] {
			r.Price = 13
		}
		rows = append(rows, r)
	}
	b := &store.Batch{Group: "g", Topic: "ticks", Ticks: rows,
		Offsets: []store.PartitionCommit{{Partition: 0, Expected: -1, Next: 1000}}}
	_, err := sink.Commit(ctx, b)
	var refused *store.RefusedError
	if !errors.As(err, &refused) || refused.Table != "ticks" || !store.Permanent(err) {
		t.Fatalf("commit err = %v, want a RefusedError for ticks", err)
	}
	bad, err := sink.FindRefused(ctx, rows)
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) != len(wantBad) {
		t.Fatalf("found %d refused rows (%v), want %d", len(bad), bad, len(wantBad))
	}
	for _, r := range bad {
		if !wantBad[r.Index] || !strings.Contains(r.Err.Error(), "price_not_13") {
			t.Errorf("refusal %d: %v", r.Index, r.Err)
		}
	}
	if n := count(t, pool, `SELECT count(*) FROM ticks`); n != 0 {
		t.Fatalf("the search stored %d rows", n)
	}
}

// TestBatchedStatementErrorsNameTheirTable: a batch small enough to skip
// COPY sends every statement in one pipelined round trip; a refusal must
// still come back as a RefusedError naming the table whose rows were
// refused (the processor isolates ticks only), and leave nothing stored.
func TestBatchedStatementErrorsNameTheirTable(t *testing.T) {
	pool := openMigrated(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `ALTER TABLE rejected_ticks ADD CONSTRAINT no_refuse_me CHECK (detail <> 'refuse me')`); err != nil {
		t.Fatal(err)
	}
	sink := store.NewSink(pool)
	good := func() *store.Batch {
		return &store.Batch{Group: "g", Topic: "ticks",
			Ticks:    []store.TickRow{tick("AAPL", 1), tick("AAPL", 2)},
			Rejected: []store.Rejected{{Topic: "ticks", Partition: 0, Offset: 2, Reason: market.ReasonMalformedJSON, Detail: "fine"}},
			Anomalies: []anomaly.Anomaly{{Symbol: "AAPL", TS: time.Date(2026, 11, 2, 14, 30, 0, 0, time.UTC),
				Kind: anomaly.KindPriceJump, Severity: anomaly.SeverityHigh, Value: 9, Threshold: 6, Detail: "jumped"}},
			Offsets: []store.PartitionCommit{{Partition: 0, Expected: -1, Next: 3}}}
	}
	for table, spoil := range map[string]func(*store.Batch){
		"ticks":          func(b *store.Batch) { b.Ticks[1].Bid, b.Ticks[1].Ask = 101, 100 },
		"rejected_ticks": func(b *store.Batch) { b.Rejected[0].Detail = "refuse me" },
		"anomalies":      func(b *store.Batch) { b.Anomalies[0].Severity = "dreadful" },
	} {
		b := good()
		spoil(b)
		_, err := sink.Commit(ctx, b)
		var refused *store.RefusedError
		if !errors.As(err, &refused) || refused.Table != table {
			t.Errorf("%s refused: err = %v, want a RefusedError for %s", table, err, table)
		}
	}
	for _, table := range []string{"ticks", "rejected_ticks", "anomalies", "consumer_offsets"} {
		if n := count(t, pool, `SELECT count(*) FROM `+table); n != 0 {
			t.Errorf("refused batches left %d rows in %s", n, table)
		}
	}
	res, err := sink.Commit(ctx, good())
	if err != nil {
		t.Fatal(err)
	}
	if res.Inserted != 2 || res.Duplicates != 0 || res.Anomalies != 1 {
		t.Fatalf("commit result %+v, want 2 ticks and 1 anomaly", res)
	}
}
