package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/store"
)

// These tests check the processor's own commit logic against fakeSink, a
// stand-in for PostgreSQL that keeps offsets and refuses or fences the way
// store.Sink does; Kafka is kfake, as everywhere. The end-to-end tests in
// stream_test run the same paths against a real PostgreSQL.

// fakeSink implements sink in memory.
type fakeSink struct {
	mu sync.Mutex
	// offsets are the stored positions, as LoadOffsets returns them.
	offsets map[int32]store.Offset
	// committed are copies of the batches committed, in order.
	committed []store.Batch
	attempts  int // calls of Commit
	loads     int // calls of LoadOffsets
	searches  int // calls of FindRefused
	// fail, if set, is asked before each commit attempt for an error to
	// fail it with, as a database away would.
	fail func(attempt int) error
	// refuse says which ticks "PostgreSQL" refuses; refuseAll makes it
	// refuse the batch without FindRefused finding a culprit.
	refuse    func(store.TickRow) bool
	refuseAll bool
	// moveOnce, if set, is applied to offsets before the next commit and
	// cleared: another processor committing in between.
	moveOnce func(map[int32]store.Offset)
	// gate, if set, holds each commit until it receives.
	gate chan struct{}
}

func newFakeSink() *fakeSink { return &fakeSink{offsets: map[int32]store.Offset{}} }

func refusal(msg string) error {
	return &pgconn.PgError{Code: "23514", Message: msg}
}

func (f *fakeSink) Commit(_ context.Context, b *store.Batch) (store.CommitResult, error) {
	if f.gate != nil {
		<-f.gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts++
	if f.fail != nil {
		if err := f.fail(f.attempts); err != nil {
			return store.CommitResult{}, err
		}
	}
	if f.moveOnce != nil {
		f.moveOnce(f.offsets)
		f.moveOnce = nil
	}
	for _, o := range b.Offsets {
		stored, ok := f.offsets[o.Partition]
		if (o.Expected < 0 && ok) || (o.Expected >= 0 && (!ok || stored.Next != o.Expected)) {
			return store.CommitResult{}, fmt.Errorf("partition %d expected at offset %d: %w", o.Partition, o.Expected, store.ErrFenced)
		}
	}
	for _, t := range b.Ticks {
		if f.refuseAll || (f.refuse != nil && f.refuse(t)) {
			return store.CommitResult{}, &store.RefusedError{Table: "ticks", Err: refusal("check constraint")}
		}
	}
	for _, o := range b.Offsets {
		stored := f.offsets[o.Partition]
		stored.Next = o.Next
		if o.State != nil {
			stored.State, stored.StateOffset = slices.Clone(o.State), o.StateOffset
		} else if stored.State == nil {
			stored.StateOffset = o.Next // as coalesce(state_offset, next_offset) does
		}
		f.offsets[o.Partition] = stored
	}
	f.committed = append(f.committed, store.Batch{
		Ticks:     slices.Clone(b.Ticks),
		Rejected:  slices.Clone(b.Rejected),
		Offsets:   slices.Clone(b.Offsets),
		Anomalies: slices.Clone(b.Anomalies),
	})
	return store.CommitResult{Inserted: int64(len(b.Ticks)), Anomalies: int64(len(b.Anomalies))}, nil
}

func (f *fakeSink) LoadOffsets(_ context.Context, _, _ string, partitions []int32) (map[int32]store.Offset, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loads++
	out := map[int32]store.Offset{}
	for _, id := range partitions {
		if o, ok := f.offsets[id]; ok {
			out[id] = o
		}
	}
	return out, nil
}

func (f *fakeSink) FindRefused(_ context.Context, ticks []store.TickRow) ([]store.Refusal, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.searches++
	var out []store.Refusal
	for i, t := range ticks {
		if f.refuse != nil && f.refuse(t) {
			out = append(out, store.Refusal{Index: i, Err: refusal(fmt.Sprintf("price %v breaks no_13_13", t.Price))})
		}
	}
	return out, nil
}

func (f *fakeSink) FindTick(context.Context, string, time.Time, int64) (store.StoredTick, bool, error) {
	return store.StoredTick{}, false, nil
}

func (f *fakeSink) batches() []store.Batch {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.committed)
}

// harness is a processor over a fakeSink, with a kfake broker for what it
// publishes.
type harness struct {
	t    *testing.T
	p    *Processor
	sink *fakeSink
	cl   *kgo.Client // a plain client, not in a group, as commit gets
	kcfg kafka.Config
	base time.Time
}

func newHarness(t *testing.T, sink *fakeSink, cfg Config) *harness {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1),
		kfake.SeedTopics(1, kafka.TopicTicks, kafka.TopicDLQ, kafka.TopicAnomalies))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cfg.Kafka = kafka.Config{Brokers: c.ListenAddrs()}
	if cfg.Lanes == 0 {
		cfg.Lanes = 2
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p, err := newProcessor(cfg, sink)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(cfg.Kafka.Opts()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &harness{t: t, p: p, sink: sink, cl: cl, kcfg: cfg.Kafka,
		base: time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)}
}

// record is a valid tick of sym at offset off of partition part; its seq
// and time grow with off.
func (h *harness) record(part int32, off int64, sym string, price float64) *kgo.Record {
	t := market.Tick{Symbol: sym, Seq: off + 1, TS: h.base.Add(time.Duration(off) * time.Millisecond),
		Price: price, Size: 100, Bid: price - 0.01, Ask: price + 0.01}
	return &kgo.Record{Topic: kafka.TopicTicks, Partition: part, Offset: off, Key: []byte(sym), Value: t.AppendJSON(nil)}
}

// fetches is what a poll returning recs looks like.
func fetches(recs ...*kgo.Record) kgo.Fetches {
	byPart := map[int32][]*kgo.Record{}
	for _, r := range recs {
		byPart[r.Partition] = append(byPart[r.Partition], r)
	}
	var ft kgo.FetchTopic
	ft.Topic = kafka.TopicTicks
	for _, id := range slices.Sorted(maps.Keys(byPart)) {
		ft.Partitions = append(ft.Partitions, kgo.FetchPartition{Partition: id, Records: byPart[id]})
	}
	return kgo.Fetches{{Topics: []kgo.FetchTopic{ft}}}
}

// batch runs recs through add and prepare into a fresh work, as one poll
// would.
func (h *harness) batch(force bool, recs ...*kgo.Record) *work {
	h.t.Helper()
	w := h.p.newWork()
	if err := h.p.add(context.Background(), w, fetches(recs...)); err != nil {
		h.t.Fatal(err)
	}
	if err := h.p.prepare(w, force); err != nil {
		h.t.Fatal(err)
	}
	return w
}

// commit launches w and waits for its commit.
func (h *harness) commit(w *work) error {
	return h.p.launch(context.Background(), h.cl, w).wait()
}

// assign gives the processor partitions as a rebalance would, and returns
// where consumption starts.
func (h *harness) assign(ids ...int32) map[int32]kgo.Offset {
	h.t.Helper()
	offs := map[int32]kgo.Offset{}
	for _, id := range ids {
		offs[id] = kgo.NewOffset()
	}
	got, err := h.p.assign(context.Background(), map[string]map[int32]kgo.Offset{kafka.TopicTicks: offs})
	if err != nil {
		h.t.Fatal(err)
	}
	return got[kafka.TopicTicks]
}

func offsetsOf(w *work) map[int32]store.PartitionCommit {
	out := map[int32]store.PartitionCommit{}
	for i := range w.lanes {
		for _, o := range w.lanes[i].b.Offsets {
			out[o.Partition] = o
		}
	}
	return out
}

// TestCheckpointOnePartitionDuePerBatch: a batch checkpoints every
// partition that has no checkpoint yet, but of those whose checkpoint is
// merely old only the oldest one, so that megabytes of state are spread
// over batches; a forced batch (shutdown, rebalance) checkpoints all.
func TestCheckpointOnePartitionDuePerBatch(t *testing.T) {
	h := newHarness(t, newFakeSink(), Config{CheckpointEvery: 10 * time.Second})
	h.assign(0, 1, 2, 3, 4)
	now := time.Now()
	for id, age := range map[int32]time.Duration{0: 30 * time.Second, 1: time.Minute, 2: time.Second, 4: 2 * time.Minute} {
		part := h.p.parts[id]
		part.checkpoint, part.checkpointed = 0, now.Add(-age)
	}
	// Partition 3 has never been checkpointed; 4 is the most overdue but
	// has no records in the batch.
	recs := []*kgo.Record{h.record(0, 0, "AAA", 10), h.record(1, 0, "BBB", 10), h.record(2, 0, "CCC", 10), h.record(3, 0, "DDD", 10)}
	withState := func(w *work) []int32 {
		var ids []int32
		for id, o := range offsetsOf(w) {
			if o.State != nil {
				if o.StateOffset != 1 {
					t.Errorf("partition %d checkpointed at %d, want 1", id, o.StateOffset)
				}
				ids = append(ids, id)
			}
		}
		slices.Sort(ids)
		return ids
	}
	if got := withState(h.batch(false, recs...)); !slices.Equal(got, []int32{1, 3}) {
		t.Errorf("checkpointed partitions %v, want [1 3]: the one never checkpointed and, of those due, the oldest", got)
	}
	if got := withState(h.batch(true, recs...)); !slices.Equal(got, []int32{0, 1, 2, 3}) {
		t.Errorf("forced: checkpointed partitions %v, want every touched one", got)
	}
}

// TestExpectedOffsetsFollowThePreviousCommit: batch n+1 is computed while
// batch n commits, but the offsets it expects to find stored are filled in
// only once n has committed; otherwise every second batch would be fenced
// by the processor's own commit.
func TestExpectedOffsetsFollowThePreviousCommit(t *testing.T) {
	sink := newFakeSink()
	sink.gate = make(chan struct{})
	h := newHarness(t, sink, Config{})
	h.assign(0)

	var first, second []*kgo.Record
	for off := range int64(10) {
		first = append(first, h.record(0, off, "AAA", 10))
		second = append(second, h.record(0, off+10, "AAA", 10))
	}
	w1 := h.batch(false, first...)
	f1 := h.p.launch(context.Background(), h.cl, w1)
	w2 := h.batch(false, second...) // while w1 is in flight
	if o := offsetsOf(w2)[0]; o.Next != 20 {
		t.Fatalf("second batch moves partition 0 to %d, want 20", o.Next)
	}
	close(sink.gate)
	if err := f1.wait(); err != nil {
		t.Fatal(err)
	}
	if err := h.commit(w2); err != nil {
		t.Fatalf("second batch: %v", err)
	}
	got := sink.batches()
	if len(got) != 2 {
		t.Fatalf("%d commits, want 2", len(got))
	}
	for i, want := range []store.PartitionCommit{{Partition: 0, Expected: -1, Next: 10}, {Partition: 0, Expected: 10, Next: 20}} {
		o := got[i].Offsets[0]
		if o.Partition != want.Partition || o.Expected != want.Expected || o.Next != want.Next {
			t.Errorf("commit %d: offset %+v, want expected %d and next %d", i, o, want.Expected, want.Next)
		}
	}
	if st := h.p.Stats(); st.Batches != 2 || st.Consumed != 20 || st.Stored != 20 {
		t.Errorf("stats %+v, want 2 batches of 20 records stored", st)
	}
}

// TestFencedCommitIsNotRetried: a partition committed by someone else
// since this processor read it fails the batch at once, with ErrFenced,
// and leaves what the processor believes stored as it was; a database
// that is briefly away is waited out instead.
func TestFencedCommitIsNotRetried(t *testing.T) {
	sink := newFakeSink()
	h := newHarness(t, sink, Config{})
	h.assign(0)
	if err := h.commit(h.batch(false, h.record(0, 0, "AAA", 10))); err != nil {
		t.Fatal(err)
	}
	sink.moveOnce = func(o map[int32]store.Offset) { o[0] = store.Offset{Next: 7, StateOffset: 7} }
	err := h.commit(h.batch(false, h.record(0, 1, "AAA", 10)))
	if !errors.Is(err, store.ErrFenced) {
		t.Fatalf("commit after another processor's: %v, want ErrFenced", err)
	}
	if sink.attempts != 2 {
		t.Errorf("%d commit attempts, want 2: a fenced batch is not retried", sink.attempts)
	}
	if e := h.p.parts[0].expected; e != 1 {
		t.Errorf("partition 0 expected at %d after the fenced commit, want 1 (its last own commit)", e)
	}
	if st := h.p.Stats(); st.Batches != 1 || st.Consumed != 1 {
		t.Errorf("stats %+v: the fenced batch was counted", st)
	}

	// A connection lost is not a refusal: the same batch goes again.
	sink2 := newFakeSink()
	sink2.fail = func(attempt int) error {
		if attempt == 1 {
			return errors.New("connection reset by peer")
		}
		return nil
	}
	h2 := newHarness(t, sink2, Config{})
	h2.assign(0)
	if err := h2.commit(h2.batch(false, h2.record(0, 0, "AAA", 10))); err != nil {
		t.Fatal(err)
	}
	if sink2.attempts != 2 || len(sink2.batches()) != 1 {
		t.Errorf("%d attempts and %d commits, want the batch retried once", sink2.attempts, len(sink2.batches()))
	}
}

// TestRunRejoinsAfterFencing runs the processor's session against kfake: when
// another processor commits a partition between this one's assignment and
// its commit, the batch is fenced, the session starts over from the offset
// now stored, and everything after it is committed.
func TestRunRejoinsAfterFencing(t *testing.T) {
	sink := newFakeSink()
	h := newHarness(t, sink, Config{Group: "g"})
	const total = 200
	produce := func(from, to int64) {
		var recs []*kgo.Record
		for off := from; off < to; off++ {
			recs = append(recs, h.record(0, off, "AAA", 10))
		}
		if err := h.cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor := func(what string, cond func(*fakeSink) bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			sink.mu.Lock()
			ok := cond(sink)
			sink.mu.Unlock()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// The other processor stores records 0 to 49 just before this one
	// commits its first batch.
	sink.moveOnce = func(o map[int32]store.Offset) { o[0] = store.Offset{Next: 50, StateOffset: 50} }

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() { runErr = h.p.Run(ctx) })
	defer func() {
		cancel()
		wg.Wait()
	}()
	produce(0, total/2)
	waitFor("the first commit", func(s *fakeSink) bool { return s.attempts > 0 })
	// The processor learns of a failed commit when its next poll returns.
	produce(total/2, total)
	waitFor("every record committed", func(s *fakeSink) bool { return s.offsets[0].Next == total })
	cancel()
	wg.Wait()
	if runErr != nil {
		t.Fatal(runErr)
	}
	st := h.p.Stats()
	if st.Fenced != 1 {
		t.Errorf("Fenced = %d, want 1", st.Fenced)
	}
	if sink.loads < 2 {
		t.Errorf("offsets loaded %d times, want a second time after rejoining", sink.loads)
	}
	// What the other processor stored is not committed again.
	var first int64 = total
	for _, b := range sink.batches() {
		for _, tk := range b.Ticks {
			first = min(first, tk.Offset)
		}
	}
	if first != 50 {
		t.Errorf("first tick committed at offset %d, want 50", first)
	}
}

// TestRefusedTicksAreIsolated: ticks PostgreSQL refuses are found, moved
// to the rejected rows with the database's reason and published as dead
// letters, and the rest of the batch is committed again without them.
func TestRefusedTicksAreIsolated(t *testing.T) {
	sink := newFakeSink()
	sink.refuse = func(t store.TickRow) bool { return t.Price == 13.13 }
	h := newHarness(t, sink, Config{Lanes: 1})
	h.assign(0)
	var recs []*kgo.Record
	for off := range int64(8) {
		price := 13.12
		if off == 2 || off == 5 {
			price = 13.13
		}
		recs = append(recs, h.record(0, off, "AAA", price))
	}
	if err := h.commit(h.batch(false, recs...)); err != nil {
		t.Fatal(err)
	}
	if sink.attempts != 2 || sink.searches != 1 {
		t.Errorf("%d commit attempts and %d searches, want the refused attempt, one search and the commit", sink.attempts, sink.searches)
	}
	got := sink.batches()
	if len(got) != 1 {
		t.Fatalf("%d commits, want 1", len(got))
	}
	var kept []int64
	for _, tk := range got[0].Ticks {
		kept = append(kept, tk.Offset)
	}
	if !slices.Equal(kept, []int64{0, 1, 3, 4, 6, 7}) {
		t.Errorf("committed ticks at offsets %v, want all but 2 and 5", kept)
	}
	var rejected []int64
	for _, r := range got[0].Rejected {
		rejected = append(rejected, r.Offset)
		if r.Reason != market.ReasonDatabase || !strings.Contains(r.Detail, "no_13_13") || !strings.Contains(string(r.Raw), "13.13") {
			t.Errorf("rejected row %+v: want reason db_rejected, the database's reason and the raw record", r)
		}
	}
	if !slices.Equal(rejected, []int64{2, 5}) {
		t.Errorf("rejected offsets %v, want [2 5]", rejected)
	}
	if o := got[0].Offsets[0]; o.Next != 8 {
		t.Errorf("partition 0 moved to %d, want 8", o.Next)
	}
	if st := h.p.Stats(); st.Rejected != 2 || st.Stored != 6 {
		t.Errorf("stats %+v, want 2 rejected and 6 stored", st)
	}
	dl := h.consume(kafka.TopicDLQ, 2)
	for _, r := range dl {
		if header(r, kafka.HeaderError) != string(market.ReasonDatabase) || !strings.Contains(string(r.Value), "13.13") {
			t.Errorf("dead letter %s with headers %v: want the refused record and its reason", r.Value, r.Headers)
		}
	}
}

// TestRefusalWithoutCulprit: if no single tick is refused on its own, the
// commit fails instead of trying the same batch for ever; a refusal of
// another table is not the ticks' fault and is not searched.
func TestRefusalWithoutCulprit(t *testing.T) {
	sink := newFakeSink()
	sink.refuseAll = true
	h := newHarness(t, sink, Config{})
	h.assign(0)
	err := h.commit(h.batch(false, h.record(0, 0, "AAA", 10)))
	if err == nil || !strings.Contains(err.Error(), "no single tick") {
		t.Fatalf("err = %v, want the batch refused with no single tick to blame", err)
	}
	if sink.attempts != 1 || sink.searches != 1 {
		t.Errorf("%d attempts and %d searches, want 1 and 1", sink.attempts, sink.searches)
	}

	sink2 := newFakeSink()
	sink2.fail = func(int) error {
		return &store.RefusedError{Table: "candles", Err: refusal("candles_ohlc")}
	}
	h2 := newHarness(t, sink2, Config{})
	h2.assign(0)
	var refused *store.RefusedError
	if err := h2.commit(h2.batch(false, h2.record(0, 0, "AAA", 10))); !errors.As(err, &refused) || refused.Table != "candles" {
		t.Fatalf("err = %v, want the candles refusal", err)
	}
	if sink2.attempts != 1 || sink2.searches != 0 {
		t.Errorf("%d attempts and %d searches, want 1 and none", sink2.attempts, sink2.searches)
	}
}

// TestReplayDoesNotWrite: records below the stored offset, read again from
// the last checkpoint, rebuild the state only. They store no tick, no
// rejection and publish no dead letter, and the stored offset does not
// move back; writing resumes with the first record at the stored offset.
func TestReplayDoesNotWrite(t *testing.T) {
	sink := newFakeSink()
	h := newHarness(t, sink, Config{})
	// Stored: the state as it stood at offset 0 (nothing applied yet),
	// and the records up to offset 10.
	fresh, err := h.p.newPartition(-1, nil)
	if err != nil {
		t.Fatal(err)
	}
	state, err := fresh.an.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	sink.offsets[0] = store.Offset{Next: 10, State: state, StateOffset: 0}
	if start := h.assign(0)[0]; start.EpochOffset().Offset != 0 {
		t.Fatalf("consumption starts at %v, want the checkpoint's offset 0", start)
	}
	var recs []*kgo.Record
	for off := range int64(15) {
		recs = append(recs, h.record(0, off, "AAA", 10))
	}
	recs[3].Value = []byte(`{"symbol":"AAA"`) // rejected when first read, stored as such
	recs[12].Value = []byte(`not a tick`)

	w := h.batch(false, recs[:7]...) // replay only
	if o := offsetsOf(w)[0]; o.Next != 10 {
		t.Errorf("a batch inside the replay moves partition 0 to %d, want it left at 10", o.Next)
	}
	if len(w.outbound.recs) != 0 {
		t.Errorf("replay would publish %d records", len(w.outbound.recs))
	}
	if err := h.commit(w); err != nil {
		t.Fatal(err)
	}
	w = h.batch(false, recs[7:]...)
	if len(w.outbound.recs) != 1 {
		t.Errorf("%d records to publish, want the dead letter of offset 12 only", len(w.outbound.recs))
	}
	if err := h.commit(w); err != nil {
		t.Fatal(err)
	}
	var ticks, rejected []int64
	for _, b := range sink.batches() {
		for _, tk := range b.Ticks {
			ticks = append(ticks, tk.Offset)
		}
		for _, r := range b.Rejected {
			rejected = append(rejected, r.Offset)
		}
	}
	if !slices.Equal(ticks, []int64{10, 11, 13, 14}) || !slices.Equal(rejected, []int64{12}) {
		t.Errorf("written ticks %v and rejections %v, want ticks [10 11 13 14] and rejection [12]", ticks, rejected)
	}
	if next := sink.offsets[0].Next; next != 15 {
		t.Errorf("stored offset %d, want 15", next)
	}
	if st := h.p.Stats(); st.Replayed != 10 || st.Consumed != 5 {
		t.Errorf("stats %+v, want 10 replayed and 5 consumed", st)
	}
}

// consume reads n records of topic from the start.
func (h *harness) consume(topic string, n int) []*kgo.Record {
	h.t.Helper()
	cl, err := kgo.NewClient(append(h.kcfg.Opts(), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		h.t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	if len(out) != n {
		h.t.Fatalf("%s holds %d records, want %d", topic, len(out), n)
	}
	return out
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// TestSymbolsCountsEachPartitionsSymbols: what the processor's memory is
// sized by is every symbol of every partition it holds, each once.
func TestSymbolsCountsEachPartitionsSymbols(t *testing.T) {
	h := newHarness(t, newFakeSink(), Config{})
	h.assign(0, 1)
	if n := h.p.Symbols(); n != 0 {
		t.Fatalf("Symbols() = %d before any record, want 0", n)
	}
	h.batch(false,
		h.record(0, 0, "AAPL", 100), h.record(0, 1, "MSFT", 100), h.record(0, 2, "AAPL", 101),
		h.record(1, 0, "NVDA", 100), h.record(1, 1, "AMZN", 100), h.record(1, 2, "TSLA", 100))
	if n := h.p.Symbols(); n != 5 {
		t.Fatalf("Symbols() = %d, want 5 (AAPL and MSFT in partition 0, NVDA, AMZN and TSLA in 1)", n)
	}
}
