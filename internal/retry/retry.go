// Package retry is stockpipe's one way to wait between attempts: named
// policies of capped exponential backoff, so that every loop that waits out
// a database or broker that is away behaves the same and is tuned in one
// place.
//
// It is written here rather than taken from a library because what stockpipe
// needs is a dozen lines — a delay per attempt and a wait that ends with its
// context — and every caller decides itself which errors are worth another
// attempt and what to log.
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy is a capped exponential backoff: the first wait is Initial, each
// next one twice the last, never more than Max.
type Policy struct {
	Name    string // what is being retried, for messages
	Initial time.Duration
	Max     time.Duration
	// Jitter spreads each delay at random over [d·(1−Jitter), d], so
	// many clients that lost the same server do not all return at once.
	Jitter float64
}

// The policies stockpipe uses.
var (
	// Commit: a batch's transaction, or a produce, while PostgreSQL or the
	// broker is away; the batch stays in hand and consumption pauses.
	Commit = Policy{Name: "commit", Initial: 50 * time.Millisecond, Max: 5 * time.Second}
	// Session: a consumer-group session that ended with an error.
	Session = Policy{Name: "consumer session", Initial: 100 * time.Millisecond, Max: 10 * time.Second}
	// Connect: reaching PostgreSQL at start: quick at first, for a server
	// starting next to us, then no more often than every 10 s, to stay
	// quiet in the server's log.
	Connect = Policy{Name: "database connection", Initial: 500 * time.Millisecond, Max: 10 * time.Second}
	// Listen: the web server's LISTEN connection for live updates.
	Listen = Policy{Name: "live updates", Initial: 100 * time.Millisecond, Max: 5 * time.Second}
	// Task: a scheduler task that failed and has attempts left.
	Task = Policy{Name: "task", Initial: time.Second, Max: 5 * time.Minute}
	// Feed: a market-data provider's stream that dropped; with jitter,
	// since every connector of a provider loses it at the same moment.
	Feed = Policy{Name: "market-data feed", Initial: 500 * time.Millisecond, Max: 30 * time.Second, Jitter: 0.5}
)

// Delay returns the wait before attempt n+1, after attempt n (n ≥ 1) failed.
func (p Policy) Delay(n int) time.Duration {
	d := p.Initial
	for i := 1; i < n && d < p.Max; i++ {
		d *= 2
	}
	d = min(d, p.Max)
	if p.Jitter > 0 {
		d -= time.Duration(rand.Float64() * p.Jitter * float64(d))
	}
	return d
}

// Wait waits the delay after attempt n, or until ctx ends, whose error it
// then returns.
func (p Policy) Wait(ctx context.Context, n int) error {
	t := time.NewTimer(p.Delay(n))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Do calls fn until it succeeds, ctx ends, or again reports that its error
// is not worth another attempt (nil again: every error is). Between
// attempts it waits as the policy says, and calls onRetry, if set, with the
// attempt that failed, its error and the wait ahead, for logging. It
// returns fn's last error, or ctx's if ctx ended first.
func (p Policy) Do(ctx context.Context, fn func() error, again func(error) bool, onRetry func(attempt int, err error, wait time.Duration)) error {
	for n := 1; ; n++ {
		err := fn()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || (again != nil && !again(err)) {
			return err
		}
		if onRetry != nil {
			onRetry(n, err, p.Delay(n))
		}
		if werr := p.Wait(ctx, n); werr != nil {
			return err
		}
	}
}
