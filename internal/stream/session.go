package stream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/retry"
	"github.com/stockpipe/stockpipe/internal/store"
)

// Run consumes until ctx is done, then commits what it has read and leaves
// the group. A batch refused because a partition moved (ErrFenced) restarts
// the consumer session, which resumes from the offsets in PostgreSQL.
func (p *Processor) Run(ctx context.Context) error {
	// Counted over the whole run, never reset: a session that fails again
	// soon after joining does not start back at the shortest wait.
	failures := 0
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
			// Not a failure: the group has moved on, and a new session
			// takes what it is given now.
			p.fenced.Add(1)
			p.log.Warn("a partition moved to another processor; rejoining", "err", err)
			continue
		}
		failures++
		p.log.Error("consumer session failed; retrying", "err", err, "in", retry.Session.Delay(failures))
		if retry.Session.Wait(ctx, failures) != nil {
			return nil
		}
	}
}

// configError is a session failure that no retry can fix.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// fetchMaxBytes bounds one fetch: several 10,000-record batches of ticks.
const fetchMaxBytes = 8 << 20

// session runs one consumer-group membership until ctx is done or a commit
// fails for good. Rebalances are blocked from each poll until the previous
// commit is done, and a revoked partition is only released once the batch
// in flight has committed (see release), so no partition changes owner
// with rows of it in hand.
func (p *Processor) session(ctx context.Context) error {
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
		// franz-go buffers whole fetches ahead of polls, 50 MiB each by
		// default: a processor restarted with a backlog held 43 MiB of
		// fetched records it would not reach for seconds. A few batches'
		// worth keeps it as fast and its memory where a fresh one's is.
		kgo.FetchMaxBytes(fetchMaxBytes),
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
	return p.consume(ctx, cl)
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
