package web

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/store"
)

// TestFanOutCost measures what the live stream costs the server: a fixed,
// paced sequence of batch notifications (30 symbols, 25 batches a second,
// a tick event with 20 trades and 1m and 5m candles per symbol each) is
// delivered to 100 clients reading the overview's stream, and the process's
// CPU seconds per second and each client's events per second are logged.
// It is a measurement, not a check: run it with STOCKPIPE_FANOUT=1 (and
// STOCKPIPE_FANOUT_RATE for the live rate, default DefaultLiveRate).
func TestFanOutCost(t *testing.T) {
	if os.Getenv("STOCKPIPE_FANOUT") == "" {
		t.Skip("a measurement: set STOCKPIPE_FANOUT=1")
	}
	rate := DefaultLiveRate
	if v := os.Getenv("STOCKPIPE_FANOUT_RATE"); v != "" {
		rate, _ = strconv.Atoi(v)
	}
	const (
		clients  = 100
		symbols  = 30
		perSec   = 25
		duration = 10 * time.Second
	)
	payloads := fanOutPayloads(t, symbols, int(duration.Seconds())*perSec)
	s := &Server{hub: newHub(), log: slog.New(slog.DiscardHandler)}
	if rate > 0 {
		s.livePeriod = time.Second / time.Duration(rate)
	}
	srv := httptest.NewServer(http.HandlerFunc(s.apiStream))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var events, bytesRead [clients]atomic.Int64
	var ready sync.WaitGroup
	ready.Add(clients)
	tr := &http.Transport{MaxIdleConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	for i := range clients {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/api/stream?ticks=all&candles=1m&anomalies=1&status=1", nil)
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				ready.Done()
				return
			}
			defer resp.Body.Close()
			br := bufio.NewReaderSize(resp.Body, 64<<10)
			_, _ = br.ReadSlice('\n')
			ready.Done()
			for {
				line, err := br.ReadSlice('\n')
				bytesRead[i].Add(int64(len(line)))
				if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
					return
				}
				if bytes.HasPrefix(line, []byte("event: ")) {
					events[i].Add(1)
				}
			}
		}()
	}
	ready.Wait()
	for s.hub.count() < clients {
		time.Sleep(time.Millisecond)
	}
	cpu := func() float64 {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	}
	cpu0, t0 := cpu(), time.Now()
	tick := time.NewTicker(time.Second / perSec)
	for _, p := range payloads {
		<-tick.C
		if err := s.hub.deliver(p); err != nil {
			t.Fatal(err)
		}
	}
	tick.Stop()
	time.Sleep(500 * time.Millisecond) // the last pending updates
	cpu1, t1 := cpu(), time.Now()
	secs := t1.Sub(t0).Seconds()
	var sumE, maxE, sumB float64
	for i := range clients {
		e := float64(events[i].Load()) / secs
		sumE += e
		maxE = max(maxE, e)
		sumB += float64(bytesRead[i].Load()) / secs
	}
	t.Logf("live rate %d, %d clients, %d symbols, %d batches/s for %.1f s: events per client mean %.1f/s, max %.1f/s, %.1f KiB/s; process CPU %.3f s per second (clients included)",
		rate, clients, symbols, perSec, secs, sumE/clients, maxE, sumB/clients/1024, (cpu1-cpu0)/secs)
}

// fanOutPayloads makes n batch notifications of the given symbols, as the
// processor sends them.
func fanOutPayloads(t *testing.T, symbols, n int) []string {
	t.Helper()
	start := time.Now().UTC().Truncate(time.Minute)
	var out []string
	seq := int64(0)
	for round := range n {
		var events []store.Event
		add := func(kind, sym string, v any) { events = append(events, liveEvent(t, v)) }
		at := start.Add(time.Duration(round) * 40 * time.Millisecond)
		for i := range symbols {
			sym := fmt.Sprintf("S%04d", i)
			var trades []store.Trade
			for k := range 20 {
				seq++
				bid, ask := 99.99, 100.01
				trades = append(trades, store.Trade{TS: at.Add(-time.Duration(k) * time.Millisecond), Seq: seq, Price: 100 + float64(round%100)/100, Size: 100, Bid: &bid, Ask: &ask})
			}
			add("tick", sym, store.TickEvent{Symbol: sym, Price: trades[0].Price, TS: at.Format("2006-01-02T15:04:05.000000Z07:00"), Count: 20, Trades: trades})
		}
		for i := range symbols {
			sym := fmt.Sprintf("S%04d", i)
			for _, iv := range []struct {
				name string
				d    time.Duration
			}{{"1m", time.Minute}, {"5m", 5 * time.Minute}} {
				b := at.Truncate(iv.d)
				v := 100.0
				c := store.Candle{Symbol: sym, Interval: iv.name, T: b.Unix(), Bucket: b, Open: 100, High: 101, Low: 99, Close: 100, Volume: int64(round * 100), VWAP: &v, Trades: int64(round), SMA5: &v, SMA20: &v, EMA12: &v, EMA26: &v}
				if next := at.Add(40 * time.Millisecond); next.Truncate(iv.d) != b {
					c.Final = true
				}
				add("candle", sym, c)
			}
		}
		out = append(out, strings.Join(store.Encode(events), ""))
	}
	return out
}
