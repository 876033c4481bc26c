package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestOutageProducerBlocksThenDelivers takes the broker away under a
// producer: Send must stop at MaxBuffered unacknowledged records (memory
// bounded, nothing dropped), say that the broker is unreachable, give up
// waiting when its ctx ends, and deliver everything exactly once when the
// broker is back on the same address.
func TestOutageProducerBlocksThenDelivers(t *testing.T) {
	if testing.Short() {
		t.Skip("produces over 50,000 records through a broker restart")
	}
	const (
		topic  = "outage"
		warm   = 100                      // delivered before the outage
		total  = warm + MaxBuffered + 500 // more than the buffer holds
		waitFn = 2 * time.Minute
	)
	dir := t.TempDir()
	b, err := StartBroker("127.0.0.1:0", dir)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			b.Close()
		}
	}()
	addr := b.Addrs()[0]
	cfg := Config{Brokers: []string{addr}, ClientID: "outage-test"}
	createTopic(t, cfg, topic, 3)

	logs := &logCapture{changed: make(chan struct{})}
	// The client's own log says why the broker does not answer.
	cfg.Logger = slog.New(logs)
	p, err := NewProducer(cfg, topic)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Logger = slog.New(logs)
	p.stallWarn, p.stallRemind = 200*time.Millisecond, time.Hour
	blocked := make(chan int, 1)
	p.onWait = func(n int) {
		select {
		case blocked <- n:
		default:
		}
	}

	ctx := context.Background()
	send := func(ctx context.Context, i int) error {
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], uint64(i))
		return p.Send(ctx, []byte{byte('A' + i%26)}, v[:])
	}
	for i := range warm {
		if err := send(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	fctx, cancel := context.WithTimeout(ctx, waitFn)
	defer cancel()
	if err := p.Flush(fctx); err != nil {
		t.Fatalf("flushing before the outage: %v", err)
	}

	b.Close()
	closed = true
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heapBefore := ms.HeapInuse

	var sent atomic.Int64
	sent.Store(warm)
	senderDone := make(chan error, 1)
	go func() {
		for i := warm; i < total; i++ {
			if err := send(ctx, i); err != nil {
				senderDone <- err
				return
			}
			sent.Add(1)
		}
		senderDone <- nil
	}()

	select {
	case n := <-blocked:
		if n != MaxBuffered {
			t.Fatalf("Send started waiting with %d records buffered, want %d", n, MaxBuffered)
		}
	case err := <-senderDone:
		t.Fatalf("all %d records were accepted with the broker down (err %v): nothing holds the source back", total, err)
	case <-time.After(waitFn):
		t.Fatalf("Send never blocked: %d sent, %d buffered", sent.Load(), p.Buffered())
	}
	// The sender is inside Send for the record after the bound.
	if got := sent.Load(); got != warm+MaxBuffered {
		t.Errorf("%d records accepted when Send blocked, want %d", got, warm+MaxBuffered)
	}
	if got := p.Buffered(); got != MaxBuffered {
		t.Errorf("%d records buffered while blocked, want %d", got, MaxBuffered)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	if grew := int64(ms.HeapInuse) - int64(heapBefore); grew > 128<<20 {
		t.Errorf("heap grew %d MiB holding %d records of 8 bytes", grew>>20, MaxBuffered)
	}
	t.Logf("heap grew %d KiB holding %d records", (int64(ms.HeapInuse)-int64(heapBefore))>>10, MaxBuffered)

	// A caller giving up gets its ctx's error rather than waiting on.
	gone, stop := context.WithCancel(ctx)
	stop()
	if err := send(gone, -1); !errors.Is(err, context.Canceled) {
		t.Errorf("Send with a cancelled ctx while full: %v, want context.Canceled", err)
	}

	line := logs.await(t, "the warning that records are held back", waitFn, "Kafka is not acknowledging records")
	for _, want := range []string{"brokers=" + addr, "unacknowledged=50000", "nothing is dropped"} {
		if !strings.Contains(line, want) {
			t.Errorf("warning lacks %q: %s", want, line)
		}
	}
	if line := logs.await(t, "the client's reason", waitFn, "connection refused"); !strings.Contains(line, "component=kafka") {
		t.Errorf("the connection failure is not from the Kafka client's log: %s", line)
	}
	select {
	case err := <-senderDone:
		t.Fatalf("Send returned (%v) while the broker was still down", err)
	default:
	}

	b2, err := StartBroker(addr, dir)
	if err != nil {
		t.Fatalf("restarting the broker on %s: %v", addr, err)
	}
	defer b2.Close()

	select {
	case err := <-senderDone:
		if err != nil {
			t.Fatalf("Send after the broker came back: %v", err)
		}
	case <-time.After(waitFn):
		t.Fatalf("Send still blocked %v after the broker came back: %d sent, %d buffered", waitFn, sent.Load(), p.Buffered())
	}
	fctx2, cancel2 := context.WithTimeout(ctx, waitFn)
	defer cancel2()
	if err := p.Flush(fctx2); err != nil {
		t.Fatalf("flushing after the outage: %v", err)
	}
	if got := p.Acked(); got != total {
		t.Errorf("%d records acknowledged, want %d", got, total)
	}
	logs.await(t, "the line saying production resumed", waitFn, "Kafka is acknowledging records again")

	// Every record is on the topic exactly once.
	counts := readAll(t, cfg, topic, total)
	for i := range total {
		if counts[i] != 1 {
			t.Errorf("record %d is on the topic %d times", i, counts[i])
			if t.Failed() && i > 20 {
				break
			}
		}
	}
}

// TestOutageProduceFailureSurfaces: a record the broker refuses for good
// makes Flush and the next Send fail, with the broker's reason.
func TestOutageProduceFailureSurfaces(t *testing.T) {
	b, err := StartBroker("127.0.0.1:0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p, err := NewProducer(Config{Brokers: b.Addrs()}, "no.such.topic")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.Send(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatalf("first Send: %v", err)
	}
	err = p.Flush(ctx)
	if !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Fatalf("Flush: %v, want the broker's UNKNOWN_TOPIC_OR_PARTITION", err)
	}
	if !strings.Contains(err.Error(), "producing to no.such.topic") {
		t.Errorf("Flush error does not say what failed: %v", err)
	}
	if err := p.Send(ctx, []byte("k"), []byte("v")); !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Errorf("Send after the failure: %v, want the failure", err)
	}
	if p.Acked() != 0 || p.Buffered() != 0 {
		t.Errorf("acked %d, buffered %d; want 0 and 0", p.Acked(), p.Buffered())
	}
}

func createTopic(t *testing.T, cfg Config, topic string, partitions int32) {
	t.Helper()
	cl, err := kgo.NewClient(cfg.Opts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := EnsureTopics(ctx, cl, slog.New(slog.DiscardHandler), []TopicSpec{{Name: topic, Partitions: partitions}}); err != nil {
		t.Fatal(err)
	}
}

// readAll reads topic from the start up to its end offsets and counts each
// record by the index in its value.
func readAll(t *testing.T, cfg Config, topic string, n int) []int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	adm, err := kgo.NewClient(cfg.Opts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	ends, err := kadm.NewClient(adm).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var onTopic int64
	ends.Each(func(o kadm.ListedOffset) { onTopic += o.Offset })
	if onTopic != int64(n) {
		t.Errorf("the topic holds %d records, want %d", onTopic, n)
	}
	cl, err := kgo.NewClient(append(cfg.Opts(), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	counts := make([]int, n)
	var read int64
	for read < onTopic {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d of %d records: %v", read, onTopic, err)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("fetching: %v", err) })
		fs.EachRecord(func(r *kgo.Record) {
			read++
			i := binary.BigEndian.Uint64(r.Value)
			if i >= uint64(n) {
				t.Errorf("unexpected record %d", i)
				return
			}
			counts[i]++
		})
	}
	return counts
}

// logCapture is a slog handler that keeps the lines logged and wakes
// waiters on each.
type logCapture struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{}
}

func (c *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (c *logCapture) WithAttrs(as []slog.Attr) slog.Handler {
	return &logWith{c: c, attrs: as}
}
func (c *logCapture) WithGroup(string) slog.Handler { return c }

// logWith is a logCapture with attributes added by Logger.With.
type logWith struct {
	c     *logCapture
	attrs []slog.Attr
}

func (w *logWith) Enabled(context.Context, slog.Level) bool { return true }
func (w *logWith) WithAttrs(as []slog.Attr) slog.Handler {
	return &logWith{c: w.c, attrs: append(append([]slog.Attr(nil), w.attrs...), as...)}
}
func (w *logWith) WithGroup(string) slog.Handler { return w }
func (w *logWith) Handle(ctx context.Context, r slog.Record) error {
	r.AddAttrs(w.attrs...)
	return w.c.Handle(ctx, r)
}

func (c *logCapture) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.Key + "=" + a.Value.String())
		return true
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines = append(c.lines, b.String())
	close(c.changed)
	c.changed = make(chan struct{})
	return nil
}

// await returns the first line containing substr, waiting for it.
func (c *logCapture) await(t *testing.T, what string, timeout time.Duration, substr string) string {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		changed := c.changed
		for _, l := range c.lines {
			if strings.Contains(l, substr) {
				c.mu.Unlock()
				return l
			}
		}
		lines := strings.Join(c.lines, "\n")
		c.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s; logged:\n%s", timeout, what, lines)
		}
	}
}
