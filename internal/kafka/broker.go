package kafka

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Broker is the embedded Kafka-protocol broker: franz-go's kfake, one node,
// persisted to disk so that topics, records and committed offsets survive a
// restart.
type Broker struct {
	c *kfake.Cluster
}

// StartBroker starts the embedded broker listening on listen (host:port; port
// 0 picks a free one) and persisting under dir.
func StartBroker(listen, dir string) (*Broker, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("broker listen address %q is not host:port: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("broker listen address %q has no valid port", listen)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("creating broker data directory: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolving broker data directory: %w", err)
	}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(port),
		// kfake always binds 127.0.0.1; honour the host the user asked for.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, net.JoinHostPort(host, strconv.Itoa(port)))
		}),
		kfake.DataDir(abs),
		// Apply topics' retention every five minutes rather than kfake's
		// default hour, so that the log's size stays close to its bound.
		kfake.BrokerConfigs(map[string]string{"log.cleaner.backoff.ms": "300000"}),
		kfake.DefaultNumPartitions(1),
		kfake.ClusterID("stockpipe"),
	)
	if err != nil {
		return nil, fmt.Errorf("starting embedded broker on %s: %w", listen, err)
	}
	return &Broker{c: c}, nil
}

// Addrs returns the addresses clients should dial.
func (b *Broker) Addrs() []string { return b.c.ListenAddrs() }

// Close stops the broker, flushing its data to disk.
func (b *Broker) Close() { b.c.Close() }
