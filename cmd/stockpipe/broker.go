package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/datadir"
	"github.com/stockpipe/stockpipe/internal/kafka"
)

func brokerCommand() *command {
	c := newCommand("broker", "run the embedded Kafka-protocol broker for other processes",
		"stockpipe broker --listen 127.0.0.1:9092 --data-dir ./data")
	listen := c.fs.String("listen", "127.0.0.1:9092", "address to serve the Kafka protocol on")
	dataDir := c.fs.String("data-dir", "./data", "directory for the broker's log (under DIR/kafka); one stockpipe up or broker per directory")
	partitions := c.fs.Int("partitions", 6, "partitions of the ticks topic when it is created")
	retention := c.fs.Duration("retention", 7*24*time.Hour, "how long the broker keeps records of stockpipe's topics")
	c.run = func(rc *runCtx) error {
		lock, err := datadir.Acquire(*dataDir, "broker")
		if err != nil {
			return err
		}
		defer releaseLock(rc, lock)
		b, err := startBroker(rc, *listen, *dataDir, int32(*partitions), *retention)
		if err != nil {
			return err
		}
		defer b.Close()
		if err := lock.WriteEndpoints(datadir.Endpoints{PID: os.Getpid(), Command: "broker", Brokers: b.Addrs(), StartedAt: time.Now().UTC()}); err != nil {
			return err
		}
		fmt.Fprintf(rc.stdout, "broker listening on %s (data in %s)\n", b.Addrs()[0], filepath.Join(*dataDir, "kafka"))
		<-rc.ctx.Done()
		rc.log.Info("broker stopping")
		return nil
	}
	return c
}

// startBroker starts the embedded broker under dataDir/kafka and creates the
// topics, keeping their records for retention.
func startBroker(rc *runCtx, listen, dataDir string, partitions int32, retention time.Duration) (*kafka.Broker, error) {
	if partitions < 1 {
		return nil, fmt.Errorf("--partitions must be at least 1")
	}
	b, err := kafka.StartBroker(listen, filepath.Join(dataDir, "kafka"))
	if err != nil {
		return nil, err
	}
	specs := kafka.Topics(partitions)
	for i := range specs {
		specs[i].Retention = retention
	}
	if err := createTopics(rc, kafka.Config{Brokers: b.Addrs(), Logger: rc.log}, specs); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// ensureTopics creates stockpipe's topics on a cluster where they are
// missing, with the cluster's own retention.
func ensureTopics(rc *runCtx, cfg kafka.Config, partitions int32) error {
	return createTopics(rc, cfg, kafka.Topics(partitions))
}

func createTopics(rc *runCtx, cfg kafka.Config, specs []kafka.TopicSpec) error {
	cl, err := kgo.NewClient(cfg.Opts()...)
	if err != nil {
		return fmt.Errorf("creating Kafka client: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(rc.ctx, 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, cl, rc.log, specs); err != nil {
		return fmt.Errorf("preparing topics on %v: %w", cfg.Brokers, err)
	}
	return nil
}
