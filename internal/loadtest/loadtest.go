// Package loadtest measures the whole pipeline on one machine: simulated
// ticks go through the broker and the processor into PostgreSQL and out to a
// live-stream client, and the same rows are then written again by a raw
// binary COPY and by a naive row-at-a-time consumer for comparison.
package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/generate"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/pgembed"
	"github.com/stockpipe/stockpipe/internal/store"
	"github.com/stockpipe/stockpipe/internal/stream"
	"github.com/stockpipe/stockpipe/internal/telemetry"
	"github.com/stockpipe/stockpipe/internal/web"
)

// Config configures a load test. Zero fields take the defaults noted.
type Config struct {
	Count   int64   // ticks to send, default 1,000,000
	Rate    float64 // ticks per second; 0 = as fast as possible
	Symbols int     // default 30
	// DataDir holds the embedded broker and PostgreSQL; empty means a
	// temporary directory removed afterwards.
	DataDir string
	// Kafka, if it has brokers, is used instead of the embedded broker.
	Kafka kafka.Config
	// DatabaseURL, if set, is used instead of the embedded PostgreSQL. Its
	// ticks table must be empty.
	DatabaseURL  string
	BaselineRows int   // rows for the naive baseline, default 5,000
	Partitions   int32 // partitions of the load-test topic, default 6
	Seed         uint64
	Logger       *slog.Logger // default discards
	// BatchSize and BatchWait tune the processor (zero: its defaults,
	// 10,000 records and no extra wait).
	BatchSize int
	BatchWait time.Duration
	// LiveRate is the web server's live rate (web.Config.LiveRate): updates
	// per symbol per second each browser gets; 0 = every one.
	LiveRate int
	// SSEClients, if above 0, connects that many more clients to the
	// overview's stream (OverviewStream) and measures the events each gets
	// and this process's CPU while they are connected.
	SSEClients int
}

// OverviewStream is the live stream the overview page opens: the latest
// price of every symbol, 1m candles for its sparklines, anomalies and
// status.
const OverviewStream = "/api/stream?ticks=all&candles=1m&anomalies=1&status=1"

func (c *Config) setDefaults() error {
	if c.Count == 0 {
		c.Count = 1_000_000
	}
	if c.Symbols == 0 {
		c.Symbols = 30
	}
	if c.BaselineRows == 0 {
		c.BaselineRows = 5_000
	}
	if c.Partitions == 0 {
		c.Partitions = 6
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
	switch {
	case c.Count < 1:
		return errors.New("count must be at least 1")
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return errors.New("rate must be 0 (as fast as possible) or above")
	case c.Symbols < 1 || c.Symbols > 9999:
		return errors.New("symbols must be between 1 and 9999")
	case c.BaselineRows < 1:
		return errors.New("baseline rows must be at least 1")
	case c.Partitions < 1:
		return errors.New("partitions must be at least 1")
	case c.LiveRate < 0:
		return errors.New("live rate must be 0 (every update) or above")
	case c.SSEClients < 0:
		return errors.New("SSE clients must be 0 or above")
	}
	return nil
}

// committedOffsets returns how many records of topic group has committed.
func committedOffsets(ctx context.Context, pool *pgxpool.Pool, group, topic string) (int64, error) {
	var n int64
	err := pool.QueryRow(ctx, `SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets WHERE group_id = $1 AND topic = $2`,
		group, topic).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("reading committed offsets: %w", err)
	}
	return n, nil
}

// symbols returns n symbols: the built-in universe first, then generated
// tickers S0001, S0002, ….
func symbols(n int) ([]generate.Symbol, error) {
	u := generate.DefaultUniverse()
	if n <= len(u) {
		return u[:n], nil
	}
	names := make([]string, 0, n-len(u))
	for i := 1; len(u)+len(names) < n; i++ {
		names = append(names, fmt.Sprintf("S%04d", i))
	}
	extra, err := generate.LookupSymbols(names)
	if err != nil {
		return nil, err
	}
	return append(u, extra...), nil
}

// Run performs one load test.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if err := cfg.setDefaults(); err != nil {
		return Report{}, err
	}
	log := cfg.Logger
	syms, err := symbols(cfg.Symbols)
	if err != nil {
		return Report{}, err
	}
	rep := Report{
		Date: time.Now().UTC(), Count: cfg.Count, Rate: cfg.Rate, Symbols: cfg.Symbols,
		Partitions: cfg.Partitions, BaselineRows: cfg.BaselineRows, LiveRate: cfg.LiveRate,
		Machine: Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS, Arch: runtime.GOARCH, Go: runtime.Version()},
	}

	dataDir := cfg.DataDir
	if dataDir == "" && (cfg.DatabaseURL == "" || len(cfg.Kafka.Brokers) == 0) {
		var remove func()
		if dataDir, remove, err = tempDataDir("stockpipe-loadtest-"); err != nil {
			return rep, err
		}
		defer remove()
	}

	dbURL := cfg.DatabaseURL
	if dbURL == "" {
		var stop func()
		if dbURL, stop, err = startPostgres(ctx, dataDir, log); err != nil {
			return rep, err
		}
		defer stop()
		rep.Machine.Database = "embedded"
	} else {
		rep.Machine.Database = "external"
	}
	kcfg := cfg.Kafka
	if len(kcfg.Brokers) == 0 {
		b, err := kafka.StartBroker("127.0.0.1:0", filepath.Join(dataDir, "kafka"))
		if err != nil {
			return rep, err
		}
		defer b.Close()
		kcfg = kafka.Config{Brokers: b.Addrs()}
		rep.Machine.Broker = "embedded"
	} else {
		rep.Machine.Broker = "external"
	}
	if kcfg.ClientID == "" {
		kcfg.ClientID = "stockpipe-loadtest"
	}

	// A topic and group of its own, so that nothing already in the
	// cluster is counted.
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	topic, group := "ticks.loadtest."+runID, "stockpipe-loadtest-"+runID
	dropTopic, err := createTopic(ctx, kcfg, topic, cfg.Partitions, log)
	if err != nil {
		return rep, err
	}
	defer dropTopic()

	pool, err := openDB(ctx, dbURL, log)
	if err != nil {
		return rep, err
	}
	defer pool.Close()
	if err := machineInfo(ctx, pool, &rep.Machine); err != nil {
		return rep, err
	}
	var hasTicks bool
	if err := pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM ticks)").Scan(&hasTicks); err != nil {
		return rep, err
	}
	if hasTicks {
		return rep, errors.New("the database already holds ticks; the load test needs an empty one")
	}

	if err := runPipeline(ctx, cfg, syms, kcfg, topic, group, pool, &rep); err != nil {
		return rep, err
	}
	if err := measureStorage(ctx, pool, &rep); err != nil {
		return rep, err
	}
	if err := runBaselines(ctx, pool, cfg.BaselineRows, &rep); err != nil {
		return rep, err
	}
	rep.evaluate()
	return rep, nil
}

// measureStorage fills in what the stored ticks take on disk: the sum over
// the day partitions of ticks of their rows, indexes (and TOAST, free
// space and visibility maps), per stored tick.
func measureStorage(ctx context.Context, pool *pgxpool.Pool, rep *Report) error {
	var rows, total, heap int64
	err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM ticks),
		coalesce(sum(pg_total_relation_size(relid)), 0)::bigint, coalesce(sum(pg_table_size(relid)), 0)::bigint
		FROM pg_partition_tree('ticks') WHERE isleaf`).Scan(&rows, &total, &heap)
	if err != nil {
		return fmt.Errorf("measuring the stored ticks: %w", err)
	}
	rep.TicksBytes = total
	if rows > 0 {
		rep.BytesPerTick = float64(total) / float64(rows)
		rep.IndexBytesPerTick = float64(total-heap) / float64(rows)
	}
	return nil
}

// tempDataDir makes a temporary data directory and returns it with the
// function that removes it.
func tempDataDir(prefix string) (string, func(), error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	// Run as root, the server runs as an unprivileged user, which must be
	// able to enter the private temporary directory.
	if err := os.Chmod(dir, 0o711); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}

// startPostgres starts the embedded PostgreSQL under dataDir and returns its
// URL with the function that stops it.
func startPostgres(ctx context.Context, dataDir string, log *slog.Logger) (string, func(), error) {
	pg, err := pgembed.Start(ctx, pgembed.Config{Dir: filepath.Join(dataDir, "postgres"), Logger: log})
	if err != nil {
		return "", nil, err
	}
	return pg.URL(), func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := pg.Stop(sctx); err != nil {
			log.Error("stopping PostgreSQL", "err", err)
		}
	}, nil
}

func openDB(ctx context.Context, url string, log *slog.Logger) (*pgxpool.Pool, error) {
	if err := store.CheckURL(url); err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pool, err := store.Open(octx, url, 24)
	if err != nil {
		return nil, err
	}
	if err := store.Migrate(octx, pool, log); err != nil {
		pool.Close()
		return nil, err
	}
	if err := dag.Migrate(octx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// createTopic makes the stockpipe topics (the processor writes to the
// dead-letter and anomaly ones) and the run's own ticks topic, and returns a
// function that deletes the latter.
func createTopic(ctx context.Context, kcfg kafka.Config, topic string, partitions int32, log *slog.Logger) (func(), error) {
	cl, err := kgo.NewClient(kcfg.Opts()...)
	if err != nil {
		return nil, fmt.Errorf("creating Kafka client: %w", err)
	}
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	specs := append(kafka.Topics(partitions), kafka.TopicSpec{Name: topic, Partitions: partitions})
	if err := kafka.EnsureTopics(tctx, cl, log, specs); err != nil {
		cl.Close()
		return nil, fmt.Errorf("preparing topics on %v: %w", kcfg.Brokers, err)
	}
	return func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := kadm.NewClient(cl).DeleteTopics(dctx, topic); err != nil {
			log.Warn("deleting the load-test topic", "topic", topic, "err", err)
		}
		cl.Close()
	}, nil
}

func machineInfo(ctx context.Context, pool *pgxpool.Pool, m *Machine) error {
	for _, s := range []struct {
		name string
		dst  *string
	}{{"server_version", &m.PostgreSQL}, {"fsync", &m.Fsync}, {"synchronous_commit", &m.SynchronousCommit}} {
		if err := pool.QueryRow(ctx, "SHOW "+s.name).Scan(s.dst); err != nil {
			return fmt.Errorf("SHOW %s: %w", s.name, err)
		}
	}
	return nil
}

// runPipeline sends cfg.Count ticks through broker, processor and live
// stream and fills the pipeline figures of rep.
func runPipeline(ctx context.Context, cfg Config, syms []generate.Symbol, kcfg kafka.Config, topic, group string, pool *pgxpool.Pool, rep *Report) error {
	log := cfg.Logger
	metrics := telemetry.New()
	rules := market.DefaultRules()
	// Unpaced, event time runs ahead of the wall clock.
	rules.MaxFuture = 24 * time.Hour
	var (
		latMu sync.Mutex
		lats  []float64 // tick→commit, ms
	)
	proc, err := stream.New(stream.Config{Kafka: kcfg, Group: group, Topic: topic, Rules: rules,
		Metrics: metrics, Logger: log, BatchSize: cfg.BatchSize, BatchWait: cfg.BatchWait,
		Latencies: func(ns []int64) {
			latMu.Lock()
			for _, d := range ns {
				lats = append(lats, float64(d)/1e6)
			}
			latMu.Unlock()
		}}, store.NewSink(pool))
	if err != nil {
		return err
	}
	srv, err := web.New(web.Config{Pool: pool, Kafka: kcfg, Group: group, Logger: log, LiveRate: cfg.LiveRate})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := srv.HTTPServer()

	pctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	procErr := make(chan error, 1)
	wg.Go(func() { procErr <- proc.Run(pctx) })
	wg.Go(func() { _ = srv.Run(pctx) })
	wg.Go(func() { _ = hs.Serve(ln) })
	sse := &sseClient{url: "http://" + ln.Addr().String() + "/api/stream", connected: make(chan struct{})}
	sctx, stopSSE := context.WithCancel(pctx)
	var sseWG sync.WaitGroup
	sseWG.Go(func() { sse.run(sctx) })
	// The browsers of --sse-clients, each on a connection of its own as
	// browsers are.
	crowd := make([]*sseCounter, cfg.SSEClients)
	crowdTransport := &http.Transport{MaxIdleConnsPerHost: cfg.SSEClients}
	defer crowdTransport.CloseIdleConnections()
	for i := range crowd {
		c := &sseCounter{url: "http://" + ln.Addr().String() + OverviewStream, hc: &http.Client{Transport: crowdTransport},
			connected: make(chan struct{})}
		crowd[i] = c
		sseWG.Go(func() { c.run(sctx) })
	}
	defer func() {
		stopSSE()
		sseWG.Wait()
		stop()
		_ = hs.Close()
		wg.Wait()
	}()

	// Wait for the processor to own its partitions and for the stream
	// client to be connected, so start-up is not measured.
	ready := time.NewTimer(60 * time.Second)
	defer ready.Stop()
	for proc.Assigned() == 0 {
		select {
		case err := <-procErr:
			return fmt.Errorf("processor: %w", err)
		case <-ready.C:
			return errors.New("the processor got no partitions within 60 s")
		case <-time.After(10 * time.Millisecond):
		}
	}
	select {
	case <-sse.connected:
	case <-ready.C:
		return errors.New("the live stream did not connect within 60 s")
	}
	for _, c := range crowd {
		select {
		case <-c.connected:
		case <-ready.C:
			return fmt.Errorf("not all %d SSE clients connected within 60 s", len(crowd))
		}
	}
	// The server LISTENs on its own connection, asynchronously.
	select {
	case <-srv.Listening():
	case <-ready.C:
		return errors.New("the web server did not start listening for updates within 60 s")
	}

	simCfg := generate.SimConfig{Symbols: syms, Count: cfg.Count, Seed: cfg.Seed, Start: time.Now().UTC()}
	speed := 1.0
	if cfg.Rate > 0 {
		simCfg.Rate = cfg.Rate
		rep.Mode = "paced"
	} else {
		simCfg.Rate = max(float64(cfg.Count)/60, 1000)
		speed = 0
		rep.Mode = "as fast as possible"
		rep.Notes = append(rep.Notes, fmt.Sprintf("unpaced: ticks carry simulated times %.0f ticks/s apart, not the wall clock's, so latency percentiles are not meaningful; use --rate", simCfg.Rate))
	}
	sim, err := generate.NewSimulator(simCfg)
	if err != nil {
		return err
	}
	prod, err := kafka.NewProducer(kcfg, topic)
	if err != nil {
		return err
	}
	defer prod.Close()
	prod.Metrics = metrics

	cpu0, pg0 := cpuTimes(), postgresCPU(ctx, pool)
	t0, crowd0 := time.Now(), crowdCounts(crowd)
	var first time.Time
	log.Info("producing", "count", cfg.Count, "mode", rep.Mode)
	n, err := generate.Run(ctx, sim, generate.Pace{Speed: speed}, func(ctx context.Context, r generate.Record) error {
		if first.IsZero() {
			first = time.Now()
		}
		return prod.Send(ctx, r.Key, r.Value)
	})
	if err != nil {
		return fmt.Errorf("producing: %w", err)
	}
	fctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err = prod.Flush(fctx)
	cancel()
	if err != nil {
		return err
	}
	produced := time.Now()
	rep.Produced = n
	rep.ProduceSeconds = produced.Sub(first).Seconds()

	// Wait for the processor's last commit. Its in-memory count moves
	// right after each transaction commits; the database confirms below.
	idle, lastSeen := time.Now(), int64(-1)
	var last time.Time
	for {
		s := proc.Stats()
		if s.Consumed >= n {
			last = time.Now()
			break
		}
		if s.Consumed != lastSeen {
			lastSeen, idle = s.Consumed, time.Now()
		} else if time.Since(idle) > 2*time.Minute {
			return fmt.Errorf("the processor stalled at %d of %d records", s.Consumed, n)
		}
		select {
		case err := <-procErr:
			return fmt.Errorf("processor: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	cpu1, pg1 := cpuTimes(), postgresCPU(ctx, pool)
	t1, crowd1 := time.Now(), crowdCounts(crowd)
	if len(crowd) > 0 {
		rep.SSE = crowdReport(crowd, crowd0, crowd1, t1.Sub(t0).Seconds(), cpu1.cpu-cpu0.cpu)
		rep.SSE.LiveRate = cfg.LiveRate
	}
	committed, err := committedOffsets(ctx, pool, group, topic)
	if err != nil {
		return err
	}
	if committed != n {
		return fmt.Errorf("consumer_offsets covers %d records, %d were produced", committed, n)
	}
	s := proc.Stats()
	rep.Committed, rep.Stored, rep.Duplicates, rep.Rejected, rep.Batches = committed, s.Stored, s.Duplicates, s.Rejected, s.Batches
	rep.ElapsedSeconds = last.Sub(first).Seconds()
	rep.Throughput = float64(n) / rep.ElapsedSeconds
	rep.CPUSeconds = cpu1.cpu - cpu0.cpu
	rep.CPUPerMillion = rep.CPUSeconds / float64(n) * 1e6
	rep.PeakRSSMB = float64(cpu1.maxRSS) / 1024
	if pg0 >= 0 && pg1 >= 0 {
		v := pg1 - pg0
		rep.PostgresCPUSeconds = &v
	}
	latMu.Lock()
	rep.TickToCommit = exactLatency(lats)
	latMu.Unlock()

	// Let the last live events arrive.
	time.Sleep(500 * time.Millisecond)
	stopSSE()
	sseWG.Wait()
	rep.TickToSSE = sse.latency()
	return nil
}

// sseClient reads the live stream like a browser and records, for each tick
// event, how long ago its newest trade happened.
type sseClient struct {
	url       string
	connected chan struct{}
	once      sync.Once

	mu      sync.Mutex
	samples []float64 // ms
	events  int64
	drops   int
}

func (c *sseClient) run(ctx context.Context) {
	for ctx.Err() == nil {
		if err := c.read(ctx); err != nil && ctx.Err() == nil {
			c.mu.Lock()
			c.drops++
			c.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

func (c *sseClient) read(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("live stream: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	event := ""
	var ev struct {
		TS time.Time `json:"ts"`
	}
	for sc.Scan() {
		c.once.Do(func() { close(c.connected) })
		line := sc.Text()
		switch {
		case line == "":
			event = ""
		case strings.HasPrefix(line, "event: "):
			event = line[len("event: "):]
		case event == "tick" && strings.HasPrefix(line, "data: "):
			now := time.Now()
			if json.Unmarshal([]byte(line[len("data: "):]), &ev) != nil || ev.TS.IsZero() {
				continue
			}
			c.mu.Lock()
			c.samples = append(c.samples, float64(now.Sub(ev.TS))/1e6)
			c.events++
			c.mu.Unlock()
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("live stream closed")
}

func (c *sseClient) latency() Latency {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := exactLatency(c.samples)
	l.Reconnects = c.drops
	return l
}

// sseCounter reads the live stream like a browser that shows what it gets,
// and counts events and bytes, as cheaply as it can: it runs in the
// process whose CPU is measured.
type sseCounter struct {
	url       string
	hc        *http.Client
	connected chan struct{}
	once      sync.Once

	events, bytes, drops atomic.Int64
}

func (c *sseCounter) run(ctx context.Context) {
	for ctx.Err() == nil {
		if err := c.read(ctx); err != nil && ctx.Err() == nil {
			c.drops.Add(1)
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

func (c *sseCounter) read(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("live stream: %s", resp.Status)
	}
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		c.bytes.Add(int64(len(line)))
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) {
				return errors.New("live stream closed")
			}
			return err
		}
		c.once.Do(func() { close(c.connected) })
		if bytes.HasPrefix(line, []byte("event: ")) {
			c.events.Add(1)
		}
	}
}

type crowdCount struct{ events, bytes int64 }

func crowdCounts(crowd []*sseCounter) []crowdCount {
	out := make([]crowdCount, len(crowd))
	for i, c := range crowd {
		out[i] = crowdCount{c.events.Load(), c.bytes.Load()}
	}
	return out
}

// crowdReport gives the events per second each client got between two
// counts secs apart, and the process's CPU seconds per second meanwhile.
func crowdReport(crowd []*sseCounter, before, after []crowdCount, secs, cpu float64) *SSELoad {
	l := &SSELoad{Clients: len(crowd), Path: OverviewStream, Seconds: secs}
	if secs <= 0 {
		return l
	}
	var events, bytes float64
	for i := range crowd {
		e := float64(after[i].events-before[i].events) / secs
		events += e
		bytes += float64(after[i].bytes-before[i].bytes) / secs
		l.EventsPerSecondMax = max(l.EventsPerSecondMax, e)
		l.Reconnects += int(crowd[i].drops.Load())
	}
	l.EventsPerSecondMean = events / float64(len(crowd))
	l.BytesPerSecondMean = bytes / float64(len(crowd))
	l.CPUPerSecond = cpu / secs
	return l
}

// exactLatency gives the nearest-rank percentiles of samples (ms).
func exactLatency(samples []float64) Latency {
	s := slices.Clone(samples)
	slices.Sort(s)
	l := Latency{Method: "exact", Samples: int64(len(s))}
	if len(s) == 0 {
		return l
	}
	q := func(p float64) float64 {
		// Nearest rank.
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	l.P50, l.P99, l.P999, l.Max = q(0.50), q(0.99), q(0.999), s[len(s)-1]
	return l
}
