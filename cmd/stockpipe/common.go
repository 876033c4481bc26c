package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/orchestrate"
	"github.com/stockpipe/stockpipe/internal/store"
)

// kafkaFlags are the flags for reaching a Kafka cluster.
type kafkaFlags struct {
	brokers                string
	tls                    bool
	tlsCA, tlsCert, tlsKey string
	saslMech               string
	saslUser, saslPass     string
}

func (k *kafkaFlags) register(fs *flag.FlagSet, help string) {
	fs.StringVar(&k.brokers, "brokers", "", help)
	fs.BoolVar(&k.tls, "kafka-tls", false, "connect to Kafka over TLS (implied by the other --kafka-tls-* flags)")
	fs.StringVar(&k.tlsCA, "kafka-tls-ca", "", "PEM file of the CA that signed the brokers' certificates (default: the system's)")
	fs.StringVar(&k.tlsCert, "kafka-tls-cert", "", "PEM client certificate for mutual TLS")
	fs.StringVar(&k.tlsKey, "kafka-tls-key", "", "PEM key of --kafka-tls-cert")
	fs.StringVar(&k.saslMech, "kafka-sasl", "", "SASL mechanism: plain, scram-sha-256 or scram-sha-512")
	fs.StringVar(&k.saslUser, "kafka-user", "", "SASL user name")
	fs.StringVar(&k.saslPass, "kafka-password", "", "SASL password (prefer STOCKPIPE_KAFKA_PASSWORD)")
}

func (k *kafkaFlags) config(clientID string) (kafka.Config, error) {
	brokers, err := kafka.ParseBrokers(k.brokers)
	if err != nil {
		return kafka.Config{}, fmt.Errorf("--brokers: %w", err)
	}
	cfg := kafka.Config{Brokers: brokers, ClientID: clientID}
	if cfg.TLS, err = kafka.TLSConfig(k.tls, k.tlsCA, k.tlsCert, k.tlsKey); err != nil {
		return kafka.Config{}, err
	}
	if cfg.SASL, err = kafka.SASLMechanism(k.saslMech, k.saslUser, k.saslPass); err != nil {
		return kafka.Config{}, err
	}
	return cfg, nil
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
	if err := orchestrate.Migrate(ctx, pool); err != nil {
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
