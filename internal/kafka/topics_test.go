package kafka

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestTopicRetention checks that a topic gets the retention it is given,
// when created and when it exists already, and that the embedded broker
// then deletes what is older, which is what bounds a data directory.
func TestTopicRetention(t *testing.T) {
	b, err := StartBroker("127.0.0.1:0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cl, err := kgo.NewClient(Config{Brokers: b.Addrs()}.Opts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	retentionOf := func() string {
		t.Helper()
		rcs, err := adm.DescribeTopicConfigs(ctx, "kept")
		if err != nil {
			t.Fatal(err)
		}
		rc, err := rcs.On("kept", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range rc.Configs {
			if c.Key == "retention.ms" && c.Value != nil {
				return *c.Value
			}
		}
		return ""
	}
	if err := EnsureTopics(ctx, cl, log, []TopicSpec{{Name: "kept", Partitions: 1, Retention: time.Hour}}); err != nil {
		t.Fatal(err)
	}
	if got := retentionOf(); got != "3600000" {
		t.Fatalf("retention.ms of a new topic = %q, want 3600000", got)
	}
	if err := EnsureTopics(ctx, cl, log, []TopicSpec{{Name: "kept", Partitions: 1, Retention: 6 * time.Hour}}); err != nil {
		t.Fatal(err)
	}
	if got := retentionOf(); got != "21600000" {
		t.Fatalf("retention.ms of an existing topic = %q, want 21600000", got)
	}
	// Records older than the retention go when the broker applies it.
	old := time.Now().Add(-7 * time.Hour)
	for i := range 10 {
		ts := old
		if i >= 6 {
			ts = time.Now()
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "kept", Value: []byte{byte(i)}, Timestamp: ts}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	b.c.ApplyRetention()
	starts, err := adm.ListStartOffsets(ctx, "kept")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := starts.Lookup("kept", 0); !ok || o.Offset != 6 {
		t.Fatalf("start offset after retention = %+v, want 6 (the six old records deleted)", o)
	}
}
