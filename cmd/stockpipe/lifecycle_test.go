package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestOneFailingComponentStopsUp checks up's lifecycle: when one part fails
// — with an error, or by returning while it should run on — the failure is
// logged with the part's name, every other part is stopped, and up returns
// it; an interrupt stops everything without an error.
func TestOneFailingComponentStopsUp(t *testing.T) {
	for _, tc := range []struct {
		name string
		bad  func(rc *runCtx) error
		want string
	}{
		{"an error", func(*runCtx) error { return errors.New("address already in use") }, "dashboard: address already in use"},
		{"returning early", func(*runCtx) error { return nil }, "dashboard: stopped unexpectedly"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			rc := &runCtx{ctx: context.Background(), log: slog.New(slog.NewTextHandler(&logs, nil))}
			stopped := make(chan string, 2)
			runs := func(name string) component {
				return component{name, func(rc *runCtx) error {
					<-rc.ctx.Done()
					stopped <- name
					return nil
				}}
			}
			done := make(chan error, 1)
			go func() {
				done <- runComponents(rc, []component{runs("processor"), {"dashboard", tc.bad}, runs("scheduler")})
			}()
			select {
			case err := <-done:
				if err == nil || err.Error() != tc.want {
					t.Fatalf("runComponents = %v, want %q", err, tc.want)
				}
			case <-time.After(time.Minute):
				t.Fatal("one part failed and up went on running")
			}
			if len(stopped) != 2 {
				t.Fatalf("%d of the other parts stopped, want 2", len(stopped))
			}
			if !strings.Contains(logs.String(), "component=dashboard") {
				t.Fatalf("the failure was not logged with the part's name:\n%s", logs.String())
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	rc := &runCtx{ctx: ctx, log: slog.New(slog.DiscardHandler)}
	cancel()
	wait := func(rc *runCtx) error { <-rc.ctx.Done(); return rc.ctx.Err() }
	if err := runComponents(rc, []component{{"a", wait}, {"b", wait}}); err != nil {
		t.Fatalf("an interrupt: %v, want nil", err)
	}
}
