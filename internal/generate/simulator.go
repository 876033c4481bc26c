package generate

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"time"
	_ "time/tzdata" // the intraday profile needs New York time; embedding the zone keeps a seed's output the same on hosts without tzdata

	"github.com/stockpipe/stockpipe/internal/market"
)

// Defaults for SimConfig fields that a command-line front end exposes.
const (
	// DefaultSimRate is the tick rate used when SimConfig.Rate is 0.
	DefaultSimRate = 2000.0
	// DefaultAnomalyRate is a sensible SimConfig.AnomalyRate: rare enough
	// that anomalies stand out, frequent enough to evaluate a detector on an
	// hour of data. SimConfig.AnomalyRate 0 means no anomalies.
	DefaultAnomalyRate = 2.0
)

// Anomaly kinds written to the truth file.
const (
	AnomalyPriceJump     = "price_jump"
	AnomalyVolumeBurst   = "volume_burst"
	AnomalySpreadBlowout = "spread_blowout"
)

// Anomaly is one line of the truth file: a labelled anomaly whose first
// affected tick is (Symbol, Seq) at TS. Magnitude is the jump's size as a
// fraction of the price for price_jump, and the multiple of the typical size
// or spread for volume_burst and spread_blowout.
type Anomaly struct {
	Symbol    string    `json:"symbol"`
	Kind      string    `json:"kind"`
	TS        time.Time `json:"ts"`
	Seq       int64     `json:"seq"`
	Magnitude float64   `json:"magnitude"`
	Detail    string    `json:"detail"`
}

// SimConfig configures a Simulator. The zero value of each field except
// Start is usable.
type SimConfig struct {
	// Symbols to simulate; empty means DefaultUniverse.
	Symbols []Symbol
	// Rate is the mean number of ticks per simulated second across the
	// whole universe, 0.01 to 1e8; 0 means DefaultSimRate.
	Rate float64
	// Count stops the simulator after this many records (faults included);
	// 0 means never stop.
	Count int64
	// Seed makes runs reproducible: the same seed and config give the same
	// bytes.
	Seed uint64
	// Start is the simulated time of the first event; required. It is
	// truncated to the microsecond, the precision ticks carry.
	Start time.Time
	// Faults is the probability, at most 0.5, that a record is one of the
	// five fault kinds (duplicate, out_of_order, late, malformed, invalid),
	// each equally likely.
	Faults float64
	// AnomalyRate is the mean number of labelled anomalies per symbol per
	// simulated hour; 0 means none. See DefaultAnomalyRate.
	AnomalyRate float64
	// Truth, if non-nil, receives one JSON line (see Anomaly) per labelled
	// anomaly, written when its first tick is emitted.
	Truth io.Writer
	// Resume continues symbols from a previous run: the first tick of a
	// symbol present here has seq Seq+1 and starts from Price (Price 0
	// keeps the symbol's own price). Names not in Symbols are ignored, so a
	// map built from a whole topic can be passed as is.
	Resume map[string]Resume
	// CalmOnly keeps the market in the calm volatility regime, so each
	// symbol's log price is plain correlated Brownian motion with volatility
	// Symbol.Vol (plus labelled jumps when AnomalyRate > 0). For calibration
	// checks.
	CalmOnly bool
}

// Resume is where a symbol left off: its last seq and last trade price.
type Resume struct {
	Seq   int64
	Price float64
}

// SimStats accounts for every record emitted:
// Records = Valid + Duplicates + Malformed + Invalid.
type SimStats struct {
	Records int64 // records emitted
	// Valid counts distinct valid ticks, each (symbol, seq) once, including
	// the out-of-order and late ones.
	Valid int64
	// Duplicates are exact resends of a valid tick already emitted.
	Duplicates int64
	// LateDuplicates counts the Duplicates that are themselves late (by
	// Late's rule) when resent: resends of late ticks, mostly. Nothing of
	// a late tick is stored, so a processor rejects these as late again
	// rather than dropping them as duplicates.
	LateDuplicates int64
	// OutOfOrder counts valid ticks emitted after a tick of the same symbol
	// with a higher seq, less than 10 s of event time behind the newest tick
	// emitted (in practice at most 500 ms).
	OutOfOrder int64
	// Late counts valid ticks emitted when the newest tick emitted was
	// already at least 10 s of event time ahead of them.
	Late int64
	// Malformed records are not a JSON tick object at all.
	Malformed int64
	// Invalid records are tick objects with a broken value.
	Invalid int64
	// Anomalies counts labelled anomalies whose first tick was emitted.
	Anomalies int64
}

// Model constants. Simulated time is treated as continuous trading time,
// so an "annual" volatility refers to a trading year of 252 days of 6.5
// hours: per-second moves then have the size they have during a session.
const (
	simYearSeconds = 252 * 6.5 * 3600
	simInvYear     = 1 / simYearSeconds
	simMarketVol   = 0.16 // annualised volatility of the common factor

	// Regimes: calm spells last 4 h on average, volatile ones 45 min, so a
	// switch is rare on the scale of a detector's window. Volatile doubles
	// every volatility and widens spreads by half.
	simCalmMean       = 4 * 3600.0
	simVolatileMean   = 45 * 60.0
	simVolatileVol    = 2.0
	simVolatileSpread = 1.5

	simLateNs      = int64(10 * time.Second)
	simOOOWindowNs = int64(500 * time.Millisecond)
	simLateMin     = 10.0 // seconds a late tick is held back, at least
	simLateMax     = 12.0
	simCooldown    = 50 // ticks of a symbol between two of its anomalies
	simDupRing     = 32 // how far back a duplicate may reach
	simOddLotP     = 0.07
)

// anomaly kinds, as stored in a simTick.
const (
	simAnomNone uint8 = iota
	simAnomJump
	simAnomBurst
	simAnomBlowout
)

// simTick is a generated tick before encoding: prices in integer cents so
// that bid < ask and rounding are exact.
type simTick struct {
	offNs              int64 // event time minus Start, whole microseconds
	seq                int64
	size               int64
	priceC, bidC, askC int64
	sym                int32
	anom               uint8 // anomaly starting at this tick
	anomN              int32 // run length of that anomaly
	anomMag            float64
	anomAux            float64 // jump: size in per-tick σ; runs: typical size or spread
	anomDown           bool
}

// simSym is one symbol's state.
type simSym struct {
	name, lower string
	key         []byte
	vol, beta   float64 // beta is capped so the idiosyncratic part keeps some variance
	idio        float64 // annualised idiosyncratic volatility
	halfVar     float64 // ½·vol², the Itô correction that keeps the price a martingale
	spreadBps   float64
	typSize     int64   // typical trade size in shares, a round lot multiple
	typLots     float64 // typSize/100
	tickSigma   float64 // σ of the log price over a typical gap between its ticks

	logP         float64 // unrounded log price: rounding only happens on output
	vlast, mlast float64 // variance clock and market factor at its last tick
	seq          int64   // last seq generated
	emittedMax   int64   // highest seq emitted as a valid tick
	last         simTick // the valid tick emitted with seq emittedMax
	hasLast      bool

	nextAnom  float64 // simulated seconds at which the next anomaly may start
	cooldown  int32
	runKind   uint8
	runLeft   int32
	runFactor float64
}

type simHeldOOO struct {
	t          simTick
	releaseSeq int64 // release once this seq of the symbol has been emitted
}

type simHeldLate struct {
	t     simTick
	dueNs int64 // release once a tick this late has been emitted
}

// Simulator generates a synthetic market. It implements Source. It is not
// safe for concurrent use.
//
// The model, in simulated time t (seconds):
//
//   - Events form a Poisson process of rate Rate: gaps are exponential with
//     mean 1/Rate, and each event is a trade in a symbol picked uniformly.
//     The rate is constant because it is the load the pipeline is tested at.
//   - A market-wide two-state Markov chain sets the regime: calm (multiplier
//     1) or volatile (2). Rather than apply a regime per tick, the simulator
//     keeps a variance clock V(t) = ∫ m(u)² du, so a symbol's variance over
//     any gap is exact even when the regime switched inside it.
//   - A market factor M is Brownian motion in that clock with volatility
//     0.16; each symbol's log price moves, between two of its ticks, by
//     β·ΔM + σᵢ·√ΔV·Z − ½σ²·ΔV with σᵢ² = σ² − β²·0.16², so its total
//     volatility is Symbol.Vol whatever its beta, and symbols co-move with
//     correlation βᵢβⱼ·0.16²/(σᵢσⱼ). Using the elapsed time of the symbol's
//     own gap makes the process continuous-time GBM: the price path does
//     not depend on how often the symbol happens to trade.
//   - The only jumps are the labelled price_jump anomalies, so every large
//     move is in the truth file.
//   - Trade sizes follow a U-shaped New York intraday profile (heavier near
//     09:30 and 16:00, light outside the session); spreads are a few basis
//     points, at least a cent.
type Simulator struct {
	cfg   SimConfig
	rng   *rand.Rand
	syms  []simSym
	start time.Time
	// startNs is Start in Unix nanoseconds, for the intraday profile.
	startNs int64

	meanGap    float64 // 1/Rate
	anomPerSec float64 // per symbol
	faultEach  float64 // per-kind probability of a fault decision
	faultP     float64 // 5·faultEach

	now      float64 // simulated seconds since Start
	vclock   float64 // variance clock, seconds weighted by regime²
	mkt      float64 // market factor
	volatile bool
	regMult2 float64 // current regime multiplier squared
	switchAt float64 // simulated second of the next regime switch

	// intraday profile cache, in Unix nanoseconds
	loc              *time.Location
	dayStart, dayEnd int64
	openNs, closeNs  int64
	weekend          bool
	profUntil        int64
	profMult         float64
	profFrom         int64 // start of the minute profMult was computed for

	ahead     simTick // next tick in generation order, not yet emitted
	haveAhead bool
	ooo       []simHeldOOO
	late      []simHeldLate
	lateHead  int

	ring     [simDupRing]simTick
	ringN    int
	ringNext int

	emitMaxNs   int64 // newest event time of a valid tick emitted
	lastTS      time.Time
	lastValid   int32 // symbol of the last valid tick emitted, -1 if none
	stats       SimStats
	err         error
	out         []byte
	scratch     []byte
	truthBuf    []byte
	valBuf      []byte // scratch for a broken field value
	scratchTick market.Tick
}

// NewSimulator checks cfg and returns a simulator positioned before its
// first record.
func NewSimulator(cfg SimConfig) (*Simulator, error) {
	if len(cfg.Symbols) == 0 {
		cfg.Symbols = DefaultUniverse()
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultSimRate
	}
	switch {
	case !(cfg.Rate >= 0.01 && cfg.Rate <= 1e8):
		return nil, fmt.Errorf("simulator: rate %v: must be between 0.01 and 1e8 ticks per second", cfg.Rate)
	case cfg.Count < 0:
		return nil, fmt.Errorf("simulator: count %d: must be >= 0 (0 = unbounded)", cfg.Count)
	case cfg.Start.IsZero():
		return nil, fmt.Errorf("simulator: start time is required (pass time.Now() for live mode)")
	case !(cfg.Faults >= 0 && cfg.Faults <= 0.5):
		return nil, fmt.Errorf("simulator: faults %v: must be a probability between 0 and 0.5", cfg.Faults)
	case !(cfg.AnomalyRate >= 0) || math.IsInf(cfg.AnomalyRate, 0):
		return nil, fmt.Errorf("simulator: anomaly rate %v: must be >= 0 per symbol per hour", cfg.AnomalyRate)
	}
	s := &Simulator{
		cfg:       cfg,
		rng:       rand.New(rand.NewPCG(cfg.Seed, 0x5eed_57_0c_b1_7e)),
		start:     cfg.Start.UTC().Truncate(time.Microsecond),
		meanGap:   1 / cfg.Rate,
		regMult2:  1,
		lastValid: -1,
	}
	s.startNs = s.start.UnixNano()
	s.lastTS = s.start
	s.anomPerSec = cfg.AnomalyRate / 3600
	// A fault that holds a tick back (out_of_order, late) still emits a
	// normal tick in its own slot and later takes a slot of its own, so
	// with per-kind decision probability q a kind makes up q/(1+2q) of the
	// records. q = f/(5−2f) makes that exactly f/5.
	s.faultEach = cfg.Faults / (5 - 2*cfg.Faults)
	s.faultP = 5 * s.faultEach
	s.switchAt = math.Inf(1)
	if !cfg.CalmOnly {
		s.switchAt = s.rng.ExpFloat64() * simCalmMean
	}
	s.loc = market.NewYork
	s.dayStart, s.dayEnd = 1, 0 // force the first profile lookup
	s.profUntil = math.MinInt64

	s.syms = make([]simSym, len(cfg.Symbols))
	seen := make(map[string]bool, len(cfg.Symbols))
	perSymGap := float64(len(cfg.Symbols)) / cfg.Rate
	for i, sym := range cfg.Symbols {
		if err := simCheckSymbol(sym); err != nil {
			return nil, err
		}
		if seen[sym.Name] {
			return nil, fmt.Errorf("simulator: symbol %q listed twice", sym.Name)
		}
		seen[sym.Name] = true
		y := &s.syms[i]
		y.name = sym.Name
		y.lower = simLowerASCII(sym.Name)
		y.key = []byte(sym.Name)
		y.vol = sym.Vol
		// Cap beta so the market explains at most 90% of the variance:
		// otherwise σᵢ² = σ² − β²σₘ² would go negative.
		maxBeta := math.Sqrt(0.9) * sym.Vol / simMarketVol
		y.beta = math.Max(-maxBeta, math.Min(maxBeta, sym.Beta))
		y.idio = math.Sqrt(math.Max(0, sym.Vol*sym.Vol-y.beta*y.beta*simMarketVol*simMarketVol))
		y.halfVar = 0.5 * sym.Vol * sym.Vol
		y.spreadBps = sym.Spread
		y.typSize = simTypicalSize(sym.Price)
		y.typLots = float64(y.typSize) / 100
		y.tickSigma = sym.Vol * math.Sqrt(perSymGap*simInvYear)
		price := sym.Price
		if r, ok := cfg.Resume[sym.Name]; ok {
			if r.Seq < 0 {
				return nil, fmt.Errorf("simulator: resume %s: seq %d must be >= 0", sym.Name, r.Seq)
			}
			if !(r.Price >= 0) || math.IsInf(r.Price, 0) {
				return nil, fmt.Errorf("simulator: resume %s: price %v must be a positive number (or 0 to keep the default)", sym.Name, r.Price)
			}
			y.seq, y.emittedMax = r.Seq, r.Seq
			if r.Price > 0 {
				price = r.Price
			}
		}
		y.logP = math.Log(price)
		if s.anomPerSec > 0 {
			y.nextAnom = s.rng.ExpFloat64() / s.anomPerSec
		}
	}
	return s, nil
}

func simCheckSymbol(sym Symbol) error {
	switch {
	case !simValidName(sym.Name):
		return fmt.Errorf("simulator: symbol %q: %s", sym.Name, simSymbolRule)
	case !(sym.Price > 0 && sym.Price <= 1e7):
		return fmt.Errorf("simulator: symbol %s: price %v must be in (0, 1e7]", sym.Name, sym.Price)
	case !(sym.Vol >= 0 && sym.Vol <= 5):
		return fmt.Errorf("simulator: symbol %s: volatility %v must be in [0, 5] (annualised, 0.3 = 30%%)", sym.Name, sym.Vol)
	case !(sym.Beta >= -5 && sym.Beta <= 5):
		return fmt.Errorf("simulator: symbol %s: beta %v must be in [-5, 5]", sym.Name, sym.Beta)
	case !(sym.Spread > 0 && sym.Spread <= 1000):
		return fmt.Errorf("simulator: symbol %s: spread %v must be in (0, 1000] basis points", sym.Name, sym.Spread)
	}
	return nil
}

// simTypicalSize is a symbol's typical trade: about $15k, in round lots, at
// least one lot. Cheap stocks trade more shares.
func simTypicalSize(price float64) int64 {
	return 100 * max(1, int64(math.Round(15000/price/100)))
}

func simLowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Stats returns counts of what has been emitted so far.
func (s *Simulator) Stats() SimStats { return s.stats }

// Next returns the next record. The returned Value is only valid until the
// next call. It returns ok=false once Count records have been emitted, and
// an error only when writing the truth file fails (after which every call
// fails).
func (s *Simulator) Next() (Record, bool, error) {
	if s.err != nil {
		return Record{}, false, s.err
	}
	if s.cfg.Count > 0 && s.stats.Records >= s.cfg.Count {
		return Record{}, false, nil
	}
	held := len(s.ooo) + len(s.late) - s.lateHead
	if s.cfg.Count > 0 && s.cfg.Count-s.stats.Records <= int64(held) {
		// Only held ticks fit in what is left: flush them, so a bounded
		// run leaves no permanent seq gap.
		return s.flushOldest()
	}
	forceNormal := false
	for {
		if !s.haveAhead {
			s.generate(&s.ahead)
			s.haveAhead = true
		}
		for i := range s.ooo {
			h := &s.ooo[i]
			// Release after k later ticks of its symbol, or before emitting
			// the next tick would put it more than 500 ms behind.
			if s.syms[h.t.sym].emittedMax >= h.releaseSeq || s.ahead.offNs-h.t.offNs > simOOOWindowNs {
				t := h.t
				s.ooo = append(s.ooo[:i], s.ooo[i+1:]...)
				return s.emitValid(&t, true)
			}
		}
		if s.lateHead < len(s.late) && s.emitMaxNs >= s.late[s.lateHead].dueNs {
			t := s.late[s.lateHead].t
			s.popLate()
			return s.emitValid(&t, true)
		}
		if !forceNormal && s.faultP > 0 {
			if u := s.rng.Float64(); u < s.faultP {
				switch int(u / s.faultEach) {
				case 0:
					if s.ringN > 0 {
						return s.emitDuplicate()
					}
				case 1:
					if s.canHold(0) {
						k := 1 + s.rng.Int64N(3)
						s.ooo = append(s.ooo, simHeldOOO{t: s.ahead, releaseSeq: s.ahead.seq + k})
						s.haveAhead, forceNormal = false, true
						continue
					}
				case 2:
					// Only hold a tick back for lateness if the run goes on
					// long enough to make it late; otherwise the final flush
					// would emit it merely out of order.
					if s.canHold(int64(simLateMax*s.cfg.Rate*1.05) + 1) {
						delay := simLateMin + (simLateMax-simLateMin)*s.rng.Float64()
						s.late = append(s.late, simHeldLate{t: s.ahead, dueNs: s.ahead.offNs + int64(delay*1e9)})
						s.haveAhead, forceNormal = false, true
						continue
					}
				case 3:
					if s.lastValid >= 0 {
						return s.emitMalformed()
					}
				default:
					if s.lastValid >= 0 {
						return s.emitInvalid()
					}
				}
			}
		}
		s.haveAhead = false
		return s.emitValid(&s.ahead, false)
	}
}

// canHold reports whether a tick may be held back now and still be emitted
// before Count runs out, given that extra records are wanted after it.
func (s *Simulator) canHold(extra int64) bool {
	if s.cfg.Count == 0 {
		return true
	}
	held := int64(len(s.ooo) + len(s.late) - s.lateHead)
	return s.cfg.Count-s.stats.Records >= held+2+extra
}

func (s *Simulator) popLate() {
	s.late[s.lateHead] = simHeldLate{}
	s.lateHead++
	if s.lateHead == len(s.late) {
		s.late, s.lateHead = s.late[:0], 0
	} else if s.lateHead >= 256 && s.lateHead*2 >= len(s.late) {
		n := copy(s.late, s.late[s.lateHead:])
		s.late, s.lateHead = s.late[:n], 0
	}
}

// flushOldest emits the held tick with the earliest event time.
func (s *Simulator) flushOldest() (Record, bool, error) {
	best := -1
	for i := range s.ooo {
		if best < 0 || s.ooo[i].t.offNs < s.ooo[best].t.offNs {
			best = i
		}
	}
	if s.lateHead < len(s.late) && (best < 0 || s.late[s.lateHead].t.offNs < s.ooo[best].t.offNs) {
		t := s.late[s.lateHead].t
		s.popLate()
		return s.emitValid(&t, true)
	}
	t := s.ooo[best].t
	s.ooo = append(s.ooo[:best], s.ooo[best+1:]...)
	return s.emitValid(&t, true)
}

// advance moves the simulated clock by dt seconds, switching regimes and
// moving the market factor.
func (s *Simulator) advance(dt float64) {
	t0, t1 := s.now, s.now+dt
	dv := 0.0
	for t1 >= s.switchAt {
		dv += s.regMult2 * (s.switchAt - t0)
		t0 = s.switchAt
		s.volatile = !s.volatile
		mean := simCalmMean
		s.regMult2 = 1
		if s.volatile {
			mean = simVolatileMean
			s.regMult2 = simVolatileVol * simVolatileVol
		}
		s.switchAt += s.rng.ExpFloat64() * mean
	}
	dv += s.regMult2 * (t1 - t0)
	s.now = t1
	s.vclock += dv
	s.mkt += simMarketVol * math.Sqrt(dv*simInvYear) * s.rng.NormFloat64()
}

// generate makes the next valid tick in generation order.
func (s *Simulator) generate(t *simTick) {
	s.advance(s.rng.ExpFloat64() * s.meanGap)
	i := s.rng.IntN(len(s.syms))
	y := &s.syms[i]
	dv := s.vclock - y.vlast
	dm := s.mkt - y.mlast
	y.vlast, y.mlast = s.vclock, s.mkt
	ret := y.beta*dm + y.idio*math.Sqrt(dv*simInvYear)*s.rng.NormFloat64() - y.halfVar*dv*simInvYear

	y.seq++
	// Saturate rather than overflow: 292 simulated years is reachable at a
	// tiny rate run unpaced.
	off := int64(math.MaxInt64 / 2)
	if s.now < float64(off)/1e9 {
		off = int64(s.now * 1e9)
	}
	off -= off % 1000
	*t = simTick{offNs: off, seq: y.seq, sym: int32(i)}

	// Anomalies: one at a time per symbol, separated by a cool-down.
	if y.runLeft == 0 {
		if y.cooldown > 0 {
			y.cooldown--
		} else if s.anomPerSec > 0 && s.now >= y.nextAnom {
			ret += s.startAnomaly(y, t, dv)
		}
	}

	y.logP += ret
	// Keep the price finite and above a cent even for absurd configs.
	y.logP = math.Max(math.Log(0.01), math.Min(math.Log(1e9), y.logP))
	t.priceC = max(1, int64(math.Exp(y.logP)*100+0.5))

	typSpread := max(1, int64(math.Round(float64(t.priceC)*y.spreadBps/1e4)))
	var spreadC int64
	if y.runLeft > 0 && y.runKind == simAnomBlowout {
		f := min(30, max(10, y.runFactor*(0.9+0.2*s.rng.Float64())))
		spreadC = int64(math.Round(float64(typSpread) * f))
	} else {
		f := 0.5 + s.rng.Float64()
		if s.volatile {
			f *= simVolatileSpread
		}
		spreadC = max(1, int64(math.Round(float64(t.priceC)*y.spreadBps/1e4*f)))
	}
	// Most prints hit the bid or the ask; some trade inside.
	var offC int64
	switch u := s.rng.Float64(); {
	case u < 0.45:
		offC = 0
	case u < 0.9:
		offC = spreadC
	default:
		offC = s.rng.Int64N(spreadC + 1)
	}
	offC = min(offC, t.priceC-1) // keep the bid at a cent or more
	t.bidC = t.priceC - offC
	t.askC = t.bidC + spreadC

	if y.runLeft > 0 && y.runKind == simAnomBurst {
		f := min(30, max(10, y.runFactor*(0.85+0.3*s.rng.Float64())))
		t.size = int64(math.Round(float64(y.typSize)*f/100)) * 100
	} else {
		t.size = s.normalSize(y, off)
	}

	if y.runLeft > 0 {
		y.runLeft--
		if y.runLeft == 0 {
			s.endAnomaly(y)
		}
	}
}

// startAnomaly begins an anomaly at tick t and returns the log jump to add.
func (s *Simulator) startAnomaly(y *simSym, t *simTick, dv float64) float64 {
	kind := simAnomJump + uint8(s.rng.IntN(3))
	t.anom = kind
	switch kind {
	case simAnomJump:
		// A jump a trader would call one: 1–4 %, and never less than 8 σ
		// of either this gap's diffusion or a typical gap's, so no ordinary
		// move can pass for it.
		sigma := math.Max(y.vol*math.Sqrt(dv*simInvYear), y.tickSigma*math.Sqrt(s.regMult2))
		m := math.Max(0.01+0.03*s.rng.Float64(), 8*sigma*(1+0.25*s.rng.Float64()))
		m = math.Min(m, 0.5)
		t.anomN = 1
		t.anomMag = m
		t.anomDown = s.rng.IntN(2) == 0
		if sigma > 0 {
			t.anomAux = m / sigma
		}
		s.endAnomaly(y)
		if t.anomDown {
			return math.Log1p(-m)
		}
		return math.Log1p(m)
	case simAnomBurst:
		y.runKind, y.runLeft = kind, int32(5+s.rng.IntN(8))
		y.runFactor = 12 + 14*s.rng.Float64()
		t.anomAux = float64(y.typSize)
	default:
		y.runKind, y.runLeft = kind, int32(5+s.rng.IntN(11))
		y.runFactor = 12 + 14*s.rng.Float64()
		t.anomAux = y.spreadBps
	}
	t.anomN = y.runLeft
	t.anomMag = y.runFactor
	return 0
}

func (s *Simulator) endAnomaly(y *simSym) {
	y.runKind, y.runLeft = simAnomNone, 0
	y.cooldown = simCooldown
	y.nextAnom = s.now + s.rng.ExpFloat64()/s.anomPerSec
}

// normalSize draws an ordinary trade size: mostly round lots, around the
// typical size scaled by the intraday profile, capped at 4× that so that
// only labelled bursts reach 10× typical; some odd lots.
func (s *Simulator) normalSize(y *simSym, off int64) int64 {
	if s.rng.Float64() < simOddLotP {
		return 1 + s.rng.Int64N(99)
	}
	mean := y.typLots * s.profile(s.startNs+off)
	lots := 1 + int64(s.rng.ExpFloat64()*mean*0.8)
	return 100 * min(lots, max(1, int64(4*mean)))
}

// profile is the intraday activity multiplier at Unix time ns: a U shape
// over the New York session, 2.0 at the open, 0.8 at midday and 1.6 at
// the close, because volume clusters around the auctions; 0.4 outside the
// session and at weekends. It is computed once per minute.
func (s *Simulator) profile(ns int64) float64 {
	if ns >= s.profFrom && ns < s.profUntil {
		return s.profMult
	}
	if ns < s.dayStart || ns >= s.dayEnd {
		lt := time.Unix(0, ns).In(s.loc)
		y, m, d := lt.Date()
		s.dayStart = time.Date(y, m, d, 0, 0, 0, 0, s.loc).UnixNano()
		s.dayEnd = time.Date(y, m, d+1, 0, 0, 0, 0, s.loc).UnixNano()
		s.openNs = time.Date(y, m, d, 9, 30, 0, 0, s.loc).UnixNano()
		s.closeNs = time.Date(y, m, d, 16, 0, 0, 0, s.loc).UnixNano()
		wd := lt.Weekday()
		s.weekend = wd == time.Saturday || wd == time.Sunday
	}
	const minute = int64(time.Minute)
	from := s.dayStart + (ns-s.dayStart)/minute*minute
	s.profFrom, s.profUntil = from, min(from+minute, s.dayEnd)
	if s.weekend || ns < s.openNs || ns >= s.closeNs {
		s.profMult = 0.4
	} else {
		sinceOpen := float64(from-s.openNs) / float64(minute)
		toClose := float64(s.closeNs-from) / float64(minute)
		s.profMult = 0.8 + 1.2*math.Exp(-sinceOpen/20) + 0.8*math.Exp(-toClose/20)
	}
	return s.profMult
}

// tsOf turns an offset from Start into the event time.
func (s *Simulator) tsOf(offNs int64) time.Time { return s.start.Add(time.Duration(offNs)) }

// appendTick encodes t with the given symbol spelling.
func (s *Simulator) appendTick(dst []byte, t *simTick, symbol string) []byte {
	mt := &s.scratchTick
	*mt = market.Tick{
		Symbol: symbol,
		TS:     s.tsOf(t.offNs),
		Seq:    t.seq,
		Price:  float64(t.priceC) / 100,
		Size:   t.size,
		Bid:    float64(t.bidC) / 100,
		Ask:    float64(t.askC) / 100,
	}
	return mt.AppendJSON(dst)
}

// emitValid emits a valid tick; held says it was held back, so it is
// classified by how it arrives relative to what was emitted before it.
func (s *Simulator) emitValid(t *simTick, held bool) (Record, bool, error) {
	y := &s.syms[t.sym]
	if t.anom != simAnomNone {
		if err := s.writeTruth(t); err != nil {
			return Record{}, false, err
		}
		s.stats.Anomalies++
	}
	if held {
		if s.emitMaxNs-t.offNs >= simLateNs {
			s.stats.Late++
		} else if t.seq < y.emittedMax {
			s.stats.OutOfOrder++
		}
	}
	s.stats.Valid++
	s.stats.Records++
	if t.seq > y.emittedMax || !y.hasLast {
		y.emittedMax, y.last, y.hasLast = max(y.emittedMax, t.seq), *t, true
	}
	s.emitMaxNs = max(s.emitMaxNs, t.offNs)
	s.lastValid = t.sym
	s.ring[s.ringNext] = *t
	s.ring[s.ringNext].anom = simAnomNone
	s.ringNext = (s.ringNext + 1) % simDupRing
	s.ringN = min(s.ringN+1, simDupRing)

	s.out = s.appendTick(s.out[:0], t, y.name)
	s.lastTS = s.tsOf(t.offNs)
	return Record{Key: y.key, Value: s.out, TS: s.lastTS}, true, nil
}

func (s *Simulator) emitDuplicate() (Record, bool, error) {
	t := &s.ring[(s.ringNext-1-s.rng.IntN(s.ringN)+2*simDupRing)%simDupRing]
	y := &s.syms[t.sym]
	s.stats.Duplicates++
	if s.emitMaxNs-t.offNs >= simLateNs {
		s.stats.LateDuplicates++
	}
	s.stats.Records++
	s.out = s.appendTick(s.out[:0], t, y.name)
	s.lastTS = s.tsOf(t.offNs)
	return Record{Key: y.key, Value: s.out, TS: s.lastTS}, true, nil
}

// faultBase picks the symbol a malformed or invalid record is about: a
// random one that has emitted a valid tick, else the last one that did.
func (s *Simulator) faultBase() *simSym {
	y := &s.syms[s.rng.IntN(len(s.syms))]
	if !y.hasLast {
		y = &s.syms[s.lastValid]
	}
	return y
}

func (s *Simulator) emitMalformed() (Record, bool, error) {
	y := s.faultBase()
	s.out = s.appendMalformed(s.out[:0], y)
	s.stats.Malformed++
	s.stats.Records++
	// A malformed record carries the time of the record before it.
	return Record{Key: y.key, Value: s.out, TS: s.lastTS}, true, nil
}

func (s *Simulator) emitInvalid() (Record, bool, error) {
	y := s.faultBase()
	s.out = s.appendInvalid(s.out[:0], y)
	s.stats.Invalid++
	s.stats.Records++
	s.lastTS = s.tsOf(y.last.offNs)
	return Record{Key: y.key, Value: s.out, TS: s.lastTS}, true, nil
}

// writeTruth writes the truth line for the anomaly starting at t.
func (s *Simulator) writeTruth(t *simTick) error {
	if s.cfg.Truth == nil {
		return nil
	}
	y := &s.syms[t.sym]
	b := s.truthBuf[:0]
	b = append(b, `{"symbol":`...)
	b = strconv.AppendQuote(b, y.name)
	b = append(b, `,"kind":"`...)
	switch t.anom {
	case simAnomJump:
		b = append(b, AnomalyPriceJump...)
	case simAnomBurst:
		b = append(b, AnomalyVolumeBurst...)
	default:
		b = append(b, AnomalySpreadBlowout...)
	}
	b = append(b, `","ts":"`...)
	b = market.AppendTime(b, s.tsOf(t.offNs))
	b = append(b, `","seq":`...)
	b = strconv.AppendInt(b, t.seq, 10)
	b = append(b, `,"magnitude":`...)
	if t.anom == simAnomJump {
		b = strconv.AppendFloat(b, math.Round(t.anomMag*1e6)/1e6, 'f', -1, 64)
	} else {
		b = strconv.AppendFloat(b, math.Round(t.anomMag*100)/100, 'f', -1, 64)
	}
	b = append(b, `,"detail":"`...)
	switch t.anom {
	case simAnomJump:
		if t.anomDown {
			b = append(b, "down "...)
		} else {
			b = append(b, "up "...)
		}
		b = strconv.AppendFloat(b, t.anomMag*100, 'f', 2, 64)
		b = append(b, "%, "...)
		b = strconv.AppendFloat(b, t.anomAux, 'f', 1, 64)
		b = append(b, " tick-sigma"...)
	case simAnomBurst:
		b = strconv.AppendInt(b, int64(t.anomN), 10)
		b = append(b, " ticks, sizes 10-30x typical "...)
		b = strconv.AppendInt(b, int64(t.anomAux), 10)
		b = append(b, " shares"...)
	default:
		b = strconv.AppendInt(b, int64(t.anomN), 10)
		b = append(b, " ticks, spreads 10-30x typical "...)
		b = strconv.AppendFloat(b, t.anomAux, 'f', -1, 64)
		b = append(b, " bps (at least 1 cent)"...)
	}
	b = append(b, "\"}\n"...)
	s.truthBuf = b
	if _, err := s.cfg.Truth.Write(b); err != nil {
		s.err = fmt.Errorf("simulator: writing truth: %w", err)
		return s.err
	}
	return nil
}
