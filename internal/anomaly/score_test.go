package anomaly

import (
	"testing"
	"time"
)

func TestScore(t *testing.T) {
	at := func(s int) time.Time { return time.Date(2026, 11, 2, 15, 0, s, 0, time.UTC) }
	truth := []Labeled{
		{"AAPL", KindPriceJump, at(10)},
		{"AAPL", KindPriceJump, at(40)},
		{"MSFT", KindPriceJump, at(10)},
		{"AAPL", KindVolumeBurst, at(20)},
	}
	detected := []Labeled{
		{"AAPL", KindPriceJump, at(11)},   // matches at(10)
		{"AAPL", KindPriceJump, at(12)},   // second detection of the same event: a false positive
		{"AAPL", KindPriceJump, at(45)},   // outside the 2 s tolerance of at(40)
		{"MSFT", KindVolumeBurst, at(10)}, // wrong kind for MSFT's truth
		{"AAPL", KindVolumeBurst, at(19)}, // matches
		{"AAPL", KindStale, at(30)},       // kind not in truth: not scored
	}
	got := Score(truth, detected, 2*time.Second)
	want := []KindScore{
		{Kind: KindPriceJump, Truth: 3, Detected: 3, Matched: 1, Precision: 1.0 / 3, Recall: 1.0 / 3},
		{Kind: KindVolumeBurst, Truth: 1, Detected: 2, Matched: 1, Precision: 0.5, Recall: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d kinds, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("kind %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}
