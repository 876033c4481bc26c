package stream_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/store"
	"github.com/stockpipe/stockpipe/internal/stream"
)

// TestBrokerRefusedSessionTimeout starts a processor with a session
// timeout the broker does not allow: Run returns at once with one line
// naming the allowed range, instead of retrying for ever.
func TestBrokerRefusedSessionTimeout(t *testing.T) {
	e := newEnv(t)
	p, err := stream.New(stream.Config{Kafka: e.kcfg, SessionTimeout: 3 * time.Second, Logger: e.log}, store.NewSink(e.pool))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	began := time.Now()
	err = p.Run(ctx)
	if err == nil || ctx.Err() != nil {
		t.Fatalf("Run = %v after %v, want a configuration error before the deadline", err, time.Since(began))
	}
	msg := err.Error()
	if !strings.Contains(msg, "--session-timeout 3s") || !strings.Contains(msg, "range") || strings.Contains(msg, "\n") {
		t.Fatalf("error %q: want one line naming the flag and the allowed range", msg)
	}
	t.Log(msg)
}
