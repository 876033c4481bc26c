package stream

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/store"
)

// isolateRefused handles PostgreSQL refusing ticks of b (refusal is the
// commit's error): a constraint or an encoding the validator let through.
// It finds the ticks by bisection, takes them out of b, and sends them to
// the dead-letter path — the topic now, rejected_ticks with b, both with
// the database's reason — so that the caller commits the rest again.
//
// The dead letters go out before b is committed again, as a batch's do:
// if the process dies in between they are published twice, and stored once.
func (p *Processor) isolateRefused(ctx context.Context, cl *kgo.Client, b *store.Batch, refusal error) error {
	bad, err := p.sink.FindRefused(ctx, b.Ticks)
	if err != nil {
		return fmt.Errorf("isolating the ticks PostgreSQL refused: %w (after: %w)", err, refusal)
	}
	if len(bad) == 0 {
		// Without a tick to blame, committing again would fail the same
		// way for ever.
		return fmt.Errorf("PostgreSQL refused the batch but no single tick: %w", refusal)
	}
	var dl outbound
	keep := b.Ticks[:0]
	next := 0
	for i := range b.Ticks {
		t := b.Ticks[i]
		if next < len(bad) && bad[next].Index == i {
			rj := &market.Rejection{Reason: market.ReasonDatabase, Detail: bad[next].Err.Error()}
			next++
			b.Rejected = append(b.Rejected, store.Rejected{Topic: p.cfg.Topic, Partition: t.Partition, Offset: t.Offset,
				RecordTS: t.RecordTS, Reason: rj.Reason, Detail: rj.Detail, Key: []byte(t.Symbol), Raw: t.Raw})
			dl.deadLetter(p.cfg.DLQTopic, &kgo.Record{Topic: p.cfg.Topic, Partition: t.Partition,
				Offset: t.Offset, Key: []byte(t.Symbol), Value: t.Raw}, rj)
			continue
		}
		keep = append(keep, t)
	}
	b.Ticks = keep
	p.log.Warn("PostgreSQL refused ticks; sent them to the dead-letter path", "count", len(bad), "first", bad[0].Err)
	return dl.publish(ctx, cl, p.log)
}
