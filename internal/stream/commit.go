package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stockpipe/stockpipe/internal/analytics"
	"github.com/stockpipe/stockpipe/internal/retry"
	"github.com/stockpipe/stockpipe/internal/store"
)

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

// checkpointsDue appends to dst the partitions among touched whose state is
// written with this batch, and returns it: all of them when force is set (a
// shutdown or a rebalance, after which nothing should be replayed), those
// never checkpointed, and of those whose last checkpoint is older than
// CheckpointEvery only the one longest without: spread over batches,
// checkpoints of several megabytes do not all land in one transaction (and
// in memory at once). p.mu is held.
func (p *Processor) checkpointsDue(dst, touched []int32, force bool, now time.Time) []int32 {
	due := int32(-1)
	var oldest time.Time
	for _, id := range touched {
		part := p.parts[id]
		switch {
		case part == nil:
		case force || part.checkpoint < 0:
			dst = append(dst, id)
		case now.Sub(part.checkpointed) >= p.cfg.CheckpointEvery && (due < 0 || part.checkpointed.Before(oldest)):
			due, oldest = id, part.checkpointed
		}
	}
	if due >= 0 {
		dst = append(dst, due)
	}
	return dst
}

// expect fills in, for each offset of w, the position this processor last saw
// stored for the partition, which the commit requires to still be there:
// a partition taken over by another processor has moved on, and the batch
// is refused (fenced). It runs when w is launched, after the previous
// commit, whose new offsets are the ones expected now. p.mu is held.
func (p *Processor) expect(w *work) {
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

// commit stores the batch. Its dead letters and anomaly records go to Kafka
// first: if the process dies between the two, the batch is read again and
// they are published twice (at least once on the topics) but stored once in
// PostgreSQL (exactly once there).
func (p *Processor) commit(ctx context.Context, cl *kgo.Client, w *work) error {
	// A shutdown still commits what was read: detach from ctx's
	// cancellation but bound the time.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()

	if err := w.outbound.publish(cctx, cl, p.log); err != nil {
		return err
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

// commitLane commits one lane. If PostgreSQL refuses some of its ticks,
// they are set aside (see isolateRefused) and the rest is committed: one
// bad row must not stop its partition for ever.
func (p *Processor) commitLane(ctx context.Context, cl *kgo.Client, l *lane) (store.CommitResult, error) {
	for {
		var res store.CommitResult
		err := withRetry(ctx, p.log, "committing batch", func() error {
			var err error
			res, err = p.sink.Commit(ctx, &l.b)
			return err
		})
		var refused *store.RefusedError
		if !errors.As(err, &refused) || refused.Table != "ticks" {
			return res, err
		}
		if err := p.isolateRefused(ctx, cl, &l.b, err); err != nil {
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

// withRetry runs fn until it succeeds, ctx ends, or it fails with ErrFenced
// or an error PostgreSQL will repeat (store.Permanent). PostgreSQL or the
// broker being away is waited out as retry.Commit says: the batch stays in
// hand, nothing is acknowledged, consumption pauses.
func withRetry(ctx context.Context, log *slog.Logger, what string, fn func() error) error {
	again := func(err error) bool { return !errors.Is(err, store.ErrFenced) && !store.Permanent(err) }
	attempts := 1
	err := retry.Commit.Do(ctx, fn, again, func(attempt int, err error, wait time.Duration) {
		attempts = attempt + 1
		log.Warn(what+" failed; retrying", "err", err, "attempt", attempt, "in", wait)
	})
	switch {
	case err == nil:
		if attempts > 1 {
			log.Info(what+" succeeded after retries", "attempts", attempts)
		}
		return nil
	case ctx.Err() != nil && again(err) && !errors.Is(err, ctx.Err()):
		// The wait was cut short: say so, and keep the error that
		// made it wait.
		return fmt.Errorf("%s: %w (last error: %w)", what, ctx.Err(), err)
	}
	return err
}
