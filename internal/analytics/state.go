package analytics

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/stockpipe/stockpipe/internal/anomaly"
	"github.com/stockpipe/stockpipe/internal/market"
)

// stateVersion is bumped when the snapshot layout changes. Version 1 (which
// kept the partition's newest event time instead of its activity clock) is
// still read, so that an upgraded processor resumes from its predecessor's
// checkpoint; any other is refused rather than misread.
const stateVersion = 2

// ErrCorrupt is wrapped by Decode for a snapshot it cannot read.
var ErrCorrupt = errors.New("analytics: corrupt state snapshot")

// AppendBinary appends a snapshot of the partition's state to dst.
func (p *Partition) AppendBinary(dst []byte) ([]byte, error) {
	dst = append(dst, 'A', stateVersion)
	dst = binary.AppendVarint(dst, int64(p.clock))
	dst = binary.AppendVarint(dst, int64(p.nextScan))
	dst = binary.AppendUvarint(dst, uint64(len(p.order)))
	var err error
	for _, s := range p.order {
		dst = binary.AppendUvarint(dst, uint64(len(s.name)))
		dst = append(dst, s.name...)
		dst = binary.AppendVarint(dst, s.seen.max)
		for _, w := range s.seen.bits {
			dst = binary.LittleEndian.AppendUint64(dst, w)
		}
		dst = binary.AppendVarint(dst, int64(s.at))
		dst = appendTime(dst, s.sessionEnd)
		if dst, err = s.wm.AppendBinary(dst); err != nil {
			return nil, err
		}
		for i := range s.win {
			if dst, err = s.win[i].AppendBinary(dst); err != nil {
				return nil, err
			}
			if dst, err = s.ind[i].AppendBinary(dst); err != nil {
				return nil, err
			}
		}
		if dst, err = s.vwap.AppendBinary(dst); err != nil {
			return nil, err
		}
		if dst, err = s.det.AppendBinary(dst); err != nil {
			return nil, err
		}
	}
	return dst, nil
}

// Restore replaces the partition's state with a snapshot made by
// AppendBinary. On error the partition is left empty.
func (p *Partition) Restore(b []byte) error {
	p.reset()
	if len(b) == 0 {
		return nil
	}
	err := p.decode(b)
	if err != nil {
		p.reset()
	}
	return err
}

func (p *Partition) reset() {
	p.syms = make(map[string]*symbol)
	p.order, p.dirty = nil, nil
	p.clock, p.nextScan = 0, 0
}

func (p *Partition) decode(b []byte) error {
	if len(b) < 2 || b[0] != 'A' {
		return fmt.Errorf("%w: bad header", ErrCorrupt)
	}
	version := b[1]
	if version != 1 && version != stateVersion {
		return fmt.Errorf("%w: version %d, this build reads 1 to %d", ErrCorrupt, version, stateVersion)
	}
	r := reader{b: b[2:]}
	if version == 1 {
		// The newest event time and next idle scan of version 1 have no
		// counterpart: the activity clock starts again from 0.
		r.time()
		r.time()
	} else {
		p.clock = time.Duration(r.varint())
		p.nextScan = time.Duration(r.varint())
	}
	n := r.uvarint()
	if r.err != nil || n > uint64(len(r.b)) {
		return fmt.Errorf("%w: bad symbol count", ErrCorrupt)
	}
	for range n {
		l := r.uvarint()
		name := string(r.bytes(l))
		if r.err != nil || !market.ValidSymbol(name) {
			return fmt.Errorf("%w: bad symbol", ErrCorrupt)
		}
		s := newSymbol(name, &p.cfg)
		s.seen.max = r.varint()
		for i := range s.seen.bits {
			s.seen.bits[i] = r.u64()
		}
		if version == 1 {
			r.time() // the symbol's newest tick, which its watermark also holds
		} else {
			s.at = time.Duration(r.varint())
		}
		s.sessionEnd = r.time()
		if r.err != nil {
			return fmt.Errorf("%w: symbol %s: %w", ErrCorrupt, name, r.err)
		}
		steps := []func([]byte) ([]byte, error){s.wm.Decode}
		for i := range s.win {
			steps = append(steps, s.win[i].Decode, s.ind[i].Decode)
		}
		det := anomaly.NewDetector(p.cfg.Anomaly)
		steps = append(steps, s.vwap.Decode, det.Decode)
		rest := r.b
		for _, step := range steps {
			var err error
			if rest, err = step(rest); err != nil {
				return fmt.Errorf("%w: symbol %s: %w", ErrCorrupt, name, err)
			}
		}
		s.det = det
		r.b = rest
		if _, dup := p.syms[name]; dup {
			return fmt.Errorf("%w: symbol %s twice", ErrCorrupt, name)
		}
		p.syms[name] = s
		p.order = append(p.order, s)
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(r.b))
	}
	return nil
}

func appendTime(dst []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(dst, math.MinInt64)
	}
	return binary.AppendVarint(dst, t.UnixNano())
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = errors.New(what)
	}
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad uvarint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) u64() uint64 {
	if len(r.b) < 8 {
		r.fail("short")
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) bytes(n uint64) []byte {
	if n > uint64(len(r.b)) {
		r.fail("short")
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) time() time.Time {
	v := r.varint()
	if v == math.MinInt64 {
		return time.Time{}
	}
	return time.Unix(0, v).UTC()
}
