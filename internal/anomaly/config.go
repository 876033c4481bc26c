package anomaly

import (
	"fmt"
	"math"
	"time"
)

// Bounds on the sizes a Config may ask for. They keep a detector's memory
// (and a decoded state's allocation) small whatever the configuration or the
// bytes handed to UnmarshalBinary say.
const (
	// MaxWindow bounds VolumeWindow and SpreadWindow.
	MaxWindow = 4096
	// MaxPendingGaps bounds GapMaxPending.
	MaxPendingGaps = 1024
)

// Config holds every threshold, window and cooldown of a Detector. Start
// from DefaultConfig and change what you need; Validate says whether the
// result is usable.
//
// Price-relative quantities are in basis points (1 bp = 0.01%). Cooldowns
// are event time: after an alert of a kind, the detector stays quiet for that
// kind until the condition has been absent for the whole cooldown, so an
// episode that lasts longer than the cooldown is still a single alert.
type Config struct {
	// JumpLambda is the per-return decay of the exponentially weighted
	// variance of log returns: the estimate remembers about 1/(1−λ)
	// returns. Per return rather than per second because the noise that
	// dominates between two trades (price rounding, bid/ask bounce) comes
	// per trade, not per unit of time.
	JumpLambda float64
	// JumpWarmup is how many returns the detector must have seen before a
	// price_jump may fire, so the first moves of a symbol are not judged
	// against a variance estimated from a handful of returns.
	JumpWarmup int
	// JumpZ is the |z| a return must reach: its size over the expected
	// standard deviation of a return (see JumpSigmaFloorBps).
	JumpZ float64
	// JumpMinMoveBps is the smallest |log return| that can be a jump,
	// whatever its z: on a quiet stock the volatility estimate is tiny and
	// a move of a few cents would otherwise score a huge z.
	JumpMinMoveBps float64
	// JumpSigmaFloorBps is a floor on the standard deviation a return is
	// compared with, for the same reason as JumpMinMoveBps: a stock whose
	// price sits on the same cent for minutes has an estimated volatility
	// near zero.
	JumpSigmaFloorBps float64
	// JumpClipZ winsorises the variance update: a return is clipped to
	// this many standard deviations before it enters the estimate, and a
	// return that raises an alert does not enter it at all, so one jump
	// does not inflate the estimate and hide the next one.
	JumpClipZ float64
	// JumpMediumBps and JumpHighBps grade a price_jump by the size of the
	// move, |price/previous − 1|, because that is what a reader acts on: a
	// move at least JumpHighBps is high, at least JumpMediumBps medium,
	// anything smaller low.
	JumpMediumBps, JumpHighBps float64
	// JumpCooldown is the quiet time between two price_jump alerts.
	JumpCooldown time.Duration

	// VolumeWindow is how many recent trade sizes the baseline covers. The
	// baseline, the typical trade, is their interquartile mean (the mean
	// of the middle half): robust like a median, which a burst filling
	// less than a quarter of the window cannot move, but smooth where the
	// median of round lots flips between 100 and 200 shares by chance.
	VolumeWindow int
	// VolumeSpan is how many of the latest trades are summed and compared
	// with VolumeSpan typical trades. Summing a few trades rather than
	// judging each alone separates a run of heavy prints from the odd
	// large one: when trading is busy an ordinary print can be 5× the
	// typical one, five ordinary prints in a row cannot.
	VolumeSpan int
	// VolumeWarmup is how many sizes the window must hold before a
	// volume_burst may fire.
	VolumeWarmup int
	// VolumeRatio is the multiple of VolumeSpan typical trades that the
	// latest VolumeSpan trades must reach. VolumeMediumRatio and
	// VolumeHighRatio grade the alert by the multiple at the tick it
	// fires, which for a run of heavy trades is its first few prints.
	VolumeRatio, VolumeMediumRatio, VolumeHighRatio float64
	// VolumeCooldown is the quiet time between two volume_burst alerts.
	VolumeCooldown time.Duration

	// SpreadWindow is how many recent relative spreads, (ask−bid)/mid, the
	// baseline covers; like VolumeWindow's, the baseline is their
	// interquartile mean, which a blow-out of a dozen ticks barely moves.
	SpreadWindow int
	// SpreadWarmup is how many spreads the window must hold before a
	// spread_blowout may fire.
	SpreadWarmup int
	// SpreadFloorBps is a floor on the typical spread, so a locked market
	// (bid = ask) does not make the next ordinary spread a huge multiple
	// of nothing.
	SpreadFloorBps float64
	// SpreadRatio is the multiple of the typical spread that is a
	// blow-out. SpreadMediumRatio and SpreadHighRatio grade the alert.
	SpreadRatio, SpreadMediumRatio, SpreadHighRatio float64
	// SpreadCooldown is the quiet time between two spread_blowout alerts.
	SpreadCooldown time.Duration

	// BandMargin is how far beyond a Bollinger band the price must be, as
	// a fraction of the band's half-width: 0.25 with 2σ bands means 2.5σ
	// from the middle. Touching a band is ordinary; clearing it is news.
	BandMargin float64
	// BandMinBps is the least distance beyond the band, in basis points of
	// the price, so a nearly flat minute, whose band is a cent wide, does
	// not turn every tick into a break.
	BandMinBps float64
	// BandCooldown is the quiet time between two band_break alerts.
	BandCooldown time.Duration
	// BandSeverity is the severity of every band_break: informational by
	// default, since trading outside a band is a fact, not a fault.
	BandSeverity Severity

	// VWAPDeviationBps is how far from the session VWAP the price must be.
	VWAPDeviationBps float64
	// VWAPCooldown is the quiet time between two vwap_deviation alerts. A
	// trending day stays away from its VWAP for hours, so it is long.
	VWAPCooldown time.Duration
	// VWAPSeverity is the severity of every vwap_deviation.
	VWAPSeverity Severity

	// GapMaxPending is how many seq gaps may wait for their missing seqs at
	// once. When a new gap would exceed it, the oldest is reported at once,
	// as if the watermark had passed it, so memory stays bounded when a
	// source drops ticks faster than the watermark moves.
	GapMaxPending int
	// GapSeverity is the severity of every seq_gap.
	GapSeverity Severity

	// StaleAfter is how long a symbol may go without a tick, as the
	// silence passed to Stale measures it, before it is stale.
	StaleAfter time.Duration
	// StaleSeverity is the severity of every stale alert.
	StaleSeverity Severity
}

// DefaultConfig returns the thresholds stockpipe uses unless told otherwise.
//
// The labelled detectors were tuned on the generate package's simulator (30
// large caps at 2000 ticks/s, jumps of 1–4%, bursts and blow-outs of 10–30×
// the typical size or spread) by measuring, over hours of simulated
// trading, both the largest value each statistic reaches on ordinary ticks
// and the smallest peak it reaches on a labelled event, and putting the
// threshold near the geometric middle of that gap (for jumps, above it), so
// it has room on both sides rather than sitting at the edge of what the
// simulator happens to produce. The comments give the numbers.
func DefaultConfig() Config {
	return Config{
		// A window of about 100 returns: long enough to be stable,
		// short enough to follow a change of regime within seconds on
		// a busy name.
		JumpLambda: 0.99,
		JumpWarmup: 30,
		// On liquid large caps the floors bind, not the estimate: the
		// largest ordinary tick-to-tick move in the simulator is about
		// 3 bp (one cent on a $38 stock), the smallest jump 100 bp.
		// 50 bp leans towards the jump side of that gap because real
		// prints bounce between bid and ask on wider names; z ≥ 8 over
		// the 2 bp σ floor asks for 16 bp before the move floor even
		// counts, and binds on volatile names where σ is larger.
		JumpZ:             8,
		JumpMinMoveBps:    50,
		JumpSigmaFloorBps: 2,
		JumpClipZ:         4,
		JumpMediumBps:     100,
		JumpHighBps:       300,
		JumpCooldown:      5 * time.Second,

		// 128 trades is two seconds on a busy name and a few minutes on
		// a quiet one: short enough to follow the intraday volume
		// profile, long enough that the typical trade is a stable
		// estimate. With 64, chance lows of the estimate let ordinary
		// trading reach 5.5× on a name whose sizes run to 16 round lots;
		// with 128, 4.9×.
		VolumeWindow: 128,
		VolumeSpan:   5,
		VolumeWarmup: 64,
		// Ordinary trading took five trades to at most 4.9× five
		// typical ones over 133 symbol-hours; the weakest labelled burst
		// peaked at 9.3×: a burst's prints are 10× the typical size of a
		// calm session, and the opening tape, twice as busy, doubles only
		// the ordinary prints.
		VolumeRatio:       7,
		VolumeMediumRatio: 14,
		VolumeHighRatio:   28,
		VolumeCooldown:    5 * time.Second,

		SpreadWindow: 64,
		SpreadWarmup: 32,
		// The tightest names quote about 1 bp; below that a spread is
		// a cent or less and its multiples say little.
		SpreadFloorBps: 1,
		// Ordinary spreads reached 2.3× typical (cent rounding on a
		// one-cent spread, the volatile regime's 1.5× widening); the
		// weakest labelled blow-out peaked at 7.0×, in a volatile spell,
		// which raises the typical spread but not the blown one.
		SpreadRatio:       4,
		SpreadMediumRatio: 8,
		SpreadHighRatio:   16,
		SpreadCooldown:    5 * time.Second,

		BandMargin:   0.25,
		BandMinBps:   5,
		BandCooldown: time.Minute,
		BandSeverity: SeverityLow,

		VWAPDeviationBps: 200,
		VWAPCooldown:     5 * time.Minute,
		VWAPSeverity:     SeverityLow,

		// Out-of-order delivery fills a gap within a few ticks, so a
		// handful of gaps at once is already a source in trouble.
		GapMaxPending: 16,
		GapSeverity:   SeverityMedium,

		StaleAfter:    30 * time.Second,
		StaleSeverity: SeverityMedium,
	}
}

// Validate reports the first field of c that a Detector cannot work with.
func (c Config) Validate() error {
	_, err := c.check(false)
	return err
}

// check validates c. With fix it replaces each unusable field by its default
// instead of failing, so NewDetector never has to return an error or panic.
func (c Config) check(fix bool) (Config, error) {
	def := DefaultConfig()
	var err error
	bad := func(name string, v any, rule string) bool {
		if !fix && err == nil {
			err = fmt.Errorf("anomaly config: %s %v: %s", name, v, rule)
		}
		return fix
	}
	finite := func(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
	pos := func(f float64) bool { return f > 0 && finite(f) }
	nonneg := func(f float64) bool { return f >= 0 && finite(f) }

	if !(c.JumpLambda > 0 && c.JumpLambda < 1) && bad("JumpLambda", c.JumpLambda, "must be in (0, 1)") {
		c.JumpLambda = def.JumpLambda
	}
	if c.JumpWarmup < 0 && bad("JumpWarmup", c.JumpWarmup, "must be >= 0") {
		c.JumpWarmup = def.JumpWarmup
	}
	if !pos(c.JumpZ) && bad("JumpZ", c.JumpZ, "must be a positive number") {
		c.JumpZ = def.JumpZ
	}
	if !nonneg(c.JumpMinMoveBps) && bad("JumpMinMoveBps", c.JumpMinMoveBps, "must be a number >= 0") {
		c.JumpMinMoveBps = def.JumpMinMoveBps
	}
	if !pos(c.JumpSigmaFloorBps) && bad("JumpSigmaFloorBps", c.JumpSigmaFloorBps, "must be a positive number") {
		c.JumpSigmaFloorBps = def.JumpSigmaFloorBps
	}
	if !pos(c.JumpClipZ) && bad("JumpClipZ", c.JumpClipZ, "must be a positive number") {
		c.JumpClipZ = def.JumpClipZ
	}
	if !nonneg(c.JumpMediumBps) && bad("JumpMediumBps", c.JumpMediumBps, "must be a number >= 0") {
		c.JumpMediumBps = def.JumpMediumBps
	}
	if !(nonneg(c.JumpHighBps) && c.JumpHighBps >= c.JumpMediumBps) && bad("JumpHighBps", c.JumpHighBps, "must be a number >= JumpMediumBps") {
		c.JumpHighBps = math.Max(def.JumpHighBps, c.JumpMediumBps)
	}
	if c.JumpCooldown < 0 && bad("JumpCooldown", c.JumpCooldown, "must be >= 0") {
		c.JumpCooldown = def.JumpCooldown
	}

	if !(c.VolumeWindow >= 1 && c.VolumeWindow <= MaxWindow) && bad("VolumeWindow", c.VolumeWindow, fmt.Sprintf("must be in [1, %d]", MaxWindow)) {
		c.VolumeWindow = def.VolumeWindow
	}
	if !(c.VolumeSpan >= 1 && c.VolumeSpan <= c.VolumeWindow) && bad("VolumeSpan", c.VolumeSpan, "must be in [1, VolumeWindow]") {
		c.VolumeSpan = min(def.VolumeSpan, c.VolumeWindow)
	}
	if !(c.VolumeWarmup >= 1 && c.VolumeWarmup <= c.VolumeWindow) && bad("VolumeWarmup", c.VolumeWarmup, "must be in [1, VolumeWindow]") {
		c.VolumeWarmup = min(def.VolumeWarmup, c.VolumeWindow)
	}
	if !pos(c.VolumeRatio) && bad("VolumeRatio", c.VolumeRatio, "must be a positive number") {
		c.VolumeRatio = def.VolumeRatio
	}
	if !nonneg(c.VolumeMediumRatio) && bad("VolumeMediumRatio", c.VolumeMediumRatio, "must be a number >= 0") {
		c.VolumeMediumRatio = def.VolumeMediumRatio
	}
	if !(nonneg(c.VolumeHighRatio) && c.VolumeHighRatio >= c.VolumeMediumRatio) && bad("VolumeHighRatio", c.VolumeHighRatio, "must be a number >= VolumeMediumRatio") {
		c.VolumeHighRatio = math.Max(def.VolumeHighRatio, c.VolumeMediumRatio)
	}
	if c.VolumeCooldown < 0 && bad("VolumeCooldown", c.VolumeCooldown, "must be >= 0") {
		c.VolumeCooldown = def.VolumeCooldown
	}

	if !(c.SpreadWindow >= 1 && c.SpreadWindow <= MaxWindow) && bad("SpreadWindow", c.SpreadWindow, fmt.Sprintf("must be in [1, %d]", MaxWindow)) {
		c.SpreadWindow = def.SpreadWindow
	}
	if !(c.SpreadWarmup >= 1 && c.SpreadWarmup <= c.SpreadWindow) && bad("SpreadWarmup", c.SpreadWarmup, "must be in [1, SpreadWindow]") {
		c.SpreadWarmup = min(def.SpreadWarmup, c.SpreadWindow)
	}
	if !pos(c.SpreadFloorBps) && bad("SpreadFloorBps", c.SpreadFloorBps, "must be a positive number") {
		c.SpreadFloorBps = def.SpreadFloorBps
	}
	if !pos(c.SpreadRatio) && bad("SpreadRatio", c.SpreadRatio, "must be a positive number") {
		c.SpreadRatio = def.SpreadRatio
	}
	if !nonneg(c.SpreadMediumRatio) && bad("SpreadMediumRatio", c.SpreadMediumRatio, "must be a number >= 0") {
		c.SpreadMediumRatio = def.SpreadMediumRatio
	}
	if !(nonneg(c.SpreadHighRatio) && c.SpreadHighRatio >= c.SpreadMediumRatio) && bad("SpreadHighRatio", c.SpreadHighRatio, "must be a number >= SpreadMediumRatio") {
		c.SpreadHighRatio = math.Max(def.SpreadHighRatio, c.SpreadMediumRatio)
	}
	if c.SpreadCooldown < 0 && bad("SpreadCooldown", c.SpreadCooldown, "must be >= 0") {
		c.SpreadCooldown = def.SpreadCooldown
	}

	if !nonneg(c.BandMargin) && bad("BandMargin", c.BandMargin, "must be a number >= 0") {
		c.BandMargin = def.BandMargin
	}
	if !nonneg(c.BandMinBps) && bad("BandMinBps", c.BandMinBps, "must be a number >= 0") {
		c.BandMinBps = def.BandMinBps
	}
	if c.BandCooldown < 0 && bad("BandCooldown", c.BandCooldown, "must be >= 0") {
		c.BandCooldown = def.BandCooldown
	}
	if !c.BandSeverity.Valid() && bad("BandSeverity", c.BandSeverity, "must be low, medium or high") {
		c.BandSeverity = def.BandSeverity
	}

	if !pos(c.VWAPDeviationBps) && bad("VWAPDeviationBps", c.VWAPDeviationBps, "must be a positive number") {
		c.VWAPDeviationBps = def.VWAPDeviationBps
	}
	if c.VWAPCooldown < 0 && bad("VWAPCooldown", c.VWAPCooldown, "must be >= 0") {
		c.VWAPCooldown = def.VWAPCooldown
	}
	if !c.VWAPSeverity.Valid() && bad("VWAPSeverity", c.VWAPSeverity, "must be low, medium or high") {
		c.VWAPSeverity = def.VWAPSeverity
	}

	if !(c.GapMaxPending >= 1 && c.GapMaxPending <= MaxPendingGaps) && bad("GapMaxPending", c.GapMaxPending, fmt.Sprintf("must be in [1, %d]", MaxPendingGaps)) {
		c.GapMaxPending = def.GapMaxPending
	}
	if !c.GapSeverity.Valid() && bad("GapSeverity", c.GapSeverity, "must be low, medium or high") {
		c.GapSeverity = def.GapSeverity
	}

	if c.StaleAfter <= 0 && bad("StaleAfter", c.StaleAfter, "must be positive") {
		c.StaleAfter = def.StaleAfter
	}
	if !c.StaleSeverity.Valid() && bad("StaleSeverity", c.StaleSeverity, "must be low, medium or high") {
		c.StaleSeverity = def.StaleSeverity
	}
	return c, err
}
