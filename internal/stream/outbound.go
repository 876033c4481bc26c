package stream

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/anomaly"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/market"
)

// outbound holds the records a batch publishes on Kafka before its
// transaction commits: the dead letters of the records it rejects (on
// DLQTopic) and the anomalies it finds (on AnomalyTopic). Both are
// published at least once, before the rows that record them are stored
// exactly once; what a replay from a checkpoint produces is not published
// again.
type outbound struct {
	recs []*kgo.Record
}

func (o *outbound) reset() {
	clear(o.recs) // let the published records go
	o.recs = o.recs[:0]
}

// publish sends the records and waits for the broker to take them,
// retrying while it is away.
func (o *outbound) publish(ctx context.Context, cl *kgo.Client, log *slog.Logger) error {
	if len(o.recs) == 0 {
		return nil
	}
	return withRetry(ctx, log, "publishing dead letters and anomalies", func() error {
		return cl.ProduceSync(ctx, o.recs...).FirstErr()
	})
}

// maxDeadLetter bounds a dead letter's value. A record can be as large as
// the ticks topic allows, but one that will not fit on the dead-letter topic
// would block the partition forever; past this size the dead letter carries
// the first bytes and a "truncated" header with the original size, while
// rejected_ticks keeps the whole record.
const maxDeadLetter = 256 << 10

// deadLetter adds the dead letter of r, rejected for rj, to be published
// on topic.
func (o *outbound) deadLetter(topic string, r *kgo.Record, rj *market.Rejection) {
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
	o.recs = append(o.recs, &kgo.Record{Topic: topic, Key: key, Value: value, Headers: headers})
}

// anomalyJSON is an anomaly as published on the anomalies topic. It goes
// through encoding/json because the topic's readers are other programs:
// the detail is a sentence for people and may hold anything, and Go's
// quoting is not JSON's.
type anomalyJSON struct {
	Symbol   string           `json:"symbol"`
	TS       string           `json:"ts"` // RFC 3339 in UTC, to the microsecond, as stored
	Kind     anomaly.Kind     `json:"kind"`
	Severity anomaly.Severity `json:"severity"`
	// Value and Threshold are null if not finite, which JSON has no
	// number for; the detectors promise finite values, but one broken
	// promise must not make the record unreadable.
	Value     *float64 `json:"value"`
	Threshold *float64 `json:"threshold"`
	Detail    string   `json:"detail"`
}

// anomaly adds the record announcing a to topic, keyed by symbol like the
// ticks.
func (o *outbound) anomaly(topic string, a *anomaly.Anomaly) error {
	v, err := json.Marshal(anomalyJSON{
		Symbol:    a.Symbol,
		TS:        string(market.AppendTime(nil, a.TS)),
		Kind:      a.Kind,
		Severity:  a.Severity,
		Value:     finite(a.Value),
		Threshold: finite(a.Threshold),
		Detail:    a.Detail,
	})
	if err != nil {
		return fmt.Errorf("encoding the anomaly record of %s %s: %w", a.Symbol, a.Kind, err)
	}
	o.recs = append(o.recs, &kgo.Record{Topic: topic, Key: []byte(a.Symbol), Value: v})
	return nil
}

func finite(f float64) *float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return &f
}
