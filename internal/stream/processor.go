// Package stream is the processor: it consumes the ticks topic in a consumer
// group, turns records into ticks (or rejections), and commits each batch's
// rows together with the consumer offsets to PostgreSQL in one transaction.
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stockpipe/stockpipe/internal/analytics"
	"github.com/stockpipe/stockpipe/internal/anomaly"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/store"
	"github.com/stockpipe/stockpipe/internal/telemetry"
)

// Config configures a Processor. Zero fields take the defaults noted.
type Config struct {
	Kafka     kafka.Config
	Group     string        // consumer group, default "stockpipe"
	Topic     string        // default kafka.TopicTicks
	DLQTopic  string        // default kafka.TopicDLQ
	BatchSize int           // records per transaction at most, default 10,000
	BatchWait time.Duration // how long a batch may wait to fill, default 10 ms
	// SessionTimeout is how long the group waits for a silent member
	// before giving its partitions to others; default 10 s.
	SessionTimeout time.Duration
	// InstanceID, if set, makes this a static group member: a process
	// restarted with the same ID gets its partitions back at once instead
	// of after SessionTimeout. Two live processes must not share one.
	InstanceID string
	Rules      market.Rules // default market.DefaultRules()
	// Analytics tunes candles, watermark and anomaly detection.
	Analytics analytics.Config
	// AnomalyTopic receives each new anomaly as JSON; default
	// kafka.TopicAnomalies.
	AnomalyTopic string
	// Metrics, if set, records batches, rejections and latencies.
	Metrics *telemetry.Metrics
	Logger  *slog.Logger // default discards
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
	if c.BatchWait <= 0 {
		c.BatchWait = 10 * time.Millisecond
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
	Consumed   int64 // records read from Kafka and committed
	Stored     int64 // new tick rows
	Duplicates int64 // ticks seen before, dropped
	Rejected   int64 // records sent to the dead-letter path
	Late       int64 // of Rejected, those behind the watermark
	Anomalies  int64 // new anomalies stored
	Candles    int64 // candle rows written (forming updates and finals)
	Batches    int64 // transactions committed
	Fenced     int64 // batches refused because a partition had moved
}

// Processor consumes ticks and stores them exactly once.
type Processor struct {
	cfg  Config
	sink *store.Sink
	log  *slog.Logger
	dec  *market.Decoder

	mu    sync.Mutex
	parts map[int32]*partition

	consumed, stored, duplicates, rejected, batches, fenced atomic.Int64
	late, anomalies, candles, assigned                      atomic.Int64

	out analytics.Output // the current batch's candles and anomalies
	lat []int64          // end-to-end latencies of the last batch, reused
	// What the next batch's notification reports about this one, whose
	// commit time is only known afterwards.
	prevCommitMs float64
	prevE2E      [2]float64 // p50, p99 in ms
	batchDup     int64      // duplicates dropped in the current batch
	batchLat     int64      // late ticks in the current batch
}

// partition is what the processor knows about one assigned partition.
type partition struct {
	// expected is the next_offset stored in PostgreSQL, -1 if none: the
	// commit only succeeds if it is still there.
	expected int64
	// next is the offset after the last record processed; -1 before any.
	next int64
	// touched marks partitions with records in the current batch.
	touched bool
	// an is the partition's analytics state, restored from its snapshot.
	an    *analytics.Partition
	state []byte // snapshot buffer, reused
}

// New returns a Processor that commits through sink.
func New(cfg Config, sink *store.Sink) (*Processor, error) {
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
	return &partition{expected: expected, next: expected, an: an}, nil
}

// Stats returns the running totals.
func (p *Processor) Stats() Stats {
	return Stats{
		Consumed:   p.consumed.Load(),
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

// Assigned returns how many partitions the processor owns now.
func (p *Processor) Assigned() int { return int(p.assigned.Load()) }

// Run consumes until ctx is done, then commits what it has read and leaves
// the group. A batch refused because a partition moved (ErrFenced) restarts
// the consumer session, which resumes from the offsets in PostgreSQL.
func (p *Processor) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		err := p.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var ce *configError
		if errors.As(err, &ce) {
			return ce.err
		}
		if errors.Is(err, store.ErrFenced) {
			p.fenced.Add(1)
			p.log.Warn("a partition moved to another processor; rejoining", "err", err)
			continue
		}
		p.log.Error("consumer session failed; retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// configError is a session failure that no retry can fix.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// session runs one consumer-group membership until ctx is done or a commit
// fails for good.
func (p *Processor) session(ctx context.Context) error {
	p.mu.Lock()
	clear(p.parts)
	p.mu.Unlock()
	opts := append(p.cfg.Kafka.Opts(),
		kgo.ConsumerGroup(p.cfg.Group),
		kgo.ConsumeTopics(p.cfg.Topic),
		kgo.DisableAutoCommit(),
		// Offsets live in PostgreSQL; a rebalance waits until the batch in
		// hand is committed, so no partition changes owner mid-batch.
		kgo.BlockRebalanceOnPoll(),
		kgo.AdjustFetchOffsetsFn(p.assign),
		kgo.OnPartitionsRevoked(p.revoke),
		kgo.OnPartitionsLost(p.revoke),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// The broker may hold a fetch this long for data; franz-go's floor
		// is 10 ms.
		kgo.FetchMaxWait(max(p.cfg.BatchWait, 10*time.Millisecond)),
		kgo.SessionTimeout(p.cfg.SessionTimeout),
	)
	if p.cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(p.cfg.InstanceID))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		// Only options can make this fail; retrying would not help.
		return &configError{fmt.Errorf("creating Kafka consumer: %w", err)}
	}
	defer cl.Close()

	b := &store.Batch{Group: p.cfg.Group, Topic: p.cfg.Topic}
	var dlq []*kgo.Record
	for {
		b.Reset()
		p.out.Reset()
		p.batchDup, p.batchLat = 0, 0
		dlq = dlq[:0]
		n := 0
		fetches := cl.PollRecords(ctx, p.cfg.BatchSize)
		if fetches.IsClientClosed() {
			return nil
		}
		p.logFetchErrors(fetches)
		n += p.add(b, &dlq, fetches)
		if n > 0 {
			deadline := time.Now().Add(p.cfg.BatchWait)
			for n < p.cfg.BatchSize && ctx.Err() == nil {
				wait := time.Until(deadline)
				if wait <= 0 {
					break
				}
				pctx, cancel := context.WithTimeout(ctx, wait)
				f := cl.PollRecords(pctx, p.cfg.BatchSize-n)
				cancel()
				p.logFetchErrors(f)
				n += p.add(b, &dlq, f)
			}
		}
		if n > 0 {
			if err := p.commit(ctx, cl, b, dlq); err != nil {
				cl.AllowRebalance()
				return err
			}
		}
		cl.AllowRebalance()
		if ctx.Err() != nil {
			return nil
		}
	}
}

func (p *Processor) logFetchErrors(f kgo.Fetches) {
	f.EachError(func(topic string, partition int32, err error) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return
		}
		p.log.Warn("fetch error", "topic", topic, "partition", partition, "err", err)
	})
}

// add decodes and checks the fetched records into b, returning how many
// records it took.
func (p *Processor) add(b *store.Batch, dlq *[]*kgo.Record, f kgo.Fetches) int {
	n := 0
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	f.EachRecord(func(r *kgo.Record) {
		n++
		part := p.parts[r.Partition]
		if part == nil {
			// Not seen through assignment; the commit's offset check
			// decides whether this processor may store it.
			part, _ = p.newPartition(-1, nil)
			p.parts[r.Partition] = part
		}
		part.next = r.Offset + 1
		part.touched = true

		var t market.Tick
		err := p.decode(r, &t, now)
		if err == nil {
			switch part.an.Apply(&t, &p.out) {
			case analytics.Duplicate:
				p.batchDup++
				return
			case analytics.Late:
				p.batchLat++
				wm := part.an.Watermark(t.Symbol)
				err = &market.Rejection{Reason: market.ReasonLate, Detail: "ts " + t.TS.Format(time.RFC3339Nano) +
					" is " + wm.Sub(t.TS).String() + " behind the watermark of " + t.Symbol + " (" + wm.Format(time.RFC3339Nano) + ")"}
			}
		}
		if err != nil {
			var rj *market.Rejection
			if !errors.As(err, &rj) {
				rj = &market.Rejection{Reason: market.ReasonMalformedJSON, Detail: err.Error()}
			}
			b.Rejected = append(b.Rejected, store.Rejected{
				Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
				Reason: rj.Reason, Detail: rj.Detail, Key: r.Key, Raw: r.Value,
			})
			*dlq = append(*dlq, deadLetter(p.cfg.DLQTopic, r, rj))
			return
		}
		b.Ticks = append(b.Ticks, store.TickRow{Tick: t, Partition: r.Partition, Offset: r.Offset})
	})
	return n
}

func (p *Processor) decode(r *kgo.Record, t *market.Tick, now time.Time) error {
	if r.Value == nil {
		return &market.Rejection{Reason: market.ReasonEmpty, Detail: "record has no value (a tombstone)"}
	}
	if err := p.dec.Decode(r.Value, t); err != nil {
		return err
	}
	// The key decides the partition, and a symbol's state lives with its
	// partition: a tick keyed otherwise would be computed with the wrong
	// state.
	if string(r.Key) != t.Symbol {
		return &market.Rejection{Reason: market.ReasonKeyMismatch,
			Detail: "record key " + strconv.Quote(string(r.Key)) + " is not the symbol " + strconv.Quote(t.Symbol)}
	}
	return p.cfg.Rules.Check(t, now)
}

// maxDeadLetter bounds a dead letter's value. A record can be as large as
// the ticks topic allows, but one that will not fit on the dead-letter topic
// would block the partition forever; past this size the dead letter carries
// the first bytes and a "truncated" header with the original size, while
// rejected_ticks keeps the whole record.
const maxDeadLetter = 256 << 10

func deadLetter(topic string, r *kgo.Record, rj *market.Rejection) *kgo.Record {
	value := r.Value
	headers := []kgo.RecordHeader{
		{Key: kafka.HeaderError, Value: []byte(rj.Reason)},
		{Key: kafka.HeaderErrorDetail, Value: []byte(rj.Detail)},
		{Key: kafka.HeaderTopic, Value: []byte(r.Topic)},
		{Key: kafka.HeaderPartition, Value: strconv.AppendInt(nil, int64(r.Partition), 10)},
		{Key: kafka.HeaderOffset, Value: strconv.AppendInt(nil, r.Offset, 10)},
	}
	if len(value) > maxDeadLetter {
		headers = append(headers, kgo.RecordHeader{Key: kafka.HeaderTruncated, Value: strconv.AppendInt(nil, int64(len(value)), 10)})
		value = value[:maxDeadLetter]
	}
	key := r.Key
	if len(key) > 1024 {
		key = key[:1024]
	}
	return &kgo.Record{Topic: topic, Key: key, Value: value, Headers: headers}
}

// commit stores the batch. The dead letters go to Kafka first: if the
// process dies between the two, the batch is read again and its dead
// letters are produced twice (at least once on the topic) but stored once in
// rejected_ticks (exactly once in PostgreSQL).
func (p *Processor) commit(ctx context.Context, cl *kgo.Client, b *store.Batch, dlq []*kgo.Record) error {
	// A shutdown still commits what was read: detach from ctx's
	// cancellation but bound the time.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()

	p.mu.Lock()
	kcommit := make(map[int32]kgo.EpochOffset)
	for id, part := range p.parts {
		if !part.touched {
			continue
		}
		part.an.Flush(&p.out)
		var err error
		if part.state, err = part.an.AppendBinary(part.state[:0]); err != nil {
			p.mu.Unlock()
			return fmt.Errorf("snapshotting partition %d: %w", id, err)
		}
		b.Offsets = append(b.Offsets, store.PartitionCommit{Partition: id, Expected: part.expected, Next: part.next, State: part.state})
		kcommit[id] = kgo.EpochOffset{Epoch: -1, Offset: part.next}
	}
	p.mu.Unlock()
	b.Candles = p.out.Candles
	b.Anomalies = p.out.Anomalies
	for i := range b.Anomalies {
		dlq = append(dlq, anomalyRecord(p.cfg.AnomalyTopic, &b.Anomalies[i]))
	}

	if len(dlq) > 0 {
		if err := retry(cctx, p.log, "producing dead letters", func() error {
			return cl.ProduceSync(cctx, dlq...).FirstErr()
		}); err != nil {
			return err
		}
	}
	b.Meta = &store.BatchMeta{Records: len(b.Ticks) + len(b.Rejected) + int(p.batchDup), Ticks: len(b.Ticks),
		Rejected: len(b.Rejected), PrevCommitMs: p.prevCommitMs, PrevE2EP50Ms: p.prevE2E[0], PrevE2EP99Ms: p.prevE2E[1]}
	var (
		res  store.CommitResult
		took time.Duration
	)
	err := retry(cctx, p.log, "committing batch", func() error {
		var err error
		start := time.Now()
		res, err = p.sink.Commit(cctx, b)
		took = time.Since(start)
		return err
	})
	if err != nil {
		if errors.Is(err, store.ErrFenced) {
			p.cfg.Metrics.FenceHit()
		}
		return err
	}
	p.observe(b, res, took)

	p.mu.Lock()
	for _, o := range b.Offsets {
		if part := p.parts[o.Partition]; part != nil {
			part.expected = o.Next
			part.touched = false
		}
	}
	p.mu.Unlock()

	p.consumed.Add(int64(len(b.Ticks)+len(b.Rejected)) + p.batchDup)
	p.stored.Add(res.Inserted)
	p.duplicates.Add(res.Duplicates + p.batchDup)
	p.rejected.Add(int64(len(b.Rejected)))
	p.late.Add(p.batchLat)
	p.anomalies.Add(res.Anomalies)
	p.candles.Add(int64(len(b.Candles)))
	p.batches.Add(1)

	// Kafka's copy of the offsets is for lag tools only; PostgreSQL's is
	// the one consumption resumes from, so a failure here loses nothing.
	onDone := func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, _ *kmsg.OffsetCommitResponse, err error) {
		if err != nil && !errors.Is(err, context.Canceled) {
			p.log.Debug("committing offsets to Kafka", "err", err)
		}
	}
	commits := map[string]map[int32]kgo.EpochOffset{p.cfg.Topic: kcommit}
	if ctx.Err() != nil {
		cl.CommitOffsetsSync(cctx, commits, onDone) // last batch: let lag tools see it before we leave
	} else {
		cl.CommitOffsets(context.WithoutCancel(ctx), commits, onDone)
	}
	return nil
}

// observe records a committed batch in the metrics and keeps the figures
// the next batch's live update reports.
func (p *Processor) observe(b *store.Batch, res store.CommitResult, took time.Duration) {
	m := p.cfg.Metrics
	now := time.Now()
	p.lat = p.lat[:0]
	for i := range b.Ticks {
		d := now.Sub(b.Ticks[i].TS)
		p.lat = append(p.lat, int64(d))
		m.EndToEndLatency(d)
	}
	p.prevCommitMs = float64(took) / 1e6
	p.prevE2E = [2]float64{}
	if len(p.lat) > 0 {
		slices.Sort(p.lat)
		p.prevE2E[0] = float64(p.lat[len(p.lat)/2]) / 1e6
		p.prevE2E[1] = float64(p.lat[(len(p.lat)*99)/100]) / 1e6
	}
	m.ObserveBatch(b.Meta.Records, int(res.Inserted), int(res.Duplicates+p.batchDup), took)
	for i := range b.Rejected {
		m.Reject(string(b.Rejected[i].Reason))
	}
	for i := range b.Anomalies {
		m.Anomaly(string(b.Anomalies[i].Kind))
	}
}

// retry runs fn until it succeeds, ctx ends, or it fails with ErrFenced.
// PostgreSQL or the broker being away is waited out with backoff: the batch
// stays in hand, nothing is acknowledged, consumption pauses.
func retry(ctx context.Context, log *slog.Logger, what string, fn func() error) error {
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			if attempt > 1 {
				log.Info(what+" succeeded after retries", "attempts", attempt)
			}
			return nil
		}
		if errors.Is(err, store.ErrFenced) || ctx.Err() != nil {
			return err
		}
		log.Warn(what+" failed; retrying", "err", err, "attempt", attempt, "in", backoff)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// assign loads the stored offsets of newly assigned partitions and starts
// consumption there.
func (p *Processor) assign(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	parts := offsets[p.cfg.Topic]
	ids := make([]int32, 0, len(parts))
	for id := range parts {
		ids = append(ids, id)
	}
	stored, err := p.sink.LoadOffsets(ctx, p.cfg.Group, p.cfg.Topic, ids)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range ids {
		o, ok := stored[id]
		if !ok {
			o.Next = -1
		}
		part, err := p.newPartition(o.Next, o.State)
		if err != nil {
			return nil, fmt.Errorf("restoring partition %d: %w", id, err)
		}
		p.parts[id] = part
		if ok {
			parts[id] = kgo.NewOffset().At(o.Next).WithEpoch(-1)
		} else {
			parts[id] = kgo.NewOffset().AtStart()
		}
	}
	p.assigned.Store(int64(len(p.parts)))
	p.cfg.Metrics.SetPartitions(len(p.parts))
	from := make(map[int32]int64, len(stored))
	for id, o := range stored {
		from[id] = o.Next
	}
	p.log.Info("partitions assigned", "partitions", ids, "resuming_from", from)
	return offsets, nil
}

func (p *Processor) revoke(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range lost[p.cfg.Topic] {
		delete(p.parts, id)
	}
	p.assigned.Store(int64(len(p.parts)))
	p.cfg.Metrics.SetPartitions(len(p.parts))
	p.log.Info("partitions released", "partitions", lost[p.cfg.Topic])
}

// anomalyRecord is an anomaly as published on the anomalies topic.
func anomalyRecord(topic string, a *anomaly.Anomaly) *kgo.Record {
	v := []byte(`{"symbol":`)
	v = strconv.AppendQuote(v, a.Symbol)
	v = append(v, `,"ts":"`...)
	v = market.AppendTime(v, a.TS)
	v = append(v, `","kind":`...)
	v = strconv.AppendQuote(v, string(a.Kind))
	v = append(v, `,"severity":`...)
	v = strconv.AppendQuote(v, string(a.Severity))
	v = append(v, `,"value":`...)
	v = strconv.AppendFloat(v, a.Value, 'g', -1, 64)
	v = append(v, `,"threshold":`...)
	v = strconv.AppendFloat(v, a.Threshold, 'g', -1, 64)
	v = append(v, `,"detail":`...)
	v = strconv.AppendQuote(v, a.Detail)
	v = append(v, '}')
	return &kgo.Record{Topic: topic, Key: []byte(a.Symbol), Value: v}
}
