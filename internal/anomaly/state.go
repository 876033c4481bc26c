package anomaly

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// The state encoding starts with these bytes: a tag so that a checkpoint of
// something else is refused rather than misread, and a version for when the
// layout changes.
var stateMagic = [...]byte{'A', 'N', 'D', 1}

var errShort = errors.New("anomaly state: truncated")

// MarshalBinary returns the detector's state; see AppendBinary.
func (d *Detector) MarshalBinary() ([]byte, error) {
	return d.AppendBinary(nil)
}

// AppendBinary appends the detector's complete state, configuration
// included, to dst. Floats are stored as their IEEE 754 bits, so a detector
// restored from it continues exactly as this one would: the same later
// ticks and watermarks give the same anomalies. The error is always nil; it
// is there to satisfy encoding.BinaryAppender.
func (d *Detector) AppendBinary(dst []byte) ([]byte, error) {
	d.ready()
	c := codec{b: append(dst, stateMagic[:]...)}
	d.cfg.walk(&c)
	d.walk(&c)
	for _, w := range [...]*window{&d.vol, &d.spr} {
		n := uint64(w.n)
		c.u64(&n)
		for k := w.n - 1; k >= 0; k-- {
			v := w.recent(k)
			c.f64(&v)
		}
	}
	n := uint64(len(d.gaps))
	c.u64(&n)
	for i := range d.gaps {
		d.gaps[i].walk(&c)
	}
	return c.b, nil
}

// UnmarshalBinary is Decode for b holding exactly one state.
func (d *Detector) UnmarshalBinary(b []byte) error {
	nd, rest, err := d.decode(b)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("anomaly state: %d trailing bytes", len(rest))
	}
	*d = nd
	return nil
}

// Decode replaces the detector's state with the one at the start of b,
// written by AppendBinary, and returns the bytes after it, so states can be
// concatenated (say one per symbol) and read back in turn. On error the
// detector is unchanged.
//
// Which configuration the restored detector runs with: a zero Detector
// takes the one saved with the state, so the round trip is exact; a
// detector made by NewDetector keeps its own, so a restart with new
// thresholds applies them to the restored symbols. The round trip is exact
// then too when the two configurations are equal; when they differ, the
// estimates carry over, a window that shrank keeps its newest values, and
// surplus pending gaps are reported as the next gap opens.
//
// Decode checks what it reads: a configuration Validate rejects, a window
// or gap set larger than the saved configuration allows, a NaN where the
// detector keeps ordered values, or any other value the detector could not
// have produced is an error, so corrupt bytes cannot plant a state that
// misbehaves later.
func (d *Detector) Decode(b []byte) (rest []byte, err error) {
	nd, rest, err := d.decode(b)
	if err != nil {
		return b, err
	}
	*d = nd
	return rest, nil
}

func (d *Detector) decode(b []byte) (Detector, []byte, error) {
	var nd Detector
	if len(b) < len(stateMagic) || [4]byte(b[:4]) != stateMagic {
		return nd, b, errors.New("anomaly state: not a detector state (bad magic or version)")
	}
	c := codec{dec: true, b: b[len(stateMagic):]}
	var cfg Config
	cfg.walk(&c)
	if c.err != nil {
		return nd, b, c.err
	}
	if err := cfg.Validate(); err != nil {
		return nd, b, fmt.Errorf("anomaly state: %w", err)
	}
	if d.init {
		nd.reset(d.cfg)
	} else {
		nd.reset(cfg)
	}
	nd.walk(&c)
	if c.err != nil {
		return nd, b, c.err
	}
	if err := nd.check(); err != nil {
		return nd, b, err
	}
	if nd.prevPrice > 0 {
		nd.prevLog = math.Log(nd.prevPrice) // derived, so not stored
	}
	var vals []float64
	for i, w := range [...]*window{&nd.vol, &nd.spr} {
		saved := [...]int{cfg.VolumeWindow, cfg.SpreadWindow}[i]
		var n uint64
		c.u64(&n)
		if c.err != nil {
			return nd, b, c.err
		}
		if n > uint64(saved) {
			return nd, b, fmt.Errorf("anomaly state: window of %d values, configured for %d", n, saved)
		}
		if uint64(len(c.b)) < 8*n {
			return nd, b, errShort
		}
		vals = vals[:0]
		for range n {
			var v float64
			c.f64(&v)
			// What push stores: sizes > 0 and spreads >= 0, finite.
			if !(v >= 0) || math.Signbit(v) || math.IsInf(v, 0) {
				return nd, b, fmt.Errorf("anomaly state: window value %v", v)
			}
			vals = append(vals, v)
		}
		w.reset(vals) // keeps the newest values if the window shrank
	}
	var n uint64
	c.u64(&n)
	if c.err != nil {
		return nd, b, c.err
	}
	if n > uint64(cfg.GapMaxPending) {
		return nd, b, fmt.Errorf("anomaly state: %d pending gaps, configured for %d", n, cfg.GapMaxPending)
	}
	for range n {
		var g gap
		g.walk(&c)
		if c.err != nil {
			return nd, b, c.err
		}
		total := uint64(g.hi) - uint64(g.lo) + 1
		if g.lo > g.hi || g.missing == 0 || g.missing > total ||
			(len(nd.gaps) > 0 && g.lo <= nd.gaps[len(nd.gaps)-1].hi) || g.hi >= nd.maxSeq {
			return nd, b, fmt.Errorf("anomaly state: inconsistent gap %d..%d", g.lo, g.hi)
		}
		nd.gaps = append(nd.gaps, g)
	}
	return nd, c.b, nil
}

// check rejects decoded scalars the detector could not have produced.
func (d *Detector) check() error {
	for _, f := range [...]float64{d.prevPrice, d.varW, d.varV, d.dtW, d.dtV} {
		if !(f >= 0) || math.IsInf(f, 0) {
			return fmt.Errorf("anomaly state: bad estimator value %v", f)
		}
	}
	if d.nRet < 0 {
		return fmt.Errorf("anomaly state: negative return count %d", d.nRet)
	}
	return nil
}

// walk visits the detector's scalar state in encoding order.
func (d *Detector) walk(c *codec) {
	c.boolean(&d.seen)
	c.i64(&d.maxSeq)
	c.i64(&d.lastNs)
	c.boolean(&d.staleDone)
	c.boolean(&d.staleFired)
	c.i64(&d.staleNs)
	c.f64(&d.prevPrice)
	c.i64(&d.prevNs)
	c.i64(&d.nRet)
	c.f64(&d.varW)
	c.f64(&d.varV)
	c.f64(&d.dtW)
	c.f64(&d.dtV)
	for i := range d.ep {
		c.boolean(&d.ep[i].fired)
		c.i64(&d.ep[i].hit)
		c.i64(&d.ep[i].fire)
	}
	c.boolean(&d.gapFired)
	c.i64(&d.lastGapNs)
}

func (g *gap) walk(c *codec) {
	c.i64(&g.lo)
	c.i64(&g.hi)
	c.u64(&g.missing)
	c.u64(&g.arrived)
	c.i64(&g.afterNs)
}

// walk visits every field of the configuration in encoding order.
func (cfg *Config) walk(c *codec) {
	c.f64(&cfg.JumpLambda)
	c.int(&cfg.JumpWarmup)
	c.f64(&cfg.JumpZ)
	c.f64(&cfg.JumpMinMoveBps)
	c.f64(&cfg.JumpSigmaFloorBps)
	c.f64(&cfg.JumpClipZ)
	c.f64(&cfg.JumpMediumBps)
	c.f64(&cfg.JumpHighBps)
	c.dur(&cfg.JumpCooldown)

	c.int(&cfg.VolumeWindow)
	c.int(&cfg.VolumeSpan)
	c.int(&cfg.VolumeWarmup)
	c.f64(&cfg.VolumeRatio)
	c.f64(&cfg.VolumeMediumRatio)
	c.f64(&cfg.VolumeHighRatio)
	c.dur(&cfg.VolumeCooldown)

	c.int(&cfg.SpreadWindow)
	c.int(&cfg.SpreadWarmup)
	c.f64(&cfg.SpreadFloorBps)
	c.f64(&cfg.SpreadRatio)
	c.f64(&cfg.SpreadMediumRatio)
	c.f64(&cfg.SpreadHighRatio)
	c.dur(&cfg.SpreadCooldown)

	c.f64(&cfg.BandMargin)
	c.f64(&cfg.BandMinBps)
	c.dur(&cfg.BandCooldown)
	c.sev(&cfg.BandSeverity)

	c.f64(&cfg.VWAPDeviationBps)
	c.dur(&cfg.VWAPCooldown)
	c.sev(&cfg.VWAPSeverity)

	c.int(&cfg.GapMaxPending)
	c.sev(&cfg.GapSeverity)

	c.dur(&cfg.StaleAfter)
	c.sev(&cfg.StaleSeverity)
}

// codec writes (dec false) or reads (dec true) fixed-size little-endian
// fields. Driving both directions from the same walk functions keeps the
// encoder and the decoder from disagreeing about the layout. After the first
// read error it reads nothing more and leaves the fields alone.
type codec struct {
	dec bool
	b   []byte // encoding: the output; decoding: the unread input
	err error
}

func (c *codec) u64(p *uint64) {
	if !c.dec {
		c.b = binary.LittleEndian.AppendUint64(c.b, *p)
		return
	}
	if c.err != nil {
		return
	}
	if len(c.b) < 8 {
		c.err = errShort
		return
	}
	*p = binary.LittleEndian.Uint64(c.b)
	c.b = c.b[8:]
}

func (c *codec) byte(p *byte) {
	if !c.dec {
		c.b = append(c.b, *p)
		return
	}
	if c.err != nil {
		return
	}
	if len(c.b) < 1 {
		c.err = errShort
		return
	}
	*p = c.b[0]
	c.b = c.b[1:]
}

func (c *codec) i64(p *int64) {
	u := uint64(*p)
	c.u64(&u)
	*p = int64(u)
}

func (c *codec) f64(p *float64) {
	u := math.Float64bits(*p)
	c.u64(&u)
	*p = math.Float64frombits(u)
}

func (c *codec) int(p *int) {
	v := int64(*p)
	c.i64(&v)
	if int64(int(v)) != v && c.err == nil {
		c.err = fmt.Errorf("anomaly state: %d does not fit an int", v)
		return
	}
	*p = int(v)
}

func (c *codec) dur(p *time.Duration) {
	v := int64(*p)
	c.i64(&v)
	*p = time.Duration(v)
}

func (c *codec) boolean(p *bool) {
	var v byte
	if *p {
		v = 1
	}
	c.byte(&v)
	if v > 1 && c.err == nil {
		c.err = fmt.Errorf("anomaly state: bad boolean %d", v)
		return
	}
	*p = v == 1
}

// severities maps a Severity to its one-byte code and back.
var severities = [...]Severity{SeverityLow, SeverityMedium, SeverityHigh}

func (c *codec) sev(p *Severity) {
	var v byte
	for i, s := range severities {
		if *p == s {
			v = byte(i)
		}
	}
	c.byte(&v)
	if int(v) >= len(severities) {
		if c.err == nil {
			c.err = fmt.Errorf("anomaly state: bad severity code %d", v)
		}
		return
	}
	*p = severities[v]
}
