package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"

	"github.com/stockpipe/stockpipe/internal/fixture"
	"github.com/stockpipe/stockpipe/internal/market"
)

// day is the UTC day the tests archive.
var day = time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)

// symbols and how many ticks each has on day. Their byte order differs
// from en_US collation's ('.' and '-' sort before letters in bytes but are
// ignored by en_US), and NOQ's ticks have no quote.
var symbols = map[string]int{"AAPL": 400, "AAPL.H": 50, "BRK-B": 120, "BRKA": 30, "MSFT": 300, "NOQ": 80, "ZZ": 1}

// smallGroups makes row groups of a few hundred rows for the test.
func smallGroups(t *testing.T, target, limit int64) {
	t.Helper()
	g, m := GroupRows, MaxGroupRows
	GroupRows, MaxGroupRows = target, limit
	t.Cleanup(func() { GroupRows, MaxGroupRows = g, m })
}

// hook sets afterWrite for the test.
func hook(t *testing.T, fn func(kind, tmp string)) {
	t.Helper()
	afterWrite = fn
	t.Cleanup(func() { afterWrite = nil })
}

// seed stores the ticks of symbols on day (every third without a quote,
// all of NOQ's without; two of AAPL's at the same ts), one tick of AAPL
// just before the day and one just after, and candles of three symbols
// (1m with and without indicators, an RSI of exactly 0, 5m, 1d) on the day
// and either side of it.
func seed(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	var rows [][]any
	offset := map[int32]int64{}
	add := func(sym string, seq int64, ts time.Time, quote bool) {
		price := 100 + float64(seq%17)/8
		var bid, ask any
		if quote {
			bid, ask = price-0.01, price+0.02
		}
		part := int32(len(sym) % 3)
		offset[part]++
		rows = append(rows, []any{sym, seq, ts, price, int64(100 * (1 + seq%5)), bid, ask, part, offset[part]})
	}
	for sym, n := range symbols {
		for i := range n {
			ts := day.Add(9*time.Hour + time.Duration(i)*3*time.Second + time.Duration(len(sym))*123*time.Microsecond)
			if sym == "AAPL" && i == 11 {
				ts = ts.Add(-3 * time.Second) // the same ts as seq 11: seq orders them
			}
			add(sym, int64(i+2), ts, sym != "NOQ" && i%3 != 0)
		}
	}
	add("AAPL", 1, day.Add(-time.Microsecond), true)
	add("AAPL", 10_000, day.AddDate(0, 0, 1), true)
	ensureDays(t, pool, day.AddDate(0, 0, -1), day, day.AddDate(0, 0, 1))
	copyRows(t, pool, "ticks", []string{"symbol", "seq", "ts", "price", "size", "bid", "ask", "kafka_partition", "kafka_offset"}, rows)

	var candles [][]any
	for _, sym := range []string{"AAPL", "BRK-B", "MSFT"} {
		for i := range 20 {
			b := day.Add(14*time.Hour + 30*time.Minute + time.Duration(i)*time.Minute)
			var ind any
			if i >= 4 {
				ind = 100.5 + float64(i)/10
			}
			var rsi any
			switch {
			case i == 15:
				rsi = 0.0 // a legitimate zero, not a NULL
			case i >= 14:
				rsi = 55.5
			}
			candles = append(candles, []any{sym, "1m", b, 100.0, 101.0, 99.0, 100.5, int64(1000 + i), 100.2, int64(10 + i),
				ind, nil, ind, nil, ind, ind, rsi, i < 19})
		}
		candles = append(candles,
			[]any{sym, "5m", day.Add(14*time.Hour + 30*time.Minute), 100.0, 101.0, 99.0, 100.5, int64(5000), nil, int64(50), nil, nil, nil, nil, nil, nil, nil, true},
			[]any{sym, "1d", day.Add(5 * time.Hour), 100.0, 101.0, 99.0, 100.5, int64(90000), 100.1, int64(900), nil, nil, nil, nil, nil, nil, nil, true},
			[]any{sym, "1m", day.Add(-time.Minute), 100.0, 101.0, 99.0, 100.5, int64(7), 100.2, int64(1), nil, nil, nil, nil, nil, nil, nil, true},
			[]any{sym, "1m", day.AddDate(0, 0, 1), 100.0, 101.0, 99.0, 100.5, int64(7), 100.2, int64(1), nil, nil, nil, nil, nil, nil, nil, false})
	}
	copyRows(t, pool, "candles", []string{"symbol", "interval", "bucket", "open", "high", "low", "close", "volume", "vwap", "trades",
		"sma_5", "sma_20", "ema_12", "ema_26", "bb_upper", "bb_lower", "rsi_14", "final"}, candles)
}

// ensureDays makes the day partitions of ticks that rows of days need,
// when ticks is partitioned by day (as the processor's sink makes them for
// the days it stores), so that the tests run on either layout of the table.
func ensureDays(t *testing.T, pool *pgxpool.Pool, days ...time.Time) {
	t.Helper()
	ctx := context.Background()
	var partitioned bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'ticks'::regclass)`).
		Scan(&partitioned); err != nil {
		t.Fatal(err)
	}
	if !partitioned {
		return
	}
	for _, d := range days {
		d = Day(d)
		q := fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s PARTITION OF ticks FOR VALUES FROM ('%s') TO ('%s')`,
			pgx.Identifier{"ticks_p" + d.Format("20060102")}.Sanitize(), d.Format(time.RFC3339), d.AddDate(0, 0, 1).Format(time.RFC3339))
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("making the partition of %s: %v", d.Format(time.DateOnly), err)
		}
	}
}

func copyRows(t *testing.T, pool *pgxpool.Pool, table string, cols []string, rows [][]any) {
	t.Helper()
	if _, err := pool.CopyFrom(context.Background(), pgx.Identifier{table}, cols, pgx.CopyFromRows(rows)); err != nil {
		t.Fatalf("storing %s: %v", table, err)
	}
}

// dbRows are the day's rows of a table as strings, every column the file
// has, in the file's order (symbols in byte order).
func dbRows(t *testing.T, pool *pgxpool.Pool, kind string, d time.Time) []string {
	t.Helper()
	q := `SELECT symbol, ts, seq, price, size, bid, ask, kafka_partition, kafka_offset FROM ticks
		WHERE ts >= $1 AND ts < $2 ORDER BY symbol COLLATE "C", ts, seq`
	if kind == KindCandles {
		q = `SELECT symbol, interval, bucket, open, high, low, close, volume, vwap, trades, sma_5, sma_20, ema_12, ema_26,
			bb_upper, bb_lower, rsi_14, final, updated_at FROM candles
			WHERE bucket >= $1 AND bucket < $2 ORDER BY symbol COLLATE "C", interval COLLATE "C", bucket`
	}
	rows, err := pool.Query(context.Background(), q, d, d.AddDate(0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		vals, err := r.Values()
		return formatRow(vals...), err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// fileRows are the rows of a file as dbRows has them.
func fileRows(t *testing.T, path, kind string) []string {
	t.Helper()
	var out []string
	if kind == KindTicks {
		rows, err := parquet.ReadFile[tickRow](path)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			// A missing quote is NULL in the database, 0 in a tickRow.
			var bid, ask any
			if r.Bid != 0 || r.Ask != 0 {
				bid, ask = r.Bid, r.Ask
			}
			out = append(out, formatRow(r.Symbol, r.TS, r.Seq, r.Price, r.Size, bid, ask, r.KafkaPartition, r.KafkaOffset))
		}
		return out
	}
	rows, err := parquet.ReadFile[candleRow](path)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		out = append(out, formatRow(r.Symbol, r.Interval, r.Bucket, r.Open, r.High, r.Low, r.Close, r.Volume, r.VWAP, r.Trades,
			r.SMA5, r.SMA20, r.EMA12, r.EMA26, r.BBUpper, r.BBLower, r.RSI14, r.Final, r.UpdatedAt))
	}
	return out
}

// formatRow writes values alike whichever side they come from: times in
// UTC, NULL and nil pointers as NULL, integers without their width.
func formatRow(vals ...any) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		switch x := v.(type) {
		case nil:
			parts[i] = "NULL"
		case *float64:
			if x == nil {
				parts[i] = "NULL"
			} else {
				parts[i] = fmt.Sprint(*x)
			}
		case time.Time:
			parts[i] = x.UTC().Format(time.RFC3339Nano)
		case int32:
			parts[i] = fmt.Sprint(int64(x))
		default:
			parts[i] = fmt.Sprint(x)
		}
	}
	return strings.Join(parts, " ")
}

// openFile opens a Parquet file with parquet-go.
func openFile(t *testing.T, path string) *parquet.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return pf
}

// groupRanges returns each row group's rows and symbol range from the
// footer's statistics, failing unless every column chunk is zstd.
func groupRanges(t *testing.T, path string) (rows []int64, ranges [][2]string) {
	t.Helper()
	md := openFile(t, path).Metadata()
	for _, rg := range md.RowGroups {
		for _, c := range rg.Columns {
			if c.MetaData.Codec != format.Zstd {
				t.Errorf("%s: column %v is %v, not zstd", path, c.MetaData.PathInSchema, c.MetaData.Codec)
			}
		}
		st := rg.Columns[0].MetaData.Statistics
		if rg.Columns[0].MetaData.PathInSchema[0] != "symbol" || st.MinValue == nil || st.MaxValue == nil {
			t.Fatalf("%s: the first column is %v with statistics %+v; want symbol with min and max", path,
				rg.Columns[0].MetaData.PathInSchema, st)
		}
		rows = append(rows, rg.NumRows)
		ranges = append(ranges, [2]string{string(st.MinValue), string(st.MaxValue)})
	}
	return rows, ranges
}

// archiveRow is the archives table's row of (day, kind).
func archiveRow(t *testing.T, pool *pgxpool.Pool, d time.Time, kind string) (path string, rows, size int64, at time.Time) {
	t.Helper()
	err := pool.QueryRow(context.Background(), `SELECT path, rows, bytes, archived_at FROM archives WHERE day = $1 AND kind = $2`,
		d, kind).Scan(&path, &rows, &size, &at)
	if err != nil {
		t.Fatalf("archives row of %s %s: %v", d.Format(time.DateOnly), kind, err)
	}
	return path, rows, size, at
}

// noTemp fails if a temporary file is left in a day's directories.
func noTemp(t *testing.T, dir string, d time.Time) {
	t.Helper()
	for _, kind := range []string{KindTicks, KindCandles} {
		entries, err := os.ReadDir(filepath.Dir(Path(dir, kind, d)))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Name() != FileName {
				t.Errorf("left in %s's directory: %s", kind, e.Name())
			}
		}
	}
}

func TestWriteDay(t *testing.T) {
	smallGroups(t, 250, 1000)
	ctx := context.Background()
	pool := fixture.DB(t, 4)
	seed(t, pool)
	dir := t.TempDir()

	// Noon New York names the same UTC date.
	res, err := WriteDay(ctx, pool, dir, day.Add(17*time.Hour).In(market.NewYork))
	if err != nil {
		t.Fatal(err)
	}
	wantTicks := 0
	for _, n := range symbols {
		wantTicks += n
	}
	for _, c := range []struct {
		kind string
		f    File
		want int64
	}{{KindTicks, res.Ticks, int64(wantTicks)}, {KindCandles, res.Candles, 3 * 22}} {
		want := filepath.Join(dir, c.kind, "date=2026-11-02", "part-0.parquet")
		if c.f.Path != want || c.f.Rows != c.want {
			t.Errorf("%s: %+v; want %s with %d rows", c.kind, c.f, want, c.want)
		}
		st, err := os.Stat(want)
		if err != nil || st.Size() != c.f.Bytes {
			t.Errorf("%s: stat %v, %v; Result says %d bytes", c.kind, st, err, c.f.Bytes)
		}
		if got, wantRows := fileRows(t, want, c.kind), dbRows(t, pool, c.kind, day); !slices.Equal(got, wantRows) {
			t.Errorf("%s: the file's rows differ from the database's:\nfile:\n%s\ndatabase:\n%s", c.kind,
				strings.Join(got, "\n"), strings.Join(wantRows, "\n"))
		}
		path, rows, size, _ := archiveRow(t, pool, day, c.kind)
		if path != c.f.Path || rows != c.f.Rows || size != c.f.Bytes {
			t.Errorf("archives row of %s: %s, %d rows, %d bytes; want %+v", c.kind, path, rows, size, c.f)
		}
	}
	if res.BytesPerTick() <= 0 || res.BytesPerTick() != float64(res.Ticks.Bytes)/float64(wantTicks) {
		t.Errorf("BytesPerTick = %v", res.BytesPerTick())
	}
	noTemp(t, dir, day)

	// Row groups: cut at symbol boundaries once past 250 rows, so their
	// symbol ranges follow each other without overlapping.
	rows, ranges := groupRanges(t, res.Ticks.Path)
	wantRanges := [][2]string{{"AAPL", "AAPL"}, {"AAPL.H", "MSFT"}, {"NOQ", "ZZ"}}
	if !slices.Equal(ranges, wantRanges) || !slices.Equal(rows, []int64{400, 500, 81}) {
		t.Errorf("ticks row groups: %v rows, symbol ranges %v; want [400 500 81], %v", rows, ranges, wantRanges)
	}
	for i := 1; i < len(ranges); i++ {
		if ranges[i-1][1] >= ranges[i][0] {
			t.Errorf("row groups %d and %d overlap: %v, %v", i-1, i, ranges[i-1], ranges[i])
		}
	}
	if _, ranges := groupRanges(t, res.Candles.Path); len(ranges) != 1 || ranges[0] != [2]string{"AAPL", "MSFT"} {
		t.Errorf("candles row groups: %v", ranges)
	}
	pf := openFile(t, res.Ticks.Path)
	if sc := pf.Metadata().RowGroups[0].SortingColumns; len(sc) != 3 {
		t.Errorf("sorting columns: %+v", sc)
	}
	if v, ok := pf.Lookup("stockpipe.date"); !ok || v != "2026-11-02" {
		t.Errorf("stockpipe.date = %q, %v", v, ok)
	}

	// Read gives the ticks back, in the file's order, with their quotes
	// or none.
	var got []string
	n, err := Read(ctx, dir, day.AddDate(0, 0, -2), day.AddDate(0, 0, 1), func(tk market.Tick) error {
		var bid, ask any
		if tk.HasQuote() {
			bid, ask = tk.Bid, tk.Ask
		}
		if tk.TS.Location() != time.UTC {
			return fmt.Errorf("ts %v not in UTC", tk.TS)
		}
		got = append(got, formatRow(tk.Symbol, tk.TS, tk.Seq, tk.Price, tk.Size, bid, ask))
		return nil
	})
	if err != nil || n != int64(wantTicks) {
		t.Fatalf("Read: %d, %v; want %d ticks", n, err, wantTicks)
	}
	var want []string
	for _, r := range dbRows(t, pool, KindTicks, day) {
		f := strings.Fields(r)
		want = append(want, strings.Join(f[:7], " "))
	}
	if !slices.Equal(got, want) {
		t.Errorf("Read's ticks differ from the database's:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	stop := errors.New("stop")
	if n, err := Read(ctx, dir, day, day, func(market.Tick) error { return stop }); n != 0 || !errors.Is(err, stop) {
		t.Errorf("Read with fn failing: %d, %v", n, err)
	}
	if _, err := Read(ctx, dir, day, day.AddDate(0, 0, -1), func(market.Tick) error { return nil }); err == nil {
		t.Error("Read with from after to: no error")
	}

	// A day without rows gets files without rows.
	empty := day.AddDate(0, 0, 5)
	res, err = WriteDay(ctx, pool, dir, empty)
	if err != nil || res.Ticks.Rows != 0 || res.Candles.Rows != 0 || res.BytesPerTick() != 0 {
		t.Fatalf("archiving an empty day: %+v, %v", res, err)
	}
	if n, err := Read(ctx, dir, empty, empty, func(market.Tick) error { return nil }); n != 0 || err != nil {
		t.Errorf("Read of an empty day: %d, %v", n, err)
	}
}

// TestWriteDayAgainReplaces archives a day, adds ticks to it and archives
// it again: until the new file is renamed into place, the old one is whole
// under the final name (and stays whole for a reader that had it open);
// then the new one is, and the archives row follows.
func TestWriteDayAgainReplaces(t *testing.T) {
	ctx := context.Background()
	pool := fixture.DB(t, 4)
	seed(t, pool)
	dir := t.TempDir()
	first, err := WriteDay(ctx, pool, dir, day)
	if err != nil {
		t.Fatal(err)
	}
	_, _, _, firstAt := archiveRow(t, pool, day, KindTicks)
	old, err := os.Open(first.Ticks.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()

	copyRows(t, pool, "ticks", []string{"symbol", "seq", "ts", "price", "size", "bid", "ask", "kafka_partition", "kafka_offset"},
		[][]any{{"NEW", int64(1), day.Add(20 * time.Hour), 5.0, int64(1), nil, nil, int32(0), int64(99)}})
	var during []string
	hook(t, func(kind, tmp string) {
		if kind != KindTicks {
			return
		}
		// The new file is complete beside the old one, which is still in
		// place with its rows.
		if filepath.Dir(tmp) != filepath.Dir(first.Ticks.Path) || tmp == first.Ticks.Path {
			t.Errorf("temporary file %s", tmp)
		}
		during = fileRows(t, first.Ticks.Path, KindTicks)
	})
	second, err := WriteDay(ctx, pool, dir, day)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(during)) != first.Ticks.Rows {
		t.Errorf("while the new file was written, the final name held %d rows; want the old file's %d", len(during), first.Ticks.Rows)
	}
	if second.Ticks.Path != first.Ticks.Path || second.Ticks.Rows != first.Ticks.Rows+1 {
		t.Errorf("second archive: %+v; first %+v", second.Ticks, first.Ticks)
	}
	if got, want := fileRows(t, second.Ticks.Path, KindTicks), dbRows(t, pool, KindTicks, day); !slices.Equal(got, want) {
		t.Errorf("the new file's rows differ from the database's")
	}
	_, rows, size, at := archiveRow(t, pool, day, KindTicks)
	if rows != second.Ticks.Rows || size != second.Ticks.Bytes || !at.After(firstAt) {
		t.Errorf("archives row after the re-run: %d rows, %d bytes, at %v (first at %v); want %+v", rows, size, at, firstAt, second.Ticks)
	}
	// The old file, open across the rename, still reads whole.
	st, _ := old.Stat()
	pf, err := parquet.OpenFile(old, st.Size())
	if err != nil || pf.NumRows() != first.Ticks.Rows {
		t.Errorf("the old file, opened before the rename: %v rows, %v", pf.NumRows(), err)
	}
	noTemp(t, dir, day)
}

// TestWriteDayVerifies: a file that does not hold the day's rows is never
// put in place. A tick stored for the day while it is archived (after the
// rows were read) makes the file short of the database; a file damaged
// after it was written fails to read back. Either way WriteDay fails, the
// new file is gone, and the previous archive and its archives row are
// kept.
func TestWriteDayVerifies(t *testing.T) {
	ctx := context.Background()
	pool := fixture.DB(t, 4)
	seed(t, pool)
	dir := t.TempDir()
	first, err := WriteDay(ctx, pool, dir, day)
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(first.Ticks.Path)
	if err != nil {
		t.Fatal(err)
	}
	_, _, _, firstAt := archiveRow(t, pool, day, KindTicks)
	kept := func(what string) {
		t.Helper()
		if after, err := os.ReadFile(first.Ticks.Path); err != nil || !bytes.Equal(after, before) {
			t.Errorf("%s: the archived file changed (%v)", what, err)
		}
		if _, rows, _, at := archiveRow(t, pool, day, KindTicks); rows != first.Ticks.Rows || !at.Equal(firstAt) {
			t.Errorf("%s: the archives row changed: %d rows at %v", what, rows, at)
		}
		noTemp(t, dir, day)
	}

	seq := int64(5000)
	hook(t, func(kind, _ string) {
		if kind != KindTicks {
			return
		}
		seq++
		copyRows(t, pool, "ticks", []string{"symbol", "seq", "ts", "price", "size", "bid", "ask", "kafka_partition", "kafka_offset"},
			[][]any{{"MSFT", seq, day.Add(23 * time.Hour), 5.0, int64(1), 4.9, 5.1, int32(0), int64(seq)}})
	})
	_, err = WriteDay(ctx, pool, dir, day)
	if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "MSFT: file 300, database 301") ||
		!strings.Contains(err.Error(), "while it was archived") {
		t.Fatalf("a tick stored while archiving: %v; want a mismatch naming MSFT", err)
	}
	kept("after the mismatch")

	hook(t, func(kind, tmp string) {
		if kind == KindTicks {
			if err := os.Truncate(tmp, 100); err != nil {
				t.Error(err)
			}
		}
	})
	if _, err = WriteDay(ctx, pool, dir, day); err == nil || !strings.Contains(err.Error(), "reading the written file back") {
		t.Fatalf("a damaged file: %v", err)
	}
	kept("after the damaged file")
}

// TestMaxGroupRows: a symbol with more rows than MaxGroupRows spans several
// groups, whose ranges then touch at that symbol and no more.
func TestMaxGroupRows(t *testing.T) {
	smallGroups(t, 250, 150)
	pool := fixture.DB(t, 4)
	seed(t, pool)
	res, err := WriteDay(context.Background(), pool, t.TempDir(), day)
	if err != nil {
		t.Fatal(err)
	}
	rows, ranges := groupRanges(t, res.Ticks.Path)
	for i, n := range rows {
		if n > 150 {
			t.Errorf("row group %d has %d rows", i, n)
		}
		if i > 0 && ranges[i-1][1] > ranges[i][0] {
			t.Errorf("row groups %d and %d overlap: %v, %v", i-1, i, ranges[i-1], ranges[i])
		}
	}
	if ranges[0] != [2]string{"AAPL", "AAPL"} || ranges[1] != [2]string{"AAPL", "AAPL"} {
		t.Errorf("AAPL's 400 ticks: groups %v of %v rows", ranges, rows)
	}
}

// reader is what .ci/parquet-reader/read.mjs prints.
type reader struct {
	Rows       int64    `json:"rows"`
	FooterRows int64    `json:"footerRows"`
	Codecs     []string `json:"codecs"`
	Columns    []struct {
		Name, Type, Logical, Repetition string
	} `json:"columns"`
	RowGroups []struct {
		Rows      int64  `json:"rows"`
		SymbolMin string `json:"symbolMin"`
		SymbolMax string `json:"symbolMax"`
	} `json:"rowGroups"`
	Symbols map[string]struct {
		Count    int64  `json:"count"`
		Sum      int64  `json:"sum"`
		BidNulls int64  `json:"bidNulls"`
		First    string `json:"first"`
		Last     string `json:"last"`
	} `json:"symbols"`
}

// readIndependently reads a file with hyparquet, through the script that
// `make parquet-reader` installs the packages of.
func readIndependently(t *testing.T, path, sumColumn string) reader {
	t.Helper()
	script, err := filepath.Abs("../../.ci/parquet-reader/read.mjs")
	if err != nil {
		t.Fatal(err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed; run `make parquet-reader` (it needs Node.js 20 and npm)")
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(script), "node_modules", "hyparquet-compressors")); err != nil {
		t.Fatal("the independent Parquet reader is not installed; run `make parquet-reader`")
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(node, script, path, sumColumn)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node read.mjs %s: %v\n%s", path, err, stderr.String())
	}
	var r reader
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("read.mjs printed %q: %v", stdout.String(), err)
	}
	return r
}

// parquetType is the Parquet type (physical, logical, repetition) the
// archive gives a column of PostgreSQL's type.
func parquetType(pgType string, nullable bool) string {
	rep := "REQUIRED"
	if nullable {
		rep = "OPTIONAL"
	}
	t := map[string]string{
		"text":                     "BYTE_ARRAY STRING",
		"timestamp with time zone": "INT64 TIMESTAMP(MICROS,utc)",
		"bigint":                   "INT64 INTEGER",
		"integer":                  "INT32 INTEGER",
		"double precision":         "DOUBLE ",
		"boolean":                  "BOOLEAN ",
	}[pgType]
	if t == "" {
		t = "unmapped type " + pgType
	}
	return t + " " + rep
}

// TestIndependentReader reads the archived files with hyparquet, a Parquet
// engine apart from parquet-go: the same rows, every column of the tables
// (ticks but ingested_at, the processor's bookkeeping) with the type the
// database's maps to, the same count, sum of size (volume) and missing
// quotes per symbol, and the same first and last time.
func TestIndependentReader(t *testing.T) {
	smallGroups(t, 250, 1000)
	ctx := context.Background()
	pool := fixture.DB(t, 4)
	seed(t, pool)
	res, err := WriteDay(ctx, pool, t.TempDir(), day)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		kind, table, timeCol, sumCol, path string
		rows                               int64
	}{
		{KindTicks, "ticks", "ts", "size", res.Ticks.Path, res.Ticks.Rows},
		{KindCandles, "candles", "bucket", "volume", res.Candles.Path, res.Candles.Rows},
	} {
		r := readIndependently(t, c.path, c.sumCol)
		if r.Rows != c.rows || r.FooterRows != c.rows {
			t.Errorf("%s: hyparquet read %d rows (footer %d); want %d", c.kind, r.Rows, r.FooterRows, c.rows)
		}
		if !slices.Equal(r.Codecs, []string{"ZSTD"}) {
			t.Errorf("%s: codecs %v", c.kind, r.Codecs)
		}

		rows, err := pool.Query(ctx, `SELECT column_name, data_type, is_nullable = 'YES' FROM information_schema.columns
			WHERE table_schema = current_schema() AND table_name = $1 AND column_name <> 'ingested_at' ORDER BY ordinal_position`, c.table)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{}
		var name, typ string
		var nullable bool
		if _, err := pgx.ForEachRow(rows, []any{&name, &typ, &nullable}, func() error {
			want[name] = parquetType(typ, nullable)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, col := range r.Columns {
			got[col.Name] = col.Type + " " + col.Logical + " " + col.Repetition
		}
		for name, w := range want {
			if got[name] != w {
				t.Errorf("%s.%s: hyparquet sees %q; want %q", c.kind, name, got[name], w)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: the file has columns %v; the table %v", c.kind, got, want)
		}

		nullCol := "bid"
		if c.kind == KindCandles {
			nullCol = "vwap" // read.mjs counts bid's nulls only; 0 here
		}
		q := fmt.Sprintf(`SELECT symbol, count(*), sum(%s)::bigint, count(*) FILTER (WHERE %s IS NULL AND $3), min(%s), max(%s)
			FROM %s WHERE %s >= $1 AND %s < $2 GROUP BY symbol`, c.sumCol, nullCol, c.timeCol, c.timeCol, c.table, c.timeCol, c.timeCol)
		rows, err = pool.Query(ctx, q, day, day.AddDate(0, 0, 1), c.kind == KindTicks)
		if err != nil {
			t.Fatal(err)
		}
		var sym string
		var count, sum, nulls int64
		var first, last time.Time
		seen := 0
		if _, err := pgx.ForEachRow(rows, []any{&sym, &count, &sum, &nulls, &first, &last}, func() error {
			seen++
			s, ok := r.Symbols[sym]
			// hyparquet gives times as JavaScript Dates: milliseconds.
			ms := func(t time.Time) string { return t.UTC().Truncate(time.Millisecond).Format("2006-01-02T15:04:05.000Z") }
			if !ok || s.Count != count || s.Sum != sum || s.BidNulls != nulls || s.First != ms(first) || s.Last != ms(last) {
				t.Errorf("%s %s: hyparquet %+v; database count %d, sum %d, nulls %d, %s..%s", c.kind, sym, s, count, sum, nulls, ms(first), ms(last))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if seen != len(r.Symbols) || seen == 0 {
			t.Errorf("%s: hyparquet saw symbols %v; the database %d", c.kind, r.Symbols, seen)
		}
		if c.kind == KindTicks && r.Symbols["NOQ"].BidNulls != int64(symbols["NOQ"]) {
			t.Errorf("NOQ's ticks have no quote, hyparquet counts %d nulls", r.Symbols["NOQ"].BidNulls)
		}
		for i := 1; i < len(r.RowGroups); i++ {
			if r.RowGroups[i-1].SymbolMax >= r.RowGroups[i].SymbolMin {
				t.Errorf("%s: hyparquet sees row groups %d and %d overlap: %+v", c.kind, i-1, i, r.RowGroups)
			}
		}
		if c.kind == KindTicks && len(r.RowGroups) != 3 {
			t.Errorf("hyparquet sees %d row groups; want 3", len(r.RowGroups))
		}
	}
}
