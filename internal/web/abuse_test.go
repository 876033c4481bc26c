package web_test

import (
	"bufio"
	"context"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/analytics"
	"github.com/stockpipe/stockpipe/internal/candle"
	"github.com/stockpipe/stockpipe/internal/store"
)

// TestThousandStreamClients connects 1,000 event-stream clients at once,
// commits a batch, checks every client receives it, disconnects them all,
// and checks the server's goroutines return to where they were.
func TestThousandStreamClients(t *testing.T) {
	f := newFixture(t)
	tr := &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: 10}
	client := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	settle := func() int {
		// Goroutines of closed connections take a moment to exit; wait
		// until the count stops falling.
		n := runtime.NumGoroutine()
		for range 50 {
			time.Sleep(20 * time.Millisecond)
			m := runtime.NumGoroutine()
			if m >= n {
				return m
			}
			n = m
		}
		return n
	}
	before := settle()

	const clients = 1000
	ctx, cancel := context.WithCancel(context.Background())
	var ready, got sync.WaitGroup
	ready.Add(clients)
	got.Add(clients)
	errs := make(chan error, clients)
	for range clients {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", f.srv.URL+"/api/stream?symbol=AAPL", nil)
			resp, err := client.Do(req)
			if err != nil {
				errs <- err
				ready.Done()
				got.Done()
				return
			}
			defer resp.Body.Close()
			r := bufio.NewReader(resp.Body)
			_, _ = r.ReadString('\n') // retry:, sent once subscribed
			ready.Done()
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					errs <- err
					got.Done()
					return
				}
				if strings.HasPrefix(line, "event: candle") {
					got.Done()
					<-ctx.Done()
					return
				}
			}
		}()
	}
	ready.Wait()
	c := candle.Candle{Bucket: day.Add(5 * time.Minute), Open: 1, High: 1, Low: 1, Close: 1, Volume: 1, Turnover: 1, Trades: 1}
	f.commit(t, &store.Batch{Group: "g", Topic: "ticks", Candles: []analytics.CandleRow{{Symbol: "AAPL", Interval: "1m", Candle: c}}})
	done := make(chan struct{})
	go func() { got.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("not every client received the candle within 30 s")
	}
	cancel()
	close(errs)
	for err := range errs {
		if !strings.Contains(err.Error(), "context canceled") {
			t.Errorf("client: %v", err)
		}
	}
	tr.CloseIdleConnections()
	after := settle()
	if after > before+20 {
		t.Errorf("goroutines: %d before the clients, %d after they left", before, after)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("goroutines before %d, after %d; heap in use %d MiB", before, after, ms.HeapInuse>>20)
}
