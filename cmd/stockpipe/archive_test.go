package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stockpipe/stockpipe/internal/archive"
	"github.com/stockpipe/stockpipe/internal/fixture"
	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
)

// TestJourneyReplayParquet: a simulated day goes through one pipeline
// (generate → broker → process → PostgreSQL), with a few trade-only ticks
// beside it; the day is archived to Parquet; `replay --parquet` sends the
// archive through a second broker and processor into a fresh database,
// which then holds exactly the same ticks, quotes and no quotes alike.
//
// STOCKPIPE_ARCHIVE_TICKS sets how many ticks are simulated (default
// 20,000); the test logs the archive's bytes per tick, the README's
// figure with 200,000.
func TestJourneyReplayParquet(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	count := 20_000
	if v := os.Getenv("STOCKPIPE_ARCHIVE_TICKS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("STOCKPIPE_ARCHIVE_TICKS=%q: want a count", v)
		}
		count = n
	}
	ctx := context.Background()
	day := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)

	addr := runBroker(t)
	dbURL := pgtest.New(t)
	gen := start(t, "generate", "--brokers", addr, "--count", strconv.Itoa(count), "--seed", "7",
		"--start", "2026-11-02T14:30:00Z", "--speed", "0")
	gen.wait(t)
	proc := start(t, "process", "--brokers", addr, "--database-url", dbURL)
	pool := fixture.Open(t, dbURL, 4)
	waitFor(t, "the simulated ticks to be stored", 3*time.Minute, func() bool {
		n, err := countTicks(pool)
		return err == nil && n == int64(count)
	})
	proc.signal(t, syscall.SIGINT)
	proc.wait(t)
	// The table, or its partitions if it has them.
	pgBytes := scalar(t, pool, `SELECT sum(pg_total_relation_size(relid))::bigint FROM pg_partition_tree('ticks')`)
	// Trade-only ticks, as Finnhub sends them: no quote.
	var noQuote [][]any
	for i := range 5 {
		noQuote = append(noQuote, []any{"TRADEONLY", int64(i + 1), day.Add(15*time.Hour + time.Duration(i)*time.Second),
			10.5 + float64(i), int64(10 * (i + 1)), nil, nil, int32(0), int64(i)})
	}
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{"ticks"},
		[]string{"symbol", "seq", "ts", "price", "size", "bid", "ask", "kafka_partition", "kafka_offset"}, pgx.CopyFromRows(noQuote)); err != nil {
		t.Fatal(err)
	}
	want := tickRows(t, pool)

	dir := t.TempDir()
	res, err := archive.WriteDay(ctx, pool, dir, day)
	if err != nil {
		t.Fatal(err)
	}
	if res.Ticks.Rows != int64(len(want)) {
		t.Fatalf("archived %d ticks; the database holds %d", res.Ticks.Rows, len(want))
	}
	t.Logf("archived %d simulated ticks (+5 trade-only) of 30 symbols: %d bytes of Parquet, %.1f bytes per tick "+
		"(PostgreSQL: %.1f bytes per tick with indexes); %d candles in %d bytes",
		count, res.Ticks.Bytes, res.BytesPerTick(), float64(pgBytes)/float64(count),
		res.Candles.Rows, res.Candles.Bytes)

	// Into an empty pipeline: a broker and a database of their own. The
	// day after is asked for too, and is said to be missing.
	addr2 := runBroker(t)
	dbURL2 := pgtest.New(t)
	rp := start(t, "replay", "--brokers", addr2, "--parquet", dir, "--from", "2026-11-02", "--to", "2026-11-03")
	rp.wait(t)
	if out := rp.out.String(); !strings.Contains(out, fmt.Sprintf("%d ticks of 1 archived days", len(want))) ||
		!strings.Contains(out, "not archived: 2026-11-03") {
		t.Fatalf("replay: %s", out)
	}
	proc2 := start(t, "process", "--brokers", addr2, "--database-url", dbURL2)
	defer proc2.signal(t, syscall.SIGINT)
	pool2 := openPool(t, dbURL2)
	waitFor(t, "the replayed ticks to be stored", 3*time.Minute, func() bool {
		n, err := countTicks(pool2)
		return err == nil && n == int64(len(want))
	})
	if got := tickRows(t, pool2); !slices.Equal(got, want) {
		for i := range min(len(got), len(want)) {
			if got[i] != want[i] {
				t.Fatalf("replayed ticks differ from the archived day's; first at %d:\n%s\nwant\n%s", i, got[i], want[i])
			}
		}
		t.Fatalf("replayed %d ticks; want %d", len(got), len(want))
	}
	if n := scalar(t, pool2, `SELECT count(*) FROM rejected_ticks`); n != 0 {
		t.Errorf("%d replayed ticks rejected", n)
	}

	// Replaying the same archive again stores nothing new: the ticks are
	// behind their symbols' newest, and replay says so before sending.
	again := start(t, "replay", "--brokers", addr2, "--parquet", dir, "--from", "2026-11-02")
	again.wait(t)
	if out := again.out.String(); !strings.Contains(out, "newer than archived ones") {
		t.Errorf("replaying into a pipeline that has the symbols: no warning:\n%s", out)
	}
}

// TestReplayParquetFlags: --parquet's mistakes are one line each.
func TestReplayParquetFlags(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--parquet", dir}, "--parquet needs --from"},
		{[]string{"--parquet", dir, "--from", "2026-11-2"}, `--from "2026-11-2": want a date`},
		{[]string{"--parquet", dir, "--from", "2026-11-02", "--to", "2026-11-01"}, "--to 2026-11-01 is before --from 2026-11-02"},
		{[]string{"--parquet", dir, "--from", "2026-11-02", "--speed", "10"}, "--speed does not apply to --parquet"},
		{[]string{"--parquet", dir + "/nonexistent", "--from", "2026-11-02"}, "not a directory"},
		{[]string{"--parquet", dir, "--from", "2026-11-02"}, "holds no ticks of 2026-11-02 to 2026-11-02"},
		{[]string{"--parquet", dir, "--file", "a.csv"}, "--file and --parquet given together: replay one at a time"},
	} {
		code, _, stderr := runCLI(t, append([]string{"replay", "--brokers", "127.0.0.1:1"}, tc.args...)...)
		if code == 0 || !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
			t.Errorf("replay %v: code %d, stderr %q; want one line with %q", tc.args, code, stderr, tc.want)
		}
	}
}
