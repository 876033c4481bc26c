package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
	"github.com/stockpipe/stockpipe/internal/store"
)

// chaosEnv selects the size of the chaos and scale-out tests: unset (or
// "small") runs the versions that fit in the normal test run, "full" the
// large ones (make test-chaos). chaosSeedEnv picks the seed that chooses the
// fault moments (default 1), so a failing schedule can be replayed.
const (
	chaosEnv     = "STOCKPIPE_CHAOS"
	chaosSeedEnv = "STOCKPIPE_CHAOS_SEED"
)

// chaosSize is how much a chaos run produces and how often it strikes.
type chaosSize struct {
	name  string
	count int64   // records the generator produces
	rate  float64 // ticks per simulated second
	speed float64 // simulated seconds per wall second: paces the generator
	kills int     // SIGKILLs of the processor
	batch int     // the disturbed processor's --batch-size
	wait  time.Duration
}

func chaosSizeFor(t *testing.T) chaosSize {
	t.Helper()
	switch v := os.Getenv(chaosEnv); v {
	case "", "small":
		return chaosSize{name: "small", count: 60_000, rate: 100, speed: 60, kills: 3, batch: 1000, wait: 2 * time.Minute}
	case "full":
		return chaosSize{name: "full", count: 1_000_000, rate: 200, speed: 100, kills: 6, batch: 2000, wait: 10 * time.Minute}
	default:
		t.Fatalf("%s=%q: want small or full", chaosEnv, v)
		return chaosSize{}
	}
}

func chaosSeed(t *testing.T) uint64 {
	t.Helper()
	v := os.Getenv(chaosSeedEnv)
	if v == "" {
		return 1
	}
	s, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q is not a number", chaosSeedEnv, v)
	}
	return s
}

// TestChaos runs broker, generator and processor as separate processes and
// disturbs them while ticks flow: the processor is SIGKILLed and restarted
// several times, PostgreSQL is stopped and started, and the broker is
// SIGKILLed and restarted on its data directory. Afterwards the database
// must hold exactly what the generator says it produced, and the same
// ticks, candles, anomalies and rejected records as an undisturbed
// processor reading the same topic into a second database.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("starts several processes and restarts PostgreSQL")
	}
	began := time.Now()
	size := chaosSizeFor(t)
	seed := chaosSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0x5eed))

	addr := freeAddr(t)
	dataDir := t.TempDir()
	dbURL, cleanURL := pgtest.New(t), pgtest.New(t)
	pool, cleanPool := openPool(t, dbURL), openPool(t, cleanURL)
	broker := launchBroker(t, addr, dataDir)

	// Ticks are spread over simulated time so that there are many candles
	// and indicator warm-ups; the pace keeps the generator producing while
	// the faults strike.
	gen := start(t, "generate", "--brokers", addr, "--count", fmt.Sprint(size.count), "--seed", "20261102",
		"--start", "2026-11-02T14:30:00Z", "--rate", fmt.Sprint(size.rate), "--speed", fmt.Sprint(size.speed),
		"--faults", "0.01", "--anomaly-rate", "20", "--resume=false")

	var ops string
	startProcessor := func() *proc {
		ops = freeAddr(t)
		// A static member ID gives a restarted processor its partitions
		// back at once instead of after the killed one's session expires.
		return start(t, "process", "--brokers", addr, "--database-url", dbURL, "--batch-size", fmt.Sprint(size.batch),
			"--instance-id", "chaos-1", "--http", ops)
	}
	p := startProcessor()

	// The faults, in an order and at moments (fractions of the records
	// committed) drawn from the seed, one per slot between 8% and 85%.
	const (
		kill         = "SIGKILL processor"
		pgRestart    = "restart PostgreSQL"
		brokerKilled = "SIGKILL and restart broker"
	)
	events := []string{pgRestart, brokerKilled}
	for range size.kills {
		events = append(events, kill)
	}
	rng.Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })
	slot := 0.77 / float64(len(events))

	var acc chaosAccount
	var timeline []string
	committed := func() int64 { return committedIn(pool, "stockpipe") }
	for i, ev := range events {
		at := int64(float64(size.count) * (0.08 + slot*(float64(i)+rng.Float64())))
		waitFor(t, fmt.Sprintf("processor to commit %d records before %q", at, ev), size.wait, func() bool {
			return committed() >= at
		})
		genRunning := !gen.exited()
		switch ev {
		case kill:
			p.kill(t)
			acc.kills++
			p = startProcessor()
		case pgRestart:
			restartPostgres(t, ops)
			acc.pgRestarts++
		case brokerKilled:
			broker.kill(t)
			broker = launchBroker(t, addr, dataDir)
			acc.brokerRestarts++
		}
		timeline = append(timeline, fmt.Sprintf("%s at >= %d committed (generator running: %v)", ev, at, genRunning))
	}

	waitFor(t, "generator to finish", size.wait, gen.exited)
	gen.wait(t)
	acc.gen = parseGenerated(t, gen.out.String())
	if acc.gen.records != size.count {
		t.Fatalf("generator produced %d records, asked for %d", acc.gen.records, size.count)
	}
	waitFor(t, fmt.Sprintf("all %d records committed", acc.gen.records), size.wait, func() bool {
		return committed() >= acc.gen.records
	})
	p.signal(t, syscall.SIGTERM)
	p.wait(t)
	acc.wall = time.Since(began)

	// The undisturbed run: one processor, default batch size, no faults.
	cleanBegan := time.Now()
	clean := start(t, "process", "--brokers", addr, "--database-url", cleanURL, "--group", "clean")
	waitFor(t, "undisturbed run to commit every record", size.wait, func() bool {
		return committedIn(cleanPool, "clean") >= acc.gen.records
	})
	clean.signal(t, syscall.SIGTERM)
	clean.wait(t)
	acc.cleanWall = time.Since(cleanBegan)
	broker.signal(t, syscall.SIGTERM)
	broker.wait(t)

	acc.collect(t, pool, "stockpipe")
	report := acc.String(size, seed, timeline)
	t.Log("\n" + report)
	fmt.Println(report)
	acc.check(t)
	compareRuns(t, pool, cleanPool, "SIGKILLs and restarts", "undisturbed")
	if got := committedIn(cleanPool, "clean"); got != acc.gen.records {
		t.Errorf("undisturbed run consumed %d records, the topic holds %d", got, acc.gen.records)
	}
}

// launchBroker starts `stockpipe broker` on addr and dataDir and waits until
// it serves, topics included.
func launchBroker(t *testing.T, addr, dataDir string) *proc {
	t.Helper()
	b := start(t, "broker", "--listen", addr, "--data-dir", dataDir)
	waitFor(t, "broker to listen on "+addr, time.Minute, func() bool {
		if b.exited() {
			t.Fatalf("broker exited: %v\n%s", b.err, b.out)
		}
		return strings.Contains(b.out.String(), "broker listening on")
	})
	return b
}

// restartPostgres stops the shared cluster, waits until the processor
// serving health checks on ops reports the database gone, and starts the
// cluster again on the same port.
func restartPostgres(t *testing.T, ops string) {
	t.Helper()
	waitFor(t, "processor to be ready before stopping PostgreSQL", time.Minute, func() bool {
		return readyz(ops) == http.StatusOK
	})
	c := pgtest.Cluster(t)
	restarted := false
	t.Cleanup(func() {
		// Later tests and the databases' cleanup need the cluster back.
		if !restarted {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := c.Restart(ctx); err != nil {
				t.Errorf("restarting PostgreSQL after a failed test: %v", err)
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("stopping PostgreSQL: %v", err)
	}
	waitFor(t, "processor to notice PostgreSQL is down", time.Minute, func() bool {
		return readyz(ops) == http.StatusServiceUnavailable
	})
	if err := c.Restart(ctx); err != nil {
		t.Fatalf("starting PostgreSQL again: %v", err)
	}
	restarted = true
}

// readyz returns the status of GET /readyz on addr, 0 if it can't be had.
func readyz(addr string) int {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func openPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := store.Open(context.Background(), url, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// committedIn is how many records of the ticks topic group has committed
// to the database behind pool; 0 while the table is missing or the database
// is away.
func committedIn(pool *pgxpool.Pool, group string) int64 {
	var n int64
	err := pool.QueryRow(context.Background(), `SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets
		WHERE group_id = $1 AND topic = 'ticks'`, group).Scan(&n)
	if err != nil {
		return 0
	}
	return n
}

// generated is what `stockpipe generate` reports on stdout.
type generated struct {
	records, valid, duplicates, lateDuplicates, outOfOrder, late, malformed, invalid, anomalies int64
}

func (g *generated) add(o generated) {
	g.records += o.records
	g.valid += o.valid
	g.duplicates += o.duplicates
	g.lateDuplicates += o.lateDuplicates
	g.outOfOrder += o.outOfOrder
	g.late += o.late
	g.malformed += o.malformed
	g.invalid += o.invalid
	g.anomalies += o.anomalies
}

func parseGenerated(t *testing.T, out string) generated {
	t.Helper()
	i := strings.Index(out, "produced ")
	if i < 0 {
		t.Fatalf("generator printed no summary:\n%s", out)
	}
	line, _, _ := strings.Cut(out[i:], "\n")
	var g generated
	_, err := fmt.Sscanf(line, "produced %d records (%d valid ticks, %d duplicates of which %d late, %d out of order, %d late, %d malformed, %d invalid; %d anomalies injected)",
		&g.records, &g.valid, &g.duplicates, &g.lateDuplicates, &g.outOfOrder, &g.late, &g.malformed, &g.invalid, &g.anomalies)
	if err != nil {
		t.Fatalf("generator summary %q: %v", line, err)
	}
	if g.valid+g.duplicates+g.malformed+g.invalid != g.records {
		t.Fatalf("generator summary does not add up: %q", line)
	}
	return g
}

// chaosAccount is what went in, what came out and what was survived.
type chaosAccount struct {
	gen                                 generated
	consumed, stored, rejected, dropped int64
	byReason                            map[string]int64
	candles, anomalies                  int64
	kills, pgRestarts, brokerRestarts   int
	wall, cleanWall                     time.Duration
}

func (a *chaosAccount) collect(t *testing.T, pool *pgxpool.Pool, group string) {
	t.Helper()
	a.consumed = committedIn(pool, group)
	a.stored = scalar(t, pool, `SELECT count(*) FROM ticks`)
	a.byReason = rejectedByReason(t, pool)
	a.rejected = 0
	for _, n := range a.byReason {
		a.rejected += n
	}
	a.dropped = a.consumed - a.stored - a.rejected
	a.candles = scalar(t, pool, `SELECT count(*) FROM candles`)
	a.anomalies = scalar(t, pool, `SELECT count(*) FROM anomalies`)
}

// check holds the database to the generator's own accounting: every record
// consumed once, every distinct valid tick stored unless it came too late,
// every broken record rejected, every resend dropped.
func (a *chaosAccount) check(t *testing.T) {
	t.Helper()
	if a.consumed != a.gen.records {
		t.Errorf("consumed %d records, the generator produced %d", a.consumed, a.gen.records)
	}
	// A resend of a late tick is late again (nothing of it is stored),
	// not a duplicate.
	if late := a.byReason["late"]; a.stored+late != a.gen.valid+a.gen.lateDuplicates {
		t.Errorf("stored %d ticks + %d rejected as late = %d, the generator produced %d distinct valid ticks and %d resends of late ones",
			a.stored, late, a.stored+late, a.gen.valid, a.gen.lateDuplicates)
	}
	if broken := a.rejected - a.byReason["late"]; broken != a.gen.malformed+a.gen.invalid {
		t.Errorf("rejected %d records for something other than lateness, the generator produced %d malformed + %d invalid",
			broken, a.gen.malformed, a.gen.invalid)
	}
	if want := a.gen.duplicates - a.gen.lateDuplicates; a.dropped != want {
		t.Errorf("dropped %d records as duplicates, the generator resent %d that were not late", a.dropped, want)
	}
	if a.candles == 0 || a.anomalies == 0 {
		t.Errorf("%d candles and %d anomalies stored; the comparison proves little", a.candles, a.anomalies)
	}
}

func (a *chaosAccount) String(size chaosSize, seed uint64, timeline []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "==== chaos accounting (%s, seed %d) ====\n", size.name, seed)
	a.flow(&b)
	fmt.Fprintf(&b, "kills survived    %d\n", a.kills)
	fmt.Fprintf(&b, "PG restarts       %d\n", a.pgRestarts)
	fmt.Fprintf(&b, "broker restarts   %d\n", a.brokerRestarts)
	fmt.Fprintf(&b, "wall time         %v disturbed run, %v undisturbed run\n", a.wall.Round(time.Millisecond), a.cleanWall.Round(time.Millisecond))
	for _, e := range timeline {
		fmt.Fprintf(&b, "  - %s\n", e)
	}
	b.WriteString("====")
	return b.String()
}

// flow writes what went in and what came out.
func (a *chaosAccount) flow(b *strings.Builder) {
	g := a.gen
	fmt.Fprintf(b, "produced          %d records: %d distinct valid ticks (%d out of order, %d late), %d duplicates (%d of late ticks), %d malformed, %d invalid; %d anomalies injected\n",
		g.records, g.valid, g.outOfOrder, g.late, g.duplicates, g.lateDuplicates, g.malformed, g.invalid, g.anomalies)
	fmt.Fprintf(b, "consumed          %d records\n", a.consumed)
	fmt.Fprintf(b, "stored            %d ticks\n", a.stored)
	fmt.Fprintf(b, "rejected          %d records\n", a.rejected)
	reasons := make([]string, 0, len(a.byReason))
	for r := range a.byReason {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		fmt.Fprintf(b, "  %-15s %d\n", r, a.byReason[r])
	}
	fmt.Fprintf(b, "duplicates        %d dropped\n", a.dropped)
	fmt.Fprintf(b, "candles           %d rows, anomalies %d rows\n", a.candles, a.anomalies)
}

func rejectedByReason(t *testing.T, pool *pgxpool.Pool) map[string]int64 {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT reason, count(*) FROM rejected_ticks GROUP BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	m := map[string]int64{}
	for rows.Next() {
		var r string
		var n int64
		if err := rows.Scan(&r, &n); err != nil {
			t.Fatal(err)
		}
		m[r] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

// Queries whose results two runs over the same topic must share. Ticks are
// compared as one digest per symbol (a million rows would not fit a test's
// memory comfortably); the rest row by row, floats to the bit.
const (
	ticksDigestSQL = `SELECT symbol, count(*), min(seq), max(seq),
		md5(string_agg(concat_ws('|', seq, ts, price, size, bid, ask, kafka_partition, kafka_offset), ',' ORDER BY seq))
		FROM ticks GROUP BY symbol ORDER BY symbol`
	candlesSQL = `SELECT symbol, interval, bucket, open, high, low, close, volume, vwap, trades, sma_5, sma_20,
		ema_12, ema_26, bb_upper, bb_lower, rsi_14, final FROM candles WHERE interval IN ('1m', '5m') ORDER BY 1, 2, 3`
	anomaliesSQL = `SELECT symbol, ts, kind, severity, value, threshold, detail FROM anomalies ORDER BY 1, 2, 3`
	rejectedSQL  = `SELECT topic, partition, "offset", reason, detail, key, md5(raw) FROM rejected_ticks ORDER BY 1, 2, 3`
	// Each record is stored or rejected at most once, and never both.
	overlapSQL = `SELECT (SELECT count(*) - count(DISTINCT (kafka_partition, kafka_offset)) FROM ticks)
		+ (SELECT count(*) - count(DISTINCT (topic, partition, "offset")) FROM rejected_ticks)
		+ (SELECT count(*) FROM ticks t JOIN rejected_ticks r
			ON r.topic = 'ticks' AND r.partition = t.kafka_partition AND r."offset" = t.kafka_offset)`
)

// compareRuns requires the two databases to hold the same ticks, candles,
// anomalies and rejected records, with no record stored twice.
func compareRuns(t *testing.T, a, b *pgxpool.Pool, aName, bName string) {
	t.Helper()
	for _, db := range []struct {
		name string
		pool *pgxpool.Pool
	}{{aName, a}, {bName, b}} {
		if n := scalar(t, db.pool, overlapSQL); n != 0 {
			t.Errorf("%s: %d records stored or rejected more than once", db.name, n)
		}
	}
	for _, c := range []struct{ what, q string }{
		{"ticks (digest per symbol)", ticksDigestSQL},
		{"candles", candlesSQL},
		{"anomalies", anomaliesSQL},
		{"rejected records", rejectedSQL},
	} {
		ra, rb := pgtest.Rows(t, a, c.q), pgtest.Rows(t, b, c.q)
		if len(rb) == 0 {
			t.Errorf("%s: the %s run stored none; the comparison proves nothing", c.what, bName)
			continue
		}
		if slices.Equal(ra, rb) {
			continue
		}
		onlyA, onlyB := difference(ra, rb), difference(rb, ra)
		t.Errorf("%s differ: %s run %d rows, %s run %d rows; %d only after %s, %d only after %s",
			c.what, aName, len(ra), bName, len(rb), len(onlyA), aName, len(onlyB), bName)
		for i := range min(3, len(onlyA)) {
			t.Logf("  only %s: %s", aName, onlyA[i])
		}
		for i := range min(3, len(onlyB)) {
			t.Logf("  only %s: %s", bName, onlyB[i])
		}
	}
	if ra, rb := rejectedByReason(t, a), rejectedByReason(t, b); !equalCounts(ra, rb) {
		t.Errorf("rejected by reason: %s %v, %s %v", aName, ra, bName, rb)
	}
}

// difference returns the rows of a that b lacks, counting repeats.
func difference(a, b []string) []string {
	have := make(map[string]int, len(b))
	for _, r := range b {
		have[r]++
	}
	var out []string
	for _, r := range a {
		if have[r] > 0 {
			have[r]--
			continue
		}
		out = append(out, r)
	}
	return out
}

func equalCounts(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
