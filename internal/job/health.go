package job

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/kafka"
)

// pipeline_health: every five minutes, whether the broker answers, the
// topics exist, the processors keep up, ticks keep arriving and few
// records are dead-lettered (check), recorded in pipeline_health.

// healthDAG declares pipeline_health. Its parameters are the checks'
// thresholds; the broker's answer time and the partition count have fixed
// ones (10 s, the Deps' Partitions).
func (s *shipped) healthDAG() dag.DAG {
	return dag.DAG{
		Name: DAGPipelineHealth,
		Description: "Records whether the broker answers, the topics exist, the processors keep up, " +
			"ticks keep arriving and few records are dead-lettered.",
		Schedule: "*/5 * * * *",
		Location: time.UTC,
		Params: []dag.Param{
			{Name: "max_lag", Type: dag.Integer, Default: "100000", Min: "0",
				Doc: "records the processors' consumer group may be behind on the ticks topic"},
			{Name: "max_tick_age", Type: dag.Duration, Default: "5m", Min: "0s",
				Doc: "how long ago the newest tick may have been stored"},
			{Name: "max_dlq_rate", Type: dag.Number, Default: "0.05", Min: "0", Max: "1",
				Doc: "share of the last 5 minutes' records that may have been dead-lettered"},
		},
		Tasks: []dag.Task{
			{Name: "check", Run: s.healthCheck, Retries: 1, Timeout: time.Minute},
		},
	}
}

const (
	// sqlNewestTick is the age in seconds of the newest tick and when it
	// was stored. ingested_at has no index (it would cost the insert path),
	// so this takes each symbol's newest tick by event time through the
	// primary key (symbol, ts, seq) and the latest ingested_at among those:
	// the same as max(ingested_at) whenever ticks arrive in event time
	// order, as live ticks do.
	sqlNewestTick = `
		SELECT extract(epoch FROM now() - max(t.ingested_at))::float8, max(t.ingested_at)
		FROM symbols s CROSS JOIN LATERAL (
			SELECT ingested_at FROM ticks WHERE symbol = s.symbol ORDER BY ts DESC LIMIT 1) t`
	// sqlRecentRecords counts the records rejected and the ticks stored in
	// the last 5 minutes.
	sqlRecentRecords = `
		SELECT (SELECT count(*) FROM rejected_ticks WHERE received_at > now() - interval '5 minutes'),
		       (SELECT count(*) FROM ticks WHERE ts > now() - interval '5 minutes')`
	// sqlStoreHealth writes the run's pipeline_health row over an earlier
	// run's for the same moment.
	sqlStoreHealth = `
		INSERT INTO pipeline_health (logical_time, checked_at, healthy, checks) VALUES ($1, now(), $2, $3)
		ON CONFLICT (logical_time) DO UPDATE SET
			checked_at = excluded.checked_at, healthy = excluded.healthy, checks = excluded.checks`
)

// healthCheck records one pipeline_health row for the run's logical time,
// and keeps the checks with the task run. An unhealthy pipeline is a failed
// run: the row (healthy = false) is written first, then the task fails with
// a *dag.ChecksFailedError naming the failed checks, which is not retried (the
// next scheduled run checks again). Failing to write the row is an error
// that is retried. Each check that cannot be carried out counts as failed,
// with the reason in its detail. With no brokers configured the Kafka
// checks are skipped (and pass).
func (s *shipped) healthCheck(ctx context.Context, tc *dag.TaskContext) error {
	pool, err := s.pool(tc)
	if err != nil {
		return err
	}
	log := s.log(tc)
	maxLag := tc.Params.Int("max_lag")
	maxAge := tc.Params.Duration("max_tick_age")
	maxDLQ := tc.Params.Float("max_dlq_rate")

	checks := s.kafkaChecks(ctx, maxLag)

	// Age of the newest tick (see sqlNewestTick for how it is found).
	{
		c := dag.CheckResult{Name: "tick_age", Threshold: maxAge.Seconds(), Unit: dag.UnitSeconds}
		var age *float64
		var last *time.Time
		err := pool.QueryRow(ctx, sqlNewestTick).Scan(&age, &last)
		switch {
		case err != nil:
			c.Detail = "could not read the newest tick: " + err.Error()
		case age == nil:
			c.Detail = "no ticks stored"
		default:
			c.Value = math.Max(*age, 0)
			c.Passed = c.Value <= c.Threshold
			c.Detail = fmt.Sprintf("newest tick stored at %s, %.1fs ago", last.UTC().Format(time.RFC3339), c.Value)
		}
		checks = append(checks, c)
	}

	// Dead letters in the last 5 minutes against all records in them.
	// Ticks count by event time (ts, the partition key), which for live ticks is
	// within a minute of arrival; a replay of history stores ticks with old
	// event times, and while it runs any rejection counts against few
	// ticks.
	{
		c := dag.CheckResult{Name: "dlq_rate", Threshold: maxDLQ, Unit: dag.UnitRatio}
		var rejected, ticks int64
		err := pool.QueryRow(ctx, sqlRecentRecords).Scan(&rejected, &ticks)
		if err != nil {
			c.Detail = "could not count dead letters: " + err.Error()
		} else {
			if rejected+ticks > 0 {
				c.Value = float64(rejected) / float64(rejected+ticks)
			}
			c.Passed = c.Value <= c.Threshold
			c.Detail = fmt.Sprintf("%d record(s) rejected and %d tick(s) stored in the last 5 minutes", rejected, ticks)
		}
		checks = append(checks, c)
	}

	failed := dag.Verdict("health", checks)
	doc, err := json.Marshal(checks)
	if err != nil {
		return fmt.Errorf("encoding the health checks: %w", err)
	}
	if _, err := pool.Exec(ctx, sqlStoreHealth, tc.LogicalDate, failed == nil, doc); err != nil {
		return fmt.Errorf("recording the health check: %w", err)
	}
	tc.RecordChecks(checks)
	if failed != nil {
		return fmt.Errorf("pipeline health at %s: %w", tc.LogicalDate.UTC().Format(time.RFC3339), failed)
	}
	log.Info("pipeline healthy", "checks", len(checks))
	return nil
}

// kafkaChecks returns the broker, topics and consumer_lag checks.
func (s *shipped) kafkaChecks(ctx context.Context, maxLag int64) []dag.CheckResult {
	const timeout = 10 * time.Second
	broker := dag.CheckResult{Name: "broker", Threshold: timeout.Seconds(), Unit: dag.UnitSeconds}
	topics := dag.CheckResult{Name: "topics", Threshold: float64(s.d.Partitions)}
	if s.d.Partitions > 0 {
		// Without an expected count any count passes; with one, only it.
		topics.Op = dag.Equal
	}
	lag := dag.CheckResult{Name: "consumer_lag", Threshold: float64(maxLag)}
	cfg := s.d.Kafka
	if len(cfg.Brokers) == 0 {
		for _, c := range []*dag.CheckResult{&broker, &topics, &lag} {
			c.Passed, c.Skipped, c.Detail = true, true, "skipped: no brokers configured"
		}
		return []dag.CheckResult{broker, topics, lag}
	}
	cl, err := kgo.NewClient(cfg.Opts()...)
	if err != nil {
		broker.Detail = "creating a Kafka client: " + err.Error()
		topics.Detail, lag.Detail = "broker unreachable", "broker unreachable"
		return []dag.CheckResult{broker, topics, lag}
	}
	defer cl.Close()

	pctx, cancel := context.WithTimeout(ctx, timeout)
	began := time.Now()
	err = cl.Ping(pctx)
	cancel()
	broker.Value = time.Since(began).Seconds()
	if err != nil {
		broker.Detail = fmt.Sprintf("no broker of %s answered: %v", strings.Join(cfg.Brokers, ","), err)
		topics.Detail, lag.Detail = "broker unreachable", "broker unreachable"
		return []dag.CheckResult{broker, topics, lag}
	}
	broker.Passed = true
	broker.Detail = fmt.Sprintf("a broker of %s answered in %.0fms", strings.Join(cfg.Brokers, ","), broker.Value*1000)

	adm := kadm.NewClient(cl)
	tctx, cancel := context.WithTimeout(ctx, timeout)
	details, err := adm.ListTopics(tctx, kafka.TopicTicks, kafka.TopicDLQ)
	cancel()
	if err != nil {
		topics.Detail = "listing topics: " + err.Error()
	} else {
		var problems []string
		for _, name := range []string{kafka.TopicTicks, kafka.TopicDLQ} {
			d, ok := details[name]
			if !ok || d.Err != nil {
				reason := "missing"
				if ok {
					reason = d.Err.Error()
				}
				problems = append(problems, fmt.Sprintf("topic %s: %s", name, reason))
				continue
			}
			if name == kafka.TopicTicks {
				n := int32(len(d.Partitions))
				topics.Value = float64(n)
				if s.d.Partitions > 0 && n != s.d.Partitions {
					problems = append(problems, fmt.Sprintf("topic %s has %d partitions, expected %d", name, n, s.d.Partitions))
				}
			}
		}
		topics.Passed = len(problems) == 0
		if topics.Passed {
			topics.Detail = fmt.Sprintf("%s (%d partitions) and %s exist", kafka.TopicTicks, int(topics.Value), kafka.TopicDLQ)
		} else {
			topics.Detail = strings.Join(problems, "; ")
		}
	}

	lctx, cancel := context.WithTimeout(ctx, timeout)
	lags, err := adm.Lag(lctx, s.d.Group)
	cancel()
	l, ok := lags[s.d.Group]
	switch {
	case err != nil:
		lag.Detail = fmt.Sprintf("measuring the lag of group %s: %v", s.d.Group, err)
	case !ok:
		lag.Detail = fmt.Sprintf("group %s was not described", s.d.Group)
	case l.Error() != nil:
		lag.Detail = fmt.Sprintf("measuring the lag of group %s: %v", s.d.Group, l.Error())
	case l.State == "Dead" || len(l.Lag[kafka.TopicTicks]) == 0:
		lag.Detail = fmt.Sprintf("group %s has no committed offsets in %s (state %s)", s.d.Group, kafka.TopicTicks, l.State)
	default:
		var unknown int
		for _, p := range l.Lag[kafka.TopicTicks] {
			if p.Err != nil || p.Lag < 0 {
				unknown++
			}
		}
		lag.Value = float64(l.Lag.TotalByTopic()[kafka.TopicTicks].Lag)
		lag.Passed = unknown == 0 && lag.Value <= lag.Threshold
		lag.Detail = fmt.Sprintf("group %s (state %s, %d member(s)) is %d record(s) behind on %s",
			s.d.Group, l.State, len(l.Members), int64(lag.Value), kafka.TopicTicks)
		if unknown > 0 {
			lag.Detail += fmt.Sprintf("; lag unknown for %d partition(s)", unknown)
		}
	}
	return []dag.CheckResult{broker, topics, lag}
}
