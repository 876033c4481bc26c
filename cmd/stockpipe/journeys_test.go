package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// The journeys drive the binary as a person does, following the README:
// each starts real processes and checks what the person sees and what
// happens to the data.

// upProc is a running `stockpipe up`.
type upProc struct {
	*proc
	dir, web, dbURL string
	pool            *pgxpool.Pool
}

// startUp runs `stockpipe up` on dir with its own ports and waits until it
// says where everything is.
func startUp(t *testing.T, dir string, env []string, extra ...string) *upProc {
	t.Helper()
	web := freeAddr(t)
	args := append([]string{"up", "--data-dir", dir, "--http", web, "--rate", "200",
		"--broker-listen", freeAddr(t), "--pg-port", strconv.Itoa(freePort(t))}, extra...)
	p := startEnv(t, env, args...)
	u := &upProc{proc: p, dir: dir, web: web}
	u.dbURL = upDatabaseURL(t, p)
	u.pool = openPool(t, u.dbURL)
	return u
}

func (u *upProc) ticks(t *testing.T) int64 {
	t.Helper()
	return scalar(t, u.pool, `SELECT count(*) FROM ticks`)
}

func freePort(t *testing.T) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(freeAddr(t))
	n, _ := strconv.Atoi(port)
	return n
}

// TestJourneyUpTwice starts up a second time on the same data directory,
// as a person does who forgot the first terminal: the second is refused at
// once, in one line naming the first one's pid and the fix, and the first
// is unharmed and still storing ticks.
func TestJourneyUpTwice(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := upDataDir(t)
	first := startUp(t, dir, nil)
	waitFor(t, "the first up to store ticks", time.Minute, func() bool { return first.ticks(t) > 100 })

	second := start(t, "up", "--data-dir", dir, "--http", freeAddr(t), "--broker-listen", freeAddr(t), "--pg-port", strconv.Itoa(freePort(t)))
	waitFor(t, "the second up to give up", 30*time.Second, second.exited)
	out := strings.TrimSpace(second.out.String())
	want := fmt.Sprintf("is in use by stockpipe up (pid %d", first.cmd.Process.Pid)
	if second.err == nil || !strings.Contains(out, want) || !strings.Contains(out, "--data-dir") || strings.Count(out, "\n") != 0 {
		t.Fatalf("second up: %v, output:\n%s\nwant one line containing %q", second.err, out, want)
	}
	for _, touched := range []string{"PostgreSQL", "broker", "adopting"} {
		if strings.Contains(out, touched) {
			t.Errorf("the second up touched %s: %s", touched, out)
		}
	}
	before := first.ticks(t)
	waitFor(t, "the first up to go on storing", time.Minute, func() bool { return first.ticks(t) > before+100 })
	if code := readyz(first.web); code != http.StatusOK {
		t.Fatalf("the first up's /readyz answers %d", code)
	}
	first.signal(t, syscall.SIGINT)
	first.wait(t)
	// With the first one gone the directory is free again.
	again := startUp(t, dir, nil)
	again.signal(t, syscall.SIGINT)
	again.wait(t)
}

// TestJourneyDatabaseURLFromEnvironment starts make run's command with a
// DATABASE_URL left over in the shell, pointing nowhere: up says that the
// environment chose the database, and its waiting message names where the
// URL came from.
func TestJourneyDatabaseURLFromEnvironment(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dead := freeAddr(t) // nothing listens there
	p := startEnv(t, []string{"DATABASE_URL=postgres://someone@" + dead + "/elsewhere?sslmode=disable"},
		"up", "--data-dir", upDataDir(t), "--http", freeAddr(t), "--broker-listen", freeAddr(t))
	waitFor(t, "up to say where the database came from and that it is waiting", time.Minute, func() bool {
		out := p.out.String()
		return strings.Contains(out, "using the database from DATABASE_URL instead of the embedded PostgreSQL") &&
			strings.Contains(out, "PostgreSQL is unreachable") && strings.Contains(out, "url_from=DATABASE_URL")
	})
	if strings.Contains(p.out.String(), "PostgreSQL started") {
		t.Fatal("the embedded PostgreSQL was started although DATABASE_URL was used")
	}
	p.signal(t, syscall.SIGINT)
	<-p.done
}

// TestJourneyCommandsNextToUp runs the commands a person types in a second
// terminal next to make run, with no URLs: they find up's database and
// broker through the data directory and say so.
func TestJourneyCommandsNextToUp(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := upDataDir(t)
	u := startUp(t, dir, nil)
	waitFor(t, "ticks", time.Minute, func() bool { return u.ticks(t) > 0 })
	code, out, errOut := runCLI(t, "dag", "list", "--data-dir", dir)
	if code != 0 || !strings.Contains(out, "market_close") || !strings.Contains(errOut, "using the database of the stockpipe up running on "+dir) {
		t.Fatalf("dag list next to up: code %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = runCLI(t, "config", "process", "--data-dir", dir)
	if code != 0 || !regexp.MustCompile(`--database-url\s+postgres://stockpipe@127\.0\.0\.1:\d+/stockpipe\S*\s+data-dir`).MatchString(out) {
		t.Fatalf("config process next to up does not show up's database:\n%s", out)
	}
	code, out, errOut = runCLI(t, "migrate", "--data-dir", dir)
	if code != 0 || !strings.Contains(out, "schema is up to date") {
		t.Fatalf("migrate next to up: code %d\n%s\n%s", code, out, errOut)
	}
	g := start(t, "generate", "--data-dir", dir, "--symbols", "NEXTTO", "--count", "50", "--rate", "1000")
	g.wait(t)
	waitFor(t, "the generated ticks stored by up's processor", time.Minute, func() bool {
		return scalar(t, u.pool, `SELECT count(*) FROM ticks WHERE symbol = 'NEXTTO'`) == 50
	})
	u.signal(t, syscall.SIGINT)
	u.wait(t)
	// With up gone, the same command says what to do in one line.
	code, _, errOut = runCLI(t, "dag", "list", "--data-dir", dir, "--db-wait", "1s")
	if code == 0 || !strings.Contains(errOut, "no database URL") || !strings.Contains(errOut, "start stockpipe up") {
		t.Fatalf("dag list with up stopped: code %d, %q", code, errOut)
	}
}

// TestJourneyPostgresKilledUnderUp kills the embedded PostgreSQL under a
// running up, as an OOM killer or a stray pkill would: up says so, starts
// it again, and the pipeline goes on storing ticks.
func TestJourneyPostgresKilledUnderUp(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := upDataDir(t)
	u := startUp(t, dir, nil)
	waitFor(t, "ticks", time.Minute, func() bool { return u.ticks(t) > 100 })
	b, err := os.ReadFile(filepath.Join(dir, "postgres", "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "up to notice and start PostgreSQL again", time.Minute, func() bool {
		return strings.Contains(u.out.String(), "PostgreSQL has exited unexpectedly; starting it again")
	})
	var before int64
	waitFor(t, "the database to answer again", time.Minute, func() bool {
		var err error
		before, err = countTicks(u.pool)
		return err == nil
	})
	waitFor(t, "ticks stored after the restart", time.Minute, func() bool {
		n, err := countTicks(u.pool)
		return err == nil && n > before+100
	})
	waitFor(t, "/readyz to answer 200", time.Minute, func() bool { return readyz(u.web) == http.StatusOK })
	u.signal(t, syscall.SIGINT)
	u.wait(t)
}

func countTicks(pool *pgxpool.Pool) (int64, error) {
	var n int64
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := pool.QueryRow(ctx, `SELECT count(*) FROM ticks`).Scan(&n)
	return n, err
}

// TestJourneyDiskWarning runs up on a disk with less free space than it
// wants (simulated by asking for more than any disk has): it warns, with
// what to do.
func TestJourneyDiskWarning(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	u := startUp(t, upDataDir(t), nil, "--min-free-disk", "1000000TB")
	waitFor(t, "the disk warning", time.Minute, func() bool {
		return strings.Contains(u.out.String(), "disk nearly full")
	})
	if line := outageLineWith(u.out.String(), "disk nearly full"); !strings.Contains(line, "--retention") || !regexp.MustCompile(`writes about [0-9.]+ [GMk]B an hour`).MatchString(line) {
		t.Errorf("the warning does not say what to do: %s", line)
	}
	u.signal(t, syscall.SIGINT)
	u.wait(t)
}

// TestJourneyTakenPostgresPort starts up while another program holds the
// PostgreSQL port it asks for: it warns and runs on another port, and the
// URL it prints (and records for other commands) is the one that works.
func TestJourneyTakenPostgresPort(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	dir := upDataDir(t)
	u := startUp(t, dir, nil, "--pg-port", strconv.Itoa(taken))
	if !strings.Contains(u.out.String(), fmt.Sprintf("port %d is taken by another program", taken)) {
		t.Errorf("no warning about the taken port:\n%s", u.out.tail(2000))
	}
	if strings.Contains(u.dbURL, ":"+strconv.Itoa(taken)+"/") {
		t.Fatalf("printed URL %s uses the taken port", u.dbURL)
	}
	code, _, errOut := runCLI(t, "migrate", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("migrate with the recorded URL: %s", errOut)
	}
	u.signal(t, syscall.SIGINT)
	u.wait(t)
}

// TestVersion checks `stockpipe --version`.
func TestVersion(t *testing.T) {
	code, out, _ := runCLI(t, "--version")
	if code != 0 || !regexp.MustCompile(`^stockpipe \S+\n$`).MatchString(out) {
		t.Fatalf("--version: %d %q", code, out)
	}
	// The binary make builds carries git's description.
	if _, err := exec.LookPath("git"); err == nil {
		bin := filepath.Join(t.TempDir(), "stockpipe")
		build := exec.Command("go", "build", "-ldflags", "-X main.buildVersion=v9.9.9-test", "-o", bin, ".")
		if b, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, b)
		}
		b, err := exec.Command(bin, "--version").Output()
		if err != nil || string(b) != "stockpipe v9.9.9-test\n" {
			t.Fatalf("built binary --version = %q, %v", b, err)
		}
	}
}

// TestJourneyMarketCloseToday triggers market_close for today next to a
// running up, as a person trying the scheduler does: whatever the time of
// day, no final 1d candle may come of a session that has not closed; during
// the session the day's candles are there, marked not final.
func TestJourneyMarketCloseToday(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	ny, _ := time.LoadLocation("America/New_York")
	dir := upDataDir(t)
	u := startUp(t, dir, nil)
	waitFor(t, "a minute's worth of ticks", 2*time.Minute, func() bool {
		return scalar(t, u.pool, `SELECT count(*) FROM candles WHERE interval = '1m'`) > 0
	})
	now := time.Now().In(ny)
	code, out, errOut := runCLI(t, "dag", "trigger", "market_close", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("dag trigger: %s %s", out, errOut)
	}
	waitFor(t, "the run to finish", 2*time.Minute, func() bool {
		_, out, _ := runCLI(t, "dag", "runs", "market_close", "--data-dir", dir)
		return strings.Contains(out, "success") || strings.Contains(out, "failed")
	})
	y, m, d := now.Date()
	today := time.Date(y, m, d, 0, 0, 0, 0, ny)
	closed := time.Date(y, m, d, 16, 5, 0, 0, ny)
	final := scalar(t, u.pool, fmt.Sprintf(`SELECT count(*) FROM candles WHERE interval = '1d' AND bucket = '%s' AND final`, today.Format(time.RFC3339)))
	notFinal := scalar(t, u.pool, fmt.Sprintf(`SELECT count(*) FROM candles WHERE interval = '1d' AND bucket = '%s' AND NOT final`, today.Format(time.RFC3339)))
	if time.Now().Before(closed) && final != 0 {
		t.Fatalf("%d final 1d candles for %s before its session closed", final, today.Format(time.DateOnly))
	}
	inSession := now.Weekday() != time.Saturday && now.Weekday() != time.Sunday &&
		!now.Before(time.Date(y, m, d, 9, 31, 0, 0, ny)) && now.Before(time.Date(y, m, d, 16, 0, 0, 0, ny))
	if inSession && notFinal == 0 {
		t.Fatalf("no not-final 1d candles for today during the session")
	}
	t.Logf("market_close for today at %s New York: %d final, %d not final 1d candles", now.Format("15:04"), final, notFinal)
	u.signal(t, syscall.SIGINT)
	u.wait(t)
}

// TestJourneyCrossSiteTrigger sends the two requests a hostile page makes a
// browser send to a laptop's up (as curl shows them): both are refused and
// start no run.
func TestJourneyCrossSiteTrigger(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	u := startUp(t, upDataDir(t), nil)
	for _, tc := range []struct{ dag, body string }{
		{"backfill", `{"params":{"file":"/etc/passwd","symbol":"PWN"}}`},
		{"retention", `{"params":{"retention":"1s"}}`},
	} {
		req, _ := http.NewRequest(http.MethodPost, "http://"+u.web+"/api/dags/"+tc.dag+"/trigger", strings.NewReader(tc.body))
		req.Header.Set("Content-Type", "text/plain")
		req.Header.Set("Origin", "http://evil.example")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("cross-site trigger of %s: %d, want 403", tc.dag, resp.StatusCode)
		}
	}
	if n := scalar(t, u.pool, `SELECT count(*) FROM dag_runs WHERE dag IN ('backfill', 'retention') AND (params ? 'file' OR params ? 'retention')`); n != 0 {
		t.Fatalf("%d runs started by cross-site requests", n)
	}
	u.signal(t, syscall.SIGINT)
	u.wait(t)
}
