package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
	"github.com/stockpipe/stockpipe/internal/store"
)

// The test binary doubles as the stockpipe binary: with this variable set it
// runs the CLI instead of the tests, so the end-to-end tests can start real
// processes (and SIGKILL them) without a separate build.
const asCLI = "STOCKPIPE_TEST_AS_CLI"

func TestMain(m *testing.M) {
	if os.Getenv(asCLI) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	pgtest.Main(m)
}

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestHelpForEveryCommand(t *testing.T) {
	code, out, _ := runCLI(t, "--help")
	if code != 0 || !strings.Contains(out, "Commands:") {
		t.Fatalf("--help: code %d, output %q", code, out)
	}
	for _, c := range commands() {
		code, out, _ := runCLI(t, c.name, "--help")
		if code != 0 || !strings.Contains(out, "stockpipe "+c.name) || !strings.Contains(out, "Example:") {
			t.Errorf("%s --help: code %d, output %q", c.name, code, out)
		}
	}
}

func TestBadInputGetsOneLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"nosuch"}, `unknown command "nosuch"`},
		{[]string{"generate", "--nosuch"}, "flag provided but not defined"},
		{[]string{"generate", "--rate", "fast"}, "invalid value"},
		{[]string{"generate", "--brokers", "http://x"}, "is not host:port"},
		{[]string{"generate", "--brokers", "127.0.0.1:1", "--rate", "-1"}, "--rate must be above 0"},
		{[]string{"process", "--brokers", "127.0.0.1:1", "--database-url", "mysql://x/y"}, "database URL scheme"},
		{[]string{"replay", "--brokers", "127.0.0.1:1"}, "--file is required"},
		{[]string{"migrate", "--database-url", ""}, "no database URL"},
		{[]string{"up", "--log-level", "loud"}, "--log-level"},
		{[]string{"serve", "--http", "0.0.0.0:8050", "--database-url", "postgres://u@h/db"}, "set --auth-token"},
		{[]string{"up", "--http", ":8050"}, "set --auth-token"},
		{[]string{"serve", "--http", "8050"}, "is not host:port"},
		{[]string{"process", "--brokers", "127.0.0.1:1", "--kafka-sasl", "gssapi", "--kafka-user", "u", "--database-url", "postgres://u@h/db"}, "--kafka-sasl"},
		{[]string{"process", "--brokers", "127.0.0.1:1", "--kafka-user", "u", "--database-url", "postgres://u@h/db"}, "need --kafka-sasl"},
		{[]string{"process", "--brokers", "127.0.0.1:1", "--kafka-tls-ca", "/nonexistent.pem", "--database-url", "postgres://u@h/db"}, "--kafka-tls-ca"},
		// A live source's flags are checked before anything connects.
		{[]string{"ingest", "--brokers", "127.0.0.1:1", "--symbols", "AAPL"}, "name the source: stockpipe ingest alpaca"},
		{[]string{"ingest", "bloomberg", "--brokers", "127.0.0.1:1", "--symbols", "AAPL"}, `unknown source "bloomberg"`},
		{[]string{"ingest", "alpaca", "--brokers", "127.0.0.1:1"}, "--symbols is required"},
		{[]string{"ingest", "alpaca", "--brokers", "127.0.0.1:1", "--symbols", "AAPL,not a ticker"}, `--symbols: "NOT A TICKER" is not a ticker`},
		{[]string{"ingest", "alpaca", "--brokers", "127.0.0.1:1", "--symbols", "AAPL"}, "set APCA_API_KEY_ID and APCA_API_SECRET_KEY"},
		{[]string{"ingest", "alpaca", "--brokers", "127.0.0.1:1", "--symbols", "AAPL", "--key", "k", "--secret", "s", "--feed", "otc"}, "--feed \"otc\""},
		{[]string{"ingest", "finnhub", "--brokers", "127.0.0.1:1", "--symbols", "AAPL"}, "set FINNHUB_TOKEN"},
		{[]string{"up", "--source", "bloomberg"}, `--source "bloomberg": use simulator, alpaca or finnhub`},
		{[]string{"up", "--source", "finnhub"}, "--symbols is required"},
		{[]string{"backfill", "alpaca", "--symbols", "AAPL", "--key", "k", "--secret", "s"}, "--from is required"},
		{[]string{"backfill", "alpaca", "--symbols", "AAPL", "--key", "k", "--secret", "s", "--from", "2026-11-03", "--to", "2026-11-02"}, "--to 2026-11-02 is before --from 2026-11-03"},
		{[]string{"backfill", "finnhub", "--symbols", "AAPL"}, "name the provider: stockpipe backfill alpaca"},
		{[]string{"replay", "--file", "a.csv", "--recording", "b.jsonl"}, "replay one at a time"},
		{[]string{"dag", "trigger", "backfill", "--param", "symbol=AAPL", "--param", "source=bloomberg", "--database-url", "postgres://u@h/db"}, `parameter source="bloomberg"`},
		{[]string{"dag", "trigger", "backfill", "--param", "symbol=AAPL", "--param", "source=alpaca", "--param", "file=x.csv", "--database-url", "postgres://u@h/db"}, "source and file both given"},
		// A DAG's parameters are checked before the database is reached.
		{[]string{"dag", "trigger", "retention", "--param", "retention=banana", "--database-url", "postgres://u@h/db"},
			`dag trigger: DAG retention: parameter retention="banana" is not a duration ≥ 1s (such as 90s, 5m or 168h)`},
		{[]string{"dag", "trigger", "market_close", "--param", "max_reject_rat=0.2", "--database-url", "postgres://u@h/db"},
			`dag trigger: DAG market_close has no parameter "max_reject_rat"`},
		{[]string{"dag", "backfill", "backfill", "--from", "2026-11-02", "--to", "2026-11-03", "--database-url", "postgres://u@h/db"},
			"dag backfill: DAG backfill: parameter symbol is required"},
	} {
		code, _, errOut := runCLI(t, tc.args...)
		if code == 0 || !strings.Contains(errOut, tc.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("%v: code %d, stderr %q; want one line containing %q", tc.args, code, errOut, tc.want)
		}
	}
}

func TestFlagsFromEnvironment(t *testing.T) {
	t.Setenv("STOCKPIPE_RATE", "-5")
	code, _, errOut := runCLI(t, "generate", "--brokers", "127.0.0.1:1")
	if code == 0 || !strings.Contains(errOut, "--rate must be above 0") {
		t.Fatalf("STOCKPIPE_RATE was not applied: code %d, %q", code, errOut)
	}
	// The command line wins over the environment.
	t.Setenv("STOCKPIPE_DATABASE_URL", "mysql://x/y")
	code, _, errOut = runCLI(t, "migrate", "--database-url", "")
	if code == 0 || !strings.Contains(errOut, "no database URL") {
		t.Fatalf("command line did not override the environment: %q", errOut)
	}
	t.Setenv("STOCKPIPE_DATABASE_URL", "")
	os.Unsetenv("STOCKPIPE_DATABASE_URL")
	t.Setenv("DATABASE_URL", "mysql://x/y")
	code, _, errOut = runCLI(t, "migrate")
	if code == 0 || !strings.Contains(errOut, "database URL scheme") {
		t.Fatalf("DATABASE_URL was not applied: %q", errOut)
	}
}

// proc is a stockpipe subprocess.
type proc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{} // closed once the process has exited
	err  error         // how it exited; read after done
}

// syncBuffer collects a subprocess's output and may be read while the
// process still writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// tail is the end of the output, for failure messages.
func (b *syncBuffer) tail(n int) string {
	s := b.String()
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}

// start runs the test binary as stockpipe with args. The process is killed
// when the test ends, and its output's end is logged if the test failed.
func start(t *testing.T, args ...string) *proc {
	t.Helper()
	return startEnv(t, nil, args...)
}

// startEnv is start with extra environment variables (KEY=value) for the
// process.
func startEnv(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), asCLI+"=1"), env...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("output of %v (pid %d):\n%s", args, cmd.Process.Pid, out.tail(4000))
		}
	})
	return p
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to exit and fails the test unless it exited 0.
func (p *proc) wait(t *testing.T) {
	t.Helper()
	<-p.done
	if p.err != nil {
		t.Fatalf("%v: %v\n%s", p.cmd.Args[1:], p.err, p.out)
	}
}

// kill ends the process with SIGKILL and waits until it is gone.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	p.signal(t, syscall.SIGKILL)
	<-p.done
}

// signal sends sig to the process.
func (p *proc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %v: %v", sig, p.cmd.Args[1:], err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func scalar(t *testing.T, pool *pgxpool.Pool, q string) int64 {
	t.Helper()
	var n int64
	if err := pool.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// TestSeparateProcessesSurviveSIGKILL is the acceptance run: broker,
// generator and processor as separate processes, the processor killed with
// SIGKILL twice on the way; exactly the generated ticks end up in PostgreSQL.
// Then an independent Kafka client produces good and malformed records by
// hand and the processor, still running, handles both.
func TestSeparateProcessesSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts several processes")
	}
	const count = 100_000
	addr := freeAddr(t)
	dbURL := pgtest.New(t)
	broker := start(t, "broker", "--listen", addr, "--data-dir", t.TempDir())
	waitFor(t, "broker to listen", 30*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	gen := start(t, "generate", "--brokers", addr, "--count", fmt.Sprint(count), "--seed", "7",
		"--start", "2026-11-02T14:30:00Z", "--speed", "0", "--anomaly-rate", "60")
	gen.wait(t)
	if !strings.Contains(gen.out.String(), fmt.Sprintf("produced %d records (%d valid", count, count)) {
		t.Fatalf("generator output: %s", gen.out)
	}

	pool, err := store.Open(context.Background(), dbURL, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	committedIn := func(pool *pgxpool.Pool) int64 {
		var n int64
		// The table appears once the first processor has migrated.
		err := pool.QueryRow(context.Background(),
			`SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE topic = 'ticks'`).Scan(&n)
		if err != nil {
			return 0
		}
		return n
	}
	committed := func() int64 { return committedIn(pool) }
	// A static member ID lets each restart take the partitions back at once
	// instead of waiting for the killed member's session to expire.
	processArgs := []string{"process", "--brokers", addr, "--database-url", dbURL, "--batch-size", "2000", "--instance-id", "p1"}
	for _, at := range []int64{20_000, 60_000} {
		p := start(t, processArgs...)
		waitFor(t, fmt.Sprintf("processor to pass %d", at), 2*time.Minute, func() bool { return committed() >= at })
		p.kill(t)
	}
	p := start(t, processArgs...)
	waitFor(t, "all records committed", 2*time.Minute, func() bool { return committed() == count })
	if got := scalar(t, pool, `SELECT count(*) FROM ticks`); got != count {
		t.Fatalf("ticks rows = %d after two SIGKILLs, want %d", got, count)
	}

	// An undisturbed processor over the same topic into another database
	// computes the same candles and anomalies.
	cleanURL := pgtest.New(t)
	clean := start(t, "process", "--brokers", addr, "--database-url", cleanURL, "--group", "clean")
	cleanPool, err := store.Open(context.Background(), cleanURL, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanPool.Close()
	waitFor(t, "clean run", 2*time.Minute, func() bool { return committedIn(cleanPool) == count })
	if err := clean.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	clean.wait(t)
	for _, q := range []string{
		`SELECT symbol, interval, bucket, open, high, low, close, volume, vwap, trades, sma_5, sma_20,
			ema_12, ema_26, bb_upper, bb_lower, rsi_14, final FROM candles ORDER BY 1, 2, 3`,
		`SELECT symbol, ts, kind, severity, value, threshold, detail FROM anomalies ORDER BY 1, 2, 3`,
	} {
		killed, undisturbed := pgtest.Rows(t, pool, q), pgtest.Rows(t, cleanPool, q)
		if len(undisturbed) == 0 || !slices.Equal(killed, undisturbed) {
			t.Errorf("after SIGKILLs %d rows, undisturbed %d rows, equal=%v: %s", len(killed), len(undisturbed), slices.Equal(killed, undisturbed), q)
		}
	}

	// An independent client, keyed by symbol like any producer must be.
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	recs := []*kgo.Record{
		{Topic: "ticks", Key: []byte("ZZZT"), Value: []byte(`{"symbol":"ZZZT","ts":"2026-11-02T15:00:00Z","seq":1,"price":10.5,"size":100,"bid":10.49,"ask":10.51}`)},
		{Topic: "ticks", Key: []byte("ZZZT"), Value: []byte(`{"symbol":"ZZZT","ts":"2026-11-02T15:00:01Z","seq":2,"price":10.5`)},
		{Topic: "ticks", Key: []byte("ZZZT"), Value: []byte(`{"symbol":"ZZZT","ts":"2026-11-02T15:00:02Z","seq":3,"price":10.5,"size":100,"bid":10.6,"ask":10.51}`)},
		{Topic: "ticks", Key: []byte("ZZZT"), Value: []byte(`{"symbol":"ZZZT","ts":"2026-11-02T15:00:03Z","seq":4,"price":10.52,"size":200,"bid":10.51,"ask":10.53}`)},
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "hand-made records processed", 30*time.Second, func() bool { return committed() == count+4 })
	if got := scalar(t, pool, `SELECT count(*) FROM ticks WHERE symbol = 'ZZZT'`); got != 2 {
		t.Errorf("stored %d of the 2 valid hand-made ticks", got)
	}
	if got := scalar(t, pool, `SELECT count(*) FROM rejected_ticks WHERE reason IN ('malformed_json', 'bid_above_ask')`); got != 2 {
		t.Errorf("rejected %d of the 2 bad hand-made records with their reasons", got)
	}

	// SIGTERM drains and exits cleanly.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.wait(t)
	if err := broker.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	broker.wait(t)
}

// TestJSONLogsEndWithJSON runs failing commands with --log-format json: the
// last line, the reason, is a JSON object too.
func TestJSONLogsEndWithJSON(t *testing.T) {
	for _, args := range [][]string{
		{"migrate", "--database-url", "postgres://u@127.0.0.1:1/x", "--db-wait", "1s", "--log-format", "json"},
		{"replay", "--brokers", "127.0.0.1:1", "--file", "/nonexistent.csv", "--log-format", "json"},
	} {
		code, _, errOut := runCLI(t, args...)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		last := lines[len(lines)-1]
		var v map[string]any
		if code == 0 || json.Unmarshal([]byte(last), &v) != nil || v["level"] != "ERROR" || v["err"] == nil {
			t.Errorf("%v: code %d, last line %q: want a JSON error line", args, code, last)
		}
	}
}
