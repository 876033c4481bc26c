package indicator

import "testing"

// benchCloses is a realistic series: a large cap quoted in cents.
var benchCloses = walk(11, 1024, 180, 0.002, 0.01)

func BenchmarkSetPush(b *testing.B) {
	s := NewSet()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s.Push(benchCloses[i&1023])
		i++
	}
}

// BenchmarkSetPeek peeks at sets in each of the 20 phases of the 20-close
// ring, so that the one peek in 20 (and in 5, for SMA5) that recomputes the
// sums is weighed as often as it happens.
func BenchmarkSetPeek(b *testing.B) {
	var sets [20]Set
	for p := range sets {
		sets[p] = NewSet()
		for _, x := range benchCloses[:100+p] {
			sets[p].Push(x)
		}
	}
	b.ReportAllocs()
	var sink Values
	i := 0
	for b.Loop() {
		sink = sets[i%20].Peek(benchCloses[i&1023])
		i++
	}
	_ = sink
}

func BenchmarkSetAppendBinary(b *testing.B) {
	s := NewSet()
	for _, x := range benchCloses[:100] {
		s.Push(x)
	}
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = s.AppendBinary(buf[:0])
	}
	b.SetBytes(int64(len(buf)))
}
