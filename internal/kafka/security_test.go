package kafka_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/kafka"
)

// TestSASL runs against a broker that demands SASL: the right credentials
// create the topics, wrong ones are refused.
func TestSASL(t *testing.T) {
	for _, mech := range []string{"plain", "scram-sha-256", "scram-sha-512"} {
		t.Run(mech, func(t *testing.T) {
			kmech := map[string]string{"plain": "PLAIN", "scram-sha-256": "SCRAM-SHA-256", "scram-sha-512": "SCRAM-SHA-512"}[mech]
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser(kmech, "admin", "s3cret"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			try := func(pass string) error {
				m, err := kafka.SASLMechanism(mech, "admin", pass)
				if err != nil {
					t.Fatal(err)
				}
				cfg := kafka.Config{Brokers: c.ListenAddrs(), SASL: m}
				cl, err := kgo.NewClient(cfg.Opts()...)
				if err != nil {
					t.Fatal(err)
				}
				defer cl.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				return kafka.EnsureTopics(ctx, cl, slog.New(slog.DiscardHandler), kafka.Topics(2))
			}
			if err := try("wrong"); err == nil {
				t.Fatal("wrong password accepted")
			}
			if err := try("s3cret"); err != nil {
				t.Fatalf("right password refused: %v", err)
			}
		})
	}
}

func TestSecurityFlagErrors(t *testing.T) {
	if _, err := kafka.SASLMechanism("plain", "", "x"); err == nil {
		t.Error("SASL without a user accepted")
	}
	if m, err := kafka.SASLMechanism("", "", ""); m != nil || err != nil {
		t.Errorf("no SASL: %v %v", m, err)
	}
	if c, err := kafka.TLSConfig(false, "", "", ""); c != nil || err != nil {
		t.Errorf("no TLS: %v %v", c, err)
	}
	if c, err := kafka.TLSConfig(true, "", "", ""); c == nil || err != nil {
		t.Errorf("--kafka-tls alone: %v %v", c, err)
	}
	if _, err := kafka.TLSConfig(false, "", "cert.pem", ""); err == nil {
		t.Error("a certificate without its key accepted")
	}
}
