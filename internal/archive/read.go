package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/stockpipe/stockpipe/internal/market"
)

// Read streams the archived ticks of the UTC days from the date of from to
// the date of to, both included (dates read as Day reads them), to fn, and
// returns how many it passed. Days go in order; within a day the ticks come
// in the file's order, by symbol (in byte order), then ts, then seq — not
// in ts order across symbols, which is all the processor's time rules ask
// of a replay, since they judge each symbol on its own. Days without a
// ticks file are skipped. A tick without a quote has Bid and Ask 0. An
// error from fn stops the read and is returned as it is.
func Read(ctx context.Context, dir string, from, to time.Time, fn func(market.Tick) error) (int64, error) {
	first, last := Day(from), Day(to)
	if last.Before(first) {
		return 0, fmt.Errorf("reading the archive: %s is after %s", first.Format(time.DateOnly), last.Format(time.DateOnly))
	}
	var n int64
	for d := first; !d.After(last); d = d.AddDate(0, 0, 1) {
		m, err := readFile(ctx, Path(dir, KindTicks, d), fn)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// readFile streams one ticks file to fn; a missing file holds nothing.
func readFile(ctx context.Context, path string, fn func(market.Tick) error) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading the archive: %w", err)
	}
	defer f.Close()
	r := parquet.NewGenericReader[tickRow](f)
	defer r.Close() //nolint:errcheck // only read from: nothing to lose
	buf := make([]tickRow, batchRows)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		k, rerr := r.Read(buf)
		for i := range buf[:k] {
			row := &buf[i]
			t := market.Tick{Symbol: row.Symbol, TS: row.TS.UTC(), Seq: row.Seq, Price: row.Price, Size: row.Size,
				Bid: row.Bid, Ask: row.Ask}
			if err := fn(t); err != nil {
				return n, err
			}
			n++
		}
		if errors.Is(rerr, io.EOF) {
			return n, nil
		}
		if rerr != nil {
			return n, fmt.Errorf("reading %s: %w", path, rerr)
		}
	}
}
