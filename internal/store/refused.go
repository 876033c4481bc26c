package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// RefusedError means PostgreSQL refused rows of a batch for what they hold
// (a constraint, a value out of a column's range, bad encoding), not for
// being unreachable: committing the same rows again cannot succeed.
type RefusedError struct {
	Table string // the table whose rows were refused
	Err   error
}

func (e *RefusedError) Error() string {
	return "PostgreSQL refused rows for " + e.Table + ": " + e.Err.Error()
}

func (e *RefusedError) Unwrap() error { return e.Err }

// Permanent reports whether err is PostgreSQL refusing the data itself:
// data exceptions (class 22), integrity constraint violations (23) and
// program limits such as a row too large (54). Retrying those is useless;
// anything else (connection loss, shutdown, serialization) may pass. A row
// without a day partition to go to (check_violation too) is not refused
// for what it holds: once its partition is made it is stored.
func Permanent(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) < 2 || isNoPartition(err) {
		return false
	}
	switch pe.Code[:2] {
	case "22", "23", "54":
		return true
	}
	return false
}

// refused wraps err as a RefusedError for table if it is permanent.
func refused(table string, err error) error {
	if Permanent(err) {
		return &RefusedError{Table: table, Err: err}
	}
	return err
}

// Refusal is one tick PostgreSQL will not store, and why.
type Refusal struct {
	Index int   // position in the rows searched
	Err   error // PostgreSQL's error for the row alone
}

// errProbe rolls a probe transaction back.
var errProbe = errors.New("probe")

// FindRefused finds the ticks among rows that PostgreSQL refuses to insert,
// in index order. It bisects: a group is inserted in a transaction that is
// always rolled back, and a refused group is split until single rows are
// left, so k bad rows among n cost about 2k·log2(n) small transactions.
// Nothing is stored. An error that is not a refusal (the database went
// away) ends the search.
func (s *Sink) FindRefused(ctx context.Context, rows []TickRow) ([]Refusal, error) {
	// A row whose day has no partition would look refused.
	days := appendDays(nil, len(rows), func(i int) time.Time { return rows[i].TS })
	if err := ensureDays(ctx, s.pool, TicksTable, days); err != nil {
		return nil, err
	}
	var cols tickColumns
	probe := func(part []TickRow) error {
		c := cols.fill(part)
		var insertErr error
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			_, insertErr = tx.Exec(ctx, insertTicksSQL,
				c.symbol, c.seq, c.ts, c.price, c.size, c.bid, c.ask, c.partition, c.offset)
			return errProbe
		})
		if insertErr != nil {
			return insertErr
		}
		if !errors.Is(err, errProbe) {
			return err
		}
		return nil
	}
	var out []Refusal
	var search func(lo, hi int) error
	search = func(lo, hi int) error {
		if lo >= hi {
			return nil
		}
		err := probe(rows[lo:hi])
		switch {
		case err == nil:
			return nil
		case !Permanent(err):
			return fmt.Errorf("probing ticks %d to %d: %w", lo, hi-1, err)
		case hi-lo == 1:
			out = append(out, Refusal{Index: lo, Err: err})
			return nil
		}
		mid := lo + (hi-lo)/2
		if err := search(lo, mid); err != nil {
			return err
		}
		return search(mid, hi)
	}
	if err := search(0, len(rows)); err != nil {
		return nil, err
	}
	return out, nil
}
