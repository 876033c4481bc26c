package loadtest_test

import (
	"bytes"
	"context"
	"encoding/json"
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
	if len(rep.Targets) != 4 {
		t.Errorf("%d targets, want 4", len(rep.Targets))
	}
}
