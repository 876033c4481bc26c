// Package stream is the processor: it consumes the ticks topic in a consumer
// group, turns records into ticks (or rejections), and commits each batch's
// rows together with the consumer offsets to PostgreSQL in one transaction.
//
// Its files follow a batch's way through: session.go is the consumer-group
// membership and what happens when partitions come and go; batch.go reads
// and computes a batch while the one before commits; commit.go stores a
// batch exactly once (lanes, fencing, when state is checkpointed);
// refused.go sets aside the ticks PostgreSQL will not store; outbound.go
// builds the records a batch publishes, dead letters and anomalies.
package stream

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stockpipe/stockpipe/internal/analytics"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/store"
	"github.com/stockpipe/stockpipe/internal/telemetry"
)

// Config configures a Processor. Zero fields take the defaults noted.
type Config struct {
	Kafka     kafka.Config
	Group     string // consumer group, default "stockpipe"
	Topic     string // default kafka.TopicTicks
	DLQTopic  string // default kafka.TopicDLQ
	BatchSize int    // records per transaction at most, default 10,000
	// BatchWait is how much longer a batch may wait to fill once it has
	// its first records; default 0, none. While one batch commits the next
	// fills by itself, so batches grow with the load; but at moderate
	// rates on few cores, a few milliseconds of waiting halve the number
	// of commits and their fixed cost, which lowers the latency too (the
	// commands default to 5 ms; see BENCHMARKS.md).
	BatchWait time.Duration
	// SessionTimeout is how long the group waits for a silent member
	// before giving its partitions to others; default 10 s.
	SessionTimeout time.Duration
	// InstanceID, if set, makes this a static group member: a process
	// restarted with the same ID gets its partitions back at once instead
	// of after SessionTimeout. Two live processes must not share one.
	InstanceID string
	Rules      market.Rules // default market.DefaultRules()
	// CheckpointEvery is how often a partition's analytics state is
	// written with its offsets; default 10 s. In between, batches store
	// only rows and offsets, and a restart replays the records since the
	// last checkpoint (every write is idempotent). The state of thousands
	// of symbols is megabytes: writing it with every batch would cost more
	// than the batch.
	CheckpointEvery time.Duration
	// Lanes is how many transactions commit a batch concurrently, each
	// holding the partitions whose id modulo Lanes is its index; default
	// GOMAXPROCS, at most 8. The database pool needs Lanes connections.
	Lanes int
	// Analytics tunes candles, watermark and anomaly detection.
	Analytics analytics.Config
	// AnomalyTopic receives each new anomaly as JSON; default
	// kafka.TopicAnomalies.
	AnomalyTopic string
	// Metrics, if set, records batches, rejections and latencies.
	Metrics *telemetry.Metrics
	// Latencies, if set, is given each committed batch's tick-to-commit
	// latencies in nanoseconds, sorted; the slice is reused afterwards.
	// The metrics keep a histogram; this is for exact percentiles.
	Latencies func(ns []int64)
	Logger    *slog.Logger // default discards
	// Now is the clock the future-ts rule is checked against; default time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Group == "" {
		c.Group = "stockpipe"
	}
	if c.Topic == "" {
		c.Topic = kafka.TopicTicks
	}
	if c.DLQTopic == "" {
		c.DLQTopic = kafka.TopicDLQ
	}
	if c.AnomalyTopic == "" {
		c.AnomalyTopic = kafka.TopicAnomalies
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 10_000
	}
	if c.BatchWait < 0 {
		c.BatchWait = 0
	}
	if c.CheckpointEvery <= 0 {
		c.CheckpointEvery = 10 * time.Second
	}
	if c.Lanes <= 0 {
		c.Lanes = min(runtime.GOMAXPROCS(0), 8)
	}
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = 10 * time.Second
	}
	if c.Rules == (market.Rules{}) {
		c.Rules = market.DefaultRules()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Stats are a processor's running totals.
type Stats struct {
	Consumed   int64 // records read from Kafka and committed, replays excluded
	Replayed   int64 // records read again from a checkpoint to rebuild state
	Stored     int64 // new tick rows
	Duplicates int64 // ticks seen before, dropped
	Rejected   int64 // records sent to the dead-letter path
	Late       int64 // of Rejected, those behind the watermark
	Anomalies  int64 // new anomalies stored
	Candles    int64 // candle rows written (forming updates and finals)
	Batches    int64 // transactions committed
	Fenced     int64 // batches refused because a partition had moved
}

// sink is what the processor needs of the database. *store.Sink is the
// only implementation outside tests; the interface lets the commit,
// fencing and checkpoint logic be tested without PostgreSQL.
type sink interface {
	// Commit stores a batch in one transaction, or nothing of it.
	Commit(ctx context.Context, b *store.Batch) (store.CommitResult, error)
	// LoadOffsets returns the stored positions and checkpoints of the
	// partitions that have a row.
	LoadOffsets(ctx context.Context, group, topic string, partitions []int32) (map[int32]store.Offset, error)
	// FindRefused finds the rows among ticks that PostgreSQL refuses,
	// storing nothing.
	FindRefused(ctx context.Context, ticks []store.TickRow) ([]store.Refusal, error)
	// FindTick says where a stored tick (symbol, ts, seq) came from.
	FindTick(ctx context.Context, symbol string, ts time.Time, seq int64) (store.StoredTick, bool, error)
}

// Processor consumes ticks and stores them exactly once.
type Processor struct {
	cfg  Config
	sink sink
	log  *slog.Logger
	dec  *market.Decoder

	mu    sync.Mutex
	parts map[int32]*partition
	// flight is the batch being committed, nil when none: a revoked
	// partition is only let go once it is done.
	flight *flight

	consumed, stored, duplicates, rejected, batches, fenced atomic.Int64
	late, anomalies, candles, assigned, replayed            atomic.Int64

	lat []int64 // end-to-end latencies of the last batch, reused
	// What the next batch's notification reports about this one, whose
	// commit time is only known afterwards. Written by the commit that
	// finished, read when the next one starts: never at the same time.
	prevCommitMs float64
	prevE2E      [2]float64 // p50, p99 in ms
}

// partition is what the processor knows about one assigned partition.
type partition struct {
	// expected is the next_offset stored in PostgreSQL, -1 if none: the
	// commit only succeeds if it is still there.
	expected int64
	// next is the offset after the last record processed; -1 before any.
	// Below expected while records since the checkpoint are replayed.
	next int64
	// checkpoint is the offset the stored state stands at, -1 if none;
	// checkpointed is when it was written.
	checkpoint   int64
	checkpointed time.Time
	stateSize    int // bytes of the last checkpoint
	// replayFrom is the offset a replay from the checkpoint started at,
	// and replayBegan when; replayFrom is -1 when no replay is under way.
	replayFrom  int64
	replayBegan time.Time
	// an is the partition's analytics state, restored from its snapshot.
	an *analytics.Partition
}

// New returns a Processor that commits through sink.
func New(cfg Config, sink *store.Sink) (*Processor, error) { return newProcessor(cfg, sink) }

func newProcessor(cfg Config, sink sink) (*Processor, error) {
	cfg.setDefaults()
	if _, err := analytics.New(cfg.Analytics); err != nil {
		return nil, err
	}
	return &Processor{
		cfg:   cfg,
		sink:  sink,
		log:   cfg.Logger.With("component", "processor", "group", cfg.Group),
		dec:   market.NewDecoder(),
		parts: make(map[int32]*partition),
	}, nil
}

func (p *Processor) newPartition(expected int64, state []byte) (*partition, error) {
	an, err := analytics.New(p.cfg.Analytics)
	if err != nil {
		return nil, err
	}
	if err := an.Restore(state); err != nil {
		return nil, err
	}
	return &partition{expected: expected, next: expected, checkpoint: -1, replayFrom: -1, an: an}, nil
}

// Stats returns the running totals.
func (p *Processor) Stats() Stats {
	return Stats{
		Consumed:   p.consumed.Load(),
		Replayed:   p.replayed.Load(),
		Stored:     p.stored.Load(),
		Duplicates: p.duplicates.Load(),
		Rejected:   p.rejected.Load(),
		Batches:    p.batches.Load(),
		Fenced:     p.fenced.Load(),
		Late:       p.late.Load(),
		Anomalies:  p.anomalies.Load(),
		Candles:    p.candles.Load(),
	}
}

// Symbols returns how many symbols the processor keeps state for, over
// the partitions it owns: what its memory grows with.
func (p *Processor) Symbols() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, part := range p.parts {
		n += part.an.Symbols()
	}
	return n
}

// Assigned returns how many partitions the processor owns now.
func (p *Processor) Assigned() int { return int(p.assigned.Load()) }
