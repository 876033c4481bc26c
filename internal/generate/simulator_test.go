package generate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// simTestStart is 09:30 in New York on a Wednesday: the open.
var simTestStart = time.Date(2026, 11, 25, 14, 30, 0, 0, time.UTC)

var simTestSymbolRE = regexp.MustCompile(`^[A-Z][A-Z0-9.-]{0,11}$`)

// simRec is an emitted record, copied.
type simRec struct {
	key   string
	value []byte
	ts    time.Time
}

// simRun runs a simulator until it is exhausted and returns what it emitted.
func simRun(t testing.TB, cfg SimConfig) ([]simRec, *Simulator) {
	t.Helper()
	sim, err := NewSimulator(cfg)
	if err != nil {
		t.Fatalf("NewSimulator: %v", err)
	}
	var out []simRec
	for {
		rec, ok, err := sim.Next()
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if !ok {
			return out, sim
		}
		out = append(out, simRec{string(rec.Key), bytes.Clone(rec.Value), rec.TS})
	}
}

func simSymbols(t testing.TB, names ...string) []Symbol {
	t.Helper()
	syms, err := LookupSymbols(names)
	if err != nil {
		t.Fatal(err)
	}
	return syms
}

// simWire is a decoded tick.
type simWire struct {
	Symbol string
	TS     time.Time
	Seq    int64
	Price  float64
	Size   int64
	Bid    float64
	Ask    float64
}

const (
	simClassValid     = "valid"
	simClassMalformed = "malformed"
	simClassInvalid   = "invalid"
)

// simClassify decodes a record the way a careful consumer would, without
// looking at how the simulator made it. Malformed: not a JSON object, or a
// field of the wrong JSON type. Invalid: a tick object whose values break
// the rules (missing field, non-finite number sent as a string, bad time,
// price/bid/ask <= 0, bid > ask, size <= 0, seq <= 0, bad symbol).
func simClassify(v []byte) (simWire, string) {
	var w simWire
	if !json.Valid(v) {
		return w, simClassMalformed
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(v, &fields); err != nil {
		return w, simClassMalformed
	}
	broken := false
	for _, f := range []struct {
		name   string
		string bool
	}{{"symbol", true}, {"ts", true}, {"seq", false}, {"price", false}, {"size", false}, {"bid", false}, {"ask", false}} {
		raw, ok := fields[f.name]
		if !ok {
			broken = true
			continue
		}
		isString := raw[0] == '"'
		isNumber := raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9')
		switch {
		case f.string && !isString:
			return w, simClassMalformed
		case !f.string && isString:
			s, _ := strconv.Unquote(string(raw))
			if s != "NaN" && s != "Infinity" && s != "-Infinity" {
				return w, simClassMalformed
			}
			broken = true
		case !f.string && !isNumber:
			return w, simClassMalformed
		}
	}
	// Fields present are of the right types now; pick them out.
	_ = json.Unmarshal(fields["symbol"], &w.Symbol)
	_ = json.Unmarshal(fields["seq"], &w.Seq)
	if broken {
		return w, simClassInvalid
	}
	var ts string
	_ = json.Unmarshal(fields["ts"], &ts)
	for _, f := range []struct {
		name string
		dst  any
	}{{"price", &w.Price}, {"size", &w.Size}, {"bid", &w.Bid}, {"ask", &w.Ask}} {
		if err := json.Unmarshal(fields[f.name], f.dst); err != nil {
			return w, simClassMalformed
		}
	}
	var err error
	if w.TS, err = time.Parse(time.RFC3339Nano, ts); err != nil {
		return w, simClassInvalid
	}
	finitePos := func(x float64) bool { return x > 0 && !math.IsInf(x, 0) }
	if !simTestSymbolRE.MatchString(w.Symbol) || w.Seq <= 0 || !finitePos(w.Price) ||
		!finitePos(w.Bid) || !finitePos(w.Ask) || w.Bid > w.Ask || w.Size <= 0 {
		return w, simClassInvalid
	}
	return w, simClassValid
}

// simDecode decodes a record known to be a valid tick; the fast path for
// tests that only read values.
func simDecode(t testing.TB, v []byte) simWire {
	var w simWire
	if err := json.Unmarshal(v, &w); err != nil {
		t.Fatalf("decoding %s: %v", v, err)
	}
	return w
}

func simCents(x float64) int64 { return int64(math.Round(x * 100)) }

func TestDefaultUniverse(t *testing.T) {
	u := DefaultUniverse()
	if len(u) < 20 {
		t.Fatalf("%d symbols, want at least 20", len(u))
	}
	seen := map[string]bool{}
	for _, s := range u {
		if !simTestSymbolRE.MatchString(s.Name) {
			t.Errorf("%q does not match the symbol rule", s.Name)
		}
		if seen[s.Name] {
			t.Errorf("%s listed twice", s.Name)
		}
		seen[s.Name] = true
		if s.Price < 5 || s.Price > 5000 || s.Vol < 0.1 || s.Vol > 1 || s.Beta < 0.2 || s.Beta > 2.5 || s.Spread < 0.5 || s.Spread > 10 {
			t.Errorf("%s has an implausible profile %+v", s.Name, s)
		}
	}
	for _, want := range []string{"AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "JPM", "V", "UNH", "XOM", "JNJ", "WMT", "PG", "MA", "HD", "KO", "PEP", "AVGO", "COST", "NFLX", "AMD", "ORCL", "CRM"} {
		if !seen[want] {
			t.Errorf("%s missing", want)
		}
	}
	u[0].Price = -1
	if DefaultUniverse()[0].Price == -1 {
		t.Error("DefaultUniverse shares its backing array with callers")
	}
}

func TestLookupSymbols(t *testing.T) {
	aapl := DefaultUniverse()[0]
	tests := []struct {
		name    string
		in      []string
		wantErr string // substring; empty means success
	}{
		{"known", []string{"AAPL", " KO "}, ""},
		{"unknown valid", []string{"ZZZT", "A", "BF.B", "X-1", "ABCDEFGHIJKL"}, ""},
		{"lower case", []string{"AAPL", "msft"}, `"msft"`},
		{"leading digit", []string{"1ABC"}, `"1ABC"`},
		{"too long", []string{"ABCDEFGHIJKLM"}, `"ABCDEFGHIJKLM"`},
		{"bad char", []string{"AB_C"}, `"AB_C"`},
		{"empty name", []string{"AAPL", ""}, `""`},
		{"duplicate", []string{"AAPL", "AAPL"}, "twice"},
		{"none", nil, "no symbols"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LookupSymbols(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %s", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), "twice") && !strings.Contains(err.Error(), "no symbols") && !strings.Contains(err.Error(), "^[A-Z]") {
					t.Errorf("error %q does not state the rule", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.in) {
				t.Fatalf("got %d symbols for %d names", len(got), len(tt.in))
			}
			again, _ := LookupSymbols(tt.in)
			for i, s := range got {
				if s.Name != strings.TrimSpace(tt.in[i]) {
					t.Errorf("symbol %d is %q, want %q", i, s.Name, tt.in[i])
				}
				if s != again[i] {
					t.Errorf("%s: profile not deterministic: %+v vs %+v", s.Name, s, again[i])
				}
				if err := simCheckSymbol(s); err != nil {
					t.Errorf("profile rejected by the simulator: %v", err)
				}
			}
		})
	}
	got, _ := LookupSymbols([]string{"AAPL"})
	if got[0] != aapl {
		t.Errorf("AAPL = %+v, want the default %+v", got[0], aapl)
	}
	a, _ := LookupSymbols([]string{"QQQX"})
	b, _ := LookupSymbols([]string{"QQQY"})
	if a[0].Price == b[0].Price && a[0].Vol == b[0].Vol {
		t.Errorf("different unknown names got the same profile %+v", a[0])
	}
}

func TestNewSimulatorRejects(t *testing.T) {
	ok := SimConfig{Start: simTestStart, Symbols: simSymbols(t, "AAPL")}
	tests := []struct {
		name    string
		mutate  func(*SimConfig)
		wantErr string
	}{
		{"no start", func(c *SimConfig) { c.Start = time.Time{} }, "start"},
		{"negative rate", func(c *SimConfig) { c.Rate = -1 }, "rate"},
		{"NaN rate", func(c *SimConfig) { c.Rate = math.NaN() }, "rate"},
		{"infinite rate", func(c *SimConfig) { c.Rate = math.Inf(1) }, "rate"},
		{"tiny rate", func(c *SimConfig) { c.Rate = 1e-6 }, "rate"},
		{"negative count", func(c *SimConfig) { c.Count = -5 }, "count"},
		{"faults above 0.5", func(c *SimConfig) { c.Faults = 0.6 }, "faults"},
		{"negative faults", func(c *SimConfig) { c.Faults = -0.1 }, "faults"},
		{"negative anomaly rate", func(c *SimConfig) { c.AnomalyRate = -1 }, "anomaly"},
		{"bad symbol name", func(c *SimConfig) { c.Symbols = []Symbol{{"aapl", 10, 0.2, 1, 2}} }, `"aapl"`},
		{"duplicate symbol", func(c *SimConfig) { c.Symbols = append(c.Symbols, c.Symbols[0]) }, "twice"},
		{"zero price", func(c *SimConfig) { c.Symbols = []Symbol{{"ABC", 0, 0.2, 1, 2}} }, "price"},
		{"NaN vol", func(c *SimConfig) { c.Symbols = []Symbol{{"ABC", 10, math.NaN(), 1, 2}} }, "volatility"},
		{"zero spread", func(c *SimConfig) { c.Symbols = []Symbol{{"ABC", 10, 0.2, 1, 0}} }, "spread"},
		{"resume negative seq", func(c *SimConfig) { c.Resume = map[string]Resume{"AAPL": {Seq: -1}} }, "seq"},
		{"resume NaN price", func(c *SimConfig) { c.Resume = map[string]Resume{"AAPL": {Seq: 1, Price: math.NaN()}} }, "price"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			cfg.Symbols = slices.Clone(ok.Symbols)
			tt.mutate(&cfg)
			_, err := NewSimulator(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
	if _, err := NewSimulator(ok); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
}

func TestSimulatorDefaults(t *testing.T) {
	recs, sim := simRun(t, SimConfig{Start: simTestStart, Count: 20000, Seed: 3})
	known := map[string]bool{}
	for _, s := range DefaultUniverse() {
		known[s.Name] = true
	}
	keys := map[string]bool{}
	for _, r := range recs {
		if !known[r.key] {
			t.Fatalf("key %q not in the default universe", r.key)
		}
		keys[r.key] = true
	}
	if len(keys) != len(known) {
		t.Errorf("%d of %d default symbols ticked", len(keys), len(known))
	}
	// 20000 ticks at the default 2000/s span about 10 s.
	span := recs[len(recs)-1].ts.Sub(recs[0].ts).Seconds()
	if span < 9 || span > 11 {
		t.Errorf("20000 ticks spanned %.2fs, want about 10s at the default rate", span)
	}
	if st := sim.Stats(); st != (SimStats{Records: 20000, Valid: 20000}) {
		t.Errorf("stats %+v, want only valid records and no anomalies by default", st)
	}
}

// TestSimulatorRealisedVolatility samples each symbol's last price every simulated
// minute and compares the realised volatility of log returns with the
// configured one, annualised over a trading year of 252 × 6.5 h.
func TestSimulatorRealisedVolatility(t *testing.T) {
	t.Parallel()
	const minutes = 3000
	syms := simSymbols(t, "AAPL", "MSFT", "KO", "TSLA")
	rate := 2.0
	recs, _ := simRun(t, SimConfig{
		Symbols: syms, Rate: rate, Seed: 11, Start: simTestStart, CalmOnly: true,
		Count: int64(rate * 60 * minutes),
	})
	last := map[string]float64{}
	returns := map[string][]float64{}
	prev := map[string]float64{}
	next := simTestStart.Add(time.Minute)
	snapshot := func() {
		if len(last) < len(syms) {
			return
		}
		for s, p := range last {
			if q, ok := prev[s]; ok {
				returns[s] = append(returns[s], math.Log(p/q))
			}
			prev[s] = p
		}
	}
	for _, r := range recs {
		for !r.ts.Before(next) {
			snapshot()
			next = next.Add(time.Minute)
		}
		last[r.key] = simDecode(t, r.value).Price
	}
	annualise := math.Sqrt(252 * 6.5 * 60)
	for _, s := range syms {
		rs := returns[s.Name]
		if len(rs) < minutes*9/10 {
			t.Fatalf("%s: only %d minute returns", s.Name, len(rs))
		}
		var sum, sq float64
		for _, x := range rs {
			sum += x
		}
		mean := sum / float64(len(rs))
		for _, x := range rs {
			sq += (x - mean) * (x - mean)
		}
		got := math.Sqrt(sq/float64(len(rs)-1)) * annualise
		t.Logf("%s: realised vol %.4f, configured %.4f (%+.1f%%) over %d minutes", s.Name, got, s.Vol, 100*(got/s.Vol-1), len(rs))
		if math.Abs(got/s.Vol-1) > 0.10 {
			t.Errorf("%s: realised vol %.4f, want %.4f ± 10%%", s.Name, got, s.Vol)
		}
	}
	corr := func(a, b []float64) float64 {
		n := min(len(a), len(b))
		var ma, mb float64
		for i := range n {
			ma += a[i]
			mb += b[i]
		}
		ma /= float64(n)
		mb /= float64(n)
		var cov, va, vb float64
		for i := range n {
			cov += (a[i] - ma) * (b[i] - mb)
			va += (a[i] - ma) * (a[i] - ma)
			vb += (b[i] - mb) * (b[i] - mb)
		}
		return cov / math.Sqrt(va*vb)
	}
	// Model correlation is βaβb·0.16²/(σaσb): 0.47 for AAPL/MSFT, 0.31 for TSLA/KO.
	for _, pair := range []struct {
		a, b     string
		min, max float64
	}{{"AAPL", "MSFT", 0.35, 0.6}, {"TSLA", "KO", 0.2, 0.45}} {
		c := corr(returns[pair.a], returns[pair.b])
		t.Logf("correlation %s/%s = %.3f", pair.a, pair.b, c)
		if c < pair.min || c > pair.max {
			t.Errorf("correlation %s/%s = %.3f, want in [%.2f, %.2f]", pair.a, pair.b, c, pair.min, pair.max)
		}
	}
}

func TestSimulatorDeterminism(t *testing.T) {
	t.Parallel()
	run := func(seed uint64) ([]simRec, string) {
		var truth bytes.Buffer
		recs, _ := simRun(t, SimConfig{
			Seed: seed, Start: simTestStart, Count: 30000, Faults: 0.1, AnomalyRate: 600, Truth: &truth,
		})
		return recs, truth.String()
	}
	a, ta := run(42)
	b, tb := run(42)
	c, tc := run(43)
	same := func(x, y []simRec) bool {
		return slices.EqualFunc(x, y, func(p, q simRec) bool {
			return p.key == q.key && bytes.Equal(p.value, q.value) && p.ts.Equal(q.ts)
		})
	}
	if !same(a, b) || ta != tb {
		t.Error("same seed gave different output")
	}
	if ta == "" {
		t.Error("no anomalies written, so the truth comparison proves nothing")
	}
	if same(a, c) || ta == tc {
		t.Error("different seeds gave the same output")
	}
}

// TestSimulatorValidTicks checks every tick of a fault-free run with anomalies on.
func TestSimulatorValidTicks(t *testing.T) {
	t.Parallel()
	recs, sim := simRun(t, SimConfig{Seed: 5, Start: simTestStart, Count: 200000, AnomalyRate: 300})
	lastSeq := map[string]int64{}
	var lastTS time.Time
	roundLots := 0
	for i, r := range recs {
		w, class := simClassify(r.value)
		if class != simClassValid {
			t.Fatalf("record %d is %s: %s", i, class, r.value)
		}
		if w.Symbol != r.key || !w.TS.Equal(r.ts) {
			t.Fatalf("record %d: key %q TS %v disagree with value %s", i, r.key, r.ts, r.value)
		}
		if !(w.Bid < w.Ask) || w.Price <= 0 || w.Bid <= 0 || w.Price < w.Bid || w.Price > w.Ask {
			t.Fatalf("record %d: bad quote %s", i, r.value)
		}
		if w.Size%100 == 0 {
			roundLots++
		}
		if w.TS.Nanosecond()%1000 != 0 {
			t.Fatalf("record %d: ts %v finer than a microsecond", i, w.TS)
		}
		if w.TS.Before(lastTS) {
			t.Fatalf("record %d: ts went back from %v to %v", i, lastTS, w.TS)
		}
		lastTS = w.TS
		if w.Seq != lastSeq[w.Symbol]+1 {
			t.Fatalf("record %d: %s seq %d after %d", i, w.Symbol, w.Seq, lastSeq[w.Symbol])
		}
		lastSeq[w.Symbol] = w.Seq
		for _, x := range []float64{w.Price, w.Bid, w.Ask} {
			if float64(simCents(x))/100 != x {
				t.Fatalf("record %d: %v is not in cents", i, x)
			}
		}
	}
	if st := sim.Stats(); st.Valid != int64(len(recs)) || st.Anomalies == 0 {
		t.Errorf("stats %+v", st)
	}
	if f := float64(roundLots) / float64(len(recs)); f < 0.85 || f > 0.97 {
		t.Errorf("%.3f of trades are round lots, want mostly round lots with some odd ones", f)
	}
}

// TestSimulatorRegimes measures each simulated hour's realised volatility:
// with regimes on, some hours run at about twice the configured level; in
// calm-only mode none does.
func TestSimulatorRegimes(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name               string
		calmOnly           bool
		minShare, maxShare float64 // share of hours above 1.5× the configured vol
	}{
		{"calm only", true, 0, 0},
		{"regimes", false, 0.03, 0.4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			const hours = 96
			sym := simSymbols(t, "MSFT")
			recs, _ := simRun(t, SimConfig{Symbols: sym, Rate: 1, Seed: 17, Start: simTestStart, CalmOnly: tt.calmOnly, Count: hours * 3600})
			var last, prev float64
			next := simTestStart.Add(time.Minute)
			var hourly []float64
			var sq float64
			n := 0
			for _, r := range recs {
				for !r.ts.Before(next) {
					if prev > 0 {
						x := math.Log(last / prev)
						sq += x * x
						if n++; n == 60 {
							hourly = append(hourly, math.Sqrt(sq/60*252*6.5*60))
							sq, n = 0, 0
						}
					}
					prev = last
					next = next.Add(time.Minute)
				}
				last = simDecode(t, r.value).Price
			}
			high := 0
			for _, v := range hourly {
				if v > 1.5*sym[0].Vol {
					high++
				}
			}
			share := float64(high) / float64(len(hourly))
			t.Logf("%d of %d hours above 1.5x the configured vol", high, len(hourly))
			if len(hourly) < hours-2 || share < tt.minShare || share > tt.maxShare {
				t.Errorf("share of hot hours %.3f, want in [%.2f, %.2f]", share, tt.minShare, tt.maxShare)
			}
		})
	}
}

// simCount is the independent count of a record stream.
type simCount struct {
	stats SimStats
	// valid holds the first copy of every valid tick, by symbol then seq.
	valid map[string]map[int64]simWire
}

// simCountRecords decodes every record and classifies it without help
// from the simulator, checking the per-record promises on the way.
func simCountRecords(t *testing.T, recs []simRec) simCount {
	t.Helper()
	c := simCount{valid: map[string]map[int64]simWire{}}
	first := map[string]string{}
	maxSeq := map[string]int64{}
	var maxTS, prevTS time.Time
	for i, r := range recs {
		c.stats.Records++
		w, class := simClassify(r.value)
		switch class {
		case simClassMalformed:
			c.stats.Malformed++
			if !simTestSymbolRE.MatchString(r.key) {
				t.Fatalf("record %d: malformed record has key %q", i, r.key)
			}
			if i > 0 && !r.ts.Equal(prevTS) {
				t.Fatalf("record %d: malformed record TS %v, want the previous record's %v", i, r.ts, prevTS)
			}
		case simClassInvalid:
			c.stats.Invalid++
			if w.Seq != maxSeq[r.key] {
				t.Fatalf("record %d: invalid record seq %d, want the last valid seq %d of %s: %s", i, w.Seq, maxSeq[r.key], r.key, r.value)
			}
		default:
			if w.Symbol != r.key || !w.TS.Equal(r.ts) {
				t.Fatalf("record %d: key %q TS %v disagree with value %s", i, r.key, r.ts, r.value)
			}
			id := w.Symbol + "/" + strconv.FormatInt(w.Seq, 10)
			if prev, ok := first[id]; ok {
				c.stats.Duplicates++
				if maxTS.Sub(w.TS) >= 10*time.Second {
					c.stats.LateDuplicates++
				}
				if prev != string(r.value) {
					t.Fatalf("record %d: duplicate differs from the original:\n%s\n%s", i, prev, r.value)
				}
				break
			}
			first[id] = string(r.value)
			c.stats.Valid++
			switch {
			case maxTS.Sub(w.TS) >= 10*time.Second:
				c.stats.Late++
			case w.Seq < maxSeq[w.Symbol]:
				c.stats.OutOfOrder++
				if lag := maxTS.Sub(w.TS); lag > 500*time.Millisecond {
					t.Fatalf("record %d: out-of-order tick %v behind", i, lag)
				}
			}
			if c.valid[w.Symbol] == nil {
				c.valid[w.Symbol] = map[int64]simWire{}
			}
			c.valid[w.Symbol][w.Seq] = w
			maxSeq[w.Symbol] = max(maxSeq[w.Symbol], w.Seq)
			if w.TS.After(maxTS) {
				maxTS = w.TS
			}
		}
		prevTS = r.ts
	}
	return c
}

func TestSimulatorFaultsAndStats(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		faults float64
		count  int64
		tol    float64 // relative tolerance on each kind's rate
	}{
		{"none", 0, 30000, 0},
		{"five percent", 0.05, 200000, 0.15},
		{"thirty percent", 0.3, 100000, 0.1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var truth bytes.Buffer
			recs, sim := simRun(t, SimConfig{
				Symbols: simSymbols(t, "AAPL", "KO", "INTC", "COST", "TSLA", "BRK.B"),
				Rate:    200, Seed: 9, Start: simTestStart, Count: tt.count,
				Faults: tt.faults, AnomalyRate: DefaultAnomalyRate, Truth: &truth,
			})
			if int64(len(recs)) != tt.count {
				t.Fatalf("%d records, want %d", len(recs), tt.count)
			}
			c := simCountRecords(t, recs)
			c.stats.Anomalies = int64(strings.Count(truth.String(), "\n"))
			if got := sim.Stats(); got != c.stats {
				t.Errorf("Stats() = %+v\nindependent count %+v", got, c.stats)
			}
			// No seq is lost: every symbol's valid ticks are 1..max.
			for sym, seqs := range c.valid {
				top := slices.Max(slices.Collect(maps.Keys(seqs)))
				if int64(len(seqs)) != top {
					t.Errorf("%s: %d distinct seqs up to %d: gaps left", sym, len(seqs), top)
				}
			}
			want := tt.faults / 5 * float64(tt.count)
			for _, k := range []struct {
				kind string
				n    int64
			}{{"duplicate", c.stats.Duplicates}, {"out_of_order", c.stats.OutOfOrder}, {"late", c.stats.Late}, {"malformed", c.stats.Malformed}, {"invalid", c.stats.Invalid}} {
				t.Logf("%s: %d (expected %.0f)", k.kind, k.n, want)
				if math.Abs(float64(k.n)-want) > tt.tol*want {
					t.Errorf("%s: %d records, want %.0f ± %.0f%%", k.kind, k.n, want, 100*tt.tol)
				}
			}
		})
	}
}

// simRunLen reads the run length from a truth line's detail.
func simRunLen(t *testing.T, a Anomaly) int64 {
	t.Helper()
	if a.Kind == AnomalyPriceJump {
		return 1
	}
	var n int64
	if _, err := fmt.Sscanf(a.Detail, "%d ticks", &n); err != nil || n < 3 {
		t.Fatalf("detail %q does not start with a run length", a.Detail)
	}
	return n
}

func TestSimulatorTruth(t *testing.T) {
	t.Parallel()
	syms := simSymbols(t, "AAPL", "KO", "INTC", "COST", "TSLA")
	var truth bytes.Buffer
	recs, sim := simRun(t, SimConfig{
		Symbols: syms, Rate: 500, Seed: 21, Start: simTestStart, Count: 300000,
		Faults: 0.02, AnomalyRate: 600, Truth: &truth,
	})
	c := simCountRecords(t, recs)
	typSize := map[string]int64{}
	bps := map[string]float64{}
	for _, s := range syms {
		typSize[s.Name] = simTypicalSize(s.Price)
		bps[s.Name] = s.Spread
	}
	typSpread := func(sym string, w simWire) int64 {
		return max(1, int64(math.Round(float64(simCents(w.Price))*bps[sym]/1e4)))
	}

	inRun := map[string]map[int64]string{}
	kinds := map[string]int{}
	lines := strings.Split(strings.TrimSuffix(truth.String(), "\n"), "\n")
	if int64(len(lines)) != sim.Stats().Anomalies || len(lines) < 100 {
		t.Fatalf("%d truth lines, stats say %d anomalies; want them equal and at least 100", len(lines), sim.Stats().Anomalies)
	}
	for _, line := range lines {
		var a Anomaly
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&a); err != nil {
			t.Fatalf("truth line %q: %v", line, err)
		}
		kinds[a.Kind]++
		w, ok := c.valid[a.Symbol][a.Seq]
		if !ok {
			t.Fatalf("truth line %q: no such tick emitted", line)
		}
		if !w.TS.Equal(a.TS) {
			t.Fatalf("truth line %q: tick has ts %v", line, w.TS)
		}
		n := simRunLen(t, a)
		if inRun[a.Symbol] == nil {
			inRun[a.Symbol] = map[int64]string{}
		}
		for seq := a.Seq; seq < a.Seq+n; seq++ {
			if k, dup := inRun[a.Symbol][seq]; dup {
				t.Fatalf("truth line %q overlaps a %s", line, k)
			}
			inRun[a.Symbol][seq] = a.Kind
		}
		switch a.Kind {
		case AnomalyPriceJump:
			prev, ok := c.valid[a.Symbol][a.Seq-1]
			if !ok {
				continue
			}
			r := math.Log(w.Price / prev.Price)
			want := math.Log1p(a.Magnitude)
			if strings.HasPrefix(a.Detail, "down") {
				want = math.Log1p(-a.Magnitude)
			}
			if a.Magnitude < 0.01 || math.Abs(r-want) > 0.002+0.01/w.Price {
				t.Errorf("%q: log return %.5f at the tick, want %.5f", line, r, want)
			}
		case AnomalyVolumeBurst, AnomalySpreadBlowout:
			if a.Magnitude < 10 || a.Magnitude > 30 {
				t.Errorf("%q: magnitude outside 10-30", line)
			}
			for seq := a.Seq; seq < a.Seq+n; seq++ {
				w, ok := c.valid[a.Symbol][seq]
				if !ok {
					continue // the run outlived the record count
				}
				if a.Kind == AnomalyVolumeBurst {
					if x := float64(w.Size) / float64(typSize[a.Symbol]); x < 10 || x > 31 {
						t.Errorf("%q: seq %d size %d is %.1fx typical", line, seq, w.Size, x)
					}
				} else {
					spread := simCents(w.Ask) - simCents(w.Bid)
					if x := float64(spread) / float64(typSpread(a.Symbol, w)); x < 10 || x > 31 {
						t.Errorf("%q: seq %d spread %d cents is %.1fx typical", line, seq, spread, x)
					}
				}
			}
		default:
			t.Errorf("unknown kind in %q", line)
		}
	}
	for _, k := range []string{AnomalyPriceJump, AnomalyVolumeBurst, AnomalySpreadBlowout} {
		if kinds[k] < 20 {
			t.Errorf("only %d %s anomalies", kinds[k], k)
		}
	}
	// The converse: nothing outside a labelled run looks anomalous.
	for sym, seqs := range c.valid {
		for seq, w := range seqs {
			if _, labelled := inRun[sym][seq]; labelled {
				continue
			}
			if prev, ok := seqs[seq-1]; ok {
				if r := math.Abs(math.Log(w.Price / prev.Price)); r > 0.005 {
					t.Errorf("%s seq %d: unlabelled move of %.4f", sym, seq, r)
				}
			}
			if w.Size >= 10*typSize[sym] {
				t.Errorf("%s seq %d: unlabelled size %d", sym, seq, w.Size)
			}
			if spread := simCents(w.Ask) - simCents(w.Bid); spread >= 10*typSpread(sym, w) {
				t.Errorf("%s seq %d: unlabelled spread %d cents", sym, seq, spread)
			}
		}
	}
}

func TestSimulatorResume(t *testing.T) {
	syms := simSymbols(t, "AAPL", "KO", "NVDA")
	first, _ := simRun(t, SimConfig{Symbols: syms, Seed: 1, Start: simTestStart, Count: 3000})
	resume := map[string]Resume{"ELSEWHERE": {Seq: 99, Price: 1}}
	for _, r := range first {
		w, _ := simClassify(r.value)
		resume[w.Symbol] = Resume{Seq: w.Seq, Price: w.Price}
	}
	want := maps.Clone(resume)
	want["NVDA"] = Resume{Seq: resume["NVDA"].Seq, Price: 0} // keep NVDA's own price
	resume["NVDA"] = want["NVDA"]

	second, _ := simRun(t, SimConfig{Symbols: syms, Seed: 2, Start: first[len(first)-1].ts, Count: 300, Resume: resume})
	seen := map[string]bool{}
	for _, r := range second {
		w, _ := simClassify(r.value)
		if seen[w.Symbol] {
			continue
		}
		seen[w.Symbol] = true
		wantPrice := want[w.Symbol].Price
		if wantPrice == 0 {
			wantPrice = syms[2].Price
		}
		if w.Seq != want[w.Symbol].Seq+1 {
			t.Errorf("%s resumed at seq %d, want %d", w.Symbol, w.Seq, want[w.Symbol].Seq+1)
		}
		if math.Abs(math.Log(w.Price/wantPrice)) > 0.005 {
			t.Errorf("%s resumed at price %v, want about %v", w.Symbol, w.Price, wantPrice)
		}
	}
	if len(seen) != 3 {
		t.Errorf("only %d symbols ticked after resuming", len(seen))
	}
}

// TestSimulatorIntradayProfile checks the U shape: trades are larger at the open and
// the close than at midday, and smallest outside the session.
func TestSimulatorIntradayProfile(t *testing.T) {
	t.Parallel()
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	meanSize := func(start time.Time, d time.Duration) float64 {
		const rate = 100
		recs, _ := simRun(t, SimConfig{
			Symbols: simSymbols(t, "AAPL", "MSFT", "META", "COST"),
			Rate:    rate, Seed: 4, Start: start, Count: int64(d.Seconds() * rate),
		})
		var sum float64
		for _, r := range recs {
			sum += float64(simDecode(t, r.value).Size)
		}
		return sum / float64(len(recs))
	}
	day := func(h, m int) time.Time { return time.Date(2026, 11, 25, h, m, 0, 0, ny) }
	open := meanSize(day(9, 30), 3*time.Minute)
	midday := meanSize(day(12, 30), 10*time.Minute)
	closing := meanSize(day(15, 55), 5*time.Minute)
	after := meanSize(day(17, 0), 10*time.Minute)
	weekend := meanSize(time.Date(2026, 11, 28, 12, 30, 0, 0, ny), 10*time.Minute)
	t.Logf("mean size: open %.0f, midday %.0f, close %.0f, after hours %.0f, weekend %.0f", open, midday, closing, after, weekend)
	if open < 1.3*midday || closing < 1.2*midday || midday < 1.1*after || midday < 1.1*weekend {
		t.Error("sizes do not follow the U-shaped session profile")
	}
}

func TestSimulatorAllocations(t *testing.T) {
	sim, err := NewSimulator(SimConfig{Seed: 8, Start: simTestStart, Faults: 0.05, AnomalyRate: 600, Truth: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	next := func() {
		if _, ok, err := sim.Next(); !ok || err != nil {
			t.Fatalf("Next: %v %v", ok, err)
		}
	}
	for range 100000 { // let the held-tick queues reach their steady size
		next()
	}
	if n := testing.AllocsPerRun(50000, next); n != 0 {
		t.Errorf("%v allocations per record, want 0", n)
	}
}

func TestSimulatorTruthWriteError(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "truth")
	if err != nil {
		t.Fatal(err)
	}
	f.Close() // every write now fails
	sim, err := NewSimulator(SimConfig{Seed: 1, Start: simTestStart, AnomalyRate: 3600, Truth: f})
	if err != nil {
		t.Fatal(err)
	}
	n, err := Run(context.Background(), sim, Pace{Speed: 0}, func(context.Context, Record) error { return nil })
	if !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Run = %d, %v; want the truth write error", n, err)
	}
	if _, _, err2 := sim.Next(); !errors.Is(err2, os.ErrClosed) {
		t.Errorf("Next after a failure = %v, want the same error", err2)
	}
	if sim.Stats().Records != n {
		t.Errorf("stats count %d records, Run emitted %d", sim.Stats().Records, n)
	}
}

// simSliceSource replays fixed records.
type simSliceSource struct {
	recs []Record
	i    int
}

func (s *simSliceSource) Next() (Record, bool, error) {
	if s.i == len(s.recs) {
		return Record{}, false, nil
	}
	s.i++
	return s.recs[s.i-1], true, nil
}

func TestSourceRunPacing(t *testing.T) {
	tests := []struct {
		name  string
		speed float64
		rate  float64
		count int64
	}{
		{"real time", 1, 100, 16},
		{"ten times", 10, 50, 51},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, err := NewSimulator(SimConfig{Symbols: simSymbols(t, "AAPL"), Rate: tt.rate, Seed: 2, Start: simTestStart, Count: tt.count})
			if err != nil {
				t.Fatal(err)
			}
			var ts []time.Time
			var wall []time.Time
			begin := time.Now() // no later than Run's own anchor
			n, err := Run(context.Background(), sim, Pace{Speed: tt.speed}, func(_ context.Context, r Record) error {
				wall = append(wall, time.Now())
				ts = append(ts, r.TS)
				return nil
			})
			if err != nil || n != tt.count {
				t.Fatalf("Run = %d, %v", n, err)
			}
			// Never early (Run may round up to a millisecond); lateness is
			// only bounded loosely, as a busy machine can stall any process.
			for i := range ts {
				due := time.Duration(float64(ts[i].Sub(ts[0])) / tt.speed)
				if got := wall[i].Sub(begin); got < due-2*time.Millisecond {
					t.Errorf("record %d emitted at %v, due at %v", i, got, due)
				}
			}
			span := time.Duration(float64(ts[len(ts)-1].Sub(ts[0])) / tt.speed)
			if span < 50*time.Millisecond {
				t.Errorf("paced span %v too short to test pacing", span)
			}
			if got := wall[len(wall)-1].Sub(begin); got > span+3*time.Second {
				t.Errorf("took %v for %v of paced event time", got, span)
			}
		})
	}
}

func TestSourceRunUnpaced(t *testing.T) {
	sim, err := NewSimulator(SimConfig{Seed: 2, Start: simTestStart, Count: 100000})
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	n, err := Run(context.Background(), sim, Pace{Speed: 0}, func(context.Context, Record) error { return nil })
	if err != nil || n != 100000 {
		t.Fatalf("Run = %d, %v", n, err)
	}
	// 100k records are 50 s of event time; unpaced they take well under 5 s.
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("speed 0 took %v", d)
	}
}

func TestSourceRunStops(t *testing.T) {
	t.Run("cancel", func(t *testing.T) {
		sim, err := NewSimulator(SimConfig{Seed: 2, Start: simTestStart, Rate: 100})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		begin := time.Now()
		n, err := Run(ctx, sim, Pace{Speed: 1}, func(context.Context, Record) error { return nil })
		if !errors.Is(err, context.DeadlineExceeded) || n == 0 || n > 30 {
			t.Errorf("Run = %d, %v; want a few records then the deadline", n, err)
		}
		if d := time.Since(begin); d > 3*time.Second {
			t.Errorf("cancel took %v", d)
		}
	})
	t.Run("emit error", func(t *testing.T) {
		sim, err := NewSimulator(SimConfig{Seed: 2, Start: simTestStart})
		if err != nil {
			t.Fatal(err)
		}
		boom := errors.New("broker down")
		calls := 0
		n, err := Run(context.Background(), sim, Pace{Speed: 0}, func(context.Context, Record) error {
			if calls++; calls == 3 {
				return boom
			}
			return nil
		})
		if !errors.Is(err, boom) || n != 2 {
			t.Errorf("Run = %d, %v; want 2 and the emit error", n, err)
		}
	})
}

// TestSourceRunOddTimes covers records whose TS would break naive pacing.
func TestSourceRunOddTimes(t *testing.T) {
	t0 := simTestStart
	tests := []struct {
		name    string
		recs    []Record
		speed   float64
		wantN   int64
		wantErr error
		minWall time.Duration
	}{
		// A first record without a time must not anchor the clock at year 1.
		{"zero first TS", []Record{{}, {TS: t0}, {TS: t0.Add(30 * time.Millisecond)}}, 1, 3, nil, 28 * time.Millisecond},
		// Records before the anchor's time go out at once.
		{"backwards", []Record{{TS: t0}, {TS: t0.Add(-time.Hour)}, {TS: t0.Add(20 * time.Millisecond)}}, 1, 3, nil, 18 * time.Millisecond},
		// 200 years at half speed overflows a Duration: wait, don't emit.
		{"huge gap", []Record{{TS: t0}, {TS: t0.AddDate(200, 0, 0)}}, 0.5, 1, context.DeadlineExceeded, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			begin := time.Now()
			n, err := Run(ctx, &simSliceSource{recs: tt.recs}, Pace{Speed: tt.speed}, func(context.Context, Record) error { return nil })
			if n != tt.wantN || !errors.Is(err, tt.wantErr) {
				t.Fatalf("Run = %d, %v; want %d, %v", n, err, tt.wantN, tt.wantErr)
			}
			if d := time.Since(begin); d < tt.minWall {
				t.Errorf("took %v, want at least %v", d, tt.minWall)
			}
		})
	}
}

// TestRunNotAhead checks that a run at full speed from the past stops at the
// present: records up to now go out at once, the first one from the future
// is held until its time and reported once, none is ever emitted before its
// event time.
func TestRunNotAhead(t *testing.T) {
	now := time.Now().UTC()
	recs := []Record{{TS: now.Add(-time.Hour)}, {TS: now.Add(-time.Second)}, {TS: now.Add(150 * time.Millisecond)}, {TS: now.Add(250 * time.Millisecond)}}
	var caught []time.Time
	var late []time.Duration
	n, err := Run(context.Background(), &simSliceSource{recs: recs}, Pace{NotAhead: true, CaughtUp: func(ts time.Time) { caught = append(caught, ts) }},
		func(_ context.Context, r Record) error {
			late = append(late, time.Since(r.TS))
			return nil
		})
	if err != nil || n != 4 {
		t.Fatalf("Run = %d, %v", n, err)
	}
	for i, d := range late {
		if d < -time.Millisecond {
			t.Errorf("record %d emitted %v before its event time", i, -d)
		}
	}
	if len(caught) != 1 || !caught[0].Equal(recs[2].TS) {
		t.Fatalf("CaughtUp called with %v, want once with the first future record's time", caught)
	}
}

// BenchmarkSimulator measures the hot path with default settings plus 1%
// faults and anomalies at the default rate.
func BenchmarkSimulator(b *testing.B) {
	sim, err := NewSimulator(SimConfig{Seed: 1, Start: simTestStart, Faults: 0.01, AnomalyRate: DefaultAnomalyRate, Truth: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var n, bytesOut int64
	for b.Loop() {
		rec, ok, err := sim.Next()
		if !ok || err != nil {
			b.Fatal(ok, err)
		}
		n++
		bytesOut += int64(len(rec.Value))
	}
	b.SetBytes(bytesOut / max(n, 1))
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}
