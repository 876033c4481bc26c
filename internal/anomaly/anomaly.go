// Package anomaly finds unusual events in one symbol's tick stream: price
// jumps, volume bursts, spread blow-outs, Bollinger band breaks, deviations
// from the session VWAP, gaps in the seq numbers and silence.
//
// It is pure: it reads no clock (only the ticks' event time and the
// watermark it is handed), does no I/O and starts no goroutines. The same
// ticks and calls therefore always give the same anomalies, and a
// detector's state can be checkpointed and restored mid-stream with the same
// result (see Detector.AppendBinary).
package anomaly

import (
	"math"
	"time"

	"github.com/stockpipe/stockpipe/internal/market"
)

// Kind names what a detector found. The values are stable: they are stored
// and shown to people.
type Kind string

// The kinds of anomaly. The first three are the ones the simulator labels.
const (
	// KindPriceJump is a tick-to-tick price move far beyond the symbol's
	// recent volatility.
	KindPriceJump Kind = "price_jump"
	// KindVolumeBurst is a run of trades far heavier than usual.
	KindVolumeBurst Kind = "volume_burst"
	// KindSpreadBlowout is a bid/ask spread many times its usual width.
	KindSpreadBlowout Kind = "spread_blowout"
	// KindBandBreak is a trade clear of the forming candle's Bollinger band.
	KindBandBreak Kind = "band_break"
	// KindVWAPDeviation is a trade far from the session VWAP.
	KindVWAPDeviation Kind = "vwap_deviation"
	// KindSeqGap is a run of seqs that never arrived.
	KindSeqGap Kind = "seq_gap"
	// KindStale is a symbol that stopped ticking.
	KindStale Kind = "stale"
)

// Severity grades an anomaly for the reader.
type Severity string

// The severities, from least to most urgent.
const (
	SeverityLow    Severity = "low"
	SeverityMedium Severity = "medium"
	SeverityHigh   Severity = "high"
)

// Valid reports whether s is one of the three severities.
func (s Severity) Valid() bool {
	return s == SeverityLow || s == SeverityMedium || s == SeverityHigh
}

// Anomaly is one alert. Value and Threshold are finite and in the same unit,
// which depends on Kind:
//
//   - price_jump: the return's z-score, signed (negative for a fall); the
//     threshold carries the same sign.
//   - volume_burst: the latest Config.VolumeSpan trades' volume as a multiple
//     of as many typical trades (the interquartile mean of recent sizes).
//   - spread_blowout: the relative spread as a multiple of the typical one
//     (the interquartile mean of recent relative spreads).
//   - band_break: the price's position in band half-widths from the middle
//     of the band, signed, so ±1 is on a band.
//   - vwap_deviation: price/VWAP − 1 in basis points, signed.
//   - seq_gap: how many seqs are missing; the threshold is 1.
//   - stale: how long the symbol had been silent, in seconds, as the caller
//     measured it (see Stale).
type Anomaly struct {
	Symbol string // as on the tick, or as passed to Gaps or Stale
	// TS is the event time of the tick that triggered the anomaly. For
	// seq_gap it is that of the tick right after the gap, or the
	// microsecond after the symbol's previous seq_gap if it would repeat or
	// precede that one, which only ticks whose times run against their
	// seqs can cause; for stale it is the moment
	// the symbol became stale, its last tick's time plus Config.StaleAfter.
	// No two anomalies of a detector share a (TS, Kind), at microsecond
	// precision.
	TS        time.Time
	Kind      Kind
	Severity  Severity // how each kind is graded is set out in Config
	Value     float64  // what was measured, in the unit listed above
	Threshold float64  // the threshold Value crossed, in the same unit
	// Detail is one sentence for a person, e.g. "AAPL rose 3.20% (270 →
	// 278.64) in 14ms, 160.0σ of its recent tick-to-tick volatility".
	Detail string
}

// Context is what the caller computes from the stream around a tick and
// lends to the band_break and vwap_deviation checks.
type Context struct {
	// BBUpper and BBLower are the Bollinger band of the forming 1-minute
	// candle; HasBands says they are known yet.
	BBUpper, BBLower float64
	HasBands         bool
	// SessionVWAP is the volume-weighted average price of the session so
	// far; HasVWAP says it is known.
	SessionVWAP float64
	HasVWAP     bool
}

// Indices of the kinds driven by Observe, whose cooldowns a Detector tracks.
const (
	epJump = iota
	epVolume
	epSpread
	epBand
	epVWAP
	numEpisodes
)

// episode implements a kind's cooldown: an alert fires only when the
// condition has been absent for the cooldown, so an event that keeps the
// condition true for many ticks is one alert however long it lasts.
type episode struct {
	fired bool
	hit   int64 // latest event time at which the condition held, Unix ns
	fire  int64 // event time of the last alert, Unix ns
}

// trigger records that the condition holds at ns and reports whether to
// alert. An alert must also fall in a later microsecond than the previous
// one, which keeps (TS, Kind) unique at the store's precision even with a
// zero cooldown or a tick whose time runs backwards.
func (e *episode) trigger(ns int64, cooldown time.Duration) bool {
	fire := !e.fired || (micros(ns) > micros(e.fire) && ns-e.hit >= int64(cooldown))
	if !e.fired || ns > e.hit {
		e.hit = ns
	}
	if fire {
		e.fired, e.fire = true, ns
	}
	return fire
}

// micros returns the whole microseconds in ns, rounding down, the precision
// at which the store tells timestamps apart.
func micros(ns int64) int64 {
	us := ns / 1000
	if ns%1000 < 0 {
		us--
	}
	return us
}

// Detector watches one symbol. Feed it every accepted tick of the symbol with
// Observe, tell it where the symbol's watermark stands with Gaps and how
// long it has been silent with Stale. It allocates
// nothing per tick unless it reports an anomaly (the Detail string).
//
// The zero Detector uses DefaultConfig. A Detector is not safe for
// concurrent use.
type Detector struct {
	cfg  Config
	init bool

	seen       bool  // a tick has been observed
	maxSeq     int64 // highest seq observed
	lastNs     int64 // latest event time observed, Unix ns
	staleDone  bool  // stale reported for the current silence
	staleFired bool  // any stale reported
	staleNs    int64 // TS of the last stale reported, Unix ns

	// price_jump: the previous price in seq order and adjusted EWMAs (see
	// ewma) of the squared log return and of the time between ticks.
	prevPrice  float64
	prevLog    float64 // math.Log(prevPrice), kept to take one logarithm a tick
	prevNs     int64
	nRet       int64
	varW, varV float64
	dtW, dtV   float64

	vol window // trade sizes
	spr window // relative spreads

	ep [numEpisodes]episode

	gaps      []gap // pending, in seq order
	gapFired  bool
	lastGapNs int64 // TS of the last seq_gap reported, Unix ns
}

// NewDetector returns a detector with configuration cfg. A field that
// Validate would reject is replaced by its DefaultConfig value, so a bad
// configuration degrades to a usable one rather than a crash; call Validate
// first to hear about it.
func NewDetector(cfg Config) *Detector {
	d := new(Detector)
	d.reset(cfg)
	return d
}

// Config returns the configuration the detector runs with.
func (d *Detector) Config() Config {
	d.ready()
	return d.cfg
}

func (d *Detector) reset(cfg Config) {
	cfg, _ = cfg.check(true)
	*d = Detector{
		cfg:  cfg,
		init: true,
		vol:  newWindow(cfg.VolumeWindow),
		spr:  newWindow(cfg.SpreadWindow),
		gaps: make([]gap, 0, cfg.GapMaxPending),
	}
}

// ready gives a zero Detector its default configuration.
func (d *Detector) ready() {
	if !d.init {
		d.reset(DefaultConfig())
	}
}

// Observe feeds one accepted tick of the detector's symbol (validated,
// deduplicated, in roughly event-time order) with the context the stream
// computed for it, and appends any anomalies it raises to dst.
//
// Seqs are taken to increase per symbol for the life of the detector, as
// market.Tick promises; a source that starts its seqs again needs a new
// Detector. A tick whose seq is below the highest seen so far arrived out of
// order: it only fills a pending seq gap. Its price, size and quote are older
// than what the detector has already judged, and judging them now would
// compare the past with the present. A tick that jumps ahead in seq opens a
// gap, which Gaps reports if it stays unfilled; Observe itself reports one
// only when more than Config.GapMaxPending are pending (see there).
func (d *Detector) Observe(dst []Anomaly, t *market.Tick, c Context) []Anomaly {
	d.ready()
	ns := t.TS.UnixNano()
	switch {
	case !d.seen:
		d.seen, d.maxSeq, d.lastNs = true, t.Seq, ns
	case t.Seq < d.maxSeq:
		d.fill(t.Seq)
		if ns > d.lastNs {
			d.lastNs, d.staleDone = ns, false
		}
		return dst
	case t.Seq == d.maxSeq:
		// The newest tick again, which deduplication upstream should
		// have caught; judging it twice would count its size twice.
		return dst
	default:
		if t.Seq-1 > d.maxSeq {
			dst = d.open(dst, t.Symbol, d.maxSeq+1, t.Seq-1, ns)
		}
		d.maxSeq = t.Seq
	}
	if ns > d.lastNs {
		d.lastNs, d.staleDone = ns, false
	}
	priceOK := t.Price > 0 && !math.IsInf(t.Price, 0)
	if priceOK {
		dst = d.observePrice(dst, t, ns)
	}
	if t.Size > 0 {
		dst = d.observeVolume(dst, t, ns)
	}
	// A tick without a quote (a trade-only feed's) says nothing about the
	// spread: it neither joins the typical spread nor starts or ends a
	// blow-out. Nor does a quote the rules would have rejected (a side at
	// 0, crossed, infinite).
	if t.HasQuote() && t.Bid > 0 && t.Ask >= t.Bid && !math.IsInf(t.Ask, 0) {
		dst = d.observeSpread(dst, t, ns)
	}
	if priceOK && c.HasBands {
		dst = d.observeBand(dst, t, ns, c.BBLower, c.BBUpper)
	}
	if priceOK && c.HasVWAP && c.SessionVWAP > 0 && !math.IsInf(c.SessionVWAP, 0) {
		dst = d.observeVWAP(dst, t, ns, c.SessionVWAP)
	}
	return dst
}

// ewma folds x into an exponentially weighted average with decay lambda, in
// the bias-free form that weights the first values by what has actually been
// seen: with S = Σλ^(n−i)·xᵢ and W = Σλ^(n−i), it keeps W and v = S/W. The
// first value is thus the average itself rather than a fraction of it, which
// an estimate started from 0 would give.
func ewma(w, v, x, lambda float64) (float64, float64) {
	w = lambda*w + 1
	return w, v + (x-v)/w
}

func (d *Detector) observePrice(dst []Anomaly, t *market.Tick, ns int64) []Anomaly {
	cfg := &d.cfg
	prev, prevLog, prevNs := d.prevPrice, d.prevLog, d.prevNs
	logP := math.Log(t.Price)
	d.prevPrice, d.prevLog, d.prevNs = t.Price, logP, ns
	if prev == 0 {
		return dst
	}
	// A difference of logs cannot overflow the way a ratio of prices can.
	r := logP - prevLog
	dt := math.Max(0, float64(ns)-float64(prevNs))

	// The expected variance grows with time when the gap is longer than
	// usual (diffusion), but never shrinks below the per-trade estimate
	// when it is shorter: rounding and bounce do not scale with time.
	floor := cfg.JumpSigmaFloorBps * 1e-4
	floor2 := floor * floor
	v := d.varV
	if v > 0 && d.dtV > 0 && dt > d.dtV {
		v *= dt / d.dtV
	}
	if !(v >= floor2) { // also catches NaN
		v = floor2
	}
	sigma := math.Sqrt(v)
	z := r / sigma
	d.nRet++
	alert := d.nRet > int64(cfg.JumpWarmup) && math.Abs(z) >= cfg.JumpZ &&
		math.Abs(r) >= cfg.JumpMinMoveBps*1e-4 && !math.IsInf(z, 0)
	d.dtW, d.dtV = ewma(d.dtW, d.dtV, dt, cfg.JumpLambda)
	if !alert {
		clip := cfg.JumpClipZ * math.Sqrt(math.Max(d.varV, floor2))
		rc := math.Min(math.Abs(r), clip)
		d.varW, d.varV = ewma(d.varW, d.varV, rc*rc, cfg.JumpLambda)
		return dst
	}
	if !d.ep[epJump].trigger(ns, cfg.JumpCooldown) {
		return dst
	}
	move := math.Expm1(r)
	sev := SeverityLow
	switch m := math.Abs(move) * 1e4; {
	case m >= cfg.JumpHighBps:
		sev = SeverityHigh
	case m >= cfg.JumpMediumBps:
		sev = SeverityMedium
	}
	return append(dst, Anomaly{
		Symbol:    t.Symbol,
		TS:        t.TS,
		Kind:      KindPriceJump,
		Severity:  sev,
		Value:     z,
		Threshold: math.Copysign(cfg.JumpZ, z),
		Detail:    jumpDetail(t.Symbol, prev, t.Price, move, time.Duration(dt), z),
	})
}

func (d *Detector) observeVolume(dst []Anomaly, t *market.Tick, ns int64) []Anomaly {
	cfg := &d.cfg
	w := &d.vol
	x := float64(t.Size)
	if w.n >= cfg.VolumeWarmup {
		k := min(cfg.VolumeSpan, w.n+1)
		sum := x
		for i := range k - 1 {
			sum += w.recent(i)
		}
		// The typical trade is at least the lowest value of the middle
		// half, so most ticks are cleared without averaging it. The
		// margin covers the rounding of the average, keeping the answer
		// exactly what the full computation would give.
		need := cfg.VolumeRatio * float64(k)
		if sum >= need*w.lowerQuartile()*(1-1e-9) {
			typ := w.typical()
			ratio := sum / (float64(k) * typ)
			if typ > 0 && ratio >= cfg.VolumeRatio && !math.IsInf(ratio, 0) &&
				d.ep[epVolume].trigger(ns, cfg.VolumeCooldown) {
				dst = append(dst, Anomaly{
					Symbol:    t.Symbol,
					TS:        t.TS,
					Kind:      KindVolumeBurst,
					Severity:  grade(ratio, cfg.VolumeMediumRatio, cfg.VolumeHighRatio),
					Value:     ratio,
					Threshold: cfg.VolumeRatio,
					Detail:    volumeDetail(t.Symbol, sum, k, typ, ratio),
				})
			}
		}
	}
	w.push(x)
	return dst
}

func (d *Detector) observeSpread(dst []Anomaly, t *market.Tick, ns int64) []Anomaly {
	cfg := &d.cfg
	w := &d.spr
	mid := t.Bid/2 + t.Ask/2
	s := (t.Ask - t.Bid) / mid
	floor := cfg.SpreadFloorBps * 1e-4
	// As for volume, the lower quartile bounds the typical spread from
	// below and clears most ticks cheaply.
	if w.n >= cfg.SpreadWarmup && s >= cfg.SpreadRatio*math.Max(w.lowerQuartile(), floor)*(1-1e-9) {
		typ := w.typical()
		ratio := s / math.Max(typ, floor)
		if ratio >= cfg.SpreadRatio && !math.IsInf(ratio, 0) &&
			d.ep[epSpread].trigger(ns, cfg.SpreadCooldown) {
			dst = append(dst, Anomaly{
				Symbol:    t.Symbol,
				TS:        t.TS,
				Kind:      KindSpreadBlowout,
				Severity:  grade(ratio, cfg.SpreadMediumRatio, cfg.SpreadHighRatio),
				Value:     ratio,
				Threshold: cfg.SpreadRatio,
				Detail:    spreadDetail(t.Symbol, t.Bid, t.Ask, s, typ, ratio),
			})
		}
	}
	w.push(s)
	return dst
}

func (d *Detector) observeBand(dst []Anomaly, t *market.Tick, ns int64, lower, upper float64) []Anomaly {
	cfg := &d.cfg
	if !(upper > lower) || math.IsInf(upper, 0) || math.IsInf(lower, 0) {
		return dst
	}
	mid := lower/2 + upper/2
	half := upper/2 - lower/2
	p := t.Price
	pos := (p - mid) / half
	if !(half > 0) || math.IsInf(pos, 0) {
		return dst
	}
	edge := upper
	excess := (p - upper) / p
	if pos < 0 {
		edge, excess = lower, (lower-p)/p
	}
	if math.Abs(pos) < 1+cfg.BandMargin || excess*1e4 < cfg.BandMinBps ||
		!d.ep[epBand].trigger(ns, cfg.BandCooldown) {
		return dst
	}
	return append(dst, Anomaly{
		Symbol:    t.Symbol,
		TS:        t.TS,
		Kind:      KindBandBreak,
		Severity:  cfg.BandSeverity,
		Value:     pos,
		Threshold: math.Copysign(1+cfg.BandMargin, pos),
		Detail:    bandDetail(t.Symbol, p, lower, upper, edge, excess),
	})
}

func (d *Detector) observeVWAP(dst []Anomaly, t *market.Tick, ns int64, vwap float64) []Anomaly {
	cfg := &d.cfg
	dev := (t.Price - vwap) / vwap * 1e4
	if math.Abs(dev) < cfg.VWAPDeviationBps || math.IsInf(dev, 0) ||
		!d.ep[epVWAP].trigger(ns, cfg.VWAPCooldown) {
		return dst
	}
	return append(dst, Anomaly{
		Symbol:    t.Symbol,
		TS:        t.TS,
		Kind:      KindVWAPDeviation,
		Severity:  cfg.VWAPSeverity,
		Value:     dev,
		Threshold: math.Copysign(cfg.VWAPDeviationBps, dev),
		Detail:    vwapDetail(t.Symbol, t.Price, vwap, dev),
	})
}

// grade maps a ratio to a severity by two boundaries.
func grade(ratio, medium, high float64) Severity {
	switch {
	case ratio >= high:
		return SeverityHigh
	case ratio >= medium:
		return SeverityMedium
	}
	return SeverityLow
}

// Gaps tells the detector that the symbol's own watermark has reached
// watermark, and appends a seq_gap, once per gap, for every gap whose
// following tick is older than the watermark and whose seqs have not all
// arrived: a tick that could still fill it would now be late. The caller
// passes the symbol's own watermark, never a time other symbols decide, so
// that which gaps are reported depends on this symbol's ticks alone; it
// calls Gaps after each tick that moved that watermark.
//
// symbol labels the anomalies.
func (d *Detector) Gaps(dst []Anomaly, symbol string, watermark time.Time) []Anomaly {
	d.ready()
	if len(d.gaps) == 0 {
		return dst
	}
	wm := watermark.UnixNano()
	n := 0
	for i := range d.gaps {
		if d.gaps[i].afterNs < wm {
			dst = d.report(dst, symbol, &d.gaps[i])
			continue
		}
		d.gaps[n] = d.gaps[i]
		n++
	}
	clear(d.gaps[n:])
	d.gaps = d.gaps[:n]
	return dst
}

// Stale tells the detector that its symbol has been silent for silence, as
// the caller measures it (the analytics package: by how far the other
// symbols of the partition have moved on since this one last ticked), and
// appends a stale alert, once per silence, when silence is at least
// Config.StaleAfter. The alert's TS is the symbol's latest tick's time plus
// Config.StaleAfter, in the symbol's own event time; its Value is silence
// in seconds.
//
// symbol labels the anomaly. Stale before the first tick reports nothing,
// since there is nothing to be stale relative to.
func (d *Detector) Stale(dst []Anomaly, symbol string, silence time.Duration) []Anomaly {
	d.ready()
	if !d.seen || d.staleDone || silence < d.cfg.StaleAfter {
		return dst
	}
	d.staleDone = true
	after := int64(d.cfg.StaleAfter)
	ts := d.lastNs + after
	if ts < d.lastNs { // saturate rather than wrap at the end of time
		ts = math.MaxInt64
	}
	if d.staleFired && micros(ts) <= micros(d.staleNs) {
		return dst
	}
	d.staleFired, d.staleNs = true, ts
	return append(dst, Anomaly{
		Symbol:    symbol,
		TS:        time.Unix(0, ts).UTC(),
		Kind:      KindStale,
		Severity:  d.cfg.StaleSeverity,
		Value:     silence.Seconds(),
		Threshold: d.cfg.StaleAfter.Seconds(),
		Detail:    staleDetail(symbol, float64(silence), time.Unix(0, d.lastNs).UTC()),
	})
}
