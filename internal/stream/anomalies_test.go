package stream_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/anomaly"
	"github.com/stockpipe/stockpipe/internal/generate"
	"github.com/stockpipe/stockpipe/internal/kafka"
)

// TestAnomalyRecordsAreJSON runs the processor over simulated ticks with
// anomalies, reads the anomalies topic as another program would, and
// requires every record to be JSON with exactly the documented fields,
// matching the anomalies stored in PostgreSQL one for one.
func TestAnomalyRecordsAreJSON(t *testing.T) {
	e := newEnv(t)
	st := e.produce(generate.SimConfig{
		Symbols: generate.DefaultUniverse(), Rate: 300, Count: 60_000, Seed: 21,
		Start: simStart, AnomalyRate: 30,
	})
	stop := e.processor("g1")
	e.waitFor("all records committed", 2*time.Minute, func() bool { return e.committed("g1") == st.Records })
	stop()

	type key struct {
		symbol, kind string
		ts           int64 // Unix µs
	}
	type fields struct {
		severity, detail string
		value, threshold float64
	}
	stored := map[key]fields{}
	rows, err := e.pool.Query(context.Background(), `SELECT symbol, ts, kind, severity, value, threshold, detail FROM anomalies`)
	if err != nil {
		t.Fatal(err)
	}
	var (
		k  key
		f  fields
		ts time.Time
	)
	if _, err := pgx.ForEachRow(rows, []any{&k.symbol, &ts, &k.kind, &f.severity, &f.value, &f.threshold, &f.detail}, func() error {
		k.ts = ts.UnixMicro()
		stored[k] = f
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(stored) < 10 {
		t.Fatalf("only %d anomalies stored; the test proves little", len(stored))
	}

	cl, err := kgo.NewClient(append(e.kcfg.Opts(), kgo.ConsumeTopics(kafka.TopicAnomalies),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < len(stored) && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
	}
	if len(recs) != len(stored) {
		t.Fatalf("anomalies topic holds %d records, PostgreSQL %d anomalies", len(recs), len(stored))
	}

	seen := map[key]bool{}
	for _, r := range recs {
		var a struct {
			Symbol    *string  `json:"symbol"`
			TS        *string  `json:"ts"`
			Kind      *string  `json:"kind"`
			Severity  *string  `json:"severity"`
			Value     *float64 `json:"value"`
			Threshold *float64 `json:"threshold"`
			Detail    *string  `json:"detail"`
		}
		dec := json.NewDecoder(bytes.NewReader(r.Value))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&a); err != nil || dec.More() {
			t.Fatalf("record %s is not one JSON object of the documented fields: %v", r.Value, err)
		}
		if a.Symbol == nil || a.TS == nil || a.Kind == nil || a.Severity == nil || a.Value == nil || a.Threshold == nil || a.Detail == nil {
			t.Fatalf("record %s lacks a field", r.Value)
		}
		at, err := time.Parse(time.RFC3339Nano, *a.TS)
		if err != nil {
			t.Fatalf("record %s: ts: %v", r.Value, err)
		}
		k := key{*a.Symbol, *a.Kind, at.UnixMicro()}
		want, ok := stored[k]
		got := fields{*a.Severity, *a.Detail, *a.Value, *a.Threshold}
		switch {
		case string(r.Key) != *a.Symbol:
			t.Errorf("record %s keyed %q", r.Value, r.Key)
		case !anomaly.Severity(*a.Severity).Valid() || *a.Detail == "":
			t.Errorf("record %s: severity or detail missing", r.Value)
		case !ok:
			t.Errorf("record %s: no such anomaly stored", r.Value)
		case seen[k]:
			t.Errorf("record %s published twice", r.Value)
		case got != want:
			t.Errorf("record %s: %+v, stored %+v", r.Value, got, want)
		}
		seen[k] = true
	}
	t.Logf("%d anomaly records parsed, e.g. %s", len(recs), recs[0].Value)
}
