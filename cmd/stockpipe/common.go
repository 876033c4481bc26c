package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/store"
)

// kafkaFlags are the flags for reaching a Kafka cluster.
type kafkaFlags struct {
	brokers string
}

func (k *kafkaFlags) register(fs *flag.FlagSet, help string) {
	fs.StringVar(&k.brokers, "brokers", "", help)
}

func (k *kafkaFlags) config(clientID string) (kafka.Config, error) {
	brokers, err := kafka.ParseBrokers(k.brokers)
	if err != nil {
		return kafka.Config{}, fmt.Errorf("--brokers: %w", err)
	}
	return kafka.Config{Brokers: brokers, ClientID: clientID}, nil
}

// openDB connects to url and brings the schema up to date.
func openDB(rc *runCtx, url string, maxConns int32) (*pgxpool.Pool, error) {
	if err := store.CheckURL(url); err != nil {
		return nil, fmt.Errorf("--database-url: %w", err)
	}
	ctx, cancel := context.WithTimeout(rc.ctx, 30*time.Second)
	defer cancel()
	pool, err := store.Open(ctx, url, maxConns)
	if err != nil {
		return nil, err
	}
	if err := store.Migrate(ctx, pool, rc.log); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
