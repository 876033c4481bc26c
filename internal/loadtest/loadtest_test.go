package loadtest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/loadtest"
	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestRunSmall(t *testing.T) {
	b, err := kafka.StartBroker("127.0.0.1:0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const count = 5_000
	rep, err := loadtest.Run(ctx, loadtest.Config{
		Count: count, Rate: 2000, BaselineRows: 200, Seed: 7,
		Kafka: kafka.Config{Brokers: b.Addrs()}, DatabaseURL: pgtest.New(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := rep.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())
	if _, err := json.Marshal(rep); err != nil {
		t.Fatalf("report does not encode: %v", err)
	}
	if rep.Produced != count || rep.Committed != count || rep.Stored != count {
		t.Errorf("produced %d, committed %d, stored %d; want %d each", rep.Produced, rep.Committed, rep.Stored, count)
	}
	if rep.CopyRows != count || rep.NaiveRows != 200 {
		t.Errorf("baselines wrote %d (COPY) and %d (naive) rows; want %d and 200", rep.CopyRows, rep.NaiveRows, count)
	}
	if rep.Throughput <= 0 || rep.CopyRate <= 0 || rep.NaiveRate <= 0 {
		t.Errorf("rates not all positive: pipeline %.0f, COPY %.0f, naive %.0f", rep.Throughput, rep.CopyRate, rep.NaiveRate)
	}
	if rep.CopyRate <= rep.NaiveRate {
		t.Errorf("COPY (%.0f rows/s) not faster than row by row (%.0f rows/s)", rep.CopyRate, rep.NaiveRate)
	}
	// Paced at 2,000 ticks/s, 5,000 ticks take about 2.5 s.
	if rep.Throughput > 2600 || rep.Throughput < 500 {
		t.Errorf("throughput %.0f ticks/s is implausible for a paced 2,000 ticks/s", rep.Throughput)
	}
	if rep.TickToCommit.Samples != count {
		t.Errorf("tick→commit samples %d, want %d", rep.TickToCommit.Samples, count)
	}
	if rep.TickToSSE.Samples == 0 {
		t.Error("no live-stream samples")
	}
	// A tick row is at least its 24-byte header, 60 bytes of fixed-size
	// columns and its line pointer, plus a primary-key entry.
	if rep.BytesPerTick < 100 || rep.BytesPerTick > 400 || rep.IndexBytesPerTick < 30 || rep.TicksBytes <= 0 {
		t.Errorf("stored size %.1f bytes per tick (%.1f of indexes, %d in all) is implausible",
			rep.BytesPerTick, rep.IndexBytesPerTick, rep.TicksBytes)
	}
	if len(rep.Targets) != 5 {
		t.Errorf("%d targets, want 5", len(rep.Targets))
	}
}

// TestRunSSEClients: with --sse-clients the report has the clients'
// events per second, within what the live rate allows, and the process's
// CPU while they were connected.
func TestRunSSEClients(t *testing.T) {
	b, err := kafka.StartBroker("127.0.0.1:0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const clients, rate, symbols = 5, 4, 30
	rep, err := loadtest.Run(ctx, loadtest.Config{
		Count: 4_000, Rate: 2000, BaselineRows: 100, Seed: 7, Symbols: symbols,
		LiveRate: rate, SSEClients: clients,
		Kafka: kafka.Config{Brokers: b.Addrs()}, DatabaseURL: pgtest.New(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := rep.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())
	l := rep.SSE
	if l == nil {
		t.Fatal("no SSE clients in the report")
	}
	if l.Clients != clients || l.LiveRate != rate || l.Path != loadtest.OverviewStream || l.Seconds <= 0 {
		t.Errorf("report %+v", *l)
	}
	// Prices and forming 1m candles at most rate per symbol per second
	// each, plus status, the finals and anomalies.
	if l.EventsPerSecondMean <= 0 || l.EventsPerSecondMax > 2*rate*symbols+60 || l.EventsPerSecondMean > l.EventsPerSecondMax {
		t.Errorf("events per client per second: mean %.1f, max %.1f", l.EventsPerSecondMean, l.EventsPerSecondMax)
	}
	if l.CPUPerSecond <= 0 || l.BytesPerSecondMean <= 0 {
		t.Errorf("CPU %.2f s/s, %.0f bytes/s", l.CPUPerSecond, l.BytesPerSecondMean)
	}
	j, err := json.Marshal(rep)
	if err != nil || !bytes.Contains(j, []byte(`"sse_clients":{"clients":5`)) {
		t.Errorf("JSON report %s: %v", j, err)
	}
}

// TestCompareSymbols: the ratio is the second run's throughput over the
// first's, and its target passes only at 0.8× or more, and only unpaced.
func TestCompareSymbols(t *testing.T) {
	for _, tc := range []struct {
		rate, first, second float64
		ratio               float64
		status              string
	}{
		{0, 100_000, 80_000, 0.8, "pass"},
		{0, 100_000, 56_000, 0.56, "fail"},
		{20_000, 20_000, 20_000, 1, "n/a"},
	} {
		r := loadtest.Report{Symbols: 30, Rate: tc.rate, Throughput: tc.first}
		n := len(r.Targets)
		r.CompareSymbols(&loadtest.Report{Symbols: 5000, Throughput: tc.second})
		if r.Scaling == nil || r.Scaling.Symbols != 5000 || math.Abs(r.Scaling.Ratio-tc.ratio) > 1e-9 {
			t.Fatalf("scaling %+v, want ratio %v at 5000 symbols", r.Scaling, tc.ratio)
		}
		if len(r.Targets) != n+1 || r.Targets[n].Status != tc.status {
			t.Fatalf("targets %+v, want a last one with status %s", r.Targets, tc.status)
		}
	}
}
