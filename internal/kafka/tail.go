package kafka

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/market"
)

// LastTicks reads up to depth records from the end of every partition of
// topic and returns, per symbol, the valid tick with the highest seq. A
// generator uses it to continue a symbol's seq and price where the topic
// left off instead of producing seqs that would be dropped as duplicates.
func LastTicks(ctx context.Context, cfg Config, topic string, depth int64) (map[string]market.Tick, error) {
	admCl, err := kgo.NewClient(cfg.Opts()...)
	if err != nil {
		return nil, fmt.Errorf("creating Kafka client: %w", err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("listing end offsets of %s: %w", topic, err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("listing start offsets of %s: %w", topic, err)
	}
	from := map[string]map[int32]kgo.Offset{topic: {}}
	remaining := 0
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			return
		}
		start := max(o.Offset-depth, 0)
		if s, ok := starts.Lookup(topic, o.Partition); ok && s.Err == nil {
			start = max(start, s.Offset)
		}
		if start < o.Offset {
			from[topic][o.Partition] = kgo.NewOffset().At(start)
			remaining++
		}
	})
	last := make(map[string]market.Tick)
	if remaining == 0 {
		return last, nil
	}
	cl, err := kgo.NewClient(append(cfg.Opts(), kgo.ConsumePartitions(from))...)
	if err != nil {
		return nil, fmt.Errorf("creating Kafka consumer: %w", err)
	}
	defer cl.Close()
	dec := market.NewDecoder()
	for remaining > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("reading the tail of %s: %w", topic, err)
		}
		fetches.EachError(func(_ string, _ int32, e error) { err = e })
		if err != nil {
			return nil, fmt.Errorf("reading the tail of %s: %w", topic, err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			var t market.Tick
			if dec.Decode(r.Value, &t) == nil && t.Seq > last[t.Symbol].Seq {
				last[t.Symbol] = t
			}
			if end, ok := ends.Lookup(topic, r.Partition); ok && r.Offset == end.Offset-1 {
				remaining--
			}
		})
	}
	return last, nil
}
