package web

import "testing"

func TestLowFree(t *testing.T) {
	for _, tc := range []struct {
		free, total int64
		low         bool
	}{
		{4e9, 1e12, true},    // under 5 GB, however large the disk
		{6e9, 50e9, false},   // 12% and over 5 GB
		{6e9, 100e9, true},   // 6%: under a tenth
		{10e9, 100e9, false}, // exactly a tenth is not below it
		{0, 0, true},
	} {
		if got := lowFree(tc.free, tc.total); got != tc.low {
			t.Errorf("lowFree(%d, %d) = %v, want %v", tc.free, tc.total, got, tc.low)
		}
	}
}

func TestRoundDropsNoiseNotDigits(t *testing.T) {
	noisy := 100.26
	for _, tc := range []struct{ in, want float64 }{
		{noisy - 100, 0.26},
		{270.10200000000003, 270.102},
		{0.009999999999990905, 0.01},
		{0.000123, 0.000123},
		{-1e-12, 0},
		{123456789.123456, 123456789.123456},
		{1e300, 1e300}, // too large to have decimals to round
	} {
		if got := round(tc.in); got != tc.want {
			t.Errorf("round(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if got := round(-1e-12); 1/got < 0 {
		t.Error("round(-1e-12) is -0")
	}
}
