package candle

import (
	"bytes"
	"errors"
	"math"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 2, 14, 30, 0, 0, time.UTC)

// at is t0 plus d, for readable tables.
func at(d time.Duration) time.Time { return t0.Add(d) }

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func mustWindow(t testing.TB, interval, lateness time.Duration) Window {
	t.Helper()
	w, err := NewWindow(interval, lateness)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestAlignment(t *testing.T) {
	for _, c := range []struct {
		interval time.Duration
		ts, want time.Time
	}{
		{time.Minute, at(0), at(0)},
		{time.Minute, at(ms(1)), at(0)},
		{time.Minute, at(time.Minute - time.Nanosecond), at(0)},
		{time.Minute, at(time.Minute), at(time.Minute)}, // on the boundary: next window
		{5 * time.Minute, at(4*time.Minute + 59*time.Second), at(0)},
		{5 * time.Minute, at(5 * time.Minute), at(5 * time.Minute)},
		{5 * time.Minute, at(7 * time.Minute), at(5 * time.Minute)},
		{5 * time.Minute, at(-time.Nanosecond), at(-5 * time.Minute)},
		{time.Hour, at(10 * time.Minute), at(-30 * time.Minute)},
		{7 * time.Second, time.Unix(20, 0), time.Unix(14, 0)}, // multiples of 7 s since the epoch
		{time.Second, time.Unix(5, 999_999_999), time.Unix(5, 0)},
		{250 * time.Millisecond, time.Unix(5, 600_000_000), time.Unix(5, 500_000_000)},
		{250 * time.Millisecond, time.Unix(5, 750_000_000), time.Unix(5, 750_000_000)},
		{time.Minute, time.Unix(-1, 0), time.Unix(-60, 0)},                                                       // before 1970: floor
		{time.Minute, time.Date(1, 1, 1, 0, 0, 30, 0, time.UTC), time.Time{}},                                    // the zero time's window
		{time.Minute, time.Date(2500, 1, 1, 0, 0, 59, 0, time.UTC), time.Date(2500, 1, 1, 0, 0, 0, 0, time.UTC)}, // past int64 nanoseconds
		{time.Minute, time.Date(2026, 3, 2, 9, 30, 15, 0, time.FixedZone("EST", -5*3600)), time.Date(2026, 3, 2, 14, 30, 0, 0, time.UTC)},
	} {
		w := mustWindow(t, c.interval, 0)
		got := w.Add(c.ts, 1, 10, 1).Bucket
		if got != c.want.UTC() {
			t.Errorf("%v window of %v = %v, want %v", c.interval, c.ts, got, c.want)
		}
	}
}

func TestEqualTimestampsOrderBySeq(t *testing.T) {
	w := mustWindow(t, time.Minute, 2*time.Second)
	ts := at(30 * time.Second)
	// Arrival order 5, 3, 7, 1, 6 at one instant: Open is seq 1, Close seq 7.
	for _, tk := range []struct {
		seq   int64
		price float64
	}{{5, 10.5}, {3, 10.3}, {7, 10.7}, {1, 10.1}, {6, 10.6}} {
		w.Add(ts, tk.seq, tk.price, 100)
	}
	c := w.Forming(nil)[0]
	if c.Open != 10.1 || c.OpenSeq != 1 || c.Close != 10.7 || c.CloseSeq != 7 || !c.OpenTS.Equal(ts) || !c.CloseTS.Equal(ts) {
		t.Fatalf("candle %+v: want Open 10.1 (seq 1), Close 10.7 (seq 7)", c)
	}
	// A later ts wins over a higher seq; an earlier ts over a lower one.
	w.Add(ts.Add(time.Nanosecond), 2, 11, 1)
	w.Add(ts.Add(-time.Nanosecond), 9, 9, 1)
	c = w.Forming(nil)[0]
	if c.Close != 11 || c.CloseSeq != 2 || c.Open != 9 || c.OpenSeq != 9 {
		t.Fatalf("candle %+v: want Open 9 (seq 9), Close 11 (seq 2)", c)
	}
	// A duplicate (ts, seq) keeps the first arrival's price.
	w.Add(ts.Add(time.Nanosecond), 2, 99, 1)
	if c := w.Forming(nil)[0]; c.Close != 11 {
		t.Fatalf("duplicate replaced Close: %v", c.Close)
	}
}

type tk struct {
	ts    time.Time
	seq   int64
	price float64
	size  int64
}

func TestOutOfOrderWithinLateness(t *testing.T) {
	for _, c := range []struct {
		name  string
		ticks []tk
		want  []Candle // final candles, Final and timestamps checked separately
	}{
		{
			name: "late tick after the boundary lands in the earlier window and sets its Close",
			ticks: []tk{
				{at(50 * time.Second), 1, 10, 100},
				{at(60*time.Second + ms(500)), 3, 12, 100}, // opens 14:31
				{at(59*time.Second + ms(900)), 2, 11, 50},  // 600 ms late: still 14:30
			},
			want: []Candle{
				{Bucket: at(0), Open: 10, High: 11, Low: 10, Close: 11, Volume: 150, Turnover: 1550, Trades: 2, OpenSeq: 1, CloseSeq: 2},
				{Bucket: at(time.Minute), Open: 12, High: 12, Low: 12, Close: 12, Volume: 100, Turnover: 1200, Trades: 1, OpenSeq: 3, CloseSeq: 3},
			},
		},
		{
			name: "late tick earlier in the window sets its Open, Low",
			ticks: []tk{
				{at(ms(1500)), 2, 10, 100},
				{at(ms(3000)), 3, 10.5, 100},
				{at(ms(1000)), 1, 9.5, 10}, // 2 s behind the max: exactly at the watermark, on time
			},
			want: []Candle{
				{Bucket: at(0), Open: 9.5, High: 10.5, Low: 9.5, Close: 10.5, Volume: 210, Turnover: 1000 + 1050 + 95, Trades: 3, OpenSeq: 1, CloseSeq: 3},
			},
		},
		{
			name: "gaps make no candles",
			ticks: []tk{
				{at(ms(1000)), 1, 10, 1},
				{at(3*time.Minute + ms(1000)), 2, 11, 2},
			},
			want: []Candle{
				{Bucket: at(0), Open: 10, High: 10, Low: 10, Close: 10, Volume: 1, Turnover: 10, Trades: 1, OpenSeq: 1, CloseSeq: 1},
				{Bucket: at(3 * time.Minute), Open: 11, High: 11, Low: 11, Close: 11, Volume: 2, Turnover: 22, Trades: 1, OpenSeq: 2, CloseSeq: 2},
			},
		},
		{
			name: "high and low from the middle of the window",
			ticks: []tk{
				{at(ms(100)), 1, 10, 1},
				{at(ms(200)), 2, 13, 2},
				{at(ms(300)), 3, 8, 3},
				{at(ms(400)), 4, 11, 4},
			},
			want: []Candle{
				{Bucket: at(0), Open: 10, High: 13, Low: 8, Close: 11, Volume: 10, Turnover: 10 + 26 + 24 + 44, Trades: 4, OpenSeq: 1, CloseSeq: 4},
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			wm, _ := NewWatermark(2 * time.Second)
			w := mustWindow(t, time.Minute, 2*time.Second)
			var got []Candle
			emit := func(c Candle) { got = append(got, c) }
			for _, k := range c.ticks {
				if wm.Late(k.ts) {
					t.Fatalf("tick %+v late", k)
				}
				wm.Observe(k.ts)
				if w.Add(k.ts, k.seq, k.price, k.size) == nil {
					t.Fatalf("tick %+v refused", k)
				}
				w.Advance(wm.Time(), emit)
			}
			w.Advance(at(time.Hour), emit) // the end of the stream
			if len(got) != len(c.want) {
				t.Fatalf("got %d candles, want %d: %+v", len(got), len(c.want), got)
			}
			for i, g := range got {
				wnt := c.want[i]
				if !g.Final {
					t.Errorf("candle %d not final", i)
				}
				g.Final, g.OpenTS, g.CloseTS = false, time.Time{}, time.Time{}
				if g != wnt {
					t.Errorf("candle %d = %+v\nwant %+v", i, g, wnt)
				}
			}
		})
	}
}

func TestCandleVWAPAndEnd(t *testing.T) {
	c := Candle{Bucket: at(0), Volume: 300, Turnover: 3030}
	if c.VWAP() != 10.1 {
		t.Errorf("VWAP = %v", c.VWAP())
	}
	if !c.End(5 * time.Minute).Equal(at(5 * time.Minute)) {
		t.Errorf("End = %v", c.End(5*time.Minute))
	}
	if v := (&Candle{}).VWAP(); !math.IsNaN(v) {
		t.Errorf("VWAP of no volume = %v, want NaN", v)
	}
}

func TestFinalisation(t *testing.T) {
	w := mustWindow(t, time.Minute, 2*time.Minute)
	for i, d := range []time.Duration{
		2*time.Minute + time.Second, // arrival order is not bucket order
		30 * time.Second,
		time.Minute + time.Second,
	} {
		if w.Add(at(d), int64(i), 10, 1) == nil {
			t.Fatal("refused")
		}
	}
	var got []time.Time
	emit := func(c Candle) {
		if !c.Final {
			t.Errorf("emitted %v not final", c.Bucket)
		}
		got = append(got, c.Bucket)
	}
	steps := []struct {
		watermark time.Time
		want      []time.Time // emitted by this step
	}{
		{at(time.Minute - time.Nanosecond), nil}, // just before the first end
		{at(time.Minute), []time.Time{at(0)}},    // exactly at it: final
		{at(time.Minute), nil},                   // again: nothing new
		{at(30 * time.Second), nil},              // backwards: nothing
		{at(10 * time.Minute), []time.Time{at(time.Minute), at(2 * time.Minute)}},
	}
	for i, s := range steps {
		got = got[:0]
		w.Advance(s.watermark, emit)
		if len(got) != len(s.want) {
			t.Fatalf("step %d: emitted %v, want %v", i, got, s.want)
		}
		for j := range got {
			if !got[j].Equal(s.want[j]) {
				t.Fatalf("step %d: emitted %v, want %v", i, got, s.want)
			}
		}
	}
	if w.Len() != 0 {
		t.Fatalf("%d candles left open", w.Len())
	}
	// The window of a finalised candle accepts nothing more.
	if c := w.Add(at(9*time.Minute+59*time.Second), 9, 10, 1); c != nil {
		t.Fatalf("tick into a finalised window accepted: %+v", c)
	}
	if c := w.Add(at(10*time.Minute), 10, 10, 1); c == nil {
		t.Fatal("tick into the next window refused")
	}
}

func TestAddRefusesBeyondCapacity(t *testing.T) {
	w := mustWindow(t, time.Second, 2*time.Second)
	for i := range MaxOpen {
		if w.Add(at(time.Duration(i)*time.Second), int64(i), 1, 1) == nil {
			t.Fatalf("tick %d refused", i)
		}
	}
	before := w
	if c := w.Add(at(MaxOpen*time.Second), 9, 1, 1); c != nil || w != before {
		t.Fatal("a fifth open window was accepted or changed the window")
	}
	// But a tick into an open one still lands.
	if c := w.Add(at(ms(1500)), 10, 2, 1); c == nil || c.Trades != 2 {
		t.Fatalf("tick into an open window: %+v", c)
	}
}

func TestLate(t *testing.T) {
	wm, err := NewWatermark(2 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if wm.Late(time.Time{}) || !wm.Time().IsZero() {
		t.Fatal("late before anything was observed")
	}
	if _, ok := wm.Max(); ok {
		t.Fatal("Max before Observe")
	}
	wm.Observe(at(10 * time.Second))
	for _, c := range []struct {
		ts   time.Time
		late bool
	}{
		{at(8 * time.Second), false}, // exactly at the watermark: on time
		{at(8*time.Second - time.Nanosecond), true},
		{at(8*time.Second + time.Nanosecond), false},
		{at(time.Minute), false}, // the future is never late
	} {
		if got := wm.Late(c.ts); got != c.late {
			t.Errorf("Late(%v) = %v, want %v (watermark %v)", c.ts, got, c.late, wm.Time())
		}
	}
	wm.Observe(at(5 * time.Second)) // an older tick does not move it back
	if !wm.Time().Equal(at(8 * time.Second)) {
		t.Fatalf("watermark %v after an older tick", wm.Time())
	}
	wm.Observe(at(31 * time.Second))
	if !wm.Time().Equal(at(29 * time.Second)) {
		t.Fatalf("watermark %v, want 29 s", wm.Time())
	}
	if m, _ := wm.Max(); !m.Equal(at(31 * time.Second)) {
		t.Fatalf("Max = %v", m)
	}
	wm.Observe(at(40 * time.Second))
	if !wm.Time().Equal(at(38 * time.Second)) {
		t.Fatalf("watermark %v, want 38 s", wm.Time())
	}
	var zero Watermark // no lateness
	zero.Observe(at(0))
	if zero.Late(at(0)) || !zero.Late(at(-time.Nanosecond)) {
		t.Fatal("zero-lateness boundary wrong")
	}
	if _, err := NewWatermark(-time.Second); err == nil {
		t.Fatal("negative lateness accepted")
	}
}

func TestNewWindowRejectsBadParameters(t *testing.T) {
	for _, c := range []struct {
		interval, lateness time.Duration
		ok                 bool
	}{
		{time.Minute, 2 * time.Second, true},
		{time.Second, 2 * time.Second, true},
		{time.Second, 2*time.Second + 1, false},
		{time.Minute, 2 * time.Minute, true},
		{time.Minute, 3 * time.Minute, false},
		{time.Minute, -1, false},
		{0, 0, false},
		{-time.Minute, 0, false},
		{1500 * time.Millisecond, 0, false},
		{300 * time.Millisecond, 0, false},
		{250 * time.Millisecond, 500 * time.Millisecond, true},
		{time.Nanosecond, 0, true},
		{7 * time.Second, 0, true},
	} {
		_, err := NewWindow(c.interval, c.lateness)
		if (err == nil) != c.ok {
			t.Errorf("NewWindow(%v, %v): err = %v, want ok %v", c.interval, c.lateness, err, c.ok)
		}
	}
	var zero Window
	if zero.Add(at(0), 1, 1, 1) != nil {
		t.Fatal("zero Window accepted a tick")
	}
	zero.Advance(at(time.Hour), func(Candle) { t.Fatal("zero Window emitted") })
}

// pipeline runs one symbol the way the package documentation shows, with a
// window per interval, and records what comes out.
type pipeline struct {
	wm    Watermark
	ws    []Window
	final [][]Candle
	late  int
}

func newPipeline(t testing.TB, lateness time.Duration, intervals ...time.Duration) *pipeline {
	p := &pipeline{final: make([][]Candle, len(intervals))}
	p.wm, _ = NewWatermark(lateness)
	for _, iv := range intervals {
		p.ws = append(p.ws, mustWindow(t, iv, lateness))
	}
	return p
}

// feed processes one tick and reports whether it was accepted.
func (p *pipeline) feed(t testing.TB, k tk) bool {
	if p.wm.Late(k.ts) {
		p.late++
		return false
	}
	p.wm.Observe(k.ts)
	for i := range p.ws {
		w := &p.ws[i]
		c := w.Add(k.ts, k.seq, k.price, k.size)
		if c == nil {
			t.Fatalf("%v window refused on-time tick %+v", w.Interval(), k)
		}
		// A sealed candle takes on-time ticks and stays final.
		if !c.Bucket.Equal(align(k.ts, w.Interval())) {
			t.Fatalf("tick %+v landed in %+v", k, c)
		}
		p.advance(t, i)
	}
	return true
}

func (p *pipeline) advance(t testing.TB, i int) {
	w := &p.ws[i]
	wmark := p.wm.Time()
	w.Advance(wmark, func(c Candle) {
		if c.End(w.Interval()).After(wmark) {
			t.Fatalf("candle %v final before the watermark %v passed its end", c.Bucket, wmark)
		}
		if n := len(p.final[i]); n > 0 && !p.final[i][n-1].Bucket.Before(c.Bucket) {
			t.Fatalf("candle %v emitted after %v", c.Bucket, p.final[i][n-1].Bucket)
		}
		p.final[i] = append(p.final[i], c)
	})
}

// seal seals every candle ending by to.
func (p *pipeline) seal(to time.Time) {
	for i := range p.ws {
		p.ws[i].Seal(to)
	}
}

// idle finalises every candle ending by to, as at the end of a stream.
func (p *pipeline) idle(t testing.TB, to time.Time) {
	for i := range p.ws {
		w := &p.ws[i]
		w.Advance(to, func(c Candle) { p.final[i] = append(p.final[i], c) })
	}
}

// snapshot composes the watermark and every window into one blob.
func (p *pipeline) snapshot(t testing.TB) []byte {
	b, err := p.wm.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range p.ws {
		if b, err = p.ws[i].AppendBinary(b); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// restore returns a pipeline with p's configuration whose state is read
// from blob, as after a crash.
func restore(t testing.TB, blob []byte, n int) *pipeline {
	q := &pipeline{ws: make([]Window, n), final: make([][]Candle, n)}
	rest, err := q.wm.Decode(blob)
	if err != nil {
		t.Fatal(err)
	}
	for i := range q.ws {
		if rest, err = q.ws[i].Decode(rest); err != nil {
			t.Fatal(err)
		}
	}
	if len(rest) != 0 {
		t.Fatalf("%d bytes left over", len(rest))
	}
	return q
}

func TestRoundTripMidStream(t *testing.T) {
	ticks := genTicks(42, 3000, time.Second, 2*time.Second)
	intervals := []time.Duration{time.Second, time.Minute, 5 * time.Minute}
	for _, cut := range []int{0, 1, 17, 500, 1499, 2999} {
		a := newPipeline(t, 2*time.Second, intervals...)
		for _, k := range ticks[:cut] {
			a.feed(t, k)
		}
		blob := a.snapshot(t)
		b := restore(t, blob, len(intervals))
		if b.wm != a.wm {
			t.Fatalf("cut %d: restored watermark %+v, want %+v", cut, b.wm, a.wm)
		}
		for i := range a.ws {
			if b.ws[i] != a.ws[i] {
				t.Fatalf("cut %d: restored %v window differs", cut, intervals[i])
			}
		}
		if again := b.snapshot(t); !bytes.Equal(again, blob) {
			t.Fatalf("cut %d: re-encoding differs", cut)
		}
		for i := range a.final {
			a.final[i] = a.final[i][:0]
		}
		for _, k := range ticks[cut:] {
			if a.feed(t, k) != b.feed(t, k) {
				t.Fatalf("cut %d: tick %+v accepted by one only", cut, k)
			}
		}
		end := ticks[len(ticks)-1].ts.Add(time.Hour)
		a.idle(t, end)
		b.idle(t, end)
		for i := range a.final {
			if len(a.final[i]) != len(b.final[i]) {
				t.Fatalf("cut %d, %v: %d candles after restore, %d uninterrupted", cut, intervals[i], len(b.final[i]), len(a.final[i]))
			}
			for j := range a.final[i] {
				if a.final[i][j] != b.final[i][j] {
					t.Fatalf("cut %d, %v candle %d: %+v after restore, %+v uninterrupted", cut, intervals[i], j, b.final[i][j], a.final[i][j])
				}
			}
		}
	}
}

func TestDecodeRejectsCorruptState(t *testing.T) {
	p := newPipeline(t, 2*time.Second, time.Second)
	for _, k := range genTicks(1, 50, time.Second, 2*time.Second) {
		p.feed(t, k)
	}
	if p.ws[0].Len() == 0 {
		t.Fatal("test wants open candles")
	}
	wb, _ := p.ws[0].MarshalBinary()
	mb, _ := p.wm.MarshalBinary()
	w, m := p.ws[0], p.wm
	for n := range len(wb) {
		if err := w.UnmarshalBinary(wb[:n]); !errors.Is(err, ErrCorrupt) || w != p.ws[0] {
			t.Fatalf("window, %d of %d bytes: err = %v", n, len(wb), err)
		}
	}
	for n := range len(mb) {
		if err := m.UnmarshalBinary(mb[:n]); !errors.Is(err, ErrCorrupt) || m != p.wm {
			t.Fatalf("watermark, %d of %d bytes: err = %v", n, len(mb), err)
		}
	}
	if err := w.UnmarshalBinary(append(bytes.Clone(wb), 0)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("trailing byte: %v", err)
	}
	if _, err := w.Decode(mb); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("window from a watermark state: %v", err)
	}
	// Flipped bytes never panic; a state that still decodes still works.
	for i := range wb {
		for _, x := range []byte{1, 0x80, 0xff} {
			b := bytes.Clone(wb)
			b[i] ^= x
			var v Window
			if v.UnmarshalBinary(b) == nil {
				v.Add(at(0), 1, 1, 1)
				v.Advance(at(time.Hour), nil)
			}
		}
	}
}

// TestSeal checks that sealing marks candles final in place: later trades
// its watermark accepts still land in them and amend them, they stay final,
// Advance closes them as usual, and a snapshot keeps the seal.
func TestSeal(t *testing.T) {
	wm, _ := NewWatermark(2 * time.Second)
	w := mustWindow(t, time.Minute, 2*time.Second)
	add := func(ts time.Duration, seq int64, price float64) *Candle {
		t.Helper()
		if wm.Late(at(ts)) {
			t.Fatalf("tick at %v late", ts)
		}
		wm.Observe(at(ts))
		c := w.Add(at(ts), seq, price, 10)
		if c == nil {
			t.Fatalf("tick at %v refused", ts)
		}
		return c
	}
	add(30*time.Second, 1, 10)
	if n := w.Seal(at(59 * time.Second)); n != 0 {
		t.Fatalf("sealed %d candles that end after the given time", n)
	}
	if n := w.Seal(at(time.Minute)); n != 1 {
		t.Fatalf("Seal at the candle's end sealed %d, want 1", n)
	}
	if n := w.Seal(at(time.Hour)); n != 0 {
		t.Fatalf("sealing again sealed %d", n)
	}
	forming := w.Forming(nil)
	if len(forming) != 1 || !forming[0].Final {
		t.Fatalf("after the seal: %+v", forming)
	}
	var v1 Window // the state as the previous layout wrote it: no seal
	blob, _ := w.MarshalBinary()
	var back Window
	if err := back.UnmarshalBinary(blob); err != nil || back != w {
		t.Fatalf("round trip of a sealed window: %v", err)
	}
	old := append([]byte{tagWindow, 1}, blob[2:len(blob)-1]...)
	if err := v1.UnmarshalBinary(old); err != nil || v1.Len() != 1 || v1.Forming(nil)[0].Final {
		t.Fatalf("a version 1 state: %v, %+v", err, v1.Forming(nil))
	}
	// A trade still on time by the symbol's own clock amends the candle.
	c := add(45*time.Second, 2, 12)
	if !c.Final || c.Trades != 2 || c.High != 12 || c.Close != 12 {
		t.Fatalf("amended sealed candle = %+v", c)
	}
	var closed []Candle
	add(62*time.Second, 3, 11)
	w.Advance(wm.Time(), func(c Candle) { closed = append(closed, c) })
	if len(closed) != 1 || !closed[0].Final || closed[0].Trades != 2 || w.Len() != 1 || w.Forming(nil)[0].Final {
		t.Fatalf("Advance after the seal closed %+v, left %+v", closed, w.Forming(nil))
	}
}
