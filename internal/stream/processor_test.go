package stream_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/fixture"
	"github.com/stockpipe/stockpipe/internal/generate"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
	"github.com/stockpipe/stockpipe/internal/store"
	"github.com/stockpipe/stockpipe/internal/stream"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// env is one test's broker and database.
type env struct {
	t    *testing.T
	kcfg kafka.Config
	pool *pgxpool.Pool
	log  *slog.Logger
}

func newEnv(t *testing.T) *env {
	t.Helper()
	_, kcfg := fixture.Broker(t, "", 6)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return &env{t: t, kcfg: kcfg, pool: fixture.DB(t, 8), log: log}
}

// withNewDatabase returns an env on the same broker with a fresh database.
func (e *env) withNewDatabase() *env {
	e.t.Helper()
	return &env{t: e.t, kcfg: e.kcfg, pool: fixture.DB(e.t, 8), log: e.log}
}

// simStart is a fixed simulated start in the past, so no tick is ever in the
// future whatever day the test runs.
var simStart = time.Date(2026, 11, 2, 14, 30, 0, 0, time.UTC)

// produce runs the simulator into the ticks topic and returns its stats.
func (e *env) produce(cfg generate.SimConfig) generate.SimStats {
	e.t.Helper()
	sim, err := generate.NewSimulator(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	p, err := kafka.NewProducer(e.kcfg, kafka.TopicTicks)
	if err != nil {
		e.t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	if _, err := generate.Run(ctx, sim, generate.Pace{}, func(ctx context.Context, r generate.Record) error {
		return p.Send(ctx, r.Key, r.Value)
	}); err != nil {
		e.t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		e.t.Fatal(err)
	}
	return sim.Stats()
}

// processor runs a processor in the background until the returned stop is
// called; stop waits for it to drain and returns its stats.
func (e *env) processor(group string) (stop func() stream.Stats) {
	ctx, cancel := context.WithCancel(context.Background())
	p, err := stream.New(stream.Config{Kafka: e.kcfg, Group: group, Logger: e.log}, store.NewSink(e.pool))
	if err != nil {
		e.t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { err = p.Run(ctx) })
	return func() stream.Stats {
		cancel()
		wg.Wait()
		if err != nil {
			e.t.Errorf("processor: %v", err)
		}
		return p.Stats()
	}
}

func (e *env) count(query string, args ...any) int64 {
	e.t.Helper()
	var n int64
	if err := e.pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	return n
}

// waitFor polls cond until it holds, failing the test after timeout.
func (e *env) waitFor(what string, timeout time.Duration, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// committed returns the records the group has committed in PostgreSQL.
func (e *env) committed(group string) int64 {
	return e.count(`SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE group_id = $1 AND topic = 'ticks'`, group)
}

func (e *env) checkStored(st generate.SimStats) {
	e.t.Helper()
	// Late ticks (held back ≥ 10 s by the simulator, beyond the 2 s
	// lateness) are rejected, not stored.
	if got, want := e.count(`SELECT count(*) FROM ticks`), st.Valid-st.Late; got != want {
		e.t.Errorf("ticks rows = %d, want %d (valid unique ticks generated minus the late)", got, want)
	}
	// A resend of a late tick is late again: nothing of it is stored.
	late := st.Late + st.LateDuplicates
	wantRejected := st.Malformed + st.Invalid + late
	if got := e.count(`SELECT count(*) FROM rejected_ticks`); got != wantRejected {
		e.t.Errorf("rejected_ticks rows = %d, want %d (malformed %d + invalid %d + late %d + late resends %d)",
			got, wantRejected, st.Malformed, st.Invalid, st.Late, st.LateDuplicates)
	}
	if got := e.count(`SELECT count(*) FROM rejected_ticks WHERE reason = 'late'`); got != late {
		e.t.Errorf("rejected as late = %d, want %d (%d late and %d resends of late ones)", got, late, st.Late, st.LateDuplicates)
	}
	if got := e.count(`SELECT count(*) FROM rejected_ticks WHERE reason = '' OR detail = ''`); got != 0 {
		e.t.Errorf("%d rejected rows without a reason", got)
	}
	// Every symbol's seqs 1..max are either stored or rejected as late
	// (a late one perhaps twice, resent): nothing lost, nothing stored
	// and rejected both.
	if got := e.count(`
		WITH s AS (
			SELECT symbol, seq FROM ticks
			UNION ALL
			SELECT convert_from(key, 'UTF8'), (convert_from(raw, 'UTF8')::json->>'seq')::bigint
			FROM rejected_ticks WHERE reason = 'late')
		SELECT count(*) FROM (SELECT symbol FROM s GROUP BY symbol HAVING max(seq) <> count(DISTINCT seq)) x`); got != 0 {
		e.t.Errorf("%d symbols have seqs neither stored nor rejected as late", got)
	}
	if got := e.count(`SELECT count(*) FROM ticks t JOIN rejected_ticks r ON r.reason = 'late'
		AND convert_from(r.key, 'UTF8') = t.symbol AND (convert_from(r.raw, 'UTF8')::json->>'seq')::bigint = t.seq`); got != 0 {
		e.t.Errorf("%d ticks both stored and rejected as late", got)
	}
	// The dead-letter topic holds one record per rejection.
	cl, err := kgo.NewClient(e.kcfg.Opts()...)
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), kafka.TopicDLQ)
	if err != nil {
		e.t.Fatal(err)
	}
	var dlq int64
	ends.Each(func(o kadm.ListedOffset) { dlq += o.Offset })
	if dlq < wantRejected {
		e.t.Errorf("dead-letter topic has %d records, want at least %d", dlq, wantRejected)
	}
}

func TestExactlyOnceWithFaults(t *testing.T) {
	e := newEnv(t)
	st := e.produce(generate.SimConfig{
		Symbols: generate.DefaultUniverse(), Rate: 2000, Count: 100_000, Seed: 7,
		Start: simStart, Faults: 0.05,
	})
	if st.Malformed == 0 || st.Invalid == 0 || st.Duplicates == 0 {
		t.Fatalf("simulator injected no faults of some kind: %+v", st)
	}
	stop := e.processor("g1")
	e.waitFor("all records committed", 2*time.Minute, func() bool { return e.committed("g1") == st.Records })
	ps := stop()
	t.Logf("simulator %+v; processor %+v", st, ps)
	e.checkStored(st)
	if want := st.Duplicates - st.LateDuplicates; ps.Duplicates != want {
		t.Errorf("processor counted %d duplicates, simulator injected %d (and %d resends of late ticks, late again)", ps.Duplicates, want, st.LateDuplicates)
	}
}

func TestRestartMidStream(t *testing.T) {
	e := newEnv(t)
	st := e.produce(generate.SimConfig{
		Symbols: generate.DefaultUniverse(), Rate: 2000, Count: 60_000, Seed: 11,
		Start: simStart, Faults: 0.03,
	})
	// Stop the processor three times part-way, then let a last one finish.
	for i, frac := range []float64{0.2, 0.5, 0.8} {
		stop := e.processor("g1")
		target := int64(frac * float64(st.Records))
		e.waitFor(fmt.Sprintf("run %d to pass %d records", i, target), time.Minute, func() bool { return e.committed("g1") >= target })
		stop()
	}
	stop := e.processor("g1")
	e.waitFor("all records committed", time.Minute, func() bool { return e.committed("g1") == st.Records })
	stop()
	e.checkStored(st)
}

func TestTwoProcessorsShareAndHandOver(t *testing.T) {
	e := newEnv(t)
	st := e.produce(generate.SimConfig{
		Symbols: generate.DefaultUniverse(), Rate: 2000, Count: 60_000, Seed: 3,
		Start: simStart, Faults: 0.02,
	})
	stopA := e.processor("g1")
	stopB := e.processor("g1")
	e.waitFor("half the records", time.Minute, func() bool { return e.committed("g1") >= st.Records/2 })
	stopA() // B takes A's partitions over and resumes from PostgreSQL
	e.waitFor("all records committed", time.Minute, func() bool { return e.committed("g1") == st.Records })
	stopB()
	e.checkStored(st)
}
