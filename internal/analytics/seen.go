package analytics

// seenBits is how many seqs behind the newest a symbol remembers. Ticks
// arrive out of order only within the lateness (2 s by default), so this
// covers a symbol trading 2,000 times a second.
const seenBits = 4096

// seenWindow remembers which of a symbol's most recent seqs have been
// accepted: the newest seq and a bitmap of the seenBits before it.
type seenWindow struct {
	max  int64 // 0 before the first
	bits [seenBits / 64]uint64
}

// has reports whether seq was accepted before, and whether it is recent
// enough to be tracked at all.
func (w *seenWindow) has(seq int64) (seen, inWindow bool) {
	if w.max == 0 || seq > w.max {
		return false, true
	}
	if w.max-seq >= seenBits {
		return false, false
	}
	return w.bits[(seq/64)%(seenBits/64)]&(1<<(seq%64)) != 0, true
}

func (w *seenWindow) add(seq int64) {
	if seq > w.max {
		// Clear the slots that now stand for seqs newer than the old max.
		if w.max == 0 || seq-w.max >= seenBits {
			w.bits = [seenBits / 64]uint64{}
		} else {
			for s := w.max + 1; s <= seq; s++ {
				if s%64 == 0 && seq-s >= 63 {
					w.bits[(s/64)%(seenBits/64)] = 0
					s += 63
					continue
				}
				w.bits[(s/64)%(seenBits/64)] &^= 1 << (s % 64)
			}
		}
		w.max = seq
	}
	w.bits[(seq/64)%(seenBits/64)] |= 1 << (seq % 64)
}
