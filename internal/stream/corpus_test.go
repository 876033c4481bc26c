package stream_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/kafka"
)

// TestBadInputCorpus produces one record of each kind of bad input through a
// real Kafka client and checks each is rejected with its precise reason (or
// accepted, where the documented rules accept it), while the processor keeps
// going.
func TestBadInputCorpus(t *testing.T) {
	e := newEnv(t)
	good := func(sym string, seq int, ts string) string {
		return `{"symbol":"` + sym + `","ts":"` + ts + `","seq":` + itoa(seq) + `,"price":10.5,"size":100,"bid":10.49,"ask":10.51}`
	}
	type rec struct {
		name  string
		key   []byte
		value []byte // nil = tombstone
		want  string // reason, or "" when the tick is stored
	}
	base := "2026-11-02T15:00:"
	cases := []rec{
		{"valid", []byte("BADA"), []byte(good("BADA", 1, base+"00Z")), ""},
		{"truncated JSON", []byte("BADA"), []byte(`{"symbol":"BADA","ts":"` + base + `01Z","seq":2`), "malformed_json"},
		{"not JSON", []byte("BADA"), []byte(`hello`), "malformed_json"},
		{"JSON array", []byte("BADA"), []byte(`[1,2,3]`), "malformed_json"},
		{"price as string", []byte("BADA"), []byte(strings.Replace(good("BADA", 3, base+"02Z"), `"price":10.5`, `"price":"10.5"`, 1)), "wrong_type"},
		{"seq as float", []byte("BADA"), []byte(strings.Replace(good("BADA", 3, base+"02Z"), `"seq":3`, `"seq":3.5`, 1)), "wrong_type"},
		{"NaN", []byte("BADA"), []byte(strings.Replace(good("BADA", 3, base+"02Z"), `"price":10.5`, `"price":NaN`, 1)), "bad_number"},
		{"Infinity", []byte("BADA"), []byte(strings.Replace(good("BADA", 3, base+"02Z"), `"ask":10.51`, `"ask":Infinity`, 1)), "bad_number"},
		{"huge number", []byte("BADA"), []byte(strings.Replace(good("BADA", 3, base+"02Z"), `"price":10.5`, `"price":1e400`, 1)), "bad_number"},
		{"zero price", []byte("BADA"), []byte(strings.Replace(good("BADA", 3, base+"02Z"), `"price":10.5`, `"price":0`, 1)), "bad_price"},
		{"negative size", []byte("BADA"), []byte(strings.Replace(good("BADA", 3, base+"02Z"), `"size":100`, `"size":-5`, 1)), "bad_size"},
		{"bid above ask", []byte("BADA"), []byte(strings.Replace(good("BADA", 3, base+"02Z"), `"bid":10.49`, `"bid":10.6`, 1)), "bid_above_ask"},
		{"empty value", []byte("BADA"), []byte{}, "empty"},
		{"tombstone", []byte("BADA"), nil, "empty"},
		{"lower-case symbol", []byte("bada"), []byte(good("bada", 3, base+"02Z")), "bad_symbol"},
		{"overlong symbol", []byte("ABCDEFGHIJKLM"), []byte(good("ABCDEFGHIJKLM", 3, base+"02Z")), "bad_symbol"},
		{"missing field", []byte("BADA"), []byte(`{"symbol":"BADA","ts":"` + base + `02Z","seq":3,"size":100,"bid":10.49,"ask":10.51}`), "missing_field"},
		{"bid without ask", []byte("BADA"), []byte(`{"symbol":"BADA","ts":"` + base + `02Z","seq":3,"price":10.5,"size":100,"bid":10.49}`), "bad_quote"},
		{"ask without bid (bid null)", []byte("BADA"), []byte(strings.Replace(good("BADA", 3, base+"02Z"), `"bid":10.49`, `"bid":null`, 1)), "bad_quote"},
		{"duplicate key", []byte("BADA"), []byte(strings.Replace(good("BADA", 3, base+"02Z"), `"size":100`, `"size":100,"size":200`, 1)), "duplicate_field"},
		{"1 MB payload", []byte("BADA"), []byte(`{"symbol":"BADA","pad":"` + strings.Repeat("x", 1<<20) + `"}`), "too_large"},
		{"binary garbage", []byte("BADA"), []byte{0x00, 0xff, 0xfe, 0x01, 0x80}, "invalid_utf8"},
		{"invalid UTF-8 in a string", []byte("BADA"), []byte(`{"symbol":"BAD` + "\xff" + `"}`), "invalid_utf8"},
		{"no key", nil, []byte(good("BADA", 3, base+"02Z")), "key_mismatch"},
		{"key not the symbol", []byte("OTHER"), []byte(good("BADA", 3, base+"02Z")), "key_mismatch"},
		{"far-future ts", []byte("BADA"), []byte(good("BADA", 3, "2099-01-01T00:00:00Z")), "future_ts"},
		{"ancient ts", []byte("BADA"), []byte(good("BADA", 3, "1970-01-01T00:00:00Z")), "ancient_ts"},
		{"ts without zone", []byte("BADA"), []byte(good("BADA", 3, "2026-11-02T15:00:02")), "bad_ts"},
		{"seq zero", []byte("BADA"), []byte(good("BADA", 0, base+"02Z")), "bad_seq"},
		{"extra fields", []byte("BADA"), []byte(strings.Replace(good("BADA", 2, base+"01Z"), `{`, `{"venue":"XNAS","flags":[1,{"a":null}],`, 1)), ""},
		{"non-UTC offset", []byte("BADA"), []byte(good("BADA", 3, "2026-11-02T10:00:02-05:00")), ""},
		{"duplicate seq", []byte("BADA"), []byte(good("BADA", 3, base+"02Z")), ""}, // dropped as a duplicate, not rejected
		// A trade-only feed's tick: no quote at all, or both null.
		{"no quote", []byte("BADA"), []byte(`{"symbol":"BADA","ts":"` + base + `03Z","seq":4,"price":10.5,"size":100}`), ""},
		{"null quote", []byte("BADA"), []byte(strings.Replace(strings.Replace(good("BADA", 5, base+"04Z"), `"bid":10.49`, `"bid":null`, 1), `"ask":10.51`, `"ask":null`, 1)), ""},
		{"late tick", []byte("BADA"), []byte(good("BADA", 9, "2026-11-02T14:59:00Z")), "late"},
		{"valid after all that", []byte("BADA"), []byte(good("BADA", 10, base+"05Z")), ""},
	}
	cl, err := kgo.NewClient(e.kcfg.Opts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for _, c := range cases {
		// Everything goes to one partition, in this order, as a symbol's
		// records would.
		recs = append(recs, &kgo.Record{Topic: kafka.TopicTicks, Partition: 0, Key: c.key, Value: c.value})
	}
	manual, err := kgo.NewClient(append(e.kcfg.Opts(), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchMaxBytes(4<<20))...)
	if err != nil {
		t.Fatal(err)
	}
	defer manual.Close()
	if err := manual.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	stop := e.processor("g1")
	e.waitFor("every record handled", time.Minute, func() bool { return e.committed("g1") == int64(len(cases)) })
	ps := stop()

	reasons := map[int64]string{}
	rows, err := e.pool.Query(context.Background(), `SELECT "offset", reason FROM rejected_ticks`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var off int64
		var r string
		if err := rows.Scan(&off, &r); err != nil {
			t.Fatal(err)
		}
		reasons[off] = r
	}
	for i, c := range cases {
		if got := reasons[int64(i)]; got != c.want {
			t.Errorf("%s (offset %d): reason %q, want %q", c.name, i, got, c.want)
		}
	}
	// Stored: seqs 1, 2 (extra fields), 3 (non-UTC offset), 4 and 5
	// (without a quote) and 10.
	if n := e.count(`SELECT count(*) FROM ticks WHERE symbol = 'BADA' AND seq IN (1, 2, 3, 4, 5, 10)`); n != 6 {
		t.Errorf("stored %d of the 6 acceptable ticks", n)
	}
	if n := e.count(`SELECT count(*) FROM ticks WHERE symbol = 'BADA' AND bid IS NULL AND ask IS NULL`); n != 2 {
		t.Errorf("stored %d ticks without a quote, want seqs 4 and 5", n)
	}
	if n := e.count(`SELECT count(*) FROM ticks WHERE symbol = 'BADA' AND seq = 3 AND ts = '2026-11-02T15:00:02Z'`); n != 1 {
		t.Error("the -05:00 tick was not converted to UTC")
	}
	if ps.Duplicates != 1 {
		t.Errorf("duplicates = %d, want 1", ps.Duplicates)
	}
	// The oversized record's dead letter is cut, with its size in a header;
	// the table keeps all of it.
	if n := e.count(`SELECT max(length(raw)) FROM rejected_ticks WHERE reason = 'too_large'`); n < 1<<20 {
		t.Errorf("rejected_ticks kept %d bytes of the 1 MB record", n)
	}
	dl, err := kgo.NewClient(append(e.kcfg.Opts(), kgo.ConsumeTopics(kafka.TopicDLQ),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	var big []byte
	for _, c := range cases {
		if c.name == "1 MB payload" {
			big = c.value
		}
	}
	found := false
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for !found && ctx.Err() == nil {
		dl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == kafka.HeaderTruncated && string(h.Value) == strconv.Itoa(len(big)) && len(r.Value) == 256<<10 {
					found = true
				}
			}
		})
	}
	if !found {
		t.Error("no truncated dead letter for the 1 MB record")
	}
	if len(cases) < 30 {
		t.Fatalf("only %d kinds of input", len(cases))
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
