package job

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/fixture"
	"github.com/stockpipe/stockpipe/internal/kafka"
)

func TestDAGPipelineHealthWithoutBrokers(t *testing.T) {
	t.Parallel()
	e := newDagsEnv(t, Deps{})
	e.simulate(session{start: time.Date(2026, 11, 2, 14, 30, 0, 0, time.UTC), dur: time.Minute, rate: 20, seed: 3})
	logical := time.Date(2026, 11, 25, 12, 5, 0, 0, time.UTC)
	e.run(DAGPipelineHealth, logical, nil)

	var healthy bool
	var doc []byte
	if err := e.pool.QueryRow(context.Background(),
		`SELECT healthy, checks FROM pipeline_health WHERE logical_time = $1`, logical).Scan(&healthy, &doc); err != nil {
		t.Fatal(err)
	}
	checks := e.checks(doc)
	for _, name := range []string{"broker", "topics", "consumer_lag"} {
		if c := checks[name]; !c.Skipped || !c.Passed || !strings.Contains(c.Detail, "skipped") {
			t.Errorf("check %s = %+v, want skipped", name, c)
		}
	}
	// The ticks were just stored: their age is seconds.
	if c := checks["tick_age"]; !c.Passed || c.Skipped || c.Value > 60 || c.Threshold != 300 {
		t.Errorf("tick_age = %+v", c)
	}
	if c := checks["dlq_rate"]; !c.Passed || c.Value != 0 {
		t.Errorf("dlq_rate = %+v", c)
	}
	if !healthy {
		t.Errorf("unhealthy: %s", doc)
	}

	// Stale ticks and a burst of dead letters make an unhealthy result,
	// recorded over the same row, and a failed task that names them.
	e.exec(`UPDATE ticks SET ingested_at = now() - interval '1 hour'`)
	e.exec(`INSERT INTO rejected_ticks (topic, partition, "offset", reason) SELECT 'ticks', 0, g, 'malformed_json' FROM generate_series(1, 10) g`)
	err := e.runChecked(DAGPipelineHealth, logical, nil)
	var verdict *dag.ChecksFailedError
	if !errors.As(err, &verdict) || !strings.Contains(err.Error(), "2 of 5 health checks failed: tick_age 36") ||
		!strings.Contains(err.Error(), "s > 300s; dlq_rate 100% > 5%") {
		t.Errorf("stale and rejecting pipeline: %v", err)
	}
	if err := e.pool.QueryRow(context.Background(),
		`SELECT healthy, checks FROM pipeline_health WHERE logical_time = $1`, logical).Scan(&healthy, &doc); err != nil {
		t.Fatal(err)
	}
	checks = e.checks(doc)
	if healthy || checks["tick_age"].Passed || checks["tick_age"].Value < 3500 || checks["dlq_rate"].Passed {
		t.Errorf("stale and rejecting pipeline: healthy=%v %s", healthy, doc)
	}
	if n := e.count(`SELECT count(*) FROM pipeline_health`); n != 1 {
		t.Errorf("%d health rows for one logical time", n)
	}
}

func TestDAGPipelineHealthAndReplayWithBroker(t *testing.T) {
	t.Parallel()
	_, kcfg := fixture.Broker(t, "", 3)
	kcfg.ClientID = "dags-test"
	ctx := context.Background()
	e := newDagsEnv(t, Deps{Kafka: kcfg, Group: "g", Partitions: 3})
	e.simulate(session{start: time.Date(2026, 11, 2, 14, 30, 0, 0, time.UTC), dur: time.Minute, rate: 20, seed: 4})

	// health runs the check; the row says healthy exactly when the task
	// succeeds.
	health := func(logical time.Time) (bool, map[string]dag.CheckResult) {
		t.Helper()
		verdict := e.runChecked(DAGPipelineHealth, logical, nil)
		var healthy bool
		var doc []byte
		if err := e.pool.QueryRow(ctx, `SELECT healthy, checks FROM pipeline_health WHERE logical_time = $1`, logical).Scan(&healthy, &doc); err != nil {
			t.Fatal(err)
		}
		if healthy != (verdict == nil) {
			t.Errorf("healthy=%v but the task returned %v", healthy, verdict)
		}
		return healthy, e.checks(doc)
	}

	// Replay a small CSV into the ticks topic.
	csv := filepath.Join(t.TempDir(), "ibm.csv")
	if err := os.WriteFile(csv, []byte("Date,Open,High,Low,Close,Adj Close,Volume\n"+
		"2026-10-28,100,102,99,101,101,100000\n"+
		"2026-10-29,101,103,100,102.5,102.5,120000\n"+
		"2026-10-30,102.5,104,101,101.5,101.5,90000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.runTask(DAGBackfill, "recompute", dagsDate(2), map[string]string{"symbol": "IBM", "file": csv}); err != nil {
		t.Fatal(err)
	}
	// A client of the test's own for the admin requests.
	cl2, err := kgo.NewClient(kcfg.Opts()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl2.Close)
	adm := kadm.NewClient(cl2)
	ends, err := adm.ListEndOffsets(ctx, kafka.TopicTicks)
	if err != nil {
		t.Fatal(err)
	}
	var produced int64
	ends.Each(func(o kadm.ListedOffset) { produced += o.Offset })
	if produced < 3*4 {
		t.Fatalf("%d records in %s after replaying 3 daily bars", produced, kafka.TopicTicks)
	}

	// The group has committed nothing: the lag is unknown, so unhealthy.
	healthy, checks := health(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))
	if healthy || checks["consumer_lag"].Passed || !checks["broker"].Passed || !checks["topics"].Passed || checks["topics"].Value != 3 {
		t.Errorf("before any commit: healthy=%v %+v", healthy, checks)
	}
	if c := checks["consumer_lag"]; c.Summary() != "consumer_lag: "+c.Detail || !strings.Contains(c.Detail, "group g") {
		t.Errorf("an unmeasured lag is summarised as %q", c.Summary())
	}
	// Once the group has consumed everything, it is healthy.
	commit := kadm.Offsets{}
	ends.Each(func(o kadm.ListedOffset) {
		commit.Add(kadm.Offset{Topic: o.Topic, Partition: o.Partition, At: o.Offset, LeaderEpoch: -1})
	})
	if _, err := adm.CommitOffsets(ctx, "g", commit); err != nil {
		t.Fatal(err)
	}
	healthy, checks = health(time.Date(2026, 11, 25, 12, 5, 0, 0, time.UTC))
	if !healthy || checks["consumer_lag"].Value != 0 {
		t.Errorf("after the commit: healthy=%v %+v", healthy, checks)
	}
	// A partition count other than the expected one fails the topics check.
	e2 := &dagsEnv{t: t, pool: e.pool, deps: e.deps, dags: map[string]dag.DAG{}}
	e2.deps.Partitions = 6
	for _, d := range Shipped(e2.deps) {
		e2.dags[d.Name] = d
	}
	if err := e2.runChecked(DAGPipelineHealth, time.Date(2026, 11, 25, 12, 10, 0, 0, time.UTC), nil); err == nil ||
		!strings.Contains(err.Error(), "topics 3 ≠ 6") {
		t.Errorf("3 partitions, 6 expected: %v", err)
	}
	var doc []byte
	if err := e.pool.QueryRow(ctx, `SELECT checks FROM pipeline_health WHERE logical_time = '2026-11-25 12:10:00+00'`).Scan(&doc); err != nil {
		t.Fatal(err)
	}
	if c := e.checks(doc)["topics"]; c.Passed || !strings.Contains(c.Detail, "expected 6") {
		t.Errorf("topics with 3 partitions, 6 expected: %+v", c)
	}

	// A broker that does not answer is an unhealthy result, not an error.
	e3 := &dagsEnv{t: t, pool: e.pool, deps: e.deps, dags: map[string]dag.DAG{}}
	e3.deps.Kafka = kafka.Config{Brokers: []string{"127.0.0.1:1"}}
	for _, d := range Shipped(e3.deps) {
		e3.dags[d.Name] = d
	}
	if err := e3.runChecked(DAGPipelineHealth, time.Date(2026, 11, 25, 12, 15, 0, 0, time.UTC), nil); err == nil ||
		!strings.Contains(err.Error(), "broker: no broker of 127.0.0.1:1 answered") {
		t.Errorf("unreachable broker: %v", err)
	}
	if err := e.pool.QueryRow(ctx, `SELECT checks FROM pipeline_health WHERE logical_time = '2026-11-25 12:15:00+00'`).Scan(&doc); err != nil {
		t.Fatal(err)
	}
	if c := e.checks(doc); c["broker"].Passed || c["topics"].Passed || c["consumer_lag"].Passed {
		t.Errorf("unreachable broker: %s", doc)
	}
}
