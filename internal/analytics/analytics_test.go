package analytics_test

import (
	"bytes"
	"errors"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/analytics"
	"github.com/stockpipe/stockpipe/internal/anomaly"
	"github.com/stockpipe/stockpipe/internal/generate"
	"github.com/stockpipe/stockpipe/internal/market"
)

var t0 = time.Date(2026, 11, 2, 14, 30, 0, 0, time.UTC)

func tick(sym string, seq int64, at time.Duration, price float64) market.Tick {
	return market.Tick{Symbol: sym, Seq: seq, TS: t0.Add(at), Price: price, Size: 100, Bid: price - 0.01, Ask: price + 0.01}
}

func TestVerdicts(t *testing.T) {
	p, err := analytics.New(analytics.Config{Lateness: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var out analytics.Output
	steps := []struct {
		t    market.Tick
		want analytics.Verdict
	}{
		{tick("AAPL", 1, 0, 100), analytics.Accepted},
		{tick("AAPL", 1, 0, 100), analytics.Duplicate},
		{tick("AAPL", 3, 5*time.Second, 101), analytics.Accepted},
		{tick("AAPL", 2, 3*time.Second, 100.5), analytics.Accepted},     // out of order, exactly at the watermark: on time
		{tick("AAPL", 4, 2900*time.Millisecond, 100.5), analytics.Late}, // 2.1 s behind the newest
		// Nothing of a late tick is stored: its resend is late again,
		// not a duplicate.
		{tick("AAPL", 4, 2900*time.Millisecond, 100.5), analytics.Late},
		{tick("MSFT", 1, 0, 400), analytics.Accepted}, // other symbols have their own watermark
		{tick("AAPL", 10_000, 6*time.Second, 101), analytics.Accepted},
		// 9,995 seqs behind: past what is remembered; the caller asks.
		{tick("AAPL", 5, 6*time.Second, 101), analytics.Unknown},
		// A seq far past the highest is refused and remembers nothing.
		{tick("AAPL", 10_000+10_000_001, 6*time.Second, 101), analytics.SeqJump},
		{tick("AAPL", 10_001, 6*time.Second, 101), analytics.Accepted},
		{tick("AAPL", 10_001+10_000_001, 6*time.Second, 101), analytics.SeqJump},
		// An old seq replayed as old history is late whatever its seq.
		{tick("AAPL", 10_001, -time.Hour, 101), analytics.Late},
	}
	for i, s := range steps {
		if got := p.Apply(&s.t, &out); got != s.want {
			t.Errorf("step %d (%s seq %d): verdict %d, want %d", i, s.t.Symbol, s.t.Seq, got, s.want)
		}
	}
	// The caller found seq 5 unstored: it is taken, and lands in the
	// candle of its time.
	unseen := tick("AAPL", 5, 6*time.Second, 102)
	if got := p.ApplyUnseen(&unseen, &out); got != analytics.Accepted {
		t.Fatalf("ApplyUnseen: verdict %d", got)
	}
	p.Flush(&out)
	found := false
	for _, c := range out.Candles {
		if c.Symbol == "AAPL" && c.Interval == "1m" && c.High == 102 {
			found = true
		}
	}
	if !found {
		t.Fatal("the unseen tick is not in its candle")
	}
}

func TestCandlesFinaliseAndFlush(t *testing.T) {
	p, _ := analytics.New(analytics.Config{})
	var out analytics.Output
	for i, price := range []float64{100, 102, 99, 101} {
		tk := tick("AAPL", int64(i+1), time.Duration(i)*10*time.Second, price)
		p.Apply(&tk, &out)
	}
	if len(out.Candles) != 0 {
		t.Fatalf("final candles before the minute ended: %+v", out.Candles)
	}
	p.Flush(&out)
	if len(out.Candles) != 2 {
		t.Fatalf("flush gave %d rows, want the forming 1m and 5m candles", len(out.Candles))
	}
	c := out.Candles[0]
	if c.Interval != "1m" || c.Final || c.Open != 100 || c.High != 102 || c.Low != 99 || c.Close != 101 || c.Volume != 400 || c.Trades != 4 {
		t.Fatalf("forming 1m candle = %+v", c)
	}
	out.Reset()
	// A tick 2 s past the minute's end moves the watermark past it.
	tk := tick("AAPL", 5, 62*time.Second, 103)
	p.Apply(&tk, &out)
	if len(out.Candles) != 1 || !out.Candles[0].Final || out.Candles[0].Close != 101 || !out.Candles[0].Bucket.Equal(t0) {
		t.Fatalf("after the watermark passed 14:31: %+v", out.Candles)
	}
	// The idle timeout seals a quiet symbol's candle as others tick on;
	// the next Flush reports it final.
	out.Reset()
	for i := range 75 { // to 14:32:17, past 14:32 plus the idle timeout
		tk := tick("MSFT", int64(i+1), 62*time.Second+time.Duration(i)*time.Second, 400)
		p.Apply(&tk, &out)
	}
	p.Flush(&out)
	final := 0
	for _, c := range out.Candles {
		if c.Symbol == "AAPL" && c.Interval == "1m" && c.Final && c.Bucket.Equal(t0.Add(time.Minute)) {
			final++
		}
	}
	if final != 1 {
		t.Fatalf("AAPL's 14:31 candle was not sealed by the idle timeout: %+v", out.Candles)
	}
	// A tick of AAPL on time by its own clock still lands in the sealed
	// candle, which stays final and is re-emitted with the tick in it.
	out.Reset()
	tk = tick("AAPL", 6, 61*time.Second, 104)
	if v := p.Apply(&tk, &out); v != analytics.Accepted {
		t.Fatalf("an on-time tick after the seal: verdict %d, want accepted", v)
	}
	p.Flush(&out)
	amended := 0
	for _, c := range out.Candles {
		if c.Symbol == "AAPL" && c.Interval == "1m" && c.Bucket.Equal(t0.Add(time.Minute)) {
			if !c.Final || c.Trades != 2 || c.High != 104 || c.Open != 104 || c.Close != 103 {
				t.Fatalf("amended candle = %+v", c)
			}
			amended++
		}
	}
	if amended != 1 {
		t.Fatalf("the amended candle was reported %d times: %+v", amended, out.Candles)
	}
}

// TestSnapshotResumesExactly cuts a simulated stream at many points,
// snapshots, restores into a fresh partition and continues: every output
// must equal the uninterrupted run's.
func TestSnapshotResumesExactly(t *testing.T) {
	recs := records(t, 30_000, generate.DefaultUniverse()[:6], 200)
	dec := market.NewDecoder()
	ticks := make([]market.Tick, 0, len(recs))
	for _, r := range recs {
		var tk market.Tick
		if dec.Decode(r, &tk) == nil {
			ticks = append(ticks, tk)
		}
	}
	run := func(cutEvery int) analytics.Output {
		p, _ := analytics.New(analytics.Config{})
		var out analytics.Output
		for i := range ticks {
			p.Apply(&ticks[i], &out)
			if cutEvery > 0 && i%cutEvery == cutEvery-1 {
				p.Flush(&out)
				snap, err := p.AppendBinary(nil)
				if err != nil {
					t.Fatal(err)
				}
				if p, err = analytics.New(analytics.Config{}); err != nil {
					t.Fatal(err)
				}
				if err := p.Restore(snap); err != nil {
					t.Fatal(err)
				}
			}
		}
		p.Flush(&out)
		return out
	}
	clean := run(0)
	if len(clean.Anomalies) == 0 || len(clean.Candles) == 0 {
		t.Fatalf("clean run produced %d candles and %d anomalies", len(clean.Candles), len(clean.Anomalies))
	}
	lastOf := func(o analytics.Output) map[string]analytics.CandleRow {
		m := map[string]analytics.CandleRow{}
		for _, c := range o.Candles {
			m[c.Symbol+c.Interval+c.Bucket.String()] = c
		}
		return m
	}
	for _, every := range []int{1, 7, 1000, 4999} {
		got := run(every)
		if !reflect.DeepEqual(got.Anomalies, clean.Anomalies) {
			t.Errorf("cut every %d: anomalies differ (%d vs %d)", every, len(got.Anomalies), len(clean.Anomalies))
		}
		// Flushing more often writes forming candles more often; what
		// lands in the table (the last row per key) must be the same.
		if !reflect.DeepEqual(lastOf(got), lastOf(clean)) {
			t.Errorf("cut every %d: final candle rows differ", every)
		}
	}
}

func TestRestoreRejectsCorruption(t *testing.T) {
	p, _ := analytics.New(analytics.Config{})
	var out analytics.Output
	tk := tick("AAPL", 1, 0, 100)
	p.Apply(&tk, &out)
	snap, _ := p.AppendBinary(nil)
	for _, bad := range [][]byte{{'X', 1}, {'A', 99}, snap[:len(snap)-3], append(append([]byte(nil), snap...), 0)} {
		q, _ := analytics.New(analytics.Config{})
		if err := q.Restore(bad); !errors.Is(err, analytics.ErrCorrupt) {
			t.Errorf("Restore(%d bytes) = %v, want ErrCorrupt", len(bad), err)
		}
		if q.Symbols() != 0 {
			t.Errorf("a failed restore left %d symbols", q.Symbols())
		}
	}
}

func FuzzRestore(f *testing.F) {
	p, _ := analytics.New(analytics.Config{})
	var out analytics.Output
	tk := tick("AAPL", 1, 0, 100)
	p.Apply(&tk, &out)
	snap, _ := p.AppendBinary(nil)
	f.Add(snap)
	f.Fuzz(func(t *testing.T, b []byte) {
		q, _ := analytics.New(analytics.Config{})
		_ = q.Restore(b) // must not panic
		tk := tick("AAPL", 2, time.Second, 100)
		q.Apply(&tk, &out)
	})
}

// TestRestoresVersion1Checkpoint resumes from a checkpoint the previous
// layout wrote (testdata, made by the build before the activity clock): an
// upgraded processor continues its predecessor's partitions, with the same
// candles and anomalies as a run of the new build from the start.
func TestRestoresVersion1Checkpoint(t *testing.T) {
	raw, err := os.ReadFile("testdata/v1-ticks.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := os.ReadFile("testdata/v1-state-at-450.bin")
	if err != nil {
		t.Fatal(err)
	}
	if len(snap) < 2 || snap[1] != 1 {
		t.Fatal("the fixture is not a version 1 snapshot")
	}
	dec := market.NewDecoder()
	var ticks []market.Tick
	for i, line := range bytes.Split(bytes.TrimSpace(raw), []byte("\n")) {
		var tk market.Tick
		if err := dec.Decode(line, &tk); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		ticks = append(ticks, tk)
	}
	last := func(p *analytics.Partition, ticks []market.Tick) (map[string]analytics.CandleRow, []anomaly.Anomaly) {
		var out analytics.Output
		for i := range ticks {
			p.Apply(&ticks[i], &out)
		}
		p.Flush(&out)
		rows := map[string]analytics.CandleRow{}
		for _, c := range out.Candles {
			rows[c.Symbol+c.Interval+c.Bucket.String()] = c
		}
		return rows, out.Anomalies
	}
	fresh, _ := analytics.New(analytics.Config{})
	var out analytics.Output
	for i := range ticks[:450] {
		fresh.Apply(&ticks[i], &out)
	}
	fresh.Flush(&out)
	wantRows, wantAnoms := last(fresh, ticks[450:])

	resumed, _ := analytics.New(analytics.Config{})
	if err := resumed.Restore(snap); err != nil {
		t.Fatalf("restoring a version 1 checkpoint: %v", err)
	}
	if resumed.Symbols() != 3 {
		t.Fatalf("restored %d symbols, want 3", resumed.Symbols())
	}
	gotRows, gotAnoms := last(resumed, ticks[450:])
	if len(gotRows) == 0 || !reflect.DeepEqual(gotRows, wantRows) {
		t.Fatalf("candles after resuming from version 1 differ (%d rows, want %d)", len(gotRows), len(wantRows))
	}
	if !reflect.DeepEqual(gotAnoms, wantAnoms) {
		t.Fatalf("anomalies after resuming from version 1 differ: %+v, want %+v", gotAnoms, wantAnoms)
	}
}
