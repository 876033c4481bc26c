// Package stream is the processor: it consumes the ticks topic in a consumer
// group, turns records into ticks (or rejections), and commits each batch's
// rows together with the consumer offsets to PostgreSQL in one transaction.
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
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
	Group     string // consumer group, default "stockpipe"
	Topic     string // default kafka.TopicTicks
	DLQTopic  string // default kafka.TopicDLQ
	BatchSize int    // records per transaction at most, default 10,000
	// BatchWait is how much longer a batch may wait to fill once it has
	// its first records; default 0. Waiting is rarely worth it: while one
	// batch commits the next fills by itself, so batches grow with the
	// load and stay small (and quick) when it is light.
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

// Processor consumes ticks and stores them exactly once.
type Processor struct {
	cfg  Config
	sink *store.Sink
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

// work is one batch: the records of one poll cycle, decoded, checked and
// run through analytics, split into lanes by partition. Two alternate, so
// that one is computed while the other commits.
type work struct {
	lanes   []lane
	dlq     []*kgo.Record
	touched []int32 // partitions with records in this batch, in first-seen order
	dup     int64   // duplicates dropped
	late    int64   // late ticks rejected
	n       int     // records taken
	// replayed counts records below their partition's stored offset,
	// applied only to rebuild state from a checkpoint; what they produce
	// goes to scratch and is dropped (see add).
	replayed int64
	scratch  analytics.Output
}

// lane is the part of a batch that one transaction commits: the rows and
// offsets of the partitions whose id is congruent to the lane's index.
// Lanes touch disjoint rows (a symbol lives in one partition), so they
// commit concurrently on separate connections and PostgreSQL works on all
// cores; each partition's rows, offset and state stay in one transaction.
type lane struct {
	b   store.Batch
	out analytics.Output
	res store.CommitResult
	at  time.Time // when the lane's transaction committed
	err error
}

func (w *work) reset() {
	for i := range w.lanes {
		l := &w.lanes[i]
		l.b.Reset()
		l.out.Reset()
		l.res, l.err = store.CommitResult{}, nil
	}
	w.dlq = w.dlq[:0]
	w.touched = w.touched[:0]
	w.dup, w.late, w.n = 0, 0, 0
	w.replayed = 0
	w.scratch.Reset()
}

func (w *work) lane(partition int32) *lane { return &w.lanes[int(partition)%len(w.lanes)] }

// flight is a batch on its way to PostgreSQL.
type flight struct {
	done chan struct{}
	err  error
}

func (f *flight) wait() error {
	<-f.done
	return f.err
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

func (p *Processor) newWork() *work {
	w := &work{lanes: make([]lane, p.cfg.Lanes)}
	for i := range w.lanes {
		w.lanes[i].b = store.Batch{Group: p.cfg.Group, Topic: p.cfg.Topic}
	}
	return w
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
//
// Batches are pipelined: while batch n commits, batch n+1 is polled and
// computed; n+1's commit starts once n's has finished, so offsets still move
// in order. Rebalances are blocked from each poll until the previous commit
// is done, and a revoked partition is only released once the batch in flight
// has committed (see release), so no partition changes owner with rows of it
// in hand.
func (p *Processor) session(ctx context.Context) (err error) {
	p.mu.Lock()
	clear(p.parts)
	p.mu.Unlock()
	opts := append(p.cfg.Kafka.Opts(),
		kgo.ConsumerGroup(p.cfg.Group),
		kgo.ConsumeTopics(p.cfg.Topic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.AdjustFetchOffsetsFn(p.assign),
		kgo.OnPartitionsRevoked(p.revoke),
		kgo.OnPartitionsLost(p.lose),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// The broker may hold a fetch this long for data; franz-go's floor
		// is 10 ms.
		kgo.FetchMaxWait(max(p.cfg.BatchWait, 10*time.Millisecond)),
		kgo.SessionTimeout(p.cfg.SessionTimeout),
		// Dead letters and anomalies are produced with the batch in hand.
		// franz-go retries a buffered record until it is delivered, and
		// a context does not stop that: with the broker gone, a shutdown
		// would wait for ever. A record that cannot be delivered in this
		// time fails, and the batch's commit is retried or, on shutdown,
		// given up (its records are read again next time).
		kgo.RecordDeliveryTimeout(20*time.Second),
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

	ws := [2]*work{p.newWork(), p.newWork()}
	var inflight *flight
	// Whatever ends the session, the batch in flight finishes first: its
	// outcome decides what the next session resumes from.
	defer func() {
		if inflight != nil {
			if ferr := inflight.wait(); ferr != nil && err == nil {
				err = ferr
			}
		}
	}()
	for i := 0; ; i++ {
		w := ws[i%2]
		w.reset()
		fetches := cl.PollRecords(ctx, p.cfg.BatchSize)
		if fetches.IsClientClosed() {
			return nil
		}
		if err := p.configErrorIn(ctx, cl, fetches); err != nil {
			cl.AllowRebalance()
			return err
		}
		p.logFetchErrors(fetches)
		if err := p.add(ctx, w, fetches); err != nil {
			cl.AllowRebalance()
			return err
		}
		if w.n > 0 && p.cfg.BatchWait > 0 {
			deadline := time.Now().Add(p.cfg.BatchWait)
			for w.n < p.cfg.BatchSize && ctx.Err() == nil {
				wait := time.Until(deadline)
				if wait <= 0 {
					break
				}
				pctx, cancel := context.WithTimeout(ctx, wait)
				f := cl.PollRecords(pctx, p.cfg.BatchSize-w.n)
				cancel()
				p.logFetchErrors(f)
				if err := p.add(ctx, w, f); err != nil {
					cl.AllowRebalance()
					return err
				}
			}
		}
		if w.n > 0 {
			// The last batch before a shutdown checkpoints, so a
			// restart does not replay.
			if err := p.prepare(w, ctx.Err() != nil); err != nil {
				cl.AllowRebalance()
				return err
			}
		}
		if inflight != nil {
			err := inflight.wait()
			inflight = nil
			if err != nil {
				cl.AllowRebalance()
				return err
			}
		}
		if w.n > 0 {
			inflight = p.launch(ctx, cl, w)
		}
		cl.AllowRebalance()
		if ctx.Err() != nil {
			if inflight != nil {
				err := inflight.wait()
				inflight = nil
				if err != nil {
					return err
				}
			}
			// Partitions whose last batch came before the shutdown
			// was noticed still need their checkpoint.
			return p.checkpoint(ctx, cl, p.dirty(p.owned()))
		}
	}
}

// owned lists the partitions this processor holds.
func (p *Processor) owned() []int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := make([]int32, 0, len(p.parts))
	for id := range p.parts {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// configErrorIn returns a *configError if the broker refused the consumer
// for a reason no retry can fix: the group cannot be joined with this
// configuration, or this client may not. franz-go retries those for ever.
func (p *Processor) configErrorIn(ctx context.Context, cl *kgo.Client, f kgo.Fetches) error {
	var found error
	f.EachError(func(_ string, _ int32, err error) {
		if found != nil {
			return
		}
		switch {
		case errors.Is(err, kerr.InvalidSessionTimeout):
			found = fmt.Errorf("--session-timeout %v is refused by the broker: %s", p.cfg.SessionTimeout, sessionRange(ctx, cl))
		case errors.Is(err, kerr.InvalidGroupID):
			found = fmt.Errorf("--group %q is refused by the broker as a group id: %w", p.cfg.Group, err)
		case errors.Is(err, kerr.GroupAuthorizationFailed), errors.Is(err, kerr.TopicAuthorizationFailed):
			found = fmt.Errorf("the broker does not let this client consume %s in group %s (check the ACLs of --kafka-user): %w", p.cfg.Topic, p.cfg.Group, err)
		}
	})
	if found != nil {
		return &configError{found}
	}
	return nil
}

// sessionRange describes the session timeouts the broker accepts, as far
// as it will say.
func sessionRange(ctx context.Context, cl *kgo.Client) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rcs, err := kadm.NewClient(cl).DescribeBrokerConfigs(ctx)
	bounds := map[string]time.Duration{}
	if err == nil {
		for _, rc := range rcs {
			for _, c := range rc.Configs {
				if c.Value == nil || (c.Key != "group.min.session.timeout.ms" && c.Key != "group.max.session.timeout.ms") {
					continue
				}
				if ms, err := strconv.ParseInt(*c.Value, 10, 64); err == nil {
					bounds[c.Key] = time.Duration(ms) * time.Millisecond
				}
			}
		}
	}
	lo, okLo := bounds["group.min.session.timeout.ms"]
	hi, okHi := bounds["group.max.session.timeout.ms"]
	if okLo && okHi {
		return fmt.Sprintf("it allows %v to %v (group.min.session.timeout.ms and group.max.session.timeout.ms); pass a value in that range", lo, hi)
	}
	return "it is outside the broker's group.min.session.timeout.ms to group.max.session.timeout.ms (6s to 30m by default); pass a value in that range"
}

func (p *Processor) logFetchErrors(f kgo.Fetches) {
	f.EachError(func(topic string, partition int32, err error) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return
		}
		p.log.Warn("fetch error", "topic", topic, "partition", partition, "err", err)
	})
}

// add decodes, checks and analyses the fetched records into w. It fails
// only if the database cannot say whether an old seq is stored (see
// known); the batch is then not committed and is read again.
func (p *Processor) add(ctx context.Context, w *work, f kgo.Fetches) (err error) {
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	f.EachRecord(func(r *kgo.Record) {
		if err != nil {
			return
		}
		w.n++
		part := p.parts[r.Partition]
		if part == nil {
			// Not seen through assignment; the commit's offset check
			// decides whether this processor may store it.
			part, _ = p.newPartition(-1, nil)
			p.parts[r.Partition] = part
		}
		if !slices.Contains(w.touched, r.Partition) {
			w.touched = append(w.touched, r.Partition)
		}
		part.next = r.Offset + 1
		l := w.lane(r.Partition)
		if r.Offset < part.expected {
			// Committed before: what it produced (its tick, candles,
			// anomalies, rejection) is stored and published already, and
			// writing it again would show readers older values until the
			// replay caught up. It only rebuilds the state.
			w.replayed++
			var t market.Tick
			if p.decode(r, &t, now) == nil && part.an.Apply(&t, &w.scratch) == analytics.Unknown {
				// Decided as when the record was first read: every record
				// before it is committed by now.
				var stored bool
				if stored, err = p.storedBefore(ctx, r, &t); err != nil {
					return
				}
				if !stored {
					part.an.ApplyUnseen(&t, &w.scratch)
				}
			}
			w.scratch.Reset()
			part.an.Discard()
			if part.next >= part.expected {
				p.replayed1(r.Partition, part)
			}
			return
		}
		if part.replayFrom >= 0 {
			p.replayed1(r.Partition, part) // its last replayed records are gone from the topic
		}

		var t market.Tick
		rerr := p.decode(r, &t, now)
		if rerr == nil {
			v := part.an.Apply(&t, &l.out)
			if v == analytics.Unknown {
				var known bool
				if known, err = p.known(ctx, w, r, &t); err != nil {
					return
				}
				v = analytics.Duplicate
				if !known {
					v = part.an.ApplyUnseen(&t, &l.out)
				}
			}
			switch v {
			case analytics.Duplicate:
				w.dup++
				return
			case analytics.SeqJump:
				hi := part.an.HighestSeq(t.Symbol)
				rerr = &market.Rejection{Reason: market.ReasonSeqJump, Detail: fmt.Sprintf(
					"seq %d is %d past %s's highest seq %d (more than the %d --max-seq-jump allows): taken, it would make every later tick of %s look old",
					t.Seq, t.Seq-hi, t.Symbol, hi, p.cfg.Analytics.MaxSeqJump, t.Symbol)}
			case analytics.Late:
				w.late++
				wm := part.an.Watermark(t.Symbol)
				rerr = &market.Rejection{Reason: market.ReasonLate, Detail: "ts " + t.TS.Format(time.RFC3339Nano) +
					" is " + wm.Sub(t.TS).String() + " behind the watermark of " + t.Symbol + " (" + wm.Format(time.RFC3339Nano) +
					"); history for a symbol that is live goes in under a name of its own (replay --symbol " + market.HistoryName(t.Symbol) +
					") or before the symbol goes live"}
			}
		}
		if rerr != nil {
			var rj *market.Rejection
			if !errors.As(rerr, &rj) {
				rj = &market.Rejection{Reason: market.ReasonMalformedJSON, Detail: rerr.Error()}
			}
			l.b.Rejected = append(l.b.Rejected, store.Rejected{
				Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
				Reason: rj.Reason, Detail: rj.Detail, Key: r.Key, Raw: r.Value,
			})
			w.dlq = append(w.dlq, deadLetter(p.cfg.DLQTopic, r, rj))
			return
		}
		l.b.Ticks = append(l.b.Ticks, store.TickRow{Tick: t, Partition: r.Partition, Offset: r.Offset, Raw: r.Value})
	})
	return err
}

// known reports whether an earlier record of r's partition carried the
// tick's (symbol, seq) and was taken: this batch's ticks so far, else the
// database, once the batch in flight is in it. The analytics remembers
// only the last 4,096 seqs of a symbol, and a tick is a duplicate only if
// its (symbol, seq) is stored; anything else, however old its seq, is
// stored or rejected with a reason. p.mu is held, and released while the
// batch in flight finishes: no rebalance can run meanwhile, since add is
// called between a poll and AllowRebalance.
func (p *Processor) known(ctx context.Context, w *work, r *kgo.Record, t *market.Tick) (bool, error) {
	for _, k := range w.lane(r.Partition).b.Ticks {
		if k.Partition == r.Partition && k.Seq == t.Seq && k.Symbol == t.Symbol {
			return true, nil
		}
	}
	if f := p.flight; f != nil {
		p.mu.Unlock()
		ferr := f.wait()
		p.mu.Lock()
		if ferr != nil {
			return false, fmt.Errorf("the batch before failed to commit: %w", ferr)
		}
	}
	return p.storedBefore(ctx, r, t)
}

// storedBefore reports whether the database holds the tick's (symbol, seq)
// from an earlier record than r (or from another partition or topic).
func (p *Processor) storedBefore(ctx context.Context, r *kgo.Record, t *market.Tick) (bool, error) {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var st store.StoredTick
	var found bool
	err := retry(lctx, p.log, "looking up an old seq", func() error {
		var err error
		st, found, err = p.sink.FindTick(lctx, t.Symbol, t.Seq)
		return err
	})
	if err != nil {
		return false, err
	}
	return found && (st.Partition != r.Partition || st.Offset < r.Offset), nil
}

// replayed1 logs, once per partition, how long rebuilding its state from
// the checkpoint took. p.mu is held.
func (p *Processor) replayed1(id int32, part *partition) {
	n := part.expected - part.replayFrom
	took := time.Since(part.replayBegan)
	p.log.Info(fmt.Sprintf("replayed %d records of partition %d from the checkpoint, %s", n, id, took.Round(time.Millisecond)),
		"partition", id, "records", n, "took", took, "records_per_s", int64(float64(n)/max(took.Seconds(), 1e-9)))
	part.replayFrom = -1
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

// prepare closes the batch: it flushes each touched partition's forming
// candles and lists its new offset, with a checkpoint of its state (into a
// buffer of its own: the next batch may change the state while this one
// commits) when the partition has none, when force is set, or when its last
// is older than CheckpointEvery (one such partition per batch). Expected
// offsets are filled in by launch, once the previous commit is known.
func (p *Processor) prepare(w *work, force bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	// At most one partition checkpoints because it is due, the one longest
	// without: spread over batches, checkpoints of several megabytes do
	// not all land in one transaction (and in memory at once).
	due := int32(-1)
	var oldest time.Time
	for _, id := range w.touched {
		if part := p.parts[id]; part != nil && part.checkpoint >= 0 && now.Sub(part.checkpointed) >= p.cfg.CheckpointEvery &&
			(due < 0 || part.checkpointed.Before(oldest)) {
			due, oldest = id, part.checkpointed
		}
	}
	for _, id := range w.touched {
		part := p.parts[id]
		if part == nil {
			continue
		}
		l := w.lane(id)
		part.an.Flush(&l.out)
		// While replaying, the stored offset stays where it is.
		pc := store.PartitionCommit{Partition: id, Next: max(part.next, part.expected)}
		if force || part.checkpoint < 0 || id == due {
			// A fresh buffer each time: checkpoints are seconds apart
			// and, for thousands of symbols, megabytes that are not
			// worth holding on to in between.
			st, err := part.an.AppendBinary(make([]byte, 0, part.stateSize+part.stateSize/8))
			if err != nil {
				return fmt.Errorf("snapshotting partition %d: %w", id, err)
			}
			part.stateSize = len(st)
			pc.State, pc.StateOffset = st, part.next
		}
		l.b.Offsets = append(l.b.Offsets, pc)
	}
	for i := range w.lanes {
		l := &w.lanes[i]
		l.b.Candles = l.out.Candles
		l.b.Anomalies = l.out.Anomalies
		for j := range l.b.Anomalies {
			w.dlq = append(w.dlq, anomalyRecord(p.cfg.AnomalyTopic, &l.b.Anomalies[j]))
		}
	}
	return nil
}

// dirty returns the partitions among ids whose state has moved since their
// last checkpoint.
func (p *Processor) dirty(ids []int32) []int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []int32
	for _, id := range ids {
		if part := p.parts[id]; part != nil && part.next >= 0 && part.next != part.checkpoint {
			out = append(out, id)
		}
	}
	return out
}

// checkpoint writes the state of the given partitions with their offsets,
// so that whoever consumes them next (this process restarted, or another
// after a rebalance) resumes without replaying. No batch may be in flight.
func (p *Processor) checkpoint(ctx context.Context, cl *kgo.Client, ids []int32) error {
	if len(ids) == 0 {
		return nil
	}
	w := p.newWork()
	w.touched = append(w.touched, ids...)
	if err := p.prepare(w, true); err != nil {
		return err
	}
	return p.launch(ctx, cl, w).wait()
}

// launch starts committing w, which the previous commit must have
// finished before.
func (p *Processor) launch(ctx context.Context, cl *kgo.Client, w *work) *flight {
	f := &flight{done: make(chan struct{})}
	p.mu.Lock()
	for i := range w.lanes {
		offs := w.lanes[i].b.Offsets
		for j := range offs {
			if part := p.parts[offs[j].Partition]; part != nil {
				offs[j].Expected = part.expected
			} else {
				offs[j].Expected = -1
			}
		}
	}
	p.flight = f
	p.mu.Unlock()
	ticks, rejected := 0, 0
	for i := range w.lanes {
		ticks += len(w.lanes[i].b.Ticks)
		rejected += len(w.lanes[i].b.Rejected)
	}
	// One lane announces the whole batch to the pipeline monitor.
	for i := range w.lanes {
		if w.n == 0 {
			break
		}
		if l := &w.lanes[i]; len(l.b.Offsets) > 0 {
			l.b.Meta = &store.BatchMeta{Records: w.n - int(w.replayed), Ticks: ticks, Rejected: rejected,
				PrevCommitMs: p.prevCommitMs, PrevE2EP50Ms: p.prevE2E[0], PrevE2EP99Ms: p.prevE2E[1]}
			break
		}
	}
	go func() {
		defer close(f.done)
		f.err = p.commit(ctx, cl, w)
		p.mu.Lock()
		p.flight = nil
		p.mu.Unlock()
	}()
	return f
}

// commit stores the batch. The dead letters go to Kafka first: if the
// process dies between the two, the batch is read again and its dead
// letters are produced twice (at least once on the topic) but stored once in
// rejected_ticks (exactly once in PostgreSQL).
func (p *Processor) commit(ctx context.Context, cl *kgo.Client, w *work) error {
	// A shutdown still commits what was read: detach from ctx's
	// cancellation but bound the time.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()

	if len(w.dlq) > 0 {
		if err := produce(cctx, cl, p.log, w.dlq); err != nil {
			return err
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i := range w.lanes {
		l := &w.lanes[i]
		if len(l.b.Offsets) == 0 {
			continue
		}
		wg.Go(func() {
			l.res, l.err = p.commitLane(cctx, cl, l)
			l.at = time.Now()
		})
	}
	wg.Wait()
	took := time.Since(start)
	kcommit := make(map[int32]kgo.EpochOffset)
	var res store.CommitResult
	var errs []error
	p.mu.Lock()
	for i := range w.lanes {
		l := &w.lanes[i]
		if l.err != nil {
			errs = append(errs, l.err)
			continue
		}
		res.Inserted += l.res.Inserted
		res.Duplicates += l.res.Duplicates
		res.Anomalies += l.res.Anomalies
		now := time.Now()
		for _, o := range l.b.Offsets {
			if part := p.parts[o.Partition]; part != nil {
				part.expected = o.Next
				if o.State != nil {
					part.checkpoint, part.checkpointed = o.StateOffset, now
				}
			}
			kcommit[o.Partition] = kgo.EpochOffset{Epoch: -1, Offset: o.Next}
		}
	}
	p.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		if errors.Is(err, store.ErrFenced) {
			p.cfg.Metrics.FenceHit()
		}
		return err
	}
	p.observe(w, res, took)

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

// commitLane commits one lane. If PostgreSQL refuses some of its ticks (a
// constraint or an encoding the validator let through), those ticks are
// found, sent to the dead-letter path with the database's reason, and the
// rest is committed: one bad row must not stop its partition for ever.
func (p *Processor) commitLane(ctx context.Context, cl *kgo.Client, l *lane) (store.CommitResult, error) {
	var res store.CommitResult
	for {
		err := retry(ctx, p.log, "committing batch", func() error {
			var err error
			res, err = p.sink.Commit(ctx, &l.b)
			return err
		})
		var refused *store.RefusedError
		if !errors.As(err, &refused) || refused.Table != "ticks" {
			return res, err
		}
		bad, ferr := p.sink.FindRefused(ctx, l.b.Ticks)
		if ferr != nil {
			return res, fmt.Errorf("isolating the ticks PostgreSQL refused: %w (after: %w)", ferr, err)
		}
		if len(bad) == 0 {
			return res, fmt.Errorf("PostgreSQL refused the batch but no single tick: %w", err)
		}
		var dlq []*kgo.Record
		keep := l.b.Ticks[:0]
		next := 0
		for i := range l.b.Ticks {
			t := l.b.Ticks[i]
			if next < len(bad) && bad[next].Index == i {
				rj := &market.Rejection{Reason: market.ReasonDatabase, Detail: bad[next].Err.Error()}
				next++
				raw := t.Raw
				l.b.Rejected = append(l.b.Rejected, store.Rejected{Topic: p.cfg.Topic, Partition: t.Partition, Offset: t.Offset,
					Reason: rj.Reason, Detail: rj.Detail, Key: []byte(t.Symbol), Raw: raw})
				dlq = append(dlq, deadLetter(p.cfg.DLQTopic, &kgo.Record{Topic: p.cfg.Topic, Partition: t.Partition,
					Offset: t.Offset, Key: []byte(t.Symbol), Value: raw}, rj))
				continue
			}
			keep = append(keep, t)
		}
		l.b.Ticks = keep
		p.log.Warn("PostgreSQL refused ticks; sent them to the dead-letter path", "count", len(bad), "first", bad[0].Err)
		if err := produce(ctx, cl, p.log, dlq); err != nil {
			return res, err
		}
	}
}

// observe records a committed batch in the metrics and keeps the figures
// the next batch's live update reports.
func (p *Processor) observe(w *work, res store.CommitResult, took time.Duration) {
	m := p.cfg.Metrics
	p.lat = p.lat[:0]
	var rejected, candles int
	for i := range w.lanes {
		l := &w.lanes[i]
		for j := range l.b.Ticks {
			d := l.at.Sub(l.b.Ticks[j].TS)
			p.lat = append(p.lat, int64(d))
			m.EndToEndLatency(d)
		}
		for j := range l.b.Rejected {
			m.Reject(string(l.b.Rejected[j].Reason))
		}
		for j := range l.b.Anomalies {
			m.Anomaly(string(l.b.Anomalies[j].Kind))
		}
		rejected += len(l.b.Rejected)
		candles += len(l.b.Candles)
	}
	p.prevCommitMs = float64(took) / 1e6
	p.prevE2E = [2]float64{}
	if len(p.lat) > 0 {
		slices.Sort(p.lat)
		p.prevE2E[0] = float64(p.lat[len(p.lat)/2]) / 1e6
		p.prevE2E[1] = float64(p.lat[(len(p.lat)*99)/100]) / 1e6
		if p.cfg.Latencies != nil {
			p.cfg.Latencies(p.lat)
		}
	}
	dup := res.Duplicates + w.dup
	m.ObserveBatch(w.n, int(res.Inserted), int(dup), took)

	p.consumed.Add(int64(w.n) - w.replayed)
	p.replayed.Add(w.replayed)
	p.stored.Add(res.Inserted)
	p.duplicates.Add(dup)
	p.rejected.Add(int64(rejected))
	p.late.Add(w.late)
	p.anomalies.Add(res.Anomalies)
	p.candles.Add(int64(candles))
	p.batches.Add(1)
}

// produce sends dead letters (and anomalies) and waits for the broker to
// take them, retrying while it is away.
func produce(ctx context.Context, cl *kgo.Client, log *slog.Logger, recs []*kgo.Record) error {
	return retry(ctx, log, "producing dead letters", func() error {
		return cl.ProduceSync(ctx, recs...).FirstErr()
	})
}

// retry runs fn until it succeeds, ctx ends, or it fails with ErrFenced or
// an error PostgreSQL will repeat (store.Permanent).
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
		if errors.Is(err, store.ErrFenced) || store.Permanent(err) || ctx.Err() != nil {
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
			// Consumption starts at the checkpoint; the records from
			// there to next_offset rebuild the state and are stored
			// already.
			part.next, part.checkpoint, part.checkpointed = o.StateOffset, o.StateOffset, time.Now()
			if o.Next > o.StateOffset {
				part.replayFrom, part.replayBegan = o.StateOffset, time.Now()
			}
			parts[id] = kgo.NewOffset().At(o.StateOffset).WithEpoch(-1)
		} else {
			parts[id] = kgo.NewOffset().AtStart()
		}
	}
	p.assigned.Store(int64(len(p.parts)))
	p.cfg.Metrics.SetPartitions(len(p.parts))
	from := make(map[int32]int64, len(stored))
	replay := make(map[int32]int64, len(stored))
	for id, o := range stored {
		from[id] = o.Next
		if o.Next > o.StateOffset {
			replay[id] = o.Next - o.StateOffset
		}
	}
	p.log.Info("partitions assigned", "partitions", ids, "resuming_from", from, "replaying", replay)
	return offsets, nil
}

func (p *Processor) revoke(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	p.release(ctx, cl, revoked[p.cfg.Topic], true)
}

func (p *Processor) lose(ctx context.Context, cl *kgo.Client, lost map[string][]int32) {
	// Lost partitions may have a new owner already: no checkpoint.
	p.release(ctx, cl, lost[p.cfg.Topic], false)
}

// release lets partitions go. The batch in flight may hold rows of them;
// they go to their next owner only after it has committed (or failed).
// Revoked in an orderly way, they are checkpointed first, so their next
// owner does not replay.
func (p *Processor) release(ctx context.Context, cl *kgo.Client, ids []int32, save bool) {
	p.mu.Lock()
	f := p.flight
	p.mu.Unlock()
	failed := false
	if f != nil {
		failed = f.wait() != nil
	}
	if save && !failed {
		if err := p.checkpoint(ctx, cl, p.dirty(ids)); err != nil {
			p.log.Warn("checkpointing released partitions; their next owner replays from the last checkpoint", "partitions", ids, "err", err)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range ids {
		delete(p.parts, id)
	}
	p.assigned.Store(int64(len(p.parts)))
	p.cfg.Metrics.SetPartitions(len(p.parts))
	p.log.Info("partitions released", "partitions", ids)
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
