package indicator

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// ErrCorrupt is wrapped by every error Decode and UnmarshalBinary return: the
// bytes are not a state this package encoded, or not one of the expected type.
var ErrCorrupt = errors.New("indicator: corrupt state")

// stateVersion is the first byte after the type tag of every encoded state,
// so that a future layout change can still read snapshots written before it.
const stateVersion = 1

// Type tags open every encoded state, so that states composed into one blob
// in the wrong order fail loudly instead of restoring garbage.
const (
	tagSMA       = 'S'
	tagBollinger = 'B'
	tagEMA       = 'E'
	tagRSI       = 'R'
	tagVWAP      = 'V'
	tagSet       = 'T'
)

func appendHeader(dst []byte, tag byte) []byte {
	return append(dst, tag, stateVersion)
}

// appendF64 writes the IEEE 754 bits, so that a restored value is the same
// float64, NaN payloads and signed zeros included.
func appendF64(dst []byte, v float64) []byte {
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(v))
}

func appendU32(dst []byte, v int) []byte {
	return binary.LittleEndian.AppendUint32(dst, uint32(v))
}

func appendI64(dst []byte, v int64) []byte {
	return binary.LittleEndian.AppendUint64(dst, uint64(v))
}

// reader consumes an encoded state from the front of a buffer. The first
// problem sticks in err and makes every later read return zero, so decoders
// can read all fields and check err once.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
	}
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.fail("truncated")
		return nil
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) header(tag byte) {
	p := r.take(2)
	if p == nil {
		return
	}
	if p[0] != tag {
		r.fail("type tag %q, want %q", p[0], tag)
		return
	}
	if p[1] != stateVersion {
		r.fail("version %d, want %d", p[1], stateVersion)
	}
}

func (r *reader) f64() float64 {
	p := r.take(8)
	if p == nil {
		return 0
	}
	return math.Float64frombits(binary.LittleEndian.Uint64(p))
}

func (r *reader) u32() int {
	p := r.take(4)
	if p == nil {
		return 0
	}
	return int(binary.LittleEndian.Uint32(p))
}

func (r *reader) i64() int64 {
	p := r.take(8)
	if p == nil {
		return 0
	}
	return int64(binary.LittleEndian.Uint64(p))
}

// whole turns the result of a Decode into that of an UnmarshalBinary, which
// must consume all of b.
func whole(rest []byte, err error) error {
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(rest))
	}
	return nil
}
