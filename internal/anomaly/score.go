package anomaly

import (
	"slices"
	"sort"
	"time"
)

// Labeled is one injected (ground-truth) or detected event, reduced to what
// scoring matches on.
type Labeled struct {
	Symbol string
	Kind   Kind
	TS     time.Time
}

// KindScore is detection quality for one kind.
type KindScore struct {
	Kind      Kind
	Truth     int // injected events
	Detected  int // detections
	Matched   int // detections matched one-to-one to an injected event
	Precision float64
	Recall    float64
}

// Score matches detections to ground truth one-to-one by symbol, kind and
// |ts difference| ≤ tolerance (each truth greedily taking the nearest free
// detection in time order) and returns precision and recall per kind that
// appears in truth, sorted by kind. Detections of kinds absent from truth
// are not scored: nothing says whether they were right.
func Score(truth, detected []Labeled, tolerance time.Duration) []KindScore {
	type key struct {
		sym  string
		kind Kind
	}
	det := make(map[key][]time.Time)
	for _, d := range detected {
		det[key{d.Symbol, d.Kind}] = append(det[key{d.Symbol, d.Kind}], d.TS)
	}
	for _, ts := range det {
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	}
	tru := make(map[key][]time.Time)
	for _, t := range truth {
		tru[key{t.Symbol, t.Kind}] = append(tru[key{t.Symbol, t.Kind}], t.TS)
	}
	scores := map[Kind]*KindScore{}
	for _, t := range truth {
		if scores[t.Kind] == nil {
			scores[t.Kind] = &KindScore{Kind: t.Kind}
		}
		scores[t.Kind].Truth++
	}
	for _, d := range detected {
		if s := scores[d.Kind]; s != nil {
			s.Detected++
		}
	}
	for k, ts := range tru {
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
		cands := det[k]
		used := make([]bool, len(cands))
		for _, t := range ts {
			best, bestGap := -1, tolerance+1
			for i, c := range cands {
				if used[i] {
					continue
				}
				gap := c.Sub(t)
				if gap < 0 {
					gap = -gap
				}
				if gap <= tolerance && gap < bestGap {
					best, bestGap = i, gap
				}
			}
			if best >= 0 {
				used[best] = true
				scores[k.kind].Matched++
			}
		}
	}
	out := make([]KindScore, 0, len(scores))
	for _, s := range scores {
		if s.Detected > 0 {
			s.Precision = float64(s.Matched) / float64(s.Detected)
		}
		if s.Truth > 0 {
			s.Recall = float64(s.Matched) / float64(s.Truth)
		}
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Kind < out[j].Kind })
	return out
}
