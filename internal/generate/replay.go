package generate

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	// Embedded so America/New_York resolves on hosts and containers
	// without a system zoneinfo database.
	_ "time/tzdata"

	"github.com/stockpipe/stockpipe/internal/market"
)

// ReplayConfig configures a Replay.
type ReplayConfig struct {
	// Symbol is the ticker stamped on every tick; it must satisfy
	// market.ValidSymbol. Required: OHLCV files from Yahoo Finance do not
	// name their ticker in every row, so the caller supplies it (see
	// SymbolFromPath).
	Symbol string
	// SkipBad makes Next skip bad rows and count them in Stats instead of
	// returning an error.
	SkipBad bool
	// StartSeq is the seq of the first tick minus one, so the zero value
	// numbers ticks from 1. It must not be negative.
	StartSeq int64
	// Location is the zone of timestamps written without a UTC offset.
	// Nil means America/New_York, the zone Yahoo reports US listings in.
	// Daily bars always span the 09:30–16:00 America/New_York session,
	// whatever Location says.
	Location *time.Location
	// Interval is an intraday file's bar length. Zero infers it: the most
	// common gap between consecutive rows among the first
	// replayLookahead, so that missing rows (a minute without trades, a
	// halt) do not stretch a bar into the next one's window.
	Interval time.Duration
}

// ReplayStats counts what a Replay has read and produced so far.
type ReplayStats struct {
	// RowsRead counts data rows read, good and bad. Header lines,
	// including the extra lines of yfinance multi-index exports, are not
	// counted.
	RowsRead int64
	// BarsUsed counts rows that were turned into ticks.
	BarsUsed int64
	// RowsSkipped counts bad rows skipped because SkipBad was set.
	RowsSkipped int64
	// Skips describes the first few skipped rows, in file order.
	Skips []ReplaySkip
	// TicksEmitted counts records returned by Next.
	TicksEmitted int64
	// PaddedBars counts bars whose volume was smaller than the number of
	// ticks needed to trace open, high, low and close (zero-volume bars
	// included). Their ticks have size 1 each, so for these bars the ticks'
	// sizes add up to more than the bar's volume.
	PaddedBars int64
}

// ReplaySkip names one skipped row and why it was skipped.
type ReplaySkip struct {
	Line   int    // 1-based line number in the input
	Reason string // the problem, as a ReplayRowError would report it
}

// ReplayRowError reports a bad data row. Its message has the form
// "line 5: high 99.5 is below close 101.2".
type ReplayRowError struct {
	Line int   // 1-based line number in the input
	Err  error // the problem with the row
}

// Error returns "line N: " followed by the problem.
func (e *ReplayRowError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }

// Unwrap returns the underlying problem.
func (e *ReplayRowError) Unwrap() error { return e.Err }

// Replay is a Source that turns a historical OHLCV file, as exported by
// Yahoo Finance or the yfinance library, into a deterministic stream of
// ticks.
//
// The input is CSV with a header naming the columns, matched
// case-insensitively and in any order: Date (daily bars) or Datetime
// (intraday bars), Open, High, Low, Close and Volume. Other columns, such as
// Adj Close, Dividends and Stock Splits, are ignored: ticks replay the
// traded prices, which is what Open, High, Low and Close are, and Adj Close
// exists only for return calculations. A UTF-8 byte order mark, CRLF line
// ends and the extra header lines of yfinance multi-index exports
// ("Ticker,AAPL,..." and "Date,,,,,") are accepted. Times are dates
// (2024-01-02) or whole-second timestamps (2024-01-02 09:30:00, optionally
// with a UTC offset such as -05:00 or +00:00).
//
// A row is bad if a field is missing (empty, null or NaN, as Yahoo writes
// for holidays) or not a number, a price is not positive or rounds to zero
// cents, the high is below the open or close, the low is above them, the
// volume is negative or fractional, or its time is not after the previous
// good row's (for daily bars: its date is not later). A bad row stops the
// replay with a *ReplayRowError unless ReplayConfig.SkipBad is set.
//
// Each bar becomes a path of ticks: the open, then the low and the high (high
// first for a down bar), then the close, with a few ticks in between. Prices
// are rounded to cents. The ticks' sizes are round lots where the volume
// allows and add up to the bar's volume, except for bars too thin to cover
// their path (see ReplayStats.PaddedBars). A daily bar's ticks fall within
// the 09:30–16:00 America/New_York session of its date; an intraday bar's
// ticks fall within its interval (ReplayConfig.Interval, or the most common
// gap between the first rows, at most a day; one minute for a file of one
// row) and never reach the next row's time. The same input always yields
// the same ticks.
//
// A Replay is not safe for concurrent use.
type Replay struct {
	cr      *csv.Reader
	symbol  string
	key     []byte
	skipBad bool
	loc     *time.Location
	ny      *time.Location

	timeCol  int
	timeName string // header name of the time column, lower case, for messages
	cols     [replayNumFields]int
	needCols int // fields a data row must have to reach every column
	mode     replayMode
	seenData bool // a data row has been read, so header-like lines are now bad rows

	// Bars are read ahead of the one being emitted: an intraday file's
	// interval is inferred from its first rows, and a bar's ticks must end
	// before the next row's time. readErr ends the queue.
	queue       []replayBar
	readErr     error
	interval    time.Duration // an intraday bar's length, once known
	cfgInterval time.Duration // ReplayConfig.Interval
	prev        replayBar     // last good bar read, for the increasing-time check
	havePrv     bool

	bar   replayBar // the bar whose ticks are in ticks
	ticks []replayTick
	pos   int
	done  bool  // no more bars to plan
	err   error // returned once the planned ticks are emitted; sticky

	seq   int64
	tick  market.Tick
	buf   []byte
	stats ReplayStats

	prices  []int64
	sizes   []int64
	weights []uint64
}

var _ Source = (*Replay)(nil)

type replayMode uint8

const (
	replayModeUnknown replayMode = iota // yfinance multi-index header; decided by the next lines
	replayModeDaily
	replayModeIntraday
)

// Indexes into Replay.cols.
const (
	replayOpen = iota
	replayHigh
	replayLow
	replayClose
	replayVolume
	replayNumFields
)

// Bounds on a row's time, see parseTime.
var (
	replayMinTime = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)
	replayMaxTime = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

var replayFieldNames = [replayNumFields]string{"open", "high", "low", "close", "volume"}

const (
	// replayWantHeader is quoted in header errors to show what is expected.
	replayWantHeader = `Date,Open,High,Low,Close,Adj Close,Volume (Datetime instead of Date for intraday bars; Adj Close optional; any order, any case)`
	// replayMaxLeadLines bounds the "Ticker,..." lines tolerated before
	// the header so that a file that is not OHLCV fails fast.
	replayMaxLeadLines = 4
	// replayMaxSkips is how many skip reasons Stats keeps.
	replayMaxSkips = 10
	// replayMaxCents caps prices at $1e8, far above any listed share, so
	// that cent arithmetic stays exact and an ask a spread above the price
	// stays within the tick rules' price bound.
	replayMaxCents = 10_000_000_000
	// replayMaxVolume caps a bar's volume at the tick rules' size bound, so
	// no tick can exceed it.
	replayMaxVolume = 1_000_000_000_000
	// replayDefaultInterval is the interval of an intraday file with a
	// single row, the finest bar Yahoo serves.
	replayDefaultInterval = time.Minute
	// replayMaxInterval bounds an intraday bar's span: Yahoo's coarsest
	// intraday bar is 90 minutes, and without a bound a file whose only
	// gaps are overnight would spread one bar across the night.
	replayMaxInterval = 24 * time.Hour
	// replaySession* bound a daily bar's ticks: the regular session of
	// US exchanges, in America/New_York.
	replaySessionOpen  = 9*time.Hour + 30*time.Minute
	replaySessionClose = 16 * time.Hour
)

// replayBar is one validated row, prices in cents.
type replayBar struct {
	line       int
	raw        string    // the time field as written, for messages
	start, end time.Time // span of the bar's ticks; end is set when planned
	open       int64
	high       int64
	low        int64
	close      int64
	volume     int64
}

type replayTick struct {
	ts    time.Time
	price int64 // cents
	size  int64
}

// SymbolFromPath returns the ticker a replay file is conventionally named
// after: its base name without the extension, upper-cased.
// "data/aapl.csv" gives "AAPL" and "BRK-B.csv" gives "BRK-B".
func SymbolFromPath(path string) string {
	base := filepath.Base(path)
	if base == "." || base == string(filepath.Separator) {
		return ""
	}
	return strings.ToUpper(strings.TrimSuffix(base, filepath.Ext(base)))
}

// NewReplay returns a Replay reading CSV from r. It reads the header at once
// and returns an error naming the expected columns if the header is
// missing or lacks one of them.
func NewReplay(r io.Reader, cfg ReplayConfig) (*Replay, error) {
	sym := cfg.Symbol
	if sym == "" {
		return nil, errors.New("replay: no symbol: ReplayConfig.Symbol is required")
	}
	// Checked here because every tick would otherwise be rejected
	// downstream; indices such as ^GSPC need an explicit symbol.
	if !market.ValidSymbol(sym) {
		return nil, fmt.Errorf("replay: symbol %q is not a valid ticker: want 1 to %d of A-Z, 0-9, '.' and '-', starting with a letter", sym, market.MaxSymbolLen)
	}
	if cfg.StartSeq < 0 {
		return nil, fmt.Errorf("replay: StartSeq %d is negative", cfg.StartSeq)
	}
	if cfg.Interval < 0 || cfg.Interval > replayMaxInterval {
		return nil, fmt.Errorf("replay: interval %v must be between 0 (infer it) and %v", cfg.Interval, replayMaxInterval)
	}
	ny := market.NewYork
	loc := cfg.Location
	if loc == nil {
		loc = ny
	}
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1 // yfinance's extra header lines have their own widths
	cr.ReuseRecord = true
	p := &Replay{
		cr:      cr,
		symbol:  sym,
		key:     []byte(sym),
		skipBad: cfg.SkipBad,
		loc:     loc,
		ny:      ny,
		seq:     cfg.StartSeq,

		cfgInterval: cfg.Interval,
	}
	for lead := 0; ; lead++ {
		rec, err := cr.Read()
		if err == io.EOF && lead == 0 {
			return nil, fmt.Errorf("replay: empty input: want a header line %s", replayWantHeader)
		}
		if err == io.EOF {
			return nil, fmt.Errorf("replay: no header line after %d Ticker lines: want %s", lead, replayWantHeader)
		}
		if err != nil {
			return nil, fmt.Errorf("replay: reading header: %w", err)
		}
		line, _ := cr.FieldPos(0)
		if lead == 0 && len(rec) > 0 {
			rec[0] = strings.TrimPrefix(rec[0], "\ufeff")
		}
		if lead < replayMaxLeadLines && len(rec) > 0 && replayLabel(rec[0]) == "ticker" {
			continue
		}
		if err := p.parseHeader(rec); err != nil {
			return nil, fmt.Errorf("replay: header on line %d: %w", line, err)
		}
		return p, nil
	}
}

// replayLabel normalizes a header cell for matching.
func replayLabel(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

func (p *Replay) parseHeader(rec []string) error {
	p.timeCol = -1
	for i := range p.cols {
		p.cols[i] = -1
	}
	for i, name := range rec {
		switch l := replayLabel(name); l {
		case "date", "datetime":
			if p.timeCol >= 0 && p.mode != replayModeUnknown {
				return fmt.Errorf("more than one date column (%q and %q); want %s", rec[p.timeCol], name, replayWantHeader)
			}
			p.timeCol, p.timeName = i, l
			p.mode = replayModeDaily
			if l == "datetime" {
				p.mode = replayModeIntraday
			}
		case "price":
			// yfinance multi-index exports put the column level's name
			// above the date column; a "Date" or "Datetime" line follows.
			if i == 0 && p.timeCol < 0 {
				p.timeCol, p.timeName, p.mode = 0, "date", replayModeUnknown
			}
		default:
			for f, want := range replayFieldNames {
				if l != want {
					continue
				}
				if p.cols[f] >= 0 {
					return fmt.Errorf("column %q appears more than once (files with several tickers are not supported); want %s", name, replayWantHeader)
				}
				p.cols[f] = i
			}
		}
	}
	var missing []string
	if p.timeCol < 0 {
		missing = append(missing, "Date or Datetime")
	}
	for f, c := range p.cols {
		if c < 0 {
			missing = append(missing, replayTitle(replayFieldNames[f]))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("no %s column in %q; want %s", strings.Join(missing, ", "), strings.Join(rec, ","), replayWantHeader)
	}
	p.needCols = p.timeCol + 1
	for _, c := range p.cols {
		p.needCols = max(p.needCols, c+1)
	}
	return nil
}

func replayTitle(s string) string { return strings.ToUpper(s[:1]) + s[1:] }

// Stats returns the counts so far. The returned value does not share memory
// with the Replay.
func (p *Replay) Stats() ReplayStats {
	s := p.stats
	s.Skips = append([]ReplaySkip(nil), p.stats.Skips...)
	return s
}

// Next returns the next tick. Its Value is the tick's JSON and is
// overwritten by the following call; its Key is the same slice on every
// call and must not be modified. After the last tick it returns
// ok=false; after an error it keeps returning that error. When a bad row
// stops the replay, the ticks of every good row before it are returned
// first.
func (p *Replay) Next() (Record, bool, error) {
	for p.pos >= len(p.ticks) {
		if p.done {
			if p.err != nil {
				return Record{}, false, p.err
			}
			return Record{}, false, nil
		}
		p.fill()
	}
	if p.seq == math.MaxInt64 {
		p.ticks, p.pos, p.done = nil, 0, true
		p.err = errors.New("replay: seq would overflow int64")
		return Record{}, false, p.err
	}
	t := &p.ticks[p.pos]
	p.pos++
	p.seq++
	half := max(t.price/10000, 1) // 1 bp either side, at least a cent
	p.tick = market.Tick{
		Symbol: p.symbol,
		TS:     t.ts,
		Seq:    p.seq,
		Price:  replayDollars(t.price),
		Size:   t.size,
		Bid:    replayDollars(max(t.price-half, 1)),
		Ask:    replayDollars(t.price + half),
	}
	p.buf = p.tick.AppendJSON(p.buf[:0])
	p.stats.TicksEmitted++
	return Record{Key: p.key, Value: p.buf, TS: t.ts}, true, nil
}

func replayDollars(cents int64) float64 { return float64(cents) / 100 }

// replayLookahead is how many rows an intraday file's interval is inferred
// from; a few hundred rows of a day's minutes or hours say it reliably, and
// buffering them costs little.
const replayLookahead = 256

// fill plans the ticks of the next bar, or marks the replay done.
func (p *Replay) fill() {
	p.ticks, p.pos = p.ticks[:0], 0
	if p.interval == 0 {
		p.readAhead(replayLookahead)
		p.interval = p.inferInterval()
	}
	p.readAhead(2)
	if len(p.queue) == 0 {
		p.finish(p.readErr)
		return
	}
	b := p.queue[0]
	p.queue = p.queue[1:]
	span := p.interval
	if len(p.queue) > 0 {
		// Rows closer together than the interval (an irregular file):
		// a bar's ticks still stay before the next row's.
		span = min(span, p.queue[0].start.Sub(b.start))
	}
	p.plan(b, span)
	if len(p.queue) == 0 && p.readErr != nil {
		p.finish(p.readErr)
	}
}

// readAhead reads bars into the queue until it holds n or input ends.
func (p *Replay) readAhead(n int) {
	for len(p.queue) < n && p.readErr == nil {
		b, err := p.readBar()
		if err != nil {
			p.readErr = err
			return
		}
		p.queue = append(p.queue, b)
	}
}

// inferInterval returns an intraday file's bar length: ReplayConfig's, or
// the most common gap between consecutive queued rows (the shortest of the
// most common, on a tie), at most replayMaxInterval; replayDefaultInterval
// with fewer than two rows.
func (p *Replay) inferInterval() time.Duration {
	if p.cfgInterval > 0 {
		return p.cfgInterval
	}
	counts := map[time.Duration]int{}
	best, bestN := time.Duration(0), 0
	for i := 1; i < len(p.queue); i++ {
		g := p.queue[i].start.Sub(p.queue[i-1].start)
		counts[g]++
		if n := counts[g]; n > bestN || n == bestN && g < best {
			best, bestN = g, n
		}
	}
	if best <= 0 {
		return replayDefaultInterval
	}
	return min(best, replayMaxInterval)
}

func (p *Replay) finish(err error) {
	p.done = true
	if !errors.Is(err, io.EOF) {
		p.err = err
	}
}

// readBar returns the next good bar, io.EOF at the end of input, or the
// first bad row's error unless bad rows are skipped.
func (p *Replay) readBar() (replayBar, error) {
	for {
		rec, err := p.cr.Read()
		if errors.Is(err, io.EOF) {
			return replayBar{}, io.EOF
		}
		var line int
		if err != nil {
			var pe *csv.ParseError
			if !errors.As(err, &pe) {
				return replayBar{}, fmt.Errorf("replay: reading: %w", err)
			}
			line = pe.StartLine
			err = fmt.Errorf("malformed CSV at column %d: %w", pe.Column, pe.Err)
			p.stats.RowsRead++
		} else {
			line, _ = p.cr.FieldPos(0)
			if !p.seenData && p.headerLine(rec) {
				continue
			}
			p.seenData = true
			p.stats.RowsRead++
			var b replayBar
			b, err = p.parseRow(rec, line)
			if err == nil {
				p.prev, p.havePrv = b, true
				return b, nil
			}
		}
		rowErr := &ReplayRowError{Line: line, Err: err}
		if !p.skipBad {
			return replayBar{}, rowErr
		}
		p.stats.RowsSkipped++
		if len(p.stats.Skips) < replayMaxSkips {
			p.stats.Skips = append(p.stats.Skips, ReplaySkip{Line: line, Reason: err.Error()})
		}
	}
}

// headerLine reports whether rec is one of the extra header lines yfinance
// writes between the column names and the data, and learns the bar kind
// from its "Date" or "Datetime" line.
func (p *Replay) headerLine(rec []string) bool {
	if p.timeCol >= len(rec) {
		return false
	}
	switch l := replayLabel(rec[p.timeCol]); l {
	case "ticker", "price":
		return true
	case "date", "datetime":
		if p.mode == replayModeUnknown {
			p.timeName, p.mode = l, replayModeDaily
			if l == "datetime" {
				p.mode = replayModeIntraday
			}
		}
		return true
	}
	return false
}

func (p *Replay) parseRow(rec []string, line int) (replayBar, error) {
	if len(rec) < p.needCols {
		return replayBar{}, fmt.Errorf("has %d fields, want at least %d", len(rec), p.needCols)
	}
	b := replayBar{line: line, raw: strings.TrimSpace(rec[p.timeCol])}
	if err := p.parseTime(&b); err != nil {
		return replayBar{}, err
	}
	var cents [replayVolume]int64
	for f := range cents {
		c, err := replayParseCents(replayFieldNames[f], rec[p.cols[f]])
		if err != nil {
			return replayBar{}, err
		}
		cents[f] = c
	}
	b.open, b.high, b.low, b.close = cents[replayOpen], cents[replayHigh], cents[replayLow], cents[replayClose]
	raw := func(f int) string { return strings.TrimSpace(rec[p.cols[f]]) }
	// Compared in cents, the precision ticks carry, so that float noise in
	// adjusted yfinance exports (a high a millionth below the close) does
	// not reject a good bar.
	top, bottom := replayOpen, replayClose
	if b.close > b.open {
		top, bottom = replayClose, replayOpen
	}
	if b.high < cents[top] {
		return replayBar{}, fmt.Errorf("high %s is below %s %s", raw(replayHigh), replayFieldNames[top], raw(top))
	}
	if b.low > cents[bottom] {
		return replayBar{}, fmt.Errorf("low %s is above %s %s", raw(replayLow), replayFieldNames[bottom], raw(bottom))
	}
	v, err := replayParseVolume(rec[p.cols[replayVolume]])
	if err != nil {
		return replayBar{}, err
	}
	b.volume = v
	if p.havePrv && !b.start.After(p.prev.start) {
		return replayBar{}, fmt.Errorf("%s %s is not after %s on line %d", p.timeName, b.raw, p.prev.raw, p.prev.line)
	}
	return b, nil
}

// parseTime sets b.start from b.raw.
func (p *Replay) parseTime(b *replayBar) error {
	s := b.raw
	if replayMissing(s) {
		return fmt.Errorf("%s is missing (%s)", p.timeName, replayMissingWord(s))
	}
	bad := func() error {
		return fmt.Errorf("%s %q is not a date or time; want 2024-01-02, 2024-01-02 09:30:00 or 2024-01-02 09:30:00-05:00", p.timeName, s)
	}
	dateOnly := len(s) == len("2006-01-02")
	var t time.Time
	var err error
	if dateOnly {
		t, err = time.ParseInLocation(time.DateOnly, s, p.loc)
	} else {
		if len(s) > 10 && s[10] == 'T' {
			s = s[:10] + " " + s[11:]
		}
		t, err = time.Parse("2006-01-02 15:04:05Z07:00", s)
		if err != nil {
			t, err = time.ParseInLocation(time.DateTime, s, p.loc)
		}
		if err != nil {
			t, err = time.ParseInLocation("2006-01-02 15:04", s, p.loc)
		}
	}
	if err != nil {
		return bad()
	}
	if t.Nanosecond() != 0 {
		// Whole seconds keep every bar at least a second long, room
		// enough for its ticks at the microsecond precision of the wire.
		return fmt.Errorf("%s %q has fractional seconds; want whole seconds", p.timeName, b.raw)
	}
	// Far outside any market history, so surely garbled; the bound also
	// keeps every tick's year within the four digits of the wire format.
	if u := t.UTC(); u.Before(replayMinTime) || !u.Before(replayMaxTime) {
		return fmt.Errorf("%s %s is outside the years %d to %d", p.timeName, b.raw, replayMinTime.Year(), replayMaxTime.Year()-1)
	}
	if p.mode == replayModeUnknown {
		p.mode = replayModeIntraday
		if dateOnly {
			p.mode = replayModeDaily
		}
	}
	if p.mode == replayModeDaily {
		// The date as written: yfinance stamps daily bars with midnight
		// in the exchange's zone, e.g. 2024-01-02 00:00:00-05:00.
		y, m, d := t.Date()
		day := time.Date(y, m, d, 0, 0, 0, 0, p.ny)
		b.start = day.Add(replaySessionOpen).UTC()
		b.end = day.Add(replaySessionClose).UTC()
		return nil
	}
	b.start = t.UTC()
	return nil
}

func replayMissing(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "null", "nan", "none":
		return true
	}
	return false
}

func replayMissingWord(s string) string {
	if s = strings.TrimSpace(s); s == "" {
		return "empty"
	}
	return s
}

// replayParseCents parses a price and rounds it to cents.
func replayParseCents(name, s string) (int64, error) {
	s = strings.TrimSpace(s)
	if replayMissing(s) {
		return 0, fmt.Errorf("%s is missing (%s)", name, replayMissingWord(s))
	}
	v, err := strconv.ParseFloat(s, 64)
	switch {
	case err != nil || math.IsNaN(v):
		return 0, fmt.Errorf("%s %q is not a number", name, s)
	case math.IsInf(v, 0):
		return 0, fmt.Errorf("%s %s is not finite", name, s)
	case v <= 0:
		return 0, fmt.Errorf("%s %s is not positive", name, s)
	case v*100 > replayMaxCents:
		return 0, fmt.Errorf("%s %s is above the supported maximum of %d", name, s, replayMaxCents/100)
	}
	c := int64(math.Round(v * 100))
	if c < 1 {
		return 0, fmt.Errorf("%s %s rounds to zero cents", name, s)
	}
	return c, nil
}

// replayParseVolume parses a share count. pandas writes the volume column
// as floats ("82488700.0") when any row of it is missing, so whole floats
// are accepted too.
func replayParseVolume(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if replayMissing(s) {
		return 0, fmt.Errorf("volume is missing (%s)", replayMissingWord(s))
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		switch {
		case ferr != nil && errors.Is(err, strconv.ErrRange):
			return 0, fmt.Errorf("volume %s is too large", s)
		case ferr != nil || math.IsNaN(f):
			return 0, fmt.Errorf("volume %q is not a number", s)
		case math.IsInf(f, 0) || math.Abs(f) >= 1<<63:
			return 0, fmt.Errorf("volume %s is too large", s)
		case f != math.Trunc(f):
			return 0, fmt.Errorf("volume %s is not a whole number", s)
		}
		v = int64(f)
	}
	if v < 0 {
		return 0, fmt.Errorf("volume %s is negative", s)
	}
	if v > replayMaxVolume {
		return 0, fmt.Errorf("volume %s is above the supported maximum of %d", s, int64(replayMaxVolume))
	}
	return v, nil
}

// plan lays out b's ticks in p.ticks.
func (p *Replay) plan(b replayBar, span time.Duration) {
	if p.mode != replayModeDaily {
		b.end = b.start.Add(span)
	}
	p.bar = b
	p.stats.BarsUsed++
	rng := replayRand(replaySeed(b))

	// The path the bar's extremes imply, with repeats collapsed so that
	// e.g. an open at the low is not printed twice in a row.
	var pathBuf [4]int64
	path := pathBuf[:0]
	add := func(c int64) {
		if len(path) == 0 || path[len(path)-1] != c {
			path = append(path, c)
		}
	}
	add(b.open)
	if b.close >= b.open {
		add(b.low)
		add(b.high)
	} else {
		add(b.high)
		add(b.low)
	}
	add(b.close)

	// A few ticks between consecutive path points; a bar that never
	// moved gets them at its one price. Thin bars get fewer, so that every
	// tick can still be a round lot.
	nseg := max(len(path)-1, 1)
	var kBuf [3]int64
	k := kBuf[:nseg]
	total := int64(0)
	for j := range k {
		k[j] = 2 + int64(rng.intn(3))
		total += k[j]
	}
	budget := max(b.volume/100-int64(len(path)), 0)
	for j := nseg - 1; total > budget; j = (j + nseg - 1) % nseg {
		if k[j] > 0 {
			k[j]--
			total--
		}
	}

	prices := p.prices[:0]
	prices = append(prices, path[0])
	for j := range nseg {
		from, to := path[j], path[j]
		if j+1 < len(path) {
			to = path[j+1]
		}
		step := to - from
		amp := replayAbs(step) / (2 * (k[j] + 1))
		for i := int64(1); i <= k[j]; i++ {
			c := from + step*i/(k[j]+1)
			if amp > 0 {
				c += int64(rng.intn(uint64(2*amp+1))) - amp
			}
			prices = append(prices, min(max(c, b.low), b.high))
		}
		if j+1 < len(path) {
			prices = append(prices, to)
		}
	}
	p.prices = prices
	n := int64(len(prices))

	// Sizes: weighted shares of the volume, heavier at the open and close
	// as real sessions are.
	weights := p.weights[:0]
	for i := range n {
		w := 1 + rng.intn(8)
		if i == 0 || i == n-1 {
			w += 4
		}
		weights = append(weights, w)
	}
	p.weights = weights
	sizes := p.sizes[:0]
	switch {
	case b.volume < n:
		// Too thin to give every tick a share (Yahoo reports zero volume
		// for indices and some quiet bars). Such bars keep their price path
		// with size-1 ticks rather than being dropped, because a replay
		// with gaps in its prices is worse than one whose volume is a few
		// shares high; PaddedBars counts them.
		for range n {
			sizes = append(sizes, 1)
		}
		p.stats.PaddedBars++
	case b.volume >= 100*n:
		sizes = replaySplit(sizes, b.volume/100, weights)
		for i := range sizes {
			sizes[i] *= 100
		}
		sizes[rng.intn(uint64(n))] += b.volume % 100
	default:
		sizes = replaySplit(sizes, b.volume, weights)
	}
	p.sizes = sizes

	// Times: the open at the start of the bar, every other tick at a
	// jittered point in its own equal slot, so ticks strictly increase and
	// stay inside the bar. Bars last at least a second, so slots are at
	// least 1e6/16 microseconds.
	micros := int64(b.end.Sub(b.start) / time.Microsecond)
	slot := max(micros/n, 1)
	for i := range n {
		off := int64(0)
		if i > 0 {
			off = i*slot + int64(rng.intn(uint64(slot)))
		}
		p.ticks = append(p.ticks, replayTick{
			ts:    b.start.Add(time.Duration(off) * time.Microsecond),
			price: prices[i],
			size:  sizes[i],
		})
	}
}

// replaySplit appends len(weights) parts of units to dst, each at least 1,
// the rest shared in proportion to weights. units >= len(weights).
func replaySplit(dst []int64, units int64, weights []uint64) []int64 {
	n := int64(len(weights))
	rest := uint64(units - n)
	var wsum uint64
	for _, w := range weights {
		wsum += w
	}
	start := len(dst)
	given := uint64(0)
	for _, w := range weights {
		// rest*w/wsum without overflow: rest*w < 2^64*wsum since w <= wsum.
		hi, lo := bits.Mul64(rest, w)
		q, _ := bits.Div64(hi, lo, wsum)
		dst = append(dst, 1+int64(q))
		given += q
	}
	for i := 0; given < rest; i++ {
		dst[start+i]++
		given++
	}
	return dst
}

func replayAbs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// replayRand is a splitmix64 generator: tiny, fast and, seeded from the
// bar, makes each bar's ticks a pure function of the bar.
type replayRand uint64

func (r *replayRand) next() uint64 {
	*r += 0x9e3779b97f4a7c15
	z := uint64(*r)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// intn returns a number in [0, n); 0 when n is 0.
func (r *replayRand) intn(n uint64) uint64 {
	if n == 0 {
		return 0
	}
	return r.next() % n
}

func replaySeed(b replayBar) uint64 {
	r := replayRand(b.start.Unix())
	for _, v := range [...]int64{b.open, b.high, b.low, b.close, b.volume} {
		r ^= replayRand(v)
		r.next()
	}
	return r.next()
}
