package market

import (
	"testing"
	"time"
)

func TestRegularSession(t *testing.T) {
	for _, c := range []struct {
		at   string
		open bool
	}{
		{"2026-11-02T14:30:00Z", true},  // Monday 09:30 EST: the open
		{"2026-11-02T14:29:59Z", false}, // a second before
		{"2026-11-02T20:59:59Z", true},  // 15:59:59
		{"2026-11-02T21:00:00Z", false}, // 16:00: the close
		{"2026-07-06T13:30:00Z", true},  // 09:30 EDT in summer
		{"2026-11-07T15:00:00Z", false}, // Saturday
		{"2026-11-08T15:00:00Z", false}, // Sunday
	} {
		at, _ := time.Parse(time.RFC3339, c.at)
		if got := RegularSession(at); got != c.open {
			t.Errorf("RegularSession(%s) = %v, want %v", c.at, got, c.open)
		}
	}
}
