package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/telemetry"
)

// Producer sends records to one topic asynchronously. When the broker is slow
// or away, Send blocks once MaxBuffered records are unacknowledged:
// back-pressure on the source rather than memory growth or silent drops.
// Records are retried until the broker takes them; a record that fails for
// good (say the topic was deleted) fails Send and Flush, never silently.
type Producer struct {
	cl      *kgo.Client
	topic   string
	brokers []string
	ctx     context.Context // records live until Close, not until the caller's ctx ends
	cancel  context.CancelFunc

	// Metrics, if set, counts acknowledged records.
	Metrics *telemetry.Metrics
	// Logger, if set, is told when Send has been held back for long, and
	// why; nil logs to slog.Default(). Set it before the first Send.
	Logger *slog.Logger

	acked atomic.Int64

	mu       sync.Mutex
	buffered int           // records handed to the client, not yet acknowledged or failed
	full     bool          // Send waits until buffered falls to MaxBuffered/2
	room     chan struct{} // closed when full ends
	err      error

	// stallWarn and stallRemind are the constants of the same names; tests
	// shorten them.
	stallWarn, stallRemind time.Duration
	// onWait, if set (by tests), is called when a Send starts to wait for
	// room, with the number of records buffered.
	onWait func(buffered int)
}

// MaxBuffered is how many records a Producer holds unacknowledged before
// Send blocks.
const MaxBuffered = 50_000

// How long Send waits for room before it logs that it is held back, and how
// often it repeats that while the wait goes on. A source faster than the
// broker waits briefly all the time; only a wait this long is news.
const (
	stallWarn   = 5 * time.Second
	stallRemind = 30 * time.Second
)

// NewProducer returns a Producer for topic.
func NewProducer(cfg Config, topic string) (*Producer, error) {
	cl, err := kgo.NewClient(append(cfg.Opts(),
		// Send keeps MaxBuffered itself, where the caller's ctx can
		// interrupt the wait; the client's own bound is only a backstop
		// above it, since its Produce can be interrupted by Close alone.
		kgo.MaxBufferedRecords(2*MaxBuffered),
		// The defaults already retry without limit and set no delivery
		// timeout; say so, since dropping records after some time would
		// lose ticks while the broker is away.
		kgo.RecordRetries(math.MaxInt),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
	)...)
	if err != nil {
		return nil, fmt.Errorf("creating Kafka producer: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Producer{cl: cl, topic: topic, brokers: cfg.Brokers, ctx: ctx, cancel: cancel,
		stallWarn: stallWarn, stallRemind: stallRemind}, nil
}

// Send queues a record. It copies value, so the caller may reuse it. It
// returns the first asynchronous failure seen so far, if any. A record
// queued before the caller's ctx ends is still delivered by Flush; ctx only
// bounds the wait for buffer space.
func (p *Producer) Send(ctx context.Context, key, value []byte) error {
	if err := p.reserve(ctx); err != nil {
		return err
	}
	r := &kgo.Record{Topic: p.topic, Key: key, Value: append([]byte(nil), value...)}
	p.cl.Produce(p.ctx, r, p.done)
	return nil
}

// reserve takes a place for one record, waiting while the buffer is full.
// Once full, it waits until half the buffer is acknowledged, so that the
// source resumes in a burst rather than once per acknowledgement.
func (p *Producer) reserve(ctx context.Context) (err error) {
	var (
		waitStart time.Time
		warned    bool
		timer     *time.Timer
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
		if warned && err == nil {
			p.logger().Info("Kafka is acknowledging records again; resuming", "topic", p.topic,
				"waited", time.Since(waitStart).Round(time.Millisecond))
		}
	}()
	for {
		p.mu.Lock()
		if p.err != nil {
			err := p.err
			p.mu.Unlock()
			return err
		}
		if p.buffered >= MaxBuffered && !p.full {
			p.full, p.room = true, make(chan struct{})
		}
		if !p.full {
			p.buffered++
			p.mu.Unlock()
			return nil
		}
		room, buffered := p.room, p.buffered
		p.mu.Unlock()

		if timer == nil {
			waitStart = time.Now()
			timer = time.NewTimer(p.stallWarn)
			if p.onWait != nil {
				p.onWait(buffered)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-room:
		case <-timer.C:
			p.warnStalled(buffered, time.Since(waitStart))
			warned = true
			timer.Reset(p.stallRemind)
		}
	}
}

// warnStalled logs that Send is held back. Why the broker does not answer
// (refused, unresolvable, timing out) is in the client's own log, which
// Config.Logger receives.
func (p *Producer) warnStalled(buffered int, waited time.Duration) {
	p.logger().Warn("Kafka is not acknowledging records; holding them back until it does (nothing is dropped)",
		"topic", p.topic, "brokers", strings.Join(p.brokers, ","), "unacknowledged", buffered, "waited", waited.Round(time.Second))
}

func (p *Producer) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.Default()
}

func (p *Producer) done(_ *kgo.Record, err error) {
	p.mu.Lock()
	p.buffered--
	if err != nil && p.err == nil {
		p.err = fmt.Errorf("producing to %s: %w", p.topic, err)
	}
	// A failure wakes a waiting Send too, to report it.
	if p.full && (p.buffered <= MaxBuffered/2 || p.err != nil) {
		p.full = false
		close(p.room)
	}
	p.mu.Unlock()
	if err == nil {
		p.acked.Add(1)
		p.Metrics.AddProduced(1)
	}
}

// Err returns the first production failure, if any.
func (p *Producer) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Acked returns how many records the broker has acknowledged.
func (p *Producer) Acked() int64 { return p.acked.Load() }

// Buffered returns how many records are sent but not yet acknowledged or
// failed; at most MaxBuffered.
func (p *Producer) Buffered() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buffered
}

// Flush waits until every queued record is acknowledged or failed.
func (p *Producer) Flush(ctx context.Context) error {
	if err := p.cl.Flush(ctx); err != nil {
		if perr := p.Err(); perr != nil {
			return perr
		}
		return fmt.Errorf("flushing records to %s: %d not acknowledged by the broker at %s: %w",
			p.topic, p.Buffered(), strings.Join(p.brokers, ","), err)
	}
	return p.Err()
}

// Close releases the client; call Flush first to keep queued records.
func (p *Producer) Close() {
	p.cancel()
	p.cl.Close()
}
