package candle

import (
	"errors"

	"github.com/stockpipe/stockpipe/internal/snapshot"
)

// ErrCorrupt is wrapped by every error Decode and UnmarshalBinary return: the
// bytes are not a state this package encoded, or not one of the expected type.
var ErrCorrupt = errors.New("candle: corrupt state")

// stateVersion is the first byte after the type tag of every encoded state,
// so that a layout change can still read snapshots written before it.
// Version 2 added a Window's sealed flags; a Watermark's layout is the same
// in both.
const stateVersion = 2

// Type tags open every encoded state, so that states composed into one blob
// in the wrong order fail loudly instead of restoring garbage.
const (
	tagWindow    = 'W'
	tagWatermark = 'M'
)

// whole turns the result of a Decode into that of an UnmarshalBinary, which
// must consume all of b.
func whole(rest []byte, err error) error { return snapshot.Whole(rest, err, ErrCorrupt) }

// newReader reads a state of this package's layout version.
func newReader(b []byte) *snapshot.Reader { return snapshot.NewReader(b, ErrCorrupt, stateVersion) }
