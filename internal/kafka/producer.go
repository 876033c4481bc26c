package kafka

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/telemetry"
)

// Producer sends records to one topic asynchronously. When the broker is slow
// or away, Send blocks once MaxBuffered records are in flight: back-pressure
// on the source rather than memory growth or silent drops.
type Producer struct {
	cl     *kgo.Client
	topic  string
	ctx    context.Context // records live until Close, not until the caller's ctx ends
	cancel context.CancelFunc

	// Metrics, if set, counts acknowledged records.
	Metrics *telemetry.Metrics

	acked atomic.Int64
	mu    sync.Mutex
	err   error
}

// MaxBuffered is how many records a Producer holds unacknowledged before
// Send blocks.
const MaxBuffered = 50_000

// NewProducer returns a Producer for topic.
func NewProducer(cfg Config, topic string) (*Producer, error) {
	cl, err := kgo.NewClient(append(cfg.Opts(),
		kgo.MaxBufferedRecords(MaxBuffered),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
	)...)
	if err != nil {
		return nil, fmt.Errorf("creating Kafka producer: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Producer{cl: cl, topic: topic, ctx: ctx, cancel: cancel}, nil
}

// Send queues a record. It copies value, so the caller may reuse it. It
// returns the first asynchronous failure seen so far, if any. A record
// queued before the caller's ctx ends is still delivered by Flush; ctx only
// bounds the wait for buffer space.
func (p *Producer) Send(ctx context.Context, key, value []byte) error {
	if err := p.Err(); err != nil {
		return err
	}
	r := &kgo.Record{Topic: p.topic, Key: key, Value: append([]byte(nil), value...)}
	if p.cl.BufferedProduceRecords() >= MaxBuffered {
		// Wait for room here, where ctx can interrupt, rather than inside
		// Produce, where only Close can.
		for p.cl.BufferedProduceRecords() >= MaxBuffered/2 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
	}
	p.cl.Produce(p.ctx, r, p.done)
	return nil
}

func (p *Producer) done(_ *kgo.Record, err error) {
	if err != nil {
		p.mu.Lock()
		if p.err == nil {
			p.err = fmt.Errorf("producing to %s: %w", p.topic, err)
		}
		p.mu.Unlock()
		return
	}
	p.acked.Add(1)
	p.Metrics.AddProduced(1)
}

// Err returns the first production failure, if any.
func (p *Producer) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Acked returns how many records the broker has acknowledged.
func (p *Producer) Acked() int64 { return p.acked.Load() }

// Flush waits until every queued record is acknowledged or failed.
func (p *Producer) Flush(ctx context.Context) error {
	if err := p.cl.Flush(ctx); err != nil {
		return fmt.Errorf("flushing records to %s: %w", p.topic, err)
	}
	return p.Err()
}

// Close releases the client; call Flush first to keep queued records.
func (p *Producer) Close() {
	p.cancel()
	p.cl.Close()
}
