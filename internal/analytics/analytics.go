// Package analytics is the per-tick computation of the stream: per symbol,
// duplicate detection, the event-time watermark, 1m and 5m candles with their
// indicators, a session VWAP and the anomaly detectors. It does no I/O; the
// processor feeds it ticks in partition order and stores what it outputs.
//
// Everything it decides depends only on the order of ticks within a
// partition, never on the wall clock or on how ticks were batched, so a run
// that is interrupted and resumed from a snapshot (AppendBinary, Decode)
// produces exactly what an uninterrupted run does.
//
// # Time, per symbol
//
// A tick is late only relative to its own symbol: each symbol has its own
// watermark, its newest event time minus the lateness, and nothing another
// symbol sends moves it. So a symbol whose clock runs ahead, one replaying
// old history, one that bursts or falls silent, cannot make another
// symbol's ticks late, open a seq gap in it, or change its candles,
// indicators or anomalies — with one exception, stale, which by its nature
// compares a symbol with the rest of its partition.
//
// A symbol that falls silent would keep its last candles open for ever, so
// the partition keeps an activity clock: it moves by the steps each symbol
// takes on its own clock (the time from a symbol's newest tick to its next
// newer one), so clocks that are offset from each other do not matter, and
// a step longer than the idle timeout — a gap in the whole feed, a restart,
// a replay jumping from one bar to the next — does not move it at all. A
// symbol's silence is how far that clock has moved since the symbol's
// clock last did. Once a symbol has been silent for the idle timeout its
// candles that would have ended by then, had its own clock kept pace, are
// sealed: stored as final, but still amended by an on-time tick of the
// symbol if one comes (candle.Window.Seal). After StaleAfter of silence it
// is reported stale, once per silence.
package analytics

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/stockpipe/stockpipe/internal/anomaly"
	"github.com/stockpipe/stockpipe/internal/candle"
	"github.com/stockpipe/stockpipe/internal/indicator"
	"github.com/stockpipe/stockpipe/internal/market"
)

// Interval is a candle length the stream builds.
type Interval struct {
	Name string // as stored in candles.interval
	Dur  time.Duration
}

// Intervals are the candle lengths built in the stream; 1d is built by the
// scheduler from the 1m candles.
var Intervals = [2]Interval{{"1m", time.Minute}, {"5m", 5 * time.Minute}}

// Config tunes the computation. Zero fields take the defaults noted.
type Config struct {
	// Lateness is how far behind a symbol's newest event time a tick may be
	// and still count; later ones are rejected as late. Default 2 s.
	Lateness time.Duration
	// MaxSeqJump is how far past a symbol's highest seq a tick's seq may
	// be; beyond, it is rejected (SeqJump) rather than taken, since one
	// wild seq would otherwise make every later tick of the symbol look
	// older than the ones remembered. Default 10,000,000.
	MaxSeqJump int64
	// IdleTimeout seals the candles of a symbol that has been silent for
	// this long on its partition's activity clock (see the package
	// documentation), and is the longest step of a symbol's own clock that
	// counts as activity. Default 10 s.
	IdleTimeout time.Duration
	// Anomaly configures the detectors; zero means anomaly.DefaultConfig().
	Anomaly anomaly.Config
}

func (c *Config) defaults() error {
	if c.Lateness == 0 {
		c.Lateness = 2 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 10 * time.Second
	}
	if c.MaxSeqJump == 0 {
		c.MaxSeqJump = 10_000_000
	}
	if c.Lateness < 0 || c.IdleTimeout < 0 || c.MaxSeqJump < 0 {
		return fmt.Errorf("lateness, idle timeout and max seq jump must not be negative")
	}
	if c.Anomaly == (anomaly.Config{}) {
		c.Anomaly = anomaly.DefaultConfig()
	}
	if err := c.Anomaly.Validate(); err != nil {
		return fmt.Errorf("anomaly settings: %w", err)
	}
	for _, iv := range Intervals {
		if _, err := candle.NewWindow(iv.Dur, c.Lateness); err != nil {
			return fmt.Errorf("lateness %v: %w", c.Lateness, err)
		}
	}
	return nil
}

// Verdict is what Apply made of a tick.
type Verdict uint8

// Verdicts.
const (
	Accepted  Verdict = iota
	Duplicate         // its (symbol, seq) was accepted before: dropped
	Late              // behind its symbol's watermark: rejected
	SeqJump           // seq more than Config.MaxSeqJump past the symbol's highest: rejected
	// Unknown: the seq is older than the seqs the partition remembers
	// for the symbol (the last 4,096), so whether it was accepted before
	// cannot be told here. Nothing changed; the caller finds out (the
	// processor asks the database) and calls ApplyUnseen if it was not, or
	// drops it as a duplicate if it was.
	Unknown
)

// CandleRow is a candle as stored: its values, its indicators (over the
// closes of that interval's candles up to and including this one) and
// whether it is final.
type CandleRow struct {
	Symbol   string
	Interval string
	candle.Candle
	Ind indicator.Values
}

// Output collects what ticks produced, for one batch.
type Output struct {
	Candles   []CandleRow
	Anomalies []anomaly.Anomaly
}

// Reset empties o, keeping its buffers.
func (o *Output) Reset() {
	o.Candles = o.Candles[:0]
	o.Anomalies = o.Anomalies[:0]
}

// Partition is the state of the symbols of one Kafka partition.
type Partition struct {
	cfg   Config
	syms  map[string]*symbol
	order []*symbol // by name, for deterministic snapshots and idle scans
	// clock is the partition's activity clock (see the package
	// documentation): how much event time its symbols have moved through,
	// counted by each symbol's own steps. It starts at 0.
	clock    time.Duration
	nextScan time.Duration // clock reading of the next idle scan
	dirty    []*symbol     // symbols whose open candles changed since Flush
	forming  []candle.Candle
}

// New returns an empty Partition.
func New(cfg Config) (*Partition, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	return &Partition{cfg: cfg, syms: make(map[string]*symbol)}, nil
}

// Symbols returns how many symbols the partition tracks.
func (p *Partition) Symbols() int { return len(p.order) }

// Watermark returns a symbol's current watermark, for messages about late
// ticks: its own newest event time minus the lateness.
func (p *Partition) Watermark(sym string) time.Time {
	if s := p.syms[sym]; s != nil {
		return s.wm.Time()
	}
	return time.Time{}
}

// HighestSeq returns the highest seq accepted for a symbol, 0 if none.
func (p *Partition) HighestSeq(sym string) int64 {
	if s := p.syms[sym]; s != nil {
		return s.seen.max
	}
	return 0
}

func (p *Partition) symbol(name string) *symbol {
	if s := p.syms[name]; s != nil {
		return s
	}
	s := newSymbol(name, &p.cfg)
	p.syms[name] = s
	i, _ := slices.BinarySearchFunc(p.order, name, func(a *symbol, n string) int { return strings.Compare(a.name, n) })
	p.order = slices.Insert(p.order, i, s)
	return s
}

// Apply processes one valid tick, appending any final candles and anomalies
// it causes to out. Forming candles are reported by Flush.
//
// A tick is a duplicate only if its (symbol, seq) was accepted before:
// anything else is accepted or rejected with a reason, never dropped
// unseen. Lateness is judged first, so that a replay of old history into a
// live symbol is rejected as late, with a trace, even where its seqs happen
// to equal the live ones; and the resend of a tick rejected as late is late
// again, not a duplicate, since nothing of it is stored.
func (p *Partition) Apply(t *market.Tick, out *Output) Verdict {
	s := p.symbol(t.Symbol)
	if s.seen.max > 0 && t.Seq > s.seen.max && t.Seq-s.seen.max > p.cfg.MaxSeqJump {
		return SeqJump
	}
	if s.wm.Late(t.TS) {
		return Late
	}
	seen, inWindow := s.seen.has(t.Seq)
	if seen {
		return Duplicate
	}
	if !inWindow {
		return Unknown
	}
	s.seen.add(t.Seq)
	return p.accept(s, t, out)
}

// ApplyUnseen processes a tick for which Apply said Unknown and which the
// caller found was not accepted before. A seq that old is not remembered:
// a second copy of it is Unknown again.
func (p *Partition) ApplyUnseen(t *market.Tick, out *Output) Verdict {
	s := p.symbol(t.Symbol)
	if s.wm.Late(t.TS) {
		return Late
	}
	if _, inWindow := s.seen.has(t.Seq); inWindow {
		s.seen.add(t.Seq)
	}
	return p.accept(s, t, out)
}

// accept takes an on-time tick that is not a duplicate into the state.
func (p *Partition) accept(s *symbol, t *market.Tick, out *Output) Verdict {
	p.step(s, t.TS)
	if !t.TS.Before(s.sessionEnd) {
		s.vwap.Reset()
		s.sessionEnd = sessionEnd(t.TS)
	}
	s.vwap.Push(t.Price, t.Size)

	var forming1m *candle.Candle
	for i := range s.win {
		c := s.win[i].Add(t.TS, t.Seq, t.Price, t.Size)
		if i == 0 {
			forming1m = c
		}
	}
	p.advance(s, out)
	p.touch(s)

	var ctx anomaly.Context
	if forming1m != nil {
		if v := s.ind[0].Peek(forming1m.Close); v.Has&indicator.HasBB != 0 {
			ctx.BBUpper, ctx.BBLower, ctx.HasBands = v.BBUpper, v.BBLower, true
		}
	}
	ctx.SessionVWAP, ctx.HasVWAP = s.vwap.Value()
	out.Anomalies = s.det.Observe(out.Anomalies, t, ctx)
	out.Anomalies = s.det.Gaps(out.Anomalies, s.name, s.wm.Time())

	if p.clock >= p.nextScan {
		p.idle(out)
		p.nextScan = p.clock.Truncate(time.Second) + time.Second
	}
	return Accepted
}

// step moves the symbol's own clock to ts, if that is newer, and the
// partition's activity clock by the step, if the step is short enough to
// be activity rather than a gap (see the package documentation).
func (p *Partition) step(s *symbol, ts time.Time) {
	prev, seen := s.wm.Max()
	s.wm.Observe(ts)
	if !seen {
		s.at = p.clock
		return
	}
	if !ts.After(prev) {
		return
	}
	if d := ts.Sub(prev); d <= p.cfg.IdleTimeout {
		p.clock = max(p.clock, s.at+d)
	}
	s.at = p.clock
}

// touch marks the symbol's open candles for the next Flush.
func (p *Partition) touch(s *symbol) {
	if !s.dirty {
		s.dirty = true
		p.dirty = append(p.dirty, s)
	}
}

// advance finalises the symbol's candles its watermark has passed.
func (p *Partition) advance(s *symbol, out *Output) {
	wm := s.wm.Time()
	for i := range s.win {
		s.win[i].Advance(wm, func(c candle.Candle) {
			s.ind[i].Push(c.Close)
			out.Candles = append(out.Candles, CandleRow{Symbol: s.name, Interval: Intervals[i].Name, Candle: c, Ind: s.ind[i].Value()})
		})
	}
}

// idle seals the candles of symbols that have gone quiet while their
// partition kept ticking, and lets the detectors report stale symbols.
func (p *Partition) idle(out *Output) {
	for _, s := range p.order {
		silence := p.clock - s.at
		if silence >= p.cfg.IdleTimeout {
			// Seal what would have ended by now had the symbol's own
			// clock kept pace with the partition's.
			last, _ := s.wm.Max()
			until := last.Add(silence - p.cfg.IdleTimeout)
			for i := range s.win {
				if s.win[i].Seal(until) > 0 {
					p.touch(s)
				}
			}
		}
		out.Anomalies = s.det.Stale(out.Anomalies, s.name, silence)
	}
}

// Discard forgets which open candles changed since the last Flush, without
// reporting them. The processor calls it for ticks it applies only to
// rebuild state (a replay from a checkpoint after a crash): their rows are
// stored already, and writing them again would show readers older values
// until the replay caught up.
func (p *Partition) Discard() {
	for _, s := range p.dirty {
		s.dirty = false
	}
	p.dirty = p.dirty[:0]
}

// Flush appends the current state of every open candle that changed since
// the last Flush, sealed ones with Final set, with indicators as if its
// close were the next close.
func (p *Partition) Flush(out *Output) {
	for _, s := range p.dirty {
		s.dirty = false
		for i := range s.win {
			p.forming = s.win[i].Forming(p.forming[:0])
			set := s.ind[i] // a copy: earlier open candles are pushed tentatively
			for j, c := range p.forming {
				if j > 0 {
					set.Push(p.forming[j-1].Close)
				}
				out.Candles = append(out.Candles, CandleRow{Symbol: s.name, Interval: Intervals[i].Name, Candle: c, Ind: set.Peek(c.Close)})
			}
		}
	}
	p.dirty = p.dirty[:0]
}

var newYork = market.NewYork

// sessionEnd returns the next New York midnight after ts: the session VWAP
// runs over a New York calendar day.
func sessionEnd(ts time.Time) time.Time {
	y, m, d := ts.In(newYork).Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, newYork).UTC()
}

// symbol is one symbol's state.
type symbol struct {
	name string
	seen seenWindow
	wm   candle.Watermark // the symbol's own clock: its newest tick and watermark
	// at is the partition's activity clock when the symbol's own clock
	// last moved (or when it first ticked).
	at         time.Duration
	win        [len(Intervals)]candle.Window
	ind        [len(Intervals)]indicator.Set
	vwap       indicator.VWAP
	sessionEnd time.Time
	det        *anomaly.Detector
	dirty      bool
}

func newSymbol(name string, cfg *Config) *symbol {
	s := &symbol{name: name, det: anomaly.NewDetector(cfg.Anomaly)}
	s.wm, _ = candle.NewWatermark(cfg.Lateness) // checked in Config.defaults
	for i, iv := range Intervals {
		s.win[i], _ = candle.NewWindow(iv.Dur, cfg.Lateness)
		s.ind[i] = indicator.NewSet()
	}
	return s
}
