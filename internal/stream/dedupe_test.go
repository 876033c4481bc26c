package stream_test

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/generate"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/market"
)

// send produces ticks as any Kafka client would, and returns how many.
func (e *env) send(ticks ...market.Tick) int64 {
	e.t.Helper()
	p, err := kafka.NewProducer(e.kcfg, kafka.TopicTicks)
	if err != nil {
		e.t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, t := range ticks {
		if err := p.Send(ctx, []byte(t.Symbol), t.AppendJSON(nil)); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		e.t.Fatal(err)
	}
	return int64(len(ticks))
}

func (e *env) seqs(symbol string) []int64 {
	e.t.Helper()
	rows, err := e.pool.Query(context.Background(), `SELECT seq FROM ticks WHERE symbol = $1 ORDER BY seq`, symbol)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var s int64
		if err := rows.Scan(&s); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// TestEveryRecordAccountedFor sends, through a Kafka client, the seqs that
// used to be dropped without a trace: far-ahead seqs followed by the ones
// skipped, one absurd seq, resends and late ticks. Every record must be
// stored, rejected with a reason, or dropped as a duplicate of a stored
// tick — and the stored ticks are exactly the distinct on-time ones.
func TestEveryRecordAccountedFor(t *testing.T) {
	e := newEnv(t)
	now := time.Now().UTC().Truncate(time.Millisecond)
	tk := func(seq int64, at time.Duration) market.Tick {
		return market.Tick{Symbol: "SEQX", Seq: seq, TS: now.Add(at), Price: 10, Size: 100, Bid: 9.99, Ask: 10.01}
	}
	var sent int64
	sent += e.send(tk(1, 0), tk(5000, time.Millisecond), tk(2, 2*time.Millisecond), tk(3, 3*time.Millisecond),
		tk(5001, 4*time.Millisecond), tk(4, 5*time.Millisecond))
	sent += e.send(tk(9007199254740993, 6*time.Millisecond)) // one absurd seq
	sent += e.send(tk(6, 7*time.Millisecond), tk(7, 8*time.Millisecond))
	// Resends of stored ticks, one of them far below the highest seq.
	sent += e.send(tk(2, 2*time.Millisecond), tk(5000, time.Millisecond))
	// A late tick (by SEQX's own clock) and its resend.
	sent += e.send(tk(8, -10*time.Second), tk(8, -10*time.Second))

	stop := e.processor("g1")
	e.waitFor("every record committed", time.Minute, func() bool { return e.committed("g1") == sent })
	ps := stop()

	if got, want := e.seqs("SEQX"), []int64{1, 2, 3, 4, 6, 7, 5000, 5001}; !slices.Equal(got, want) {
		t.Errorf("stored seqs %v, want %v", got, want)
	}
	if n := e.count(`SELECT count(*) FROM rejected_ticks WHERE reason = 'seq_jump' AND detail LIKE '%5001%'`); n != 1 {
		t.Errorf("%d seq_jump rejections naming the highest seq, want 1", n)
	}
	if n := e.count(`SELECT count(*) FROM rejected_ticks WHERE reason = 'late'`); n != 2 {
		t.Errorf("%d late rejections, want 2 (the late tick and its resend)", n)
	}
	stored := e.count(`SELECT count(*) FROM ticks`)
	rejected := e.count(`SELECT count(*) FROM rejected_ticks`)
	if stored+rejected+ps.Duplicates != sent || ps.Duplicates != 2 {
		t.Errorf("sent %d = stored %d + rejected %d + duplicates %d? want 2 duplicates and nothing unaccounted",
			sent, stored, rejected, ps.Duplicates)
	}
}

// TestReplayIntoLiveSymbolIsLate replays years of daily bars under the name
// of a symbol that is live, as a person mistaking replay for a backfill
// does: every replayed tick is rejected as late, with a trace and the fix
// in its detail; none is dropped as a duplicate of a live tick with the
// same seq.
func TestReplayIntoLiveSymbolIsLate(t *testing.T) {
	e := newEnv(t)
	live := make([]market.Tick, 3000)
	for i := range live {
		live[i] = market.Tick{Symbol: "AMZN", Seq: int64(i + 1), TS: simStart.Add(time.Duration(i) * 10 * time.Millisecond),
			Price: 180, Size: 100, Bid: 179.99, Ask: 180.01}
	}
	sent := e.send(live...)
	var csv strings.Builder
	csv.WriteString("Date,Open,High,Low,Close,Adj Close,Volume\n")
	day := time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 400; day = day.AddDate(0, 0, 1) {
		if day.Weekday() == time.Saturday || day.Weekday() == time.Sunday {
			continue
		}
		p := 150 + 10*math.Sin(float64(i)/20)
		fmt.Fprintf(&csv, "%s,%.2f,%.2f,%.2f,%.2f,%.2f,%d\n", day.Format("2006-01-02"), p, p+2, p-2, p+1, p+1, 1_000_000)
		i++
	}
	rp, err := generate.NewReplay(strings.NewReader(csv.String()), generate.ReplayConfig{Symbol: "AMZN"})
	if err != nil {
		t.Fatal(err)
	}
	var replayed []market.Tick
	dec := market.NewDecoder()
	for {
		rec, ok, err := rp.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		var tk market.Tick
		if err := dec.Decode(rec.Value, &tk); err != nil {
			t.Fatal(err)
		}
		replayed = append(replayed, tk)
	}
	sent += e.send(replayed...)

	stop := e.processor("g1")
	e.waitFor("every record committed", time.Minute, func() bool { return e.committed("g1") == sent })
	ps := stop()
	if n := e.count(`SELECT count(*) FROM ticks`); n != int64(len(live)) {
		t.Errorf("%d ticks stored, want the %d live ones", n, len(live))
	}
	if n := e.count(`SELECT count(*) FROM rejected_ticks WHERE reason = 'late' AND detail LIKE '%--symbol AMZN.H%'`); n != int64(len(replayed)) {
		t.Errorf("%d replayed ticks rejected as late with the fix, want all %d", n, len(replayed))
	}
	if ps.Duplicates != 0 {
		t.Errorf("%d replayed ticks dropped as duplicates of live ones", ps.Duplicates)
	}
}

// TestSameSeqOtherTS: a record with a stored (symbol, seq) but another ts (a
// producer's bug) is dropped as a duplicate while its seq is in the
// processor's memory (the last 4,096 seqs of the symbol); older, the
// database, whose key is (symbol, ts, seq), does not see it as one, and it
// is stored as another row. A true resend of an old seq (same ts) is still
// a duplicate, found in the database.
func TestSameSeqOtherTS(t *testing.T) {
	e := newEnv(t)
	// 5,000 ticks 100 µs apart: half a second, so that a resend of the
	// first is still on time by the symbol's watermark.
	base := time.Now().UTC().Add(-time.Minute).Truncate(time.Millisecond)
	tk := func(seq int64, ts time.Time) market.Tick {
		return market.Tick{Symbol: "SEQTS", Seq: seq, TS: ts, Price: 10, Size: 100, Bid: 9.99, Ask: 10.01}
	}
	var first []market.Tick
	for seq := int64(1); seq <= 5000; seq++ {
		first = append(first, tk(seq, base.Add(time.Duration(seq)*100*time.Microsecond)))
	}
	sent := e.send(first...)
	stop := e.processor("g1")
	e.waitFor("the first ticks committed", time.Minute, func() bool { return e.committed("g1") == sent })

	newest := first[len(first)-1].TS
	sent += e.send(
		tk(4990, newest.Add(time.Millisecond)),  // in memory: a duplicate, whatever its ts
		tk(3, newest.Add(2*time.Millisecond)),   // beyond memory, another ts: another row
		tk(5, base.Add(5*100*time.Microsecond)), // beyond memory, the same ts: a duplicate
	)
	e.waitFor("the resends committed", time.Minute, func() bool { return e.committed("g1") == sent })
	ps := stop()

	for seq, want := range map[int64]int64{4990: 1, 3: 2, 5: 1} {
		if n := e.count(`SELECT count(*) FROM ticks WHERE symbol = 'SEQTS' AND seq = $1`, seq); n != want {
			t.Errorf("seq %d stored %d times, want %d", seq, n, want)
		}
	}
	if n := e.count(`SELECT count(*) FROM ticks WHERE symbol = 'SEQTS' AND seq = 3 AND ts = $1`, newest.Add(2*time.Millisecond)); n != 1 {
		t.Error("seq 3 with its other ts is not stored as a row of its own")
	}
	if n := e.count(`SELECT count(*) FROM rejected_ticks`); n != 0 {
		t.Errorf("%d records rejected, want none", n)
	}
	if ps.Duplicates != 2 {
		t.Errorf("%d duplicates dropped, want 2 (seq 4990 in memory, seq 5 found stored)", ps.Duplicates)
	}
}
