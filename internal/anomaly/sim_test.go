package anomaly

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/generate"
	"github.com/stockpipe/stockpipe/internal/market"
)

// labelledKinds are the kinds the simulator writes to its truth file.
var labelledKinds = []Kind{KindPriceJump, KindVolumeBurst, KindSpreadBlowout}

// matchWindow is how far apart a detection and a truth line may be in event
// time and still be the same event.
const matchWindow = 2 * time.Second

// kindScore counts one kind's matches.
type kindScore struct {
	truths, detections, matched int
}

func (s kindScore) precision() float64 {
	if s.detections == 0 {
		return math.NaN()
	}
	return float64(s.matched) / float64(s.detections)
}

func (s kindScore) recall() float64 {
	if s.truths == 0 {
		return math.NaN()
	}
	return float64(s.matched) / float64(s.truths)
}

// simRun is the outcome of feeding a simulator run through detectors.
type simRun struct {
	ticks     int
	simulated time.Duration
	late      int // distinct ticks dropped for arriving behind the watermark
	stats     generate.SimStats
	score     map[Kind]*kindScore
	found     []Anomaly // every anomaly, in emission order
	unmatched []Anomaly // detections of labelled kinds with no truth
	missed    []generate.Anomaly
}

// jsonDecode reads a tick as a consumer that knows nothing of the simulator
// or the market package's decoder would.
func jsonDecode(b []byte, t *market.Tick) error { return json.Unmarshal(b, t) }

// simLateness is how far the harness's watermark trails the newest tick.
// The simulator holds out-of-order ticks back at most 500 ms and late ones
// at least 10 s, so this keeps the first and drops the second.
const simLateness = 5 * time.Second

// scoreWarmup is how much event time at the start of a run is left out of
// the scores: every detector needs some ticks (Config.JumpWarmup,
// VolumeWarmup, SpreadWarmup) before it may fire, and an event before then is
// missed by design. At the simulator's 67 ticks per symbol per second the
// warm-ups take about a second; five leave a margin.
const scoreWarmup = 5 * time.Second

// runSimulator plays a simulator run (sc; Truth is set here) through a
// Detector per symbol the way the stream would: each record is decoded with
// decode and validated, and skipped if either fails; a watermark trails the
// newest event time by simLateness, ticks behind it are dropped as late,
// and every detector hears of the watermark through Idle each time it moves
// on by 100 ms, and once more an hour after the end. (encoding/json is
// lenient where the stream's decoder is not, so the symbol is checked here.) The labelled kinds are
// then matched against the truth file: same symbol and kind, at most
// matchWindow apart, each truth line matched at most once, nearest first;
// events and detections in the first scoreWarmup are not scored.
func runSimulator(t testing.TB, cfg Config, sc generate.SimConfig, decode func([]byte, *market.Tick) error) simRun {
	t.Helper()
	var truthBuf bytes.Buffer
	sc.Truth = &truthBuf
	sim, err := generate.NewSimulator(sc)
	if err != nil {
		t.Fatal(err)
	}
	dets := map[string]*Detector{}
	var symbols []string // in order of first tick, so Idle order is fixed
	run := simRun{score: map[Kind]*kindScore{}}
	type symSeq struct {
		sym string
		seq int64
	}
	dropped := map[symSeq]bool{}
	var first, newest, idled time.Time
	var tk market.Tick
	for {
		rec, ok, err := sim.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		tk = market.Tick{}
		if decode(rec.Value, &tk) != nil || !market.ValidSymbol(tk.Symbol) ||
			market.DefaultRules().Check(&tk, tk.TS) != nil {
			continue // a fault the stream would reject
		}
		if first.IsZero() {
			first = tk.TS
		}
		if tk.TS.Before(newest.Add(-simLateness)) {
			dropped[symSeq{tk.Symbol, tk.Seq}] = true
			continue
		}
		run.ticks++
		d := dets[tk.Symbol]
		if d == nil {
			d = NewDetector(cfg)
			dets[tk.Symbol] = d
			symbols = append(symbols, tk.Symbol)
		}
		run.found = d.Observe(run.found, &tk, Context{})
		if tk.TS.After(newest) {
			newest = tk.TS
		}
		if wm := newest.Add(-simLateness); wm.Sub(idled) >= 100*time.Millisecond {
			idled = wm
			for _, s := range symbols {
				run.found = dets[s].idle(run.found, s, wm)
			}
		}
	}
	for _, s := range symbols {
		run.found = dets[s].idle(run.found, s, newest.Add(time.Hour))
	}
	run.late = len(dropped)
	run.stats = sim.Stats()
	run.simulated = newest.Sub(first)
	scoreFrom := first.Add(scoreWarmup)

	var truths []generate.Anomaly
	sc2 := bufio.NewScanner(&truthBuf)
	for sc2.Scan() {
		var a generate.Anomaly
		if err := json.Unmarshal(sc2.Bytes(), &a); err != nil {
			t.Fatalf("truth line %q: %v", sc2.Text(), err)
		}
		if a.TS.Before(scoreFrom) {
			continue
		}
		truths = append(truths, a)
	}
	for _, k := range labelledKinds {
		run.score[k] = &kindScore{}
	}
	used := make([]bool, len(truths))
	for _, a := range truths {
		if s := run.score[Kind(a.Kind)]; s != nil {
			s.truths++
		}
	}
	for _, f := range run.found {
		s := run.score[f.Kind]
		if s == nil || f.TS.Before(scoreFrom) {
			continue
		}
		s.detections++
		best, bestDist := -1, matchWindow+1
		for i, a := range truths {
			if used[i] || a.Symbol != f.Symbol || Kind(a.Kind) != f.Kind {
				continue
			}
			dist := f.TS.Sub(a.TS)
			if dist < 0 {
				dist = -dist
			}
			if dist <= matchWindow && dist < bestDist {
				best, bestDist = i, dist
			}
		}
		if best < 0 {
			run.unmatched = append(run.unmatched, f)
			continue
		}
		used[best] = true
		s.matched++
	}
	for i, a := range truths {
		if !used[i] {
			run.missed = append(run.missed, a)
		}
	}
	return run
}

// table renders the per-kind scores.
func (r simRun) table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d ticks observed, %v simulated (the first %v not scored), %d late ticks dropped\n",
		r.ticks, r.simulated.Round(time.Second), scoreWarmup, r.late)
	fmt.Fprintf(&b, "%-15s %7s %10s %8s %9s %7s\n", "kind", "truths", "detections", "matched", "precision", "recall")
	for _, k := range labelledKinds {
		s := r.score[k]
		fmt.Fprintf(&b, "%-15s %7d %10d %8d %9s %7s\n", k, s.truths, s.detections, s.matched, ratio(s.precision()), ratio(s.recall()))
	}
	others := map[Kind]int{}
	for _, f := range r.found {
		if r.score[f.Kind] == nil {
			others[f.Kind]++
		}
	}
	if len(others) > 0 {
		keys := make([]string, 0, len(others))
		for k := range others {
			keys = append(keys, string(k))
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "%-15s %7s %10d\n", k, "-", others[Kind(k)])
		}
	}
	return b.String()
}

// ratio formats a precision or recall, "-" when there was nothing to count.
func ratio(f float64) string {
	if math.IsNaN(f) {
		return "-"
	}
	return fmt.Sprintf("%.3f", f)
}

func (r simRun) explain(t testing.TB, max int) {
	t.Helper()
	for i, f := range r.unmatched {
		if i == max {
			break
		}
		t.Logf("false positive: %s %s %s %s", f.Symbol, f.TS.Format(time.RFC3339Nano), f.Kind, f.Detail)
	}
	for i, a := range r.missed {
		if i == max {
			break
		}
		t.Logf("missed: %s %s %s %s", a.Symbol, a.TS.Format(time.RFC3339Nano), a.Kind, a.Detail)
	}
}

// long runs the simulator evaluation at the simulator's default anomaly
// rate over hours of simulated trading, which takes minutes:
//
//	go test ./internal/anomaly/ -run TestSimulatorPrecisionRecall/long -anomaly.long -v -timeout 30m
var long = flag.Bool("anomaly.long", false, "run the long simulator evaluation at the default anomaly rate")

// TestSimulatorPrecisionRecall measures the default configuration against the
// simulator's labelled anomalies.
//
// At the simulator's default rate of 2 anomalies per symbol per hour, the
// 200,000 ticks of a quick run are 100 s of trading and hold one or two
// labelled events: too few to measure anything. The dense run therefore
// raises the rate to 40 an hour, which changes nothing about the ticks
// between events; it flatters precision (more true alerts per false one)
// and slightly hurts recall (two events of one kind on one symbol within a
// cooldown are one alert). The quick default-rate run is logged and must
// raise no false alarm; the long run (see the long flag) measures the
// default rate itself.
func TestSimulatorPrecisionRecall(t *testing.T) {
	start := time.Date(2026, 11, 25, 14, 30, 0, 0, time.UTC) // the New York open: the busiest tape
	check := func(t *testing.T, run simRun) {
		t.Helper()
		// The goal is set for the two kinds with a clear definition;
		// spread_blowout is reported in the table (and has scored as
		// well in every run so far).
		for _, k := range []Kind{KindPriceJump, KindVolumeBurst} {
			s := run.score[k]
			if s.truths < 10 {
				t.Errorf("%s: only %d labelled events, too few to judge", k, s.truths)
			}
			if !(s.precision() >= 0.9 && s.recall() >= 0.9) {
				t.Errorf("%s: precision %.3f, recall %.3f; want both >= 0.9", k, s.precision(), s.recall())
			}
		}
		if t.Failed() || testing.Verbose() {
			run.explain(t, 10)
		}
	}
	t.Run("dense", func(t *testing.T) {
		n := int64(1_200_000)
		if testing.Short() {
			n = 400_000
		}
		run := runSimulator(t, DefaultConfig(), generate.SimConfig{
			Rate: 2000, Count: n, Seed: 1, Start: start,
			AnomalyRate: 40, Faults: 0.02,
		}, jsonDecode)
		t.Logf("anomaly rate 40/symbol/hour, faults 2%%:\n%s", run.table())
		check(t, run)
		checkSane(t, run.found)
		// Every tick dropped as late is a missing seq the watermark
		// passed, and nothing else is missing.
		var missing float64
		for _, a := range ofKind(run.found, KindSeqGap) {
			missing += a.Value
		}
		if missing != float64(run.late) || run.late == 0 {
			t.Errorf("seq_gap alerts count %v missing seqs; %d ticks were dropped as late", missing, run.late)
		}
		// The run ends with a watermark an hour on: every symbol goes
		// stale exactly once, then.
		if got := len(ofKind(run.found, KindStale)); got != 30 {
			t.Errorf("%d stale alerts, want 30 (one per symbol, at the end)", got)
		}
	})
	t.Run("default rate", func(t *testing.T) {
		run := runSimulator(t, DefaultConfig(), generate.SimConfig{
			Rate: 2000, Count: 200_000, Seed: 2, Start: start,
			AnomalyRate: generate.DefaultAnomalyRate,
		}, jsonDecode)
		t.Logf("anomaly rate %v/symbol/hour:\n%s", generate.DefaultAnomalyRate, run.table())
		if len(run.unmatched) != 0 {
			run.explain(t, 10)
			t.Errorf("%d false alarms", len(run.unmatched))
		}
	})
	t.Run("long", func(t *testing.T) {
		if !*long {
			t.Skip("takes minutes; enable with -anomaly.long")
		}
		total := simRun{score: map[Kind]*kindScore{}}
		for _, k := range labelledKinds {
			total.score[k] = &kindScore{}
		}
		// Eight runs of 2000 s, starts spread over the session, the close
		// and the night, so every part of the intraday profile is seen.
		for i := range 8 {
			run := runSimulator(t, DefaultConfig(), generate.SimConfig{
				Rate: 2000, Count: 4_000_000, Seed: uint64(10 + i),
				Start:       start.Add(time.Duration(i) * 97 * time.Minute),
				AnomalyRate: generate.DefaultAnomalyRate,
			}, jsonDecode)
			total.ticks += run.ticks
			total.simulated += run.simulated
			for _, k := range labelledKinds {
				total.score[k].truths += run.score[k].truths
				total.score[k].detections += run.score[k].detections
				total.score[k].matched += run.score[k].matched
			}
			total.found = append(total.found, run.found...)
			total.unmatched = append(total.unmatched, run.unmatched...)
			total.missed = append(total.missed, run.missed...)
		}
		t.Logf("anomaly rate %v/symbol/hour, 8 runs × 30 symbols:\n%s", generate.DefaultAnomalyRate, total.table())
		check(t, total)
	})
}
