package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/generate"
	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
)

// TestScaleOut runs every role as its own process: a broker, two generators
// over disjoint halves of the universe, three processors in one consumer
// group, the dashboard and a scheduler. While ticks flow one processor is
// SIGKILLed, another joins and a third leaves with SIGTERM, and the
// partitions must move to the live ones each time. At the end the group has
// stored exactly what one processor alone stores from the same topic, the
// dashboard lists every symbol and the scheduler runs a triggered DAG.
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("starts several processes")
	}
	began := time.Now()
	// Per generator: records, ticks per simulated second, simulated
	// seconds per wall second. The pace keeps the generators producing
	// while the group changes.
	size := chaosSizeFor(t).name
	count, rate, speed, wait := int64(15_000), 50.0, 15.0, 2*time.Minute
	if size == "full" {
		count, rate, speed, wait = 150_000, 100, 20, 10*time.Minute
	}

	addr := freeAddr(t)
	dbURL, refURL := pgtest.New(t), pgtest.New(t)
	pool, refPool := openPool(t, dbURL), openPool(t, refURL)
	broker := launchBroker(t, addr, t.TempDir())

	startMember := func(name string) *member {
		ops := freeAddr(t)
		// No static membership: a killed member's partitions move when its
		// session expires, as in a group of interchangeable processors.
		p := start(t, "process", "--brokers", addr, "--database-url", dbURL, "--batch-size", "1000",
			"--session-timeout", "6s", "--http", ops)
		return &member{name: name, proc: p, ops: ops}
	}
	p1, p2, p3 := startMember("p1"), startMember("p2"), startMember("p3")
	web := freeAddr(t)
	serve := start(t, "serve", "--database-url", dbURL, "--brokers", addr, "--http", web)
	sched := start(t, "scheduler", "--database-url", dbURL, "--brokers", addr)

	var moves []string
	moves = append(moves, waitAssignment(t, web, "three processors to share the partitions", wait, p1, p2, p3))

	var names []string
	for _, s := range generate.DefaultUniverse() {
		names = append(names, s.Name)
	}
	half := len(names) / 2
	var gens []*proc
	for i, syms := range [][]string{names[:half], names[half:]} {
		gens = append(gens, start(t, "generate", "--brokers", addr, "--symbols", strings.Join(syms, ","),
			"--count", fmt.Sprint(count), "--seed", fmt.Sprint(101+i), "--start", "2026-11-02T14:30:00Z",
			"--rate", fmt.Sprint(rate), "--speed", fmt.Sprint(speed), "--faults", "0.01", "--anomaly-rate", "20",
			"--resume=false"))
	}
	total := 2 * count
	committed := func() int64 { return committedIn(pool, "stockpipe") }

	waitFor(t, "a quarter of the records committed", wait, func() bool { return committed() >= total/4 })
	p1.proc.kill(t)
	moves = append(moves, waitAssignment(t, web, "p1's partitions to move after SIGKILL", wait, p2, p3))
	p4 := startMember("p4")
	moves = append(moves, waitAssignment(t, web, "p4 to join and take partitions", wait, p2, p3, p4))
	waitFor(t, "half of the records committed", wait, func() bool { return committed() >= total/2 })
	p2.proc.signal(t, syscall.SIGTERM)
	p2.proc.wait(t)
	moves = append(moves, waitAssignment(t, web, "p2's partitions to move after SIGTERM", wait, p3, p4))

	var acc chaosAccount
	genRunning := false
	for _, g := range gens {
		genRunning = genRunning || !g.exited()
	}
	for _, g := range gens {
		waitFor(t, "generator to finish", wait, g.exited)
		g.wait(t)
		acc.gen.add(parseGenerated(t, g.out.String()))
	}
	if acc.gen.records != total {
		t.Fatalf("generators produced %d records, asked for %d", acc.gen.records, total)
	}
	if !genRunning {
		t.Log("the generators finished before the last processor left; the group changes happened while they ran only in part")
	}
	waitFor(t, fmt.Sprintf("all %d records committed", total), wait, func() bool { return committed() >= total })
	acc.wall = time.Since(began)

	checkSymbols(t, web, names)
	checkScheduler(t, dbURL, addr, sched, wait)

	// One processor alone over the same topic.
	ref := start(t, "process", "--brokers", addr, "--database-url", refURL, "--group", "ref")
	waitFor(t, "single processor to commit every record", wait, func() bool {
		return committedIn(refPool, "ref") >= total
	})
	ref.signal(t, syscall.SIGTERM)
	ref.wait(t)

	acc.collect(t, pool, "stockpipe")
	var b strings.Builder
	fmt.Fprintf(&b, "==== scale-out accounting (%s) ====\n", size)
	acc.flow(&b)
	fmt.Fprintf(&b, "processors        3 started; 1 SIGKILLed, 1 joined, 1 SIGTERMed; 2 left\n")
	fmt.Fprintf(&b, "wall time         %v to commit everything\n", acc.wall.Round(time.Millisecond))
	for _, m := range moves {
		fmt.Fprintf(&b, "  - %s\n", m)
	}
	b.WriteString("====")
	t.Log("\n" + b.String())
	fmt.Println(b.String())
	acc.check(t)
	compareRuns(t, pool, refPool, "scale-out", "single processor")

	for _, p := range []*proc{serve, sched, p3.proc, p4.proc, broker} {
		p.signal(t, syscall.SIGTERM)
		p.wait(t)
	}
}

// member is a processor of the group, with its ops address.
type member struct {
	name string
	proc *proc
	ops  string
}

// assignedPartitions reads the processor's stockpipe_assigned_partitions
// gauge; -1 if it can't be read.
func (m *member) assignedPartitions() int {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + m.ops + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "stockpipe_assigned_partitions "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return -1
			}
			return int(n)
		}
	}
	return -1
}

// groupMembers asks the dashboard's pipeline API which partitions each
// member of the processors' group owns.
func groupMembers(web string) ([][]int32, error) {
	cl := http.Client{Timeout: 10 * time.Second}
	resp, err := cl.Get("http://" + web + "/api/pipeline?fresh=1")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/api/pipeline: %s", resp.Status)
	}
	var p struct {
		Groups []struct {
			Group   string `json:"group"`
			Members []struct {
				Partitions []int32 `json:"partitions"`
			} `json:"members"`
		} `json:"groups"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		return nil, err
	}
	for _, g := range p.Groups {
		if g.Group == "stockpipe" {
			var out [][]int32
			for _, m := range g.Members {
				out = append(out, m.Partitions)
			}
			return out, nil
		}
	}
	return nil, nil
}

// waitAssignment waits until the live processors, and no others, own the
// six partitions between them, each at least one: as the processors count
// them and as the broker reports the group through the dashboard. It
// returns the assignment, for the log.
func waitAssignment(t *testing.T, web, what string, timeout time.Duration, live ...*member) string {
	t.Helper()
	const partitions = 6
	var last string
	waitFor(t, what, timeout, func() bool {
		counts := make([]string, len(live))
		sum := 0
		ok := true
		for i, m := range live {
			if m.proc.exited() {
				t.Fatalf("processor %s exited: %v\n%s", m.name, m.proc.err, m.proc.out.tail(4000))
			}
			n := m.assignedPartitions()
			counts[i] = fmt.Sprintf("%s=%d", m.name, n)
			sum += n
			ok = ok && n >= 1
		}
		last = strings.Join(counts, " ")
		if !ok || sum != partitions {
			return false
		}
		members, err := groupMembers(web)
		if err != nil || len(members) != len(live) {
			return false
		}
		var owned []int32
		for _, ps := range members {
			owned = append(owned, ps...)
		}
		slices.Sort(owned)
		for i, p := range owned {
			if int32(i) != p {
				return false
			}
		}
		return len(owned) == partitions
	})
	return what + ": " + last
}

// checkSymbols requires the dashboard's watchlist to hold every symbol.
func checkSymbols(t *testing.T, web string, want []string) {
	t.Helper()
	cl := http.Client{Timeout: 10 * time.Second}
	resp, err := cl.Get("http://" + web + "/api/symbols")
	if err != nil {
		t.Fatalf("/api/symbols: %v", err)
	}
	defer resp.Body.Close()
	var quotes []struct {
		Symbol string  `json:"symbol"`
		Last   float64 `json:"last"`
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/api/symbols: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&quotes); err != nil {
		t.Fatalf("/api/symbols: %v", err)
	}
	var got []string
	for _, q := range quotes {
		got = append(got, q.Symbol)
		if q.Last <= 0 {
			t.Errorf("/api/symbols: %s has last price %v", q.Symbol, q.Last)
		}
	}
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("/api/symbols lists %v, want %v", got, want)
	}
}

var triggeredRun = regexp.MustCompile(`: run (\d+) `)

// checkScheduler lists the DAGs, triggers pipeline_health and waits for the
// scheduler process to run it to the end its health check calls for.
func checkScheduler(t *testing.T, dbURL, brokers string, sched *proc, timeout time.Duration) {
	t.Helper()
	code, out, errOut := runCLI(t, "dag", "list", "--database-url", dbURL)
	if code != 0 || !strings.Contains(out, "pipeline_health") || !strings.Contains(out, "market_close") {
		t.Fatalf("dag list: code %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, "dag", "trigger", "pipeline_health", "--database-url", dbURL, "--brokers", brokers)
	m := triggeredRun.FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("dag trigger pipeline_health: code %d\n%s%s", code, out, errOut)
	}
	id, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	pool := openPool(t, dbURL)
	var state string
	waitFor(t, "scheduler to run pipeline_health", timeout, func() bool {
		if sched.exited() {
			t.Fatalf("scheduler exited: %v", sched.err)
		}
		err := pool.QueryRow(context.Background(), `SELECT state FROM dag_runs WHERE id = $1`, id).Scan(&state)
		return err == nil && (state == "success" || state == "failed")
	})
	// An unhealthy pipeline is a failed run, and this one may well be
	// unhealthy: the generators' ticks are of a past date, so the last five
	// minutes' dead letters count against no ticks. The run ends as its
	// recorded row says, and a failed one names its failed checks.
	var (
		healthy bool
		taskErr string
	)
	if err := pool.QueryRow(context.Background(), `SELECT h.healthy, t.error FROM dag_runs r
		JOIN pipeline_health h ON h.logical_time = r.logical_date
		JOIN task_runs t ON t.run_id = r.id AND t.task = 'check'
		WHERE r.id = $1`, id).Scan(&healthy, &taskErr); err != nil {
		t.Fatalf("pipeline_health run %d ended %s without recording a row: %v", id, state, err)
	}
	if (state == "success") != healthy || (!healthy && !strings.Contains(taskErr, "health checks failed")) {
		t.Fatalf("pipeline_health run %d ended %s with healthy=%v: %q", id, state, healthy, taskErr)
	}
}
