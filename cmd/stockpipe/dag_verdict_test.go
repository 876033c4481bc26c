package main

import (
	"context"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/fixture"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
)

// TestDagRunsShowsFailedChecks triggers market_close from the command line
// for a date whose stored records are all rejected ones, lets a scheduler
// node run it, and lists the runs: the run reads failed, with the check
// that failed and by how much.
func TestDagRunsShowsFailedChecks(t *testing.T) {
	ctx := context.Background()
	dbURL := pgtest.New(t)
	pool := fixture.Open(t, dbURL, 8)
	log := slog.New(slog.DiscardHandler)
	if _, err := pool.Exec(ctx, `
		INSERT INTO rejected_ticks (topic, partition, "offset", reason, received_at)
		SELECT 'ticks', 0, g, 'malformed_json', '2026-11-04 15:00:00+00' FROM generate_series(1, 20) g`); err != nil {
		t.Fatal(err)
	}

	// A scheduler node with the command line's DAGs, triggered only so
	// that no scheduled run joins the one under test.
	var sf schedFlags
	cfg := sf.config(pool, kafka.Config{}, "", log)
	for i := range cfg.DAGs {
		cfg.DAGs[i].Schedule = ""
	}
	cfg.PollInterval = 50 * time.Millisecond
	sched, err := dag.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := sched.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := sched.Stop(sctx); err != nil {
			t.Errorf("stopping the scheduler: %v", err)
		}
	})

	code, out, errOut := runCLI(t, "dag", "trigger", "market_close", "--date", "2026-11-04", "--database-url", dbURL)
	m := regexp.MustCompile(`: run (\d+) `).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("dag trigger: code %d\n%s%s", code, out, errOut)
	}
	id, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the run to finish", 30*time.Second, func() bool {
		var done bool
		err := pool.QueryRow(ctx, `SELECT finished_at IS NOT NULL FROM dag_runs WHERE id = $1`, id).Scan(&done)
		return err == nil && done
	})

	code, out, errOut = runCLI(t, "dag", "runs", "market_close", "--database-url", dbURL)
	if code != 0 {
		t.Fatalf("dag runs: code %d\n%s%s", code, out, errOut)
	}
	t.Logf("dag runs market_close:\n%s", out)
	var row []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == m[1] {
			row = f
		}
	}
	if row == nil {
		t.Fatalf("dag runs lists no run %s:\n%s", m[1], out)
	}
	line := strings.Join(row, " ")
	// RUN DAG DATE TIME STATE ...
	if len(row) < 5 || row[1] != "market_close" || row[2] != "2026-11-04" || row[4] != "failed" {
		t.Errorf("run %s is listed as %q; want market_close 2026-11-04 failed", m[1], line)
	}
	for _, want := range []string{
		"daily_candles:success", "quality_checks:failed", "anomaly_summary:success",
		"quality_checks: quality report of 2026-11-04: 1 of 5 quality checks failed: reject_rate 100% > 5%",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("run %s is listed as %q, without %q", m[1], line, want)
		}
	}
}
