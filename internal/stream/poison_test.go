package stream_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/kafka"
)

// TestPoisonRowsGoToDeadLetters: ticks that pass the validator but that
// PostgreSQL refuses (here a constraint the validator does not know) are
// isolated into the dead-letter path with the database's reason; the rest
// of their batch commits and the processor keeps going.
func TestPoisonRowsGoToDeadLetters(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.pool.Exec(ctx, `ALTER TABLE ticks ADD CONSTRAINT no_price_13_13 CHECK (price <> 13.13)`); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append(e.kcfg.Opts(), kgo.DefaultProduceTopic(kafka.TopicTicks))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const total = 2000
	poison := map[int]bool{7: true, 700: true, 701: true, 1999: true}
	var recs []*kgo.Record
	for i := range total {
		price := 13.12
		if poison[i] {
			price = 13.13
		}
		sym := []string{"POIA", "POIB", "POIC"}[i%3]
		v := fmt.Sprintf(`{"symbol":%q,"ts":"2026-11-02T15:00:%02d.%06dZ","seq":%d,"price":%g,"size":100,"bid":13.11,"ask":13.14}`,
			sym, i/100, i, i/3+1, price)
		recs = append(recs, &kgo.Record{Key: []byte(sym), Value: []byte(v)})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	stop := e.processor("g1")
	e.waitFor("every record committed", time.Minute, func() bool { return e.committed("g1") == total })
	// The processor is still consuming: a good record after the poison
	// is stored too.
	if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte("POIA"),
		Value: []byte(`{"symbol":"POIA","ts":"2026-11-02T15:00:30Z","seq":100000,"price":13.12,"size":100,"bid":13.11,"ask":13.14}`)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	e.waitFor("the record after the poison", time.Minute, func() bool { return e.committed("g1") == total+1 })
	st := stop()

	if n := e.count(`SELECT count(*) FROM ticks`); n != total-int64(len(poison))+1 {
		t.Errorf("ticks rows = %d, want %d", n, total-len(poison)+1)
	}
	if n := e.count(`SELECT count(*) FROM rejected_ticks WHERE reason = 'db_rejected' AND detail LIKE '%no_price_13_13%' AND convert_from(raw, 'UTF8') LIKE '%13.13%'`); n != int64(len(poison)) {
		t.Errorf("rejected as db_rejected with the constraint named = %d, want %d", n, len(poison))
	}
	if st.Rejected != int64(len(poison)) {
		t.Errorf("processor counted %d rejected, want %d", st.Rejected, len(poison))
	}
	// Each refused tick is on the dead-letter topic with the reason.
	dl, err := kgo.NewClient(append(e.kcfg.Opts(), kgo.ConsumeTopics(kafka.TopicDLQ),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	seen := map[string]bool{}
	for len(seen) < len(poison) && dctx.Err() == nil {
		dl.PollFetches(dctx).EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == kafka.HeaderError && string(h.Value) == "db_rejected" {
					seen[string(r.Value)] = true
				}
			}
		})
	}
	if len(seen) != len(poison) {
		t.Errorf("dead-letter topic holds %d refused ticks, want %d", len(seen), len(poison))
	}
}
