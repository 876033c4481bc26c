package archive

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"
)

// The day's rows are read with plain SELECTs by time range, symbol by
// symbol: each symbol's query is served by an index on (symbol, ts) (or
// candles' primary key) whatever the table's layout, and streams its rows
// in file order. The symbols are sorted in Go, in byte order, because
// ORDER BY symbol follows the database's collation, which need not be byte
// order (en_US ignores '.'), and Parquet's statistics compare bytes.
const (
	sqlTickCounts = `SELECT symbol, count(*) FROM ticks WHERE ts >= $1 AND ts < $2 GROUP BY symbol`
	sqlTicks      = `SELECT ts, seq, price, size, bid, ask, kafka_partition, kafka_offset FROM ticks
		WHERE symbol = $1 AND ts >= $2 AND ts < $3 ORDER BY ts, seq`
	sqlCandleCounts = `SELECT symbol, count(*) FROM candles WHERE bucket >= $1 AND bucket < $2 GROUP BY symbol`
	sqlCandles      = `SELECT interval, bucket, open, high, low, close, volume, vwap, trades,
		sma_5, sma_20, ema_12, ema_26, bb_upper, bb_lower, rsi_14, final, updated_at FROM candles
		WHERE symbol = $1 AND bucket >= $2 AND bucket < $3 ORDER BY interval COLLATE "C", bucket`
	sqlRecord = `INSERT INTO archives (day, kind, path, rows, bytes) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (day, kind) DO UPDATE SET path = excluded.path, rows = excluded.rows,
			bytes = excluded.bytes, archived_at = now()`
)

// batchRows is how many rows are handed to the Parquet writer at once.
const batchRows = 4096

// staleTemp is how old a temporary file left in a day's directory must be
// before WriteDay removes it: older than any archiving still under way.
const staleTemp = 6 * time.Hour

// afterWrite, if set (by tests), is called with a file's temporary path
// once it is complete and fsynced, before it is verified.
var afterWrite func(kind, tmp string)

// WriteDay archives the UTC day of day (see Day) below dir: its ticks and
// its candles (those whose bucket falls in the day), each to its file (see
// Path), verified against the database and recorded in the archives
// table, which it creates if missing. The rows are streamed from one
// REPEATABLE READ snapshot, so each file is the day as of one instant.
// Archiving a day again replaces its files; a day without rows gets files
// without rows. On error nothing is left under the final names but files
// archived before.
//
// WriteDay is not meant to run for the same day in two processes at once;
// if it does, each file in place is still whole and verified.
func WriteDay(ctx context.Context, pool *pgxpool.Pool, dir string, day time.Time) (Result, error) {
	start := Day(day)
	res := Result{Day: start}
	if err := Migrate(ctx, pool); err != nil {
		return res, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return res, fmt.Errorf("archiving %s: %w", start.Format(time.DateOnly), err)
	}
	ticks := kindSpec[tickRow]{
		kind: KindTicks, counts: sqlTickCounts, query: sqlTicks,
		sorting: []string{"symbol", "ts", "seq"},
		symbol:  func(r *tickRow) string { return r.Symbol },
		scan:    scanTicks,
	}
	if res.Ticks, err = writeKind(ctx, pool, abs, start, ticks); err != nil {
		return res, err
	}
	candles := kindSpec[candleRow]{
		kind: KindCandles, counts: sqlCandleCounts, query: sqlCandles,
		sorting: []string{"symbol", "interval", "bucket"},
		symbol:  func(r *candleRow) string { return r.Symbol },
		scan:    scanCandles,
	}
	if res.Candles, err = writeKind(ctx, pool, abs, start, candles); err != nil {
		return res, err
	}
	return res, nil
}

// kindSpec is how one kind of rows is read and written.
type kindSpec[T any] struct {
	kind string
	// counts selects (symbol, count) of the day's rows, $1 <= time < $2;
	// query the rows of symbol $1 with $2 <= time < $3, in file order.
	counts, query string
	sorting       []string // the columns the rows are sorted by
	symbol        func(*T) string
	// scan reads the rows of sym from rows into add.
	scan func(rows pgx.Rows, sym string, add func(*T) error) error
}

// writeKind writes, verifies, installs and records one file.
func writeKind[T any](ctx context.Context, pool *pgxpool.Pool, dir string, start time.Time, k kindSpec[T]) (File, error) {
	date := start.Format(time.DateOnly)
	final := Path(dir, k.kind, start)
	fail := func(err error) (File, error) {
		return File{}, fmt.Errorf("archiving the %s of %s: %w", k.kind, date, err)
	}
	ddir := filepath.Dir(final)
	if err := os.MkdirAll(ddir, 0o755); err != nil {
		return fail(err)
	}
	removeStale(ddir)
	tmp, snapshot, err := writeTemp(ctx, pool, ddir, start, k)
	if err != nil {
		return fail(err)
	}
	// From here on the temporary file goes unless it is renamed into
	// place.
	installed := false
	defer func() {
		if !installed {
			os.Remove(tmp) // a leftover is removed as stale by a later run
		}
	}()
	if afterWrite != nil {
		afterWrite(k.kind, tmp)
	}
	inFile, rows, err := countFile(tmp, k.symbol)
	if err != nil {
		return fail(fmt.Errorf("reading the written file back: %w", err))
	}
	now, err := symbolCounts(ctx, pool, k.counts, start)
	if err != nil {
		return fail(err)
	}
	if !maps.Equal(inFile, now) {
		return fail(mismatch(inFile, now, snapshot))
	}
	if err := os.Rename(tmp, final); err != nil {
		return fail(err)
	}
	installed = true
	if err := syncDir(ddir); err != nil {
		return fail(err)
	}
	st, err := os.Stat(final)
	if err != nil {
		return fail(err)
	}
	f := File{Path: final, Rows: rows, Bytes: st.Size()}
	if _, err := pool.Exec(ctx, sqlRecord, start, k.kind, f.Path, f.Rows, f.Bytes); err != nil {
		return fail(fmt.Errorf("recording the file in archives: %w", err))
	}
	return f, nil
}

// writeTemp writes the day's rows of k to a new temporary file in ddir,
// fsynced and closed, and returns its path and the rows per symbol the
// snapshot it read held.
func writeTemp[T any](ctx context.Context, pool *pgxpool.Pool, ddir string, start time.Time, k kindSpec[T]) (path string, snapshot map[string]int64, err error) {
	f, err := os.CreateTemp(ddir, "."+FileName+".*.tmp")
	if err != nil {
		return "", nil, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	// Readable by other users' engines, as any file the tier holds.
	if err := f.Chmod(0o644); err != nil {
		return "", nil, err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	sorting := make([]parquet.SortingColumn, len(k.sorting))
	for i, c := range k.sorting {
		sorting[i] = parquet.Ascending(c)
	}
	w := parquet.NewGenericWriter[T](bw,
		parquet.Compression(&zstd.Codec{Level: zstd.SpeedDefault}),
		parquet.SortingWriterConfig(parquet.SortingColumns(sorting...)),
		parquet.KeyValueMetadata("stockpipe.kind", k.kind),
		parquet.KeyValueMetadata("stockpipe.date", start.Format(time.DateOnly)))
	g := &grouper[T]{w: w, batch: make([]T, 0, batchRows)}
	if snapshot, err = readDay(ctx, pool, start, k, g.add); err != nil {
		return "", nil, err
	}
	if err := g.flushBatch(); err != nil {
		return "", nil, err
	}
	if err := w.Close(); err != nil {
		return "", nil, fmt.Errorf("writing the Parquet footer: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return "", nil, err
	}
	if err := f.Sync(); err != nil {
		return "", nil, err
	}
	if err := f.Close(); err != nil {
		return "", nil, err
	}
	return f.Name(), snapshot, nil
}

// readDay streams the day's rows of k, symbol after symbol in byte order,
// into add, from one read-only snapshot, and returns the rows per symbol
// that snapshot holds.
func readDay[T any](ctx context.Context, pool *pgxpool.Pool, start time.Time, k kindSpec[T], add func(sym string, row *T) error) (map[string]int64, error) {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("starting the read: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read-only: nothing to keep
	counts, err := symbolCounts(ctx, tx, k.counts, start)
	if err != nil {
		return nil, err
	}
	end := start.AddDate(0, 0, 1)
	for _, sym := range slices.Sorted(maps.Keys(counts)) {
		rows, err := tx.Query(ctx, k.query, sym, start, end)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", sym, err)
		}
		if err := k.scan(rows, sym, func(r *T) error { return add(sym, r) }); err != nil {
			return nil, fmt.Errorf("reading %s: %w", sym, err)
		}
	}
	return counts, nil
}

// querier is a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// symbolCounts runs a counts query for the day starting at start.
func symbolCounts(ctx context.Context, q querier, sql string, start time.Time) (map[string]int64, error) {
	rows, err := q.Query(ctx, sql, start, start.AddDate(0, 0, 1))
	if err != nil {
		return nil, fmt.Errorf("counting the day's rows: %w", err)
	}
	counts := map[string]int64{}
	var sym string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&sym, &n}, func() error {
		counts[sym] = n
		return nil
	}); err != nil {
		return nil, fmt.Errorf("counting the day's rows: %w", err)
	}
	return counts, nil
}

// scanTicks reads one symbol's ticks.
func scanTicks(rows pgx.Rows, sym string, add func(*tickRow) error) error {
	r := tickRow{Symbol: sym}
	var bid, ask pgtype.Float8
	_, err := pgx.ForEachRow(rows, []any{&r.TS, &r.Seq, &r.Price, &r.Size, &bid, &ask, &r.KafkaPartition, &r.KafkaOffset}, func() error {
		// NULL is 0, which the writer writes as null (see tickRow).
		r.Bid, r.Ask = bid.Float64, ask.Float64
		return add(&r)
	})
	return err
}

// scanCandles reads one symbol's candles.
func scanCandles(rows pgx.Rows, sym string, add func(*candleRow) error) error {
	var r candleRow
	dest := []any{&r.Interval, &r.Bucket, &r.Open, &r.High, &r.Low, &r.Close, &r.Volume, &r.VWAP, &r.Trades,
		&r.SMA5, &r.SMA20, &r.EMA12, &r.EMA26, &r.BBUpper, &r.BBLower, &r.RSI14, &r.Final, &r.UpdatedAt}
	_, err := pgx.ForEachRow(rows, dest, func() error {
		r.Symbol = sym
		if err := add(&r); err != nil {
			return err
		}
		// The row was copied, pointers and all: the next row's values
		// must go to pointers of their own.
		r = candleRow{}
		return nil
	})
	return err
}

// grouper hands rows to the writer in batches and cuts the row groups (see
// GroupRows).
type grouper[T any] struct {
	w         *parquet.GenericWriter[T]
	batch     []T
	groupRows int64
	last      string // the symbol of the row added last
}

// add appends a copy of row, of symbol sym, starting a new row group first
// when one is due.
func (g *grouper[T]) add(sym string, row *T) error {
	if g.groupRows > 0 && (g.groupRows >= MaxGroupRows || (sym != g.last && g.groupRows >= GroupRows)) {
		if err := g.flushBatch(); err != nil {
			return err
		}
		if err := g.w.Flush(); err != nil {
			return fmt.Errorf("writing a row group: %w", err)
		}
		g.groupRows = 0
	}
	g.batch = append(g.batch, *row)
	g.groupRows++
	g.last = sym
	if len(g.batch) == cap(g.batch) {
		return g.flushBatch()
	}
	return nil
}

// flushBatch hands the batch to the writer, which copies the values.
func (g *grouper[T]) flushBatch() error {
	if len(g.batch) == 0 {
		return nil
	}
	if _, err := g.w.Write(g.batch); err != nil {
		return fmt.Errorf("writing rows: %w", err)
	}
	clear(g.batch) // drop the pointers the rows held
	g.batch = g.batch[:0]
	return nil
}

// countFile reads every row of the Parquet file at path, decoding every
// page, and returns the rows per symbol and in all.
func countFile[T any](path string, symbol func(*T) string) (map[string]int64, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	r := parquet.NewGenericReader[T](f)
	defer r.Close() //nolint:errcheck // only read from: nothing to lose
	counts := map[string]int64{}
	var total int64
	buf := make([]T, batchRows)
	for {
		n, err := r.Read(buf)
		for i := range buf[:n] {
			counts[symbol(&buf[i])]++
		}
		total += int64(n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, 0, err
		}
	}
	if total != r.NumRows() {
		return nil, 0, fmt.Errorf("read %d rows, the footer says %d", total, r.NumRows())
	}
	return counts, total, nil
}

// mismatch describes how the file's rows per symbol differ from the
// database's now and, when they differ too, from the snapshot written.
func mismatch(inFile, now, snapshot map[string]int64) error {
	sum := func(m map[string]int64) (n int64) {
		for _, v := range m {
			n += v
		}
		return n
	}
	syms := slices.AppendSeq(slices.Collect(maps.Keys(inFile)), maps.Keys(now))
	slices.Sort(syms)
	var diff []string
	for _, sym := range slices.Compact(syms) {
		if inFile[sym] != now[sym] {
			diff = append(diff, fmt.Sprintf("%s: file %d, database %d", sym, inFile[sym], now[sym]))
		}
	}
	const show = 5
	if len(diff) > show {
		diff = append(diff[:show], fmt.Sprintf("%d more symbols", len(diff)-show))
	}
	why := "the file does not hold the rows that were read"
	if !maps.Equal(now, snapshot) {
		why = fmt.Sprintf("the database held %d when the day was read: rows were added or deleted while it was archived", sum(snapshot))
	}
	return fmt.Errorf("%w: the file holds %d rows, the database %d (%s); %s",
		ErrMismatch, sum(inFile), sum(now), strings.Join(diff, "; "), why)
}

// syncDir fsyncs a directory, so that a rename in it survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// removeStale removes temporary files that a crashed archiving left in
// ddir. Failing to is harmless: they are only space.
func removeStale(ddir string) {
	matches, _ := filepath.Glob(filepath.Join(ddir, "."+FileName+".*.tmp")) // the pattern is valid
	for _, m := range matches {
		if st, err := os.Stat(m); err == nil && time.Since(st.ModTime()) > staleTemp {
			os.Remove(m)
		}
	}
}
