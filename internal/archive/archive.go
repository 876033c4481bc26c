// Package archive is stockpipe's opt-in cold tier: a UTC day of raw ticks
// and of candles written to Parquet files, which any Parquet engine reads
// (DuckDB, Spark, pandas, hyparquet) and which `stockpipe replay --parquet`
// sends back through Kafka.
//
// # Layout
//
// Hive-style, one file per kind and day:
//
//	DIR/ticks/date=YYYY-MM-DD/part-0.parquet
//	DIR/candles/date=YYYY-MM-DD/part-0.parquet
//
// so that `read_parquet('DIR/ticks/*/*.parquet', hive_partitioning = true)`
// sees a date column and prunes by it. Each file is zstd-compressed;
// timestamps are TIMESTAMP(MICROS, adjusted to UTC) (the precision
// PostgreSQL keeps), prices double, nullable columns optional: a tick
// without a quote has bid and ask both null. Ticks are sorted by (symbol,
// ts, seq), candles by (symbol, interval, bucket), symbols in byte order
// (whatever the database's collation), and the row groups are cut at symbol
// boundaries once a group holds GroupRows rows, so that the symbol
// statistics of the row groups do not overlap and a reader filtering by
// symbol skips the groups of the others. A symbol with more than
// MaxGroupRows rows in a day spans several groups (their ranges then touch
// at that symbol), which bounds the writer's memory.
//
// # Safety
//
// A file is written under a temporary name in its directory (a dot file,
// which Parquet engines ignore), fsynced, read back and counted, and only
// then renamed over the final name: a crash leaves no half file there, and
// archiving a day again replaces its files atomically. The count read back
// must equal the database's count of the day's rows, per symbol, taken
// after the file was written; otherwise the new file is removed, the
// previous one (if any) is kept and WriteDay returns an error wrapping
// ErrMismatch. A day still receiving rows therefore fails: archive days that
// are over. Each archived file is recorded in the table archives (day, kind,
// path, rows, bytes, archived_at), created by the package's own migrations
// (Migrate) on first use.
package archive

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// Kinds of archived files, as in the archives table's kind column and the
// first directory of a file's path.
const (
	KindTicks   = "ticks"
	KindCandles = "candles"
)

// FileName is the name of each day's file of a kind.
const FileName = "part-0.parquet"

// Row groups: a group is cut at the first symbol boundary once it holds
// GroupRows rows (a Parquet engine reads a group's column chunks whole, so
// groups of this size keep a symbol filter's reads small and the footer
// short), and within a symbol once it holds MaxGroupRows rows (the writer
// holds a group's compressed pages in memory until the group is complete).
// Variables so that tests can make groups of a few rows.
var (
	GroupRows    int64 = 100_000
	MaxGroupRows int64 = 1 << 20
)

// ErrMismatch is wrapped by the error WriteDay returns when a file read
// back does not hold as many rows of each symbol as the database holds for
// its day.
var ErrMismatch = errors.New("archive does not match the database")

// Path returns where the file of kind for the UTC date of day lies below
// dir (see Day).
func Path(dir, kind string, day time.Time) string {
	return filepath.Join(dir, kind, "date="+Day(day).Format(time.DateOnly), FileName)
}

// Day returns midnight UTC of day's date, the date read in day's own
// location (as the DAGs read a logical date): midnight New York of
// 2026-11-02, the same instant in UTC, and midnight UTC of 2026-11-02 all
// name the UTC day 2026-11-02.
func Day(day time.Time) time.Time {
	y, m, d := day.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// File describes one archived file.
type File struct {
	Path  string // absolute
	Rows  int64
	Bytes int64
}

// Result is what WriteDay archived.
type Result struct {
	Day     time.Time // midnight UTC of the archived date
	Ticks   File
	Candles File
}

// BytesPerTick is the size of the day's ticks file per tick it holds (0
// for a day without ticks).
func (r Result) BytesPerTick() float64 {
	if r.Ticks.Rows == 0 {
		return 0
	}
	return float64(r.Ticks.Bytes) / float64(r.Ticks.Rows)
}

// tickRow is a row of a ticks file; its tags are the file's schema. bid
// and ask are optional columns written from plain float64s: parquet-go
// writes the zero value of an optional non-pointer field as null, and 0 is
// how market.Tick says "no quote" (a real quote is never 0, which the
// ticks table's checks enforce), so no pointer is allocated per row.
type tickRow struct {
	Symbol         string    `parquet:"symbol,dict"`
	TS             time.Time `parquet:"ts,timestamp(microsecond:utc),delta"`
	Seq            int64     `parquet:"seq,delta"`
	Price          float64   `parquet:"price"`
	Size           int64     `parquet:"size"`
	Bid            float64   `parquet:"bid,optional"`
	Ask            float64   `parquet:"ask,optional"`
	KafkaPartition int32     `parquet:"kafka_partition"`
	KafkaOffset    int64     `parquet:"kafka_offset,delta"`
}

// candleRow is a row of a candles file, every column of the candles table.
// The indicators and vwap may be NULL, and an indicator may be exactly 0
// (an RSI of a falling series), so they are pointers.
type candleRow struct {
	Symbol    string    `parquet:"symbol,dict"`
	Interval  string    `parquet:"interval,dict"`
	Bucket    time.Time `parquet:"bucket,timestamp(microsecond:utc),delta"`
	Open      float64   `parquet:"open"`
	High      float64   `parquet:"high"`
	Low       float64   `parquet:"low"`
	Close     float64   `parquet:"close"`
	Volume    int64     `parquet:"volume"`
	VWAP      *float64  `parquet:"vwap,optional"`
	Trades    int64     `parquet:"trades"`
	SMA5      *float64  `parquet:"sma_5,optional"`
	SMA20     *float64  `parquet:"sma_20,optional"`
	EMA12     *float64  `parquet:"ema_12,optional"`
	EMA26     *float64  `parquet:"ema_26,optional"`
	BBUpper   *float64  `parquet:"bb_upper,optional"`
	BBLower   *float64  `parquet:"bb_lower,optional"`
	RSI14     *float64  `parquet:"rsi_14,optional"`
	Final     bool      `parquet:"final"`
	UpdatedAt time.Time `parquet:"updated_at,timestamp(microsecond:utc)"`
}

//go:embed migrations/*.sql
var migrations embed.FS

// VersionTable is the goose table that records the package's migrations,
// apart from store's goose_db_version and the scheduler's, so that the
// three sets never mix.
const VersionTable = "archive_goose_db_version"

// lockKey is the advisory lock goose holds while it migrates the archive's
// table ("stockarc" in ASCII), apart from store's and the scheduler's.
const lockKey int64 = 0x73746f636b617263

// Migrate creates the archives table if it is missing. WriteDay calls it,
// so that only a database that archives gets the table. It is idempotent
// and safe to call from several processes at once. The pool needs room for
// two connections.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	if pool.Config().MaxConns < 2 {
		return errors.New("migrating the archive's table: the pool must allow at least two connections")
	}
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockKey))
	if err != nil {
		return fmt.Errorf("creating the archive's migration lock: %w", err)
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("loading the archive's migrations: %w", err) // fixed at build time
	}
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, sub,
		goose.WithTableName(VersionTable), goose.WithSessionLocker(locker),
		// The global registry holds Go migrations of any goose user in the
		// binary; the archive has none, and must not run another's.
		goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("loading the archive's migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("applying the archive's migrations: %w", err)
	}
	return nil
}
