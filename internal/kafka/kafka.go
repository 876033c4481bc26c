// Package kafka holds stockpipe's Kafka plumbing: client options shared by
// every role, topic administration, and the embedded Kafka-protocol broker.
package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/plugin/kslog"
)

// Topic names. These are part of stockpipe's contract with its users.
const (
	TopicTicks     = "ticks"     // key = symbol, value = tick JSON
	TopicDLQ       = "ticks.dlq" // rejected records, original bytes, reason in headers
	TopicAnomalies = "anomalies" // detected anomalies as JSON, key = symbol
)

// Header names on dead-letter records.
const (
	HeaderError       = "error"        // the rejection reason code
	HeaderErrorDetail = "error.detail" // the reason in words
	HeaderTopic       = "source.topic"
	HeaderPartition   = "source.partition"
	HeaderOffset      = "source.offset"
	HeaderTruncated   = "truncated" // present when the value was cut; the original size in bytes
)

// Config is how a role reaches Kafka.
type Config struct {
	Brokers  []string       // seed brokers, host:port
	ClientID string         // shown in broker logs and group descriptions
	TLS      *tls.Config    // nil = plaintext
	SASL     sasl.Mechanism // nil = no authentication
	// Logger, if set, receives the client's own log — connections,
	// rebalances, retries — through franz-go's slog plugin, at the
	// logger's level.
	Logger *slog.Logger
}

// Opts returns the franz-go options for cfg. Keys are partitioned with
// murmur2, as the Java client does, so that every producer sends a symbol to
// the same partition.
func (c Config) Opts() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		// franz-go lingers 10 ms by default; a tick's trip to the
		// dashboard is worth more. Records still batch by themselves
		// behind a produce request in flight, so throughput holds.
		kgo.ProducerLinger(0),
	}
	if c.ClientID != "" {
		opts = append(opts, kgo.ClientID(c.ClientID))
	}
	if c.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(c.TLS))
	}
	if c.SASL != nil {
		opts = append(opts, kgo.SASL(c.SASL))
	}
	if c.Logger != nil {
		opts = append(opts, kgo.WithLogger(kslog.New(c.Logger.With("component", "kafka"))))
	}
	return opts
}

// ParseBrokers splits a comma-separated broker list, rejecting entries that
// are not host:port.
func ParseBrokers(s string) ([]string, error) {
	var out []string
	for _, b := range strings.Split(s, ",") {
		b = strings.TrimSpace(b)
		if b == "" {
			continue
		}
		i := strings.LastIndexByte(b, ':')
		if i <= 0 || i == len(b)-1 || strings.Contains(b, "://") {
			return nil, fmt.Errorf("broker %q is not host:port (for example 127.0.0.1:9092)", b)
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		return nil, errors.New("no brokers given (for example --brokers 127.0.0.1:9092)")
	}
	return out, nil
}

// TopicSpec is a topic stockpipe needs.
type TopicSpec struct {
	Name       string
	Partitions int32
	// Retention, if positive, is how long the broker keeps the topic's
	// records (retention.ms); it is set on a topic that exists already
	// too. Zero leaves the broker's default.
	Retention time.Duration
}

// Topics returns the topics stockpipe uses, with the ticks topic at the given
// partition count. The dead-letter and anomaly topics are low-volume and get
// one partition each.
func Topics(tickPartitions int32) []TopicSpec {
	return []TopicSpec{
		{Name: TopicTicks, Partitions: tickPartitions},
		{Name: TopicDLQ, Partitions: 1},
		{Name: TopicAnomalies, Partitions: 1},
	}
}

// EnsureTopics creates the topics that are missing. An existing ticks topic
// with a different partition count is used as it is, with a warning: changing
// it would move symbols between partitions and with them their state.
func EnsureTopics(ctx context.Context, cl *kgo.Client, log *slog.Logger, specs []TopicSpec) error {
	adm := kadm.NewClient(cl)
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	details, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return fmt.Errorf("listing topics: %w", err)
	}
	for _, s := range specs {
		d, ok := details[s.Name]
		if ok && d.Err == nil {
			if got := int32(len(d.Partitions)); got != s.Partitions && s.Name == TopicTicks {
				log.Warn("topic exists with a different partition count; using it as it is",
					"topic", s.Name, "partitions", got, "configured", s.Partitions)
			}
			if err := ensureRetention(ctx, adm, log, s); err != nil {
				return err
			}
			continue
		}
		var configs map[string]*string
		if s.Retention > 0 {
			configs = map[string]*string{"retention.ms": kadm.StringPtr(strconv.FormatInt(s.Retention.Milliseconds(), 10))}
		}
		resp, err := adm.CreateTopic(ctx, s.Partitions, -1, configs, s.Name)
		if err == nil {
			err = resp.Err
		}
		if errors.Is(err, kerr.TopicAlreadyExists) {
			// The client's metadata, cached for a few seconds, did not
			// know it yet.
			if err := ensureRetention(ctx, adm, log, s); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("creating topic %s: %w", s.Name, err)
		}
		log.Info("created topic", "topic", s.Name, "partitions", s.Partitions)
	}
	return nil
}

// ensureRetention sets an existing topic's retention.ms to the spec's, if
// the spec has one and the topic's differs, so that a data directory from
// before keeps to the bound it is now given.
func ensureRetention(ctx context.Context, adm *kadm.Client, log *slog.Logger, s TopicSpec) error {
	if s.Retention <= 0 {
		return nil
	}
	want := strconv.FormatInt(s.Retention.Milliseconds(), 10)
	rcs, err := adm.DescribeTopicConfigs(ctx, s.Name)
	if err != nil {
		return fmt.Errorf("reading the configuration of topic %s: %w", s.Name, err)
	}
	rc, err := rcs.On(s.Name, nil)
	if err == nil {
		err = rc.Err
	}
	if err != nil {
		return fmt.Errorf("reading the configuration of topic %s: %w", s.Name, err)
	}
	for _, c := range rc.Configs {
		if c.Key == "retention.ms" && c.Value != nil && *c.Value == want {
			return nil
		}
	}
	resp, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: &want}}, s.Name)
	if err == nil {
		var r kadm.AlterConfigsResponse
		if r, err = resp.On(s.Name, nil); err == nil {
			err = r.Err
		}
	}
	if err != nil {
		return fmt.Errorf("setting the retention of topic %s to %v: %w", s.Name, s.Retention, err)
	}
	log.Info("set topic retention", "topic", s.Name, "retention", s.Retention)
	return nil
}
