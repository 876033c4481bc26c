package analytics_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/analytics"
	"github.com/stockpipe/stockpipe/internal/anomaly"
	"github.com/stockpipe/stockpipe/internal/generate"
	"github.com/stockpipe/stockpipe/internal/market"
)

// A profile is how one symbol's clock and flow relate to the others in a
// partition.
type profile int

const (
	live    profile = iota // stamped with the shared present
	ahead                  // its source's clock runs 45 s ahead (inside --max-future)
	behind                 // a vendor's delayed symbol: 40 s behind
	history                // replaying years-old history as fast as it can
	sparse                 // one trade every 20–40 s
	pause                  // live, then silent for minutes, then live again
	stops                  // live, then silent for good
	once                   // a single tick, 45 s ahead
	numProfiles
)

func (p profile) String() string {
	return [...]string{"live", "ahead", "behind", "history", "sparse", "pause", "stops", "once"}[p]
}

// stream makes one symbol's ticks as its source sends them (with 2% faults:
// duplicates, out-of-order and late ticks; malformed and invalid records
// never reach Apply and are dropped here).
func stream(t testing.TB, sym string, p profile, seed uint64, n int) []market.Tick {
	t.Helper()
	syms, err := generate.LookupSymbols([]string{sym})
	if err != nil {
		t.Fatal(err)
	}
	start, rate := t0, 5.0
	switch p {
	case ahead, once:
		start = t0.Add(45 * time.Second)
	case behind:
		start = t0.Add(-40 * time.Second)
	case history:
		start, rate = t0.AddDate(-3, 0, 0), 400
	case sparse:
		rate = 1.0 / 30
	}
	if p == once {
		n = 1
	}
	sim, err := generate.NewSimulator(generate.SimConfig{Symbols: syms, Rate: rate, Count: int64(n), Seed: seed,
		Start: start, Faults: 0.02, AnomalyRate: 20})
	if err != nil {
		t.Fatal(err)
	}
	dec := market.NewDecoder()
	rules := market.DefaultRules()
	var out []market.Tick
	for {
		r, ok, err := sim.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		var tk market.Tick
		if dec.Decode(r.Value, &tk) != nil || rules.Check(&tk, start.Add(time.Hour)) != nil {
			continue
		}
		out = append(out, tk)
	}
	switch p {
	case pause: // minutes of silence in the middle
		for i := len(out) / 2; i < len(out); i++ {
			out[i].TS = out[i].TS.Add(4 * time.Minute)
		}
	case stops:
		out = out[:len(out)/3]
	}
	return out
}

// result is what a run stored for each symbol: the verdict of each of its
// ticks, its anomalies in order (stale aside) and the last row written for
// each of its candles, which is what the candles table holds.
type result struct {
	verdicts  map[string][]analytics.Verdict
	anomalies map[string][]anomaly.Anomaly
	stale     map[string]int
	candles   map[string]analytics.CandleRow
}

// play runs the ticks of streams through one partition in the given
// interleaving: order[i] is the stream the i-th tick comes from, each
// stream's ticks in their own order. Flushes and, when cut is set, a
// snapshot and restore happen at random points.
func play(t testing.TB, streams [][]market.Tick, order []int, rng *rand.Rand, cut bool) result {
	t.Helper()
	p, err := analytics.New(analytics.Config{})
	if err != nil {
		t.Fatal(err)
	}
	res := result{
		verdicts:  map[string][]analytics.Verdict{},
		anomalies: map[string][]anomaly.Anomaly{},
		stale:     map[string]int{},
		candles:   map[string]analytics.CandleRow{},
	}
	var out analytics.Output
	collect := func() {
		for _, a := range out.Anomalies {
			if a.Kind == anomaly.KindStale {
				res.stale[a.Symbol]++
				continue
			}
			res.anomalies[a.Symbol] = append(res.anomalies[a.Symbol], a)
		}
		for _, c := range out.Candles {
			res.candles[c.Symbol+" "+c.Interval+" "+c.Bucket.Format(time.RFC3339)] = c
		}
		out.Reset()
	}
	next := make([]int, len(streams))
	// What the database would answer for a seq older than the partition
	// remembers: whether that (symbol, seq) was accepted.
	accepted := map[string]bool{}
	for _, s := range order {
		tk := streams[s][next[s]]
		next[s]++
		key := tk.Symbol + "/" + strconv.FormatInt(tk.Seq, 10)
		v := p.Apply(&tk, &out)
		if v == analytics.Unknown {
			v = analytics.Duplicate
			if !accepted[key] {
				v = p.ApplyUnseen(&tk, &out)
			}
		}
		if v == analytics.Accepted {
			accepted[key] = true
		}
		res.verdicts[tk.Symbol] = append(res.verdicts[tk.Symbol], v)
		if rng.IntN(50) == 0 {
			p.Flush(&out)
			collect()
		}
		if cut && rng.IntN(2000) == 0 {
			// As the processor does: a checkpoint follows a batch's Flush.
			p.Flush(&out)
			collect()
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
	collect()
	return res
}

// TestLateOnlyRelativeToOwnSymbol states the stream's time rule as a
// property: whatever other symbols share its partition — clocks ahead or
// behind, years-old history replayed at full speed, bursts, silences, a
// single tick from the future — a symbol's ticks get the same verdicts, and
// it gets the same candles (every value and indicator) and the same
// anomalies (stale, which compares it with its partition, aside) as when it
// is alone in its partition. Sealing may make a candle final earlier in the
// mixture, never later: a candle final alone is final mixed.
func TestLateOnlyRelativeToOwnSymbol(t *testing.T) {
	seeds, symbols, ticks := 6, 16, 600
	if os.Getenv("STOCKPIPE_CHAOS") == "full" {
		seeds, symbols, ticks = 40, 60, 3000
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 13))
			streams := make([][]market.Tick, symbols)
			profiles := make([]profile, symbols)
			for i := range streams {
				profiles[i] = profile(rng.IntN(int(numProfiles)))
				if i < 3 {
					profiles[i] = live // a partition always has some live symbols
				}
				streams[i] = stream(t, fmt.Sprintf("S%02d%s", i, strings.ToUpper(profiles[i].String())), profiles[i], seed*1000+uint64(i), ticks)
			}
			// A random interleaving that keeps each stream's own order,
			// with streams at different speeds and in bursts.
			weights := make([]float64, symbols)
			for i := range weights {
				weights[i] = 0.05 + rng.ExpFloat64()
			}
			var order []int
			left := make([]int, symbols)
			total := 0
			for i, s := range streams {
				left[i] = len(s)
				total += len(s)
			}
			for len(order) < total {
				i := rng.IntN(symbols)
				if left[i] == 0 || rng.Float64() > weights[i] {
					continue
				}
				for k := 1 + rng.IntN(1+int(3*weights[i])); k > 0 && left[i] > 0; k-- {
					order = append(order, i)
					left[i]--
				}
			}
			mixed := play(t, streams, order, rng, true)
			aloneRows := 0
			for i, s := range streams {
				alone := play(t, [][]market.Tick{s}, make([]int, len(s)), rng, false)
				aloneRows += len(alone.candles)
				sym := s[0].Symbol
				if !reflect.DeepEqual(mixed.verdicts[sym], alone.verdicts[sym]) {
					t.Fatalf("%s (%s): verdicts differ from its run alone: %s", sym, profiles[i], verdictDiff(mixed.verdicts[sym], alone.verdicts[sym], s))
				}
				if !reflect.DeepEqual(mixed.anomalies[sym], alone.anomalies[sym]) {
					t.Fatalf("%s (%s): anomalies differ from its run alone:\nmixed %+v\nalone %+v", sym, profiles[i], mixed.anomalies[sym], alone.anomalies[sym])
				}
				n := 0
				for key, a := range alone.candles {
					m, ok := mixed.candles[key]
					if !ok {
						t.Fatalf("%s (%s): candle %s missing in the mixture", sym, profiles[i], key)
					}
					n++
					if a.Final && !m.Final {
						t.Fatalf("%s (%s): candle %s final alone but not in the mixture", sym, profiles[i], key)
					}
					m.Final, a.Final = false, false
					if m != a {
						t.Fatalf("%s (%s): candle %s differs:\nmixed %+v\nalone %+v", sym, profiles[i], key, m, a)
					}
				}
				if n == 0 {
					t.Fatalf("%s (%s): no candles", sym, profiles[i])
				}
			}
			if len(mixed.candles) != aloneRows {
				t.Fatalf("the mixture stored %d candle rows, its symbols alone %d", len(mixed.candles), aloneRows)
			}
		})
	}
}

func verdictDiff(mixed, alone []analytics.Verdict, ticks []market.Tick) string {
	for i := range min(len(mixed), len(alone)) {
		if mixed[i] != alone[i] {
			return fmt.Sprintf("tick %d (seq %d, ts %s): %d mixed, %d alone", i, ticks[i].Seq, ticks[i].TS.Format(time.RFC3339Nano), mixed[i], alone[i])
		}
	}
	return fmt.Sprintf("%d verdicts mixed, %d alone", len(mixed), len(alone))
}

// TestStaleOnlyWhileOthersTickOn checks the partition's activity clock: a
// gap in the whole feed (a restart) raises no stale alerts, and neither do
// ticks from clocks ahead or a fast replay of old history; a symbol that
// stays silent while the others tick on after the feed resumed is stale
// once, after Config.Anomaly.StaleAfter (30 s) of their ticking.
func TestStaleOnlyWhileOthersTickOn(t *testing.T) {
	p, err := analytics.New(analytics.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var out analytics.Output
	stale := map[string][]anomaly.Anomaly{}
	seqs := map[string]int64{}
	send := func(sym string, ts time.Time) {
		seqs[sym]++
		tk := market.Tick{Symbol: sym, Seq: seqs[sym], TS: ts, Price: 100, Size: 100, Bid: 99.99, Ask: 100.01}
		if v := p.Apply(&tk, &out); v != analytics.Accepted {
			t.Fatalf("%s at %v: verdict %d", sym, ts, v)
		}
		for _, a := range out.Anomalies {
			if a.Kind == anomaly.KindStale {
				stale[a.Symbol] = append(stale[a.Symbol], a)
			}
		}
		out.Reset()
	}
	live := []string{"AAA", "BBB", "CCC", "DDD", "EEE", "FFF"}
	// Each live symbol ticks once a second, from from for d.
	run := func(from time.Time, d time.Duration, syms []string) {
		for at := time.Duration(0); at < d; at += time.Second {
			for i, s := range syms {
				send(s, from.Add(at+time.Duration(i)*100*time.Millisecond))
			}
		}
	}
	run(t0, 2*time.Minute, live)
	// A dozen new symbols send one tick each, 45 s ahead; then a replay
	// of three years of daily bars, four ticks a bar, as fast as it goes.
	for i := range 12 {
		send(fmt.Sprintf("FUT%d", i), t0.Add(2*time.Minute+45*time.Second))
	}
	day := t0.AddDate(-3, 0, 0)
	for range 750 {
		for k := range 4 {
			send("HIST", day.Add(time.Duration(k)*2*time.Hour))
		}
		day = day.AddDate(0, 0, 1)
	}
	run(t0.Add(2*time.Minute), 20*time.Second, live)
	if len(stale) != 0 {
		t.Fatalf("stale alerts while every live symbol ticked: %+v", stale)
	}
	// The whole feed stops for two minutes, as when the pipeline is
	// stopped and started again; then all but FFF resume.
	resume := t0.Add(2*time.Minute + 20*time.Second + 2*time.Minute)
	run(resume, 25*time.Second, live[:5])
	for _, s := range live[:5] {
		if len(stale[s]) != 0 {
			t.Fatalf("%s resumed with the feed and was called stale: %+v", s, stale[s])
		}
	}
	if len(stale["FFF"]) != 0 {
		t.Fatalf("FFF stale after 25 s of the others ticking: %+v", stale["FFF"])
	}
	run(resume.Add(25*time.Second), 10*time.Second, live[:5])
	if len(stale["FFF"]) != 1 {
		t.Fatalf("FFF silent for 35 s while the others ticked: %d stale alerts, want 1", len(stale["FFF"]))
	}
}
