package stream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/analytics"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/store"
)

// work is one batch: the records of one poll cycle, decoded, checked and
// run through analytics, split into lanes by partition. Two alternate, so
// that one is computed while the other commits.
type work struct {
	lanes    []lane
	outbound outbound // dead letters and anomaly records, published before the commit
	touched  []int32  // partitions with records in this batch, in first-seen order
	dup      int64    // duplicates dropped
	late     int64    // late ticks rejected
	n        int      // records taken
	// replayed counts records below their partition's stored offset,
	// applied only to rebuild state from a checkpoint; what they produce
	// goes to scratch and is dropped (see add).
	replayed int64
	scratch  analytics.Output
	// checkpoints lists the partitions whose state this batch writes; its
	// buffer is reused.
	checkpoints []int32
}

func (p *Processor) newWork() *work {
	w := &work{lanes: make([]lane, p.cfg.Lanes)}
	for i := range w.lanes {
		w.lanes[i].b = store.Batch{Group: p.cfg.Group, Topic: p.cfg.Topic}
	}
	return w
}

func (w *work) reset() {
	for i := range w.lanes {
		l := &w.lanes[i]
		l.b.Reset()
		l.out.Reset()
		l.res, l.err = store.CommitResult{}, nil
	}
	w.outbound.reset()
	w.touched = w.touched[:0]
	w.dup, w.late, w.n = 0, 0, 0
	w.replayed = 0
	w.scratch.Reset()
	w.checkpoints = w.checkpoints[:0]
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

// consume polls and commits batches until ctx is done or a commit fails.
//
// Batches are pipelined: while batch n commits, batch n+1 is polled and
// computed; n+1's commit starts once n's has finished, so offsets still move
// in order. Rebalances stay blocked from each poll until the previous
// commit is done.
func (p *Processor) consume(ctx context.Context, cl *kgo.Client) (err error) {
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
				Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, RecordTS: r.Timestamp,
				Reason: rj.Reason, Detail: rj.Detail, Key: r.Key, Raw: r.Value,
			})
			w.outbound.deadLetter(p.cfg.DLQTopic, r, rj)
			return
		}
		l.b.Ticks = append(l.b.Ticks, store.TickRow{Tick: t, Partition: r.Partition, Offset: r.Offset, Raw: r.Value, RecordTS: r.Timestamp})
	})
	return err
}

// known reports whether an earlier record of r's partition carried the
// tick — its (symbol, ts, seq), the key of ticks — and was taken: this
// batch's ticks so far, else the database, once the batch in flight is in
// it. The analytics remembers only the last 4,096 seqs of a symbol, and
// beyond them a tick is a duplicate only if it is stored; anything else,
// however old its seq, is stored or rejected with a reason. A stored
// (symbol, seq) with another ts (a producer's bug) is another tick here,
// in the batch as in the database, so that where batches end does not
// decide. p.mu is held, and released while the batch in flight finishes:
// no rebalance can run meanwhile, since add is called between a poll and
// AllowRebalance.
func (p *Processor) known(ctx context.Context, w *work, r *kgo.Record, t *market.Tick) (bool, error) {
	for _, k := range w.lane(r.Partition).b.Ticks {
		if k.Partition == r.Partition && k.Seq == t.Seq && k.Symbol == t.Symbol && k.TS.Equal(t.TS) {
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

// storedBefore reports whether the database holds the tick (symbol, ts,
// seq) from an earlier record than r (or from another partition or topic).
func (p *Processor) storedBefore(ctx context.Context, r *kgo.Record, t *market.Tick) (bool, error) {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var st store.StoredTick
	var found bool
	err := withRetry(lctx, p.log, "looking up an old seq", func() error {
		var err error
		st, found, err = p.sink.FindTick(lctx, t.Symbol, t.TS, t.Seq)
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

// prepare closes the batch: it flushes each touched partition's forming
// candles, lists its new offset with, where checkpointsDue says so, a
// checkpoint of its state, and encodes the anomaly records. The state goes
// into a buffer of its own: the next batch may change it while this one
// commits. Expected offsets are filled in by launch, once the previous
// commit is known.
func (p *Processor) prepare(w *work, force bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	w.checkpoints = p.checkpointsDue(w.checkpoints[:0], w.touched, force, time.Now())
	for _, id := range w.touched {
		part := p.parts[id]
		if part == nil {
			continue
		}
		l := w.lane(id)
		part.an.Flush(&l.out)
		// While replaying, the stored offset stays where it is.
		pc := store.PartitionCommit{Partition: id, Next: max(part.next, part.expected)}
		if slices.Contains(w.checkpoints, id) {
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
			if err := w.outbound.anomaly(p.cfg.AnomalyTopic, &l.b.Anomalies[j]); err != nil {
				return err
			}
		}
	}
	return nil
}

// launch starts committing w, which the previous commit must have
// finished before.
func (p *Processor) launch(ctx context.Context, cl *kgo.Client, w *work) *flight {
	f := &flight{done: make(chan struct{})}
	p.mu.Lock()
	p.expect(w)
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
