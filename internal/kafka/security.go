package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// TLSConfig builds the client TLS settings: nil (plaintext) unless enabled
// or a CA or client certificate is given.
func TLSConfig(enabled bool, caFile, certFile, keyFile string) (*tls.Config, error) {
	if !enabled && caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--kafka-tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--kafka-tls-ca %s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("--kafka-tls-cert and --kafka-tls-key go together")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("loading the Kafka client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// SASLMechanism builds the SASL mechanism named by mech: "" (none), plain,
// scram-sha-256 or scram-sha-512.
func SASLMechanism(mech, user, pass string) (sasl.Mechanism, error) {
	if mech == "" {
		if user != "" || pass != "" {
			return nil, errors.New("--kafka-user and --kafka-password need --kafka-sasl plain, scram-sha-256 or scram-sha-512")
		}
		return nil, nil
	}
	if user == "" {
		return nil, errors.New("--kafka-sasl needs --kafka-user (and --kafka-password)")
	}
	switch strings.ToLower(mech) {
	case "plain":
		return plain.Auth{User: user, Pass: pass}.AsMechanism(), nil
	case "scram-sha-256":
		return scram.Auth{User: user, Pass: pass}.AsSha256Mechanism(), nil
	case "scram-sha-512":
		return scram.Auth{User: user, Pass: pass}.AsSha512Mechanism(), nil
	default:
		return nil, fmt.Errorf("--kafka-sasl %q: use plain, scram-sha-256 or scram-sha-512", mech)
	}
}
