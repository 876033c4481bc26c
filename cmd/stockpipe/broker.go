package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/kafka"
)

func brokerCommand() *command {
	c := newCommand("broker", "run the embedded Kafka-protocol broker for other processes",
		"stockpipe broker --listen 127.0.0.1:9092 --data-dir ./data")
	listen := c.fs.String("listen", "127.0.0.1:9092", "address to serve the Kafka protocol on")
	dataDir := c.fs.String("data-dir", "./data", "directory for the broker's log (under DIR/kafka)")
	partitions := c.fs.Int("partitions", 6, "partitions of the ticks topic when it is created")
	c.run = func(rc *runCtx) error {
		b, err := startBroker(rc, *listen, *dataDir, int32(*partitions))
		if err != nil {
			return err
		}
		defer b.Close()
		fmt.Fprintf(rc.stdout, "broker listening on %s (data in %s)\n", b.Addrs()[0], filepath.Join(*dataDir, "kafka"))
		<-rc.ctx.Done()
		rc.log.Info("broker stopping")
		return nil
	}
	return c
}

// startBroker starts the embedded broker under dataDir/kafka and creates the
// topics.
func startBroker(rc *runCtx, listen, dataDir string, partitions int32) (*kafka.Broker, error) {
	if partitions < 1 {
		return nil, fmt.Errorf("--partitions must be at least 1")
	}
	b, err := kafka.StartBroker(listen, filepath.Join(dataDir, "kafka"))
	if err != nil {
		return nil, err
	}
	if err := ensureTopics(rc, kafka.Config{Brokers: b.Addrs()}, partitions); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func ensureTopics(rc *runCtx, cfg kafka.Config, partitions int32) error {
	cl, err := kgo.NewClient(cfg.Opts()...)
	if err != nil {
		return fmt.Errorf("creating Kafka client: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(rc.ctx, 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, cl, rc.log, kafka.Topics(partitions)); err != nil {
		return fmt.Errorf("preparing topics on %v: %w", cfg.Brokers, err)
	}
	return nil
}
