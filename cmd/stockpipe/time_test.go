package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
)

// TestTimeIsolationEndToEnd mixes clocks in one topic, each source its own
// process or client: a live generator in real time; meanwhile a raw Kafka
// client sends one tick 45 s in the future (inside --max-future) for each of
// a dozen new symbols, and `replay` sends years of daily bars as a new
// symbol. No live tick may be rejected as late, each live symbol's stored
// seqs must have no gaps, and every replayed tick and every tick from the
// future must be stored.
func TestTimeIsolationEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts several processes")
	}
	addr := freeAddr(t)
	dbURL := pgtest.New(t)
	pool := openPool(t, dbURL)
	broker := launchBroker(t, addr, t.TempDir())
	proc := start(t, "process", "--brokers", addr, "--database-url", dbURL)

	live := []string{"AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "JPM", "XOM", "ADBE", "KO", "PEP", "WMT"}
	gen := start(t, "generate", "--brokers", addr, "--symbols", strings.Join(live, ","), "--rate", "400",
		"--count", "4000", "--seed", "7", "--resume=false")

	// While it runs: one tick 45 s ahead for each of a dozen new symbols.
	waitFor(t, "the live generator's first ticks", time.Minute, func() bool { return committedIn(pool, "stockpipe") > 200 })
	cfg := kafka.Config{Brokers: []string{addr}, ClientID: "time-test"}
	prod, err := kafka.NewProducer(cfg, kafka.TopicTicks)
	if err != nil {
		t.Fatal(err)
	}
	var future []string
	for i := range 12 {
		sym := fmt.Sprintf("FUT%02d", i)
		future = append(future, sym)
		tk := market.Tick{Symbol: sym, TS: time.Now().UTC().Add(45 * time.Second).Truncate(time.Microsecond), Seq: 1,
			Price: 50, Size: 100, Bid: 49.99, Ask: 50.01}
		if err := prod.Send(context.Background(), []byte(sym), tk.AppendJSON(nil)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	prod.Close()

	// And five years of daily bars for a symbol of its own.
	csv := filepath.Join(t.TempDir(), "hist.csv")
	bars := writeDailyCSV(t, csv, time.Date(2019, 1, 2, 0, 0, 0, 0, time.UTC), 5)
	rp := start(t, "replay", "--brokers", addr, "--file", csv, "--symbol", "HIST")
	rp.wait(t)
	m := regexp.MustCompile(`replayed .* as HIST: (\d+) ticks from (\d+) bars`).FindStringSubmatch(rp.out.String())
	if m == nil {
		t.Fatalf("replay printed no summary:\n%s", rp.out)
	}
	replayed, _ := strconv.ParseInt(m[1], 10, 64)
	if used, _ := strconv.Atoi(m[2]); used != bars {
		t.Fatalf("replay used %d of %d bars", used, bars)
	}

	waitFor(t, "the live generator to finish", 2*time.Minute, gen.exited)
	gen.wait(t)
	sent := parseGenerated(t, gen.out.String())
	total := sent.records + int64(len(future)) + replayed
	waitFor(t, fmt.Sprintf("all %d records committed", total), 2*time.Minute, func() bool { return committedIn(pool, "stockpipe") >= total })

	if n := scalar(t, pool, `SELECT count(*) FROM rejected_ticks WHERE reason = 'late'`); n != 0 {
		t.Errorf("%d ticks rejected as late, want 0", n)
	}
	var storedLive int64
	for _, sym := range live {
		var n, lo, hi int64
		if err := pool.QueryRow(context.Background(), `SELECT count(*), coalesce(min(seq), 0), coalesce(max(seq), 0) FROM ticks WHERE symbol = $1`, sym).Scan(&n, &lo, &hi); err != nil {
			t.Fatal(err)
		}
		if n == 0 || lo != 1 || hi != n {
			t.Errorf("%s: %d ticks stored, seqs %d..%d: want 1..%d with no gap", sym, n, lo, hi, n)
		}
		storedLive += n
	}
	if storedLive != sent.valid {
		t.Errorf("live ticks stored %d, sent %d", storedLive, sent.valid)
	}
	if n := scalar(t, pool, `SELECT count(*) FROM ticks WHERE symbol = 'HIST'`); n != replayed {
		t.Errorf("replayed ticks stored %d, sent %d", n, replayed)
	}
	if n := scalar(t, pool, `SELECT count(*) FROM ticks WHERE symbol LIKE 'FUT%'`); n != int64(len(future)) {
		t.Errorf("ticks from the future stored %d, sent %d", n, len(future))
	}
	if n := scalar(t, pool, `SELECT count(*) FROM anomalies WHERE kind = 'seq_gap' AND symbol = ANY(ARRAY['`+strings.Join(live, "','")+`'])`); n != 0 {
		t.Errorf("%d seq_gap alerts on live symbols that lost nothing", n)
	}
	summary := fmt.Sprintf("time isolation: live ticks stored %d / sent %d, late rejections %d; replayed ticks stored %d / sent %d (%d bars); future ticks stored %d / sent %d",
		storedLive, sent.valid, scalar(t, pool, `SELECT count(*) FROM rejected_ticks WHERE reason = 'late'`),
		scalar(t, pool, `SELECT count(*) FROM ticks WHERE symbol = 'HIST'`), replayed, bars,
		scalar(t, pool, `SELECT count(*) FROM ticks WHERE symbol LIKE 'FUT%'`), len(future))
	t.Log(summary)
	fmt.Println(summary)

	proc.signal(t, syscall.SIGTERM)
	proc.wait(t)
	broker.signal(t, syscall.SIGTERM)
	broker.wait(t)
}

// TestNoStaleStormAfterAGap stops the feed and the processor, and starts
// them again two minutes of event time later: symbols that resume ticking
// are not stale, while one that stays silent as the others tick on is,
// once.
func TestNoStaleStormAfterAGap(t *testing.T) {
	if testing.Short() {
		t.Skip("starts several processes")
	}
	addr := freeAddr(t)
	dbURL := pgtest.New(t)
	pool := openPool(t, dbURL)
	broker := launchBroker(t, addr, t.TempDir())
	syms := []string{"AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "JPM", "XOM", "KO", "PEP", "WMT", "ADBE"}
	from := time.Now().UTC().Add(-20 * time.Minute).Truncate(time.Second)

	// A minute of event time, the processor then stopped.
	proc := start(t, "process", "--brokers", addr, "--database-url", dbURL)
	g1 := start(t, "generate", "--brokers", addr, "--symbols", strings.Join(syms, ","), "--rate", "60", "--count", "3600",
		"--seed", "3", "--start", from.Format(time.RFC3339), "--speed", "0", "--resume=false")
	g1.wait(t)
	first := parseGenerated(t, g1.out.String())
	waitFor(t, "the first run committed", 2*time.Minute, func() bool { return committedIn(pool, "stockpipe") >= first.records })
	proc.signal(t, syscall.SIGTERM)
	proc.wait(t)

	// Two minutes later all but ADBE resume, for another minute.
	resumed := syms[:len(syms)-1]
	proc = start(t, "process", "--brokers", addr, "--database-url", dbURL)
	g2 := start(t, "generate", "--brokers", addr, "--symbols", strings.Join(resumed, ","), "--rate", "55", "--count", "3300",
		"--seed", "4", "--start", from.Add(3*time.Minute).Format(time.RFC3339), "--speed", "0")
	g2.wait(t)
	second := parseGenerated(t, g2.out.String())
	waitFor(t, "the second run committed", 2*time.Minute, func() bool {
		return committedIn(pool, "stockpipe") >= first.records+second.records
	})
	stale := staleBySymbol(t, pool)
	for _, s := range resumed {
		if stale[s] != 0 {
			t.Errorf("%s resumed with the feed and got %d stale alerts", s, stale[s])
		}
	}
	if stale["ADBE"] != 1 {
		t.Errorf("ADBE stayed silent for a minute of the others' ticking: %d stale alerts, want 1 (all: %v)", stale["ADBE"], stale)
	}
	proc.signal(t, syscall.SIGTERM)
	proc.wait(t)
	broker.signal(t, syscall.SIGTERM)
	broker.wait(t)
}

// TestUpRestartRaisesNoStale is the same as a person meets it: `up`
// stopped for two minutes of real time and started again. It takes three
// minutes, so it runs in make test-chaos only.
func TestUpRestartRaisesNoStale(t *testing.T) {
	if chaosSizeFor(t).name != "full" {
		t.Skip("waits two minutes of real time; make test-chaos runs it")
	}
	dir := upDataDir(t)
	web := freeAddr(t)
	up := func() (*proc, string) {
		p := start(t, "up", "--data-dir", dir, "--http", web, "--rate", "200", "--broker-listen", freeAddr(t))
		return p, upDatabaseURL(t, p)
	}
	p, url := up()
	pool := openPool(t, url)
	waitFor(t, "ticks of every symbol", 2*time.Minute, func() bool {
		return scalar(t, pool, `SELECT count(DISTINCT symbol) FROM ticks`) >= 30
	})
	p.signal(t, syscall.SIGINT)
	p.wait(t)
	pool.Close()
	// The stop is the scenario, not a wait for something: two minutes in
	// which no symbol ticks.
	time.Sleep(2 * time.Minute)
	p, url = up()
	pool = openPool(t, url)
	restart := time.Now().UTC()
	waitFor(t, "40 s of ticks after the restart", 2*time.Minute, func() bool {
		return scalar(t, pool, fmt.Sprintf(`SELECT count(*) FROM ticks WHERE ts > '%s'::timestamptz + interval '40 seconds'`, restart.Format(time.RFC3339))) > 0
	})
	if stale := staleBySymbol(t, pool); len(stale) != 0 {
		t.Errorf("stale alerts after a restart, for symbols that resumed ticking: %v", stale)
	}
	p.signal(t, syscall.SIGINT)
	p.wait(t)
}

// upDataDir returns a data directory for `up` that the embedded
// PostgreSQL can reach when the tests run as root and it runs as another
// user: t.TempDir's parent is private to its owner.
func upDataDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// upDatabaseURL waits until `up` has printed where everything is and
// returns its database URL.
func upDatabaseURL(t *testing.T, p *proc) string {
	t.Helper()
	var url string
	re := regexp.MustCompile(`database:\s+(\S+)`)
	waitFor(t, "up to print its addresses", 2*time.Minute, func() bool {
		if p.exited() {
			t.Fatalf("up exited: %v\n%s", p.err, p.out)
		}
		if m := re.FindStringSubmatch(p.out.String()); m != nil {
			url = m[1]
		}
		return url != ""
	})
	return url
}

func staleBySymbol(t *testing.T, pool *pgxpool.Pool) map[string]int64 {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT symbol, count(*) FROM anomalies WHERE kind = 'stale' GROUP BY symbol`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	m := map[string]int64{}
	for rows.Next() {
		var s string
		var n int64
		if err := rows.Scan(&s, &n); err != nil {
			t.Fatal(err)
		}
		m[s] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

// writeDailyCSV writes years of daily bars in the layout Yahoo Finance
// exports (Date,Open,High,Low,Close,Adj Close,Volume), one a weekday from
// from, prices a random walk, and returns how many bars it wrote.
func writeDailyCSV(t *testing.T, path string, from time.Time, years int) int {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(years), 5))
	var b strings.Builder
	b.WriteString("Date,Open,High,Low,Close,Adj Close,Volume\n")
	price, n := 40.0, 0
	for d := from; d.Before(from.AddDate(years, 0, 0)); d = d.AddDate(0, 0, 1) {
		if wd := d.Weekday(); wd == time.Saturday || wd == time.Sunday {
			continue
		}
		open := price
		closeP := open * math.Exp(rng.NormFloat64()*0.015)
		high := math.Max(open, closeP) * (1 + rng.Float64()*0.01)
		low := math.Min(open, closeP) * (1 - rng.Float64()*0.01)
		fmt.Fprintf(&b, "%s,%.6f,%.6f,%.6f,%.6f,%.6f,%d\n", d.Format("2006-01-02"), open, high, low, closeP, closeP*0.98, 20_000_000+rng.IntN(80_000_000))
		price = closeP
		n++
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestGenerateResumeAndStart walks the simulator's paths with a live symbol
// in the topic: history for new symbols starts where --start says (the live
// symbol plays no part); continuing the live symbol from an earlier --start
// says, in one line, that its newest tick wins and why; a --start in the
// future is refused; a run that would pass the present is warned about and
// held to it.
func TestGenerateResumeAndStart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts several processes")
	}
	addr := freeAddr(t)
	broker := launchBroker(t, addr, t.TempDir())
	cfg := kafka.Config{Brokers: []string{addr}, ClientID: "resume-test"}
	last := func() map[string]market.Tick {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		m, err := kafka.LastTicks(ctx, cfg, kafka.TopicTicks, 100_000)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	g := start(t, "generate", "--brokers", addr, "--symbols", "AAPL", "--count", "20", "--rate", "2000", "--seed", "1")
	g.wait(t)
	liveTS := last()["AAPL"].TS

	day := "2026-11-02T14:30:00Z"
	g = start(t, "generate", "--brokers", addr, "--symbols", "HISTA,HISTB", "--count", "200", "--rate", "100",
		"--seed", "2", "--start", day, "--speed", "0")
	g.wait(t)
	if strings.Contains(g.out.String(), "is before") {
		t.Errorf("new symbols were moved by the live one:\n%s", g.out)
	}
	for _, sym := range []string{"HISTA", "HISTB"} {
		if ts := last()[sym].TS; ts.Format("2006-01-02") != "2026-11-02" {
			t.Errorf("%s's newest tick at %v, want on 2026-11-02 as --start says", sym, ts)
		}
	}

	g = start(t, "generate", "--brokers", addr, "--symbols", "AAPL", "--count", "20", "--rate", "2000",
		"--seed", "3", "--start", day, "--speed", "0")
	g.wait(t)
	lines := 0
	for _, l := range strings.Split(g.out.String(), "\n") {
		if strings.Contains(l, "--start "+day+" is before AAPL's newest tick") {
			lines++
		}
	}
	if lines != 1 {
		t.Errorf("continuing AAPL from an earlier --start: %d explaining lines, want 1:\n%s", lines, g.out)
	}
	if got := last()["AAPL"]; !got.TS.After(liveTS) || got.Seq != 40 {
		t.Errorf("AAPL continued at seq %d, %v; want seq 40 after %v", got.Seq, got.TS, liveTS)
	}

	code, _, errOut := runCLI(t, "generate", "--brokers", addr, "--start", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	if code == 0 || !strings.Contains(errOut, "is in the future") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Errorf("a --start in the future: code %d, %q", code, errOut)
	}

	from := time.Now().UTC().Add(-2 * time.Second)
	g = start(t, "generate", "--brokers", addr, "--symbols", "FAST", "--count", "100000", "--rate", "1000",
		"--seed", "4", "--start", from.Format(time.RFC3339Nano), "--speed", "0")
	waitFor(t, "the warning and the catch-up", time.Minute, func() bool {
		out := g.out.String()
		return strings.Contains(out, "would pass the present") && strings.Contains(out, "caught up with the present")
	})
	g.signal(t, syscall.SIGTERM)
	g.wait(t)
	if ts := last()["FAST"].TS; ts.After(time.Now().Add(time.Second)) {
		t.Errorf("FAST's newest tick %v is ahead of the clock", ts)
	}
	broker.signal(t, syscall.SIGTERM)
	broker.wait(t)
}
