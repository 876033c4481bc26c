package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	p := Policy{Initial: 50 * time.Millisecond, Max: time.Second}
	for n, want := range map[int]time.Duration{1: 50 * time.Millisecond, 2: 100 * time.Millisecond, 5: 800 * time.Millisecond, 6: time.Second, 60: time.Second} {
		if got := p.Delay(n); got != want {
			t.Errorf("Delay(%d) = %v, want %v", n, got, want)
		}
	}
}

func TestDo(t *testing.T) {
	p := Policy{Initial: time.Millisecond, Max: 2 * time.Millisecond}
	calls, retried := 0, 0
	err := p.Do(context.Background(), func() error {
		calls++
		if calls < 3 {
			return errors.New("away")
		}
		return nil
	}, nil, func(int, error, time.Duration) { retried++ })
	if err != nil || calls != 3 || retried != 2 {
		t.Fatalf("Do = %v after %d calls, %d retries", err, calls, retried)
	}
	final := errors.New("no such table")
	calls = 0
	err = p.Do(context.Background(), func() error { calls++; return final }, func(err error) bool { return !errors.Is(err, final) }, nil)
	if !errors.Is(err, final) || calls != 1 {
		t.Fatalf("a permanent error: %v after %d calls", err, calls)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	away := errors.New("away")
	if err := p.Do(ctx, func() error { return away }, nil, nil); !errors.Is(err, away) {
		t.Fatalf("after the context ended: %v, want the last error", err)
	}
}

func TestJitterStaysWithinItsSpread(t *testing.T) {
	p := Policy{Initial: 100 * time.Millisecond, Max: time.Second, Jitter: 0.5}
	seen := map[time.Duration]bool{}
	for range 200 {
		d := p.Delay(3) // 400 ms before jitter
		if d < 200*time.Millisecond || d > 400*time.Millisecond {
			t.Fatalf("Delay(3) = %v, want within [200ms, 400ms]", d)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Fatalf("200 delays took only %d values: no jitter", len(seen))
	}
}
