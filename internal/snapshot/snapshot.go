// Package snapshot is the small binary codec of the stream's state
// snapshots: fixed-width little-endian fields, floats as their exact IEEE 754
// bits, times as Unix seconds and nanoseconds, and a type tag and version in
// front of every state. It exists so that a restored state is bit-identical
// to the one saved, which a text or reflective encoding would not promise.
package snapshot

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// AppendHeader writes a state's type tag and layout version.
func AppendHeader(dst []byte, tag, version byte) []byte { return append(dst, tag, version) }

// AppendF64 writes the IEEE 754 bits, so that a restored value is the same
// float64, NaN payloads and signed zeros included.
func AppendF64(dst []byte, v float64) []byte {
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(v))
}

// AppendU32 writes a small non-negative count.
func AppendU32(dst []byte, v int) []byte { return binary.LittleEndian.AppendUint32(dst, uint32(v)) }

// AppendI64 writes an int64.
func AppendI64(dst []byte, v int64) []byte { return binary.LittleEndian.AppendUint64(dst, uint64(v)) }

// AppendTime writes Unix seconds and nanoseconds rather than a nanosecond
// count, which would overflow outside the years 1678–2262 and cannot hold
// the zero time.
func AppendTime(dst []byte, t time.Time) []byte {
	dst = AppendI64(dst, t.Unix())
	return binary.LittleEndian.AppendUint32(dst, uint32(t.Nanosecond()))
}

// Reader consumes an encoded state from the front of a buffer. The first
// problem sticks in Err, wrapping the package's corruption error, and makes
// every later read return zero, so decoders read all fields and check Err
// once.
type Reader struct {
	B       []byte // what is left to read
	Err     error
	corrupt error
	version byte
}

// NewReader reads b; errors wrap corrupt; Header expects version.
func NewReader(b []byte, corrupt error, version byte) *Reader {
	return &Reader{B: b, corrupt: corrupt, version: version}
}

// Fail records a problem unless one is recorded already.
func (r *Reader) Fail(format string, args ...any) {
	if r.Err == nil {
		r.Err = fmt.Errorf("%w: "+format, append([]any{r.corrupt}, args...)...)
	}
}

// Take returns the next n bytes, or nil after a problem.
func (r *Reader) Take(n int) []byte {
	if r.Err != nil {
		return nil
	}
	if len(r.B) < n {
		r.Fail("truncated")
		return nil
	}
	p := r.B[:n]
	r.B = r.B[n:]
	return p
}

// Header checks the type tag and version.
func (r *Reader) Header(tag byte) {
	p := r.Take(2)
	if p == nil {
		return
	}
	if p[0] != tag {
		r.Fail("type tag %q, want %q", p[0], tag)
		return
	}
	if p[1] != r.version {
		r.Fail("version %d, want %d", p[1], r.version)
	}
}

// HeaderVersion checks the type tag and accepts any layout version from
// oldest to the reader's own, which it returns, for decoders that still
// read states an older build wrote.
func (r *Reader) HeaderVersion(tag, oldest byte) byte {
	p := r.Take(2)
	if p == nil {
		return 0
	}
	if p[0] != tag {
		r.Fail("type tag %q, want %q", p[0], tag)
		return 0
	}
	if p[1] < oldest || p[1] > r.version {
		r.Fail("version %d, want %d to %d", p[1], oldest, r.version)
		return 0
	}
	return p[1]
}

// Byte reads one byte.
func (r *Reader) Byte() byte {
	p := r.Take(1)
	if p == nil {
		return 0
	}
	return p[0]
}

// F64 reads a float64 written by AppendF64.
func (r *Reader) F64() float64 {
	p := r.Take(8)
	if p == nil {
		return 0
	}
	return math.Float64frombits(binary.LittleEndian.Uint64(p))
}

// U32 reads a count written by AppendU32.
func (r *Reader) U32() int {
	p := r.Take(4)
	if p == nil {
		return 0
	}
	return int(binary.LittleEndian.Uint32(p))
}

// I64 reads an int64.
func (r *Reader) I64() int64 {
	p := r.Take(8)
	if p == nil {
		return 0
	}
	return int64(binary.LittleEndian.Uint64(p))
}

// Time reads a time written by AppendTime, in UTC and without a monotonic
// reading, the form every stored time has, so that a restored state compares
// equal to the original.
func (r *Reader) Time() time.Time {
	sec := r.I64()
	p := r.Take(4)
	if p == nil {
		return time.Time{}
	}
	nsec := binary.LittleEndian.Uint32(p)
	if nsec >= 1e9 {
		r.Fail("nanoseconds %d", nsec)
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

// Whole turns the result of a Decode into that of an UnmarshalBinary, which
// must consume all of its input.
func Whole(rest []byte, err, corrupt error) error {
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", corrupt, len(rest))
	}
	return nil
}
