package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
)

// TestRecoveryDoesNotRewind kills a processor whose checkpoints are far
// behind its stored offsets, as a crash between checkpoints leaves it, and
// watches what readers see while a new processor replays from there:
// the candles and anomalies tables must equal the pre-crash tables at every
// sample (no candle goes back to older values or from final to forming),
// the live stream must carry no candle, trade or anomaly, and nothing may
// be published again on the anomalies and dead-letter topics. Afterwards
// the tables equal an undisturbed run's.
func TestRecoveryDoesNotRewind(t *testing.T) {
	if testing.Short() {
		t.Skip("starts several processes")
	}
	count := "60000"
	if chaosSizeFor(t).name == "full" {
		count = "300000"
	}
	addr := freeAddr(t)
	dbURL, refURL := pgtest.New(t), pgtest.New(t)
	pool, refPool := openPool(t, dbURL), openPool(t, refURL)
	broker := launchBroker(t, addr, t.TempDir())
	g := start(t, "generate", "--brokers", addr, "--count", count, "--seed", "19", "--start", "2026-11-02T14:30:00Z",
		"--speed", "0", "--rate", "100", "--faults", "0.01", "--anomaly-rate", "30", "--resume=false")
	g.wait(t)
	total := parseGenerated(t, g.out.String()).records

	// Checkpoints only when a partition is first written: a crash then
	// replays (nearly) everything.
	procArgs := []string{"process", "--brokers", addr, "--database-url", dbURL, "--checkpoint-every", "1h", "--batch-size", "2000"}
	p1 := start(t, procArgs...)
	waitFor(t, "every record committed", 2*time.Minute, func() bool { return committedIn(pool, "stockpipe") >= total })
	var behind int64
	if err := pool.QueryRow(context.Background(), `SELECT sum(next_offset - state_offset) FROM consumer_offsets WHERE group_id = 'stockpipe'`).Scan(&behind); err != nil {
		t.Fatal(err)
	}
	if behind < total/2 {
		t.Fatalf("the checkpoints are only %d records behind the stored offsets; the test needs them far behind", behind)
	}
	p1.kill(t)

	const candlesQ = `SELECT symbol || ' ' || interval || ' ' || bucket || ' ' || open || ' ' || high || ' ' || low || ' ' || close || ' ' ||
		volume || ' ' || coalesce(vwap::text, '') || ' ' || trades || ' ' || coalesce(sma_5::text, '') || ' ' || coalesce(ema_26::text, '') || ' ' ||
		coalesce(rsi_14::text, '') || ' ' || final || ' ' || updated_at FROM candles ORDER BY 1`
	const anomaliesQ = `SELECT symbol || ' ' || ts || ' ' || kind || ' ' || value || ' ' || detected_at FROM anomalies ORDER BY 1`
	before := map[string][]string{"candles": pgtest.Rows(t, pool, candlesQ), "anomalies": pgtest.Rows(t, pool, anomaliesQ)}
	if len(before["candles"]) == 0 || len(before["anomalies"]) == 0 {
		t.Fatalf("fixture: %d candles, %d anomalies", len(before["candles"]), len(before["anomalies"]))
	}
	ends := func() map[string]int64 {
		t.Helper()
		cl, err := kgo.NewClient(kafka.Config{Brokers: []string{addr}}.Opts()...)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		lo, err := kadm.NewClient(cl).ListEndOffsets(ctx, kafka.TopicAnomalies, kafka.TopicDLQ)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]int64{}
		lo.Each(func(o kadm.ListedOffset) { m[o.Topic] += o.Offset })
		return m
	}
	endsBefore := ends()

	// A reader of the live stream, through serve, for the whole recovery.
	web := freeAddr(t)
	serve := start(t, "serve", "--database-url", dbURL, "--http", web)
	events := streamEvents(t, web)

	began := time.Now()
	p2 := start(t, procArgs...)
	replayRE := regexp.MustCompile(`replayed (\d+) records of partition (\d+) from the checkpoint, ([0-9.]+[a-zµ]+)`)
	samples := 0
	done := false
	for !done {
		for what, q := range map[string]string{"candles": candlesQ, "anomalies": anomaliesQ} {
			if got := pgtest.Rows(t, pool, q); !slices.Equal(got, before[what]) {
				only := difference(got, before[what])
				t.Fatalf("sample %d, %v into the recovery: %s differ from the table before the crash (%d rows now, %d before; e.g. %v)",
					samples, time.Since(began).Round(time.Millisecond), what, len(got), len(before[what]), only[:min(2, len(only))])
			}
		}
		samples++
		done = len(replayRE.FindAllString(p2.out.String(), -1)) == 6
		if time.Since(began) > 2*time.Minute {
			t.Fatalf("the replay did not finish in 2 minutes:\n%s", p2.out.tail(3000))
		}
		time.Sleep(100 * time.Millisecond) // the sampling interval, not a wait for a condition
	}
	var longest, longestTook string
	var longestN int64
	for _, m := range replayRE.FindAllStringSubmatch(p2.out.String(), -1) {
		if n, _ := strconv.ParseInt(m[1], 10, 64); n > longestN {
			longestN, longest, longestTook = n, m[2], m[3]
		}
	}
	summary := fmt.Sprintf("recovery: %d samples of the tables over %v, none differed; longest replay %d records (partition %s) in %s",
		samples, time.Since(began).Round(time.Millisecond), longestN, longest, longestTook)
	t.Log(summary)
	fmt.Println(summary)
	if n := events.count("candle", "tick", "anomaly"); n != 0 {
		t.Errorf("the live stream carried %d candle, trade or anomaly events during the replay", n)
	}
	if got := ends(); got[kafka.TopicAnomalies] != endsBefore[kafka.TopicAnomalies] || got[kafka.TopicDLQ] != endsBefore[kafka.TopicDLQ] {
		t.Errorf("topics' end offsets moved during the replay: %v, before %v", got, endsBefore)
	}

	// The undisturbed run of the same topic.
	ref := start(t, "process", "--brokers", addr, "--database-url", refURL, "--group", "ref")
	waitFor(t, "the reference run", 2*time.Minute, func() bool { return committedIn(refPool, "ref") >= total })
	ref.signal(t, syscall.SIGTERM)
	ref.wait(t)
	compareRuns(t, pool, refPool, "recovered", "undisturbed")

	for _, p := range []*proc{p2, serve, broker} {
		p.signal(t, syscall.SIGTERM)
		p.wait(t)
	}
}

// sseLog counts the events a live-stream client received, by name.
type sseLog struct {
	mu     sync.Mutex
	counts map[string]int
}

func (l *sseLog) count(names ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, name := range names {
		n += l.counts[name]
	}
	return n
}

// streamEvents connects to web's /api/stream and counts what arrives
// until the test ends; it returns once the stream is open.
func streamEvents(t *testing.T, web string) *sseLog {
	t.Helper()
	l := &sseLog{counts: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var resp *http.Response
	waitFor(t, "the live stream to open", time.Minute, func() bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+web+"/api/stream", nil)
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		if r.StatusCode != http.StatusOK {
			r.Body.Close()
			return false
		}
		resp = r
		return true
	})
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 1<<16), 1<<22)
		for sc.Scan() {
			if name, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				l.mu.Lock()
				l.counts[name]++
				l.mu.Unlock()
			}
		}
	}()
	return l
}
