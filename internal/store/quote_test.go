package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
	"github.com/stockpipe/stockpipe/internal/store"
)

// tradeOnly is tick without a quote, as a trade-only feed sends it.
func tradeOnly(sym string, seq int64) store.TickRow {
	r := tick(sym, seq)
	r.Bid, r.Ask = 0, 0
	return r
}

// quoteless says, from the table, which seqs of sym have a NULL quote, and
// fails on any row with half a quote.
func quoteless(t *testing.T, pool *pgxpool.Pool, sym string) map[int64]bool {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT seq, bid IS NULL, ask IS NULL FROM ticks WHERE symbol = $1`, sym)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[int64]bool{}
	for rows.Next() {
		var seq int64
		var noBid, noAsk bool
		if err := rows.Scan(&seq, &noBid, &noAsk); err != nil {
			t.Fatal(err)
		}
		if noBid != noAsk {
			t.Fatalf("%s seq %d stored with half a quote", sym, seq)
		}
		if noBid {
			out[seq] = true
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTicksWithoutQuote stores ticks without a quote among quoted ones
// through the sink, by COPY (a large batch) and by INSERT (a small one),
// and reads them back: NULL in the table, nil from Reader.Trades, null in
// the live notification, and the quoted ticks' quotes as they were.
func TestTicksWithoutQuote(t *testing.T) {
	pool := openMigrated(t)
	sink := store.NewSink(pool)
	reader := store.NewReader(pool)
	ctx := context.Background()

	// Listen before committing: the notification is sent inside the
	// commit's transaction.
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "LISTEN "+store.Channel); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		sym  string
		n    int64 // ticks in the batch; every third has no quote
	}{
		{"COPY", "COPYQ", 300},
		{"INSERT", "INSQ", 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &store.Batch{Group: "g", Topic: "ticks"}
			want := map[int64]bool{}
			for seq := int64(1); seq <= tc.n; seq++ {
				r := tick(tc.sym, seq)
				if seq%3 == 0 {
					r = tradeOnly(tc.sym, seq)
					want[seq] = true
				}
				b.Ticks = append(b.Ticks, r)
			}
			res, err := sink.Commit(ctx, b)
			if err != nil {
				t.Fatal(err)
			}
			if res.Inserted != tc.n {
				t.Fatalf("inserted %d ticks, want %d", res.Inserted, tc.n)
			}
			if got := quoteless(t, pool, tc.sym); len(got) != len(want) {
				t.Fatalf("%d ticks stored without a quote, want %d (seqs %v)", len(got), len(want), got)
			} else {
				for seq := range want {
					if !got[seq] {
						t.Fatalf("seq %d stored with a quote; without: %v", seq, got)
					}
				}
			}
			if n := count(t, pool, `SELECT count(*) FROM ticks WHERE symbol = '`+tc.sym+`' AND bid = 99.99 AND ask = 100.01`); n != tc.n-int64(len(want)) {
				t.Fatalf("%d quoted ticks kept their quote, want %d", n, tc.n-int64(len(want)))
			}

			// Read back, newest first: seqs n, n-1, n-2, …
			trades, err := reader.Trades(ctx, tc.sym, 6)
			if err != nil {
				t.Fatal(err)
			}
			if len(trades) != 6 {
				t.Fatalf("read %d trades, want 6", len(trades))
			}
			for _, tr := range trades {
				if want[tr.Seq] {
					if tr.Bid != nil || tr.Ask != nil {
						t.Errorf("seq %d has no quote but reads as bid %v ask %v", tr.Seq, tr.Bid, tr.Ask)
					}
				} else if tr.Bid == nil || tr.Ask == nil || *tr.Bid != 99.99 || *tr.Ask != 100.01 {
					t.Errorf("seq %d reads as bid %v ask %v, want 99.99 and 100.01", tr.Seq, tr.Bid, tr.Ask)
				}
			}
			// The rows do not share their quotes: each *float64 is its
			// own (the scan reuses one Trade).
			for i := range trades {
				for j := i + 1; j < len(trades); j++ {
					if trades[i].Bid != nil && trades[i].Bid == trades[j].Bid {
						t.Fatalf("trades %d and %d share one bid", i, j)
					}
				}
			}

			// The live update says the same: the newest trade (seq n,
			// a multiple of 3) with "bid":null,"ask":null.
			ev := tickEvent(t, conn.Conn(), tc.sym)
			if len(ev.Trades) == 0 || ev.Trades[0].Seq != tc.n {
				t.Fatalf("live tick event %+v, want seq %d first", ev, tc.n)
			}
			raw, _ := json.Marshal(ev.Trades[0])
			if !strings.Contains(string(raw), `"bid":null,"ask":null`) {
				t.Errorf("live trade without a quote encodes as %s", raw)
			}
			if q := ev.Trades[1]; q.Bid == nil || *q.Bid != 99.99 || q.Ask == nil || *q.Ask != 100.01 {
				t.Errorf("live quoted trade %+v", q)
			}
		})
	}
}

// tickEvent waits for the live "tick" event of sym.
func tickEvent(t *testing.T, conn *pgx.Conn, sym string) store.TickEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			t.Fatalf("waiting for %s's tick event: %v", sym, err)
		}
		events, err := store.Decode(n.Payload)
		if err != nil {
			t.Fatalf("payload %q: %v", n.Payload, err)
		}
		for _, e := range events {
			if e.Kind != "tick" || e.Symbol != sym {
				continue
			}
			var ev store.TickEvent
			if err := json.Unmarshal(e.Data, &ev); err != nil {
				t.Fatalf("tick event %s: %v", e.Data, err)
			}
			return ev
		}
	}
}

// TestSchemaQuoteBothOrNeither: the table takes a tick with a whole quote
// or none, and refuses half a quote and a bad one, whoever writes it.
func TestSchemaQuoteBothOrNeither(t *testing.T) {
	pool := openMigrated(t)
	ctx := context.Background()
	insert := func(seq int, bid, ask any) error {
		_, err := pool.Exec(ctx, `INSERT INTO ticks (symbol, seq, ts, price, size, bid, ask, kafka_partition, kafka_offset)
			VALUES ('SCHQ', $1, now(), 10, 100, $2, $3, 0, $1)`, seq, bid, ask)
		return err
	}
	for i, tc := range []struct {
		bid, ask   any
		constraint string // "" when the row is stored
	}{
		{nil, nil, ""},
		{9.99, 10.01, ""},
		{10.0, 10.0, ""},
		{nil, 10.01, "ticks_quote_whole"},
		{9.99, nil, "ticks_quote_whole"},
		{0.0, 10.01, "ticks_bid_check"},
		{-1.0, 10.01, "ticks_bid_check"},
		{9.99, math.Inf(1), "ticks_ask_check"},
		{10.02, 10.01, "ticks_bid_le_ask"},
	} {
		err := insert(i+1, tc.bid, tc.ask)
		var pe *pgconn.PgError
		switch {
		case tc.constraint == "" && err != nil:
			t.Errorf("bid %v ask %v: %v", tc.bid, tc.ask, err)
		case tc.constraint != "" && (!errors.As(err, &pe) || pe.ConstraintName != tc.constraint):
			t.Errorf("bid %v ask %v: err = %v, want a violation of %s", tc.bid, tc.ask, err, tc.constraint)
		}
	}

	// Half a quote from the sink (ask 0 is a quote, with a bad ask) is
	// refused as a row, for the processor to isolate.
	bad := tick("SCHQ", 100)
	bad.Ask = 0
	_, err := store.NewSink(pool).Commit(ctx, &store.Batch{Group: "g", Topic: "ticks", Ticks: []store.TickRow{tradeOnly("SCHQ", 99), bad}})
	var refused *store.RefusedError
	if !errors.As(err, &refused) || refused.Table != "ticks" {
		t.Fatalf("half a quote: err = %v, want a RefusedError for ticks", err)
	}
	found, err := store.NewSink(pool).FindRefused(ctx, []store.TickRow{tradeOnly("SCHQ", 99), bad})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].Index != 1 {
		t.Fatalf("refused rows %+v, want only the one with half a quote", found)
	}
}

// TestQuoteMigration migrates a database holding ticks from before bid and
// ask were optional, checks that the new constraint is validated and the
// ticks untouched, and migrates it back down, which removes the ticks
// without a quote since the columns cannot be NULL there.
func TestQuoteMigration(t *testing.T) {
	const before = 8 // the last version with bid and ask NOT NULL
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
	insert := `INSERT INTO ticks (symbol, seq, ts, price, size, bid, ask, kafka_partition, kafka_offset)
		VALUES ('MIGQ', $1, now(), 10, 100, $2, $3, 0, $1)`
	if _, err := pool.Exec(ctx, insert, 1, 9.99, 10.01); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, insert, 2, nil, nil); err == nil {
		t.Fatalf("version %d stores a tick without a quote", before)
	}

	if err := store.Migrate(ctx, pool, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	var validated bool
	if err := pool.QueryRow(ctx, `SELECT convalidated FROM pg_constraint WHERE conname = 'ticks_quote_whole'`).Scan(&validated); err != nil || !validated {
		t.Fatalf("ticks_quote_whole validated: %v, %v", validated, err)
	}
	if n := count(t, pool, `SELECT count(*) FROM ticks WHERE seq = 1 AND bid = 9.99 AND ask = 10.01`); n != 1 {
		t.Fatal("the tick stored before the migration changed")
	}
	if _, err := pool.Exec(ctx, insert, 2, nil, nil); err != nil {
		t.Fatalf("a tick without a quote after the migration: %v", err)
	}

	if _, err := p.DownTo(ctx, before); err != nil {
		t.Fatal(err)
	}
	if n := count(t, pool, `SELECT count(*) FROM ticks`); n != 1 {
		t.Fatalf("%d ticks after migrating down, want the quoted one", n)
	}
	if _, err := pool.Exec(ctx, insert, 3, nil, nil); err == nil {
		t.Fatal("after migrating down, a tick without a quote is stored")
	}
}
