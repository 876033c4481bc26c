package web

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/stockpipe/stockpipe/internal/feed"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/store"
)

// The monitor samples the pipeline every pipelineEvery and keeps
// pipelineHistory of samples (10 minutes).
const (
	pipelineEvery   = 2 * time.Second
	pipelineHistory = 300
)

// Pipeline is what /api/pipeline answers and the pipeline page shows.
type Pipeline struct {
	GeneratedAt      time.Time     `json:"generated_at"`
	KafkaError       *string       `json:"kafka_error"`
	Brokers          []Broker      `json:"brokers"`
	Topics           []Topic       `json:"topics"`
	Groups           []Group       `json:"groups"`
	LagHistory       []LagPoint    `json:"lag_history"`
	DeadLetters      DeadLetters   `json:"dead_letters"`
	ProcessorHistory []ProcPoint   `json:"processor_history"`
	Tables           []store.Table `json:"tables"`
	// FailedRuns24h counts DAG runs that failed in the last 24 hours;
	// null when the database did not answer.
	FailedRuns24h *int64 `json:"dag_runs_failed_24h"`
	// DataDir is absent unless the server was given its data directory.
	DataDir       *DataDir `json:"data_dir,omitempty"`
	DatabaseError *string  `json:"database_error,omitempty"`
	// Feeds are the live market-data connectors of this process; absent
	// when ticks come from elsewhere (the simulator, another process).
	Feeds []Feed `json:"feeds,omitempty"`
}

// Feed is a live market-data connector's state.
type Feed struct {
	feed.Snapshot
	// MessagesPerS is the rate since the previous snapshot.
	MessagesPerS float64 `json:"messages_per_s"`
	// LastMessageAgeS is how long ago the last message arrived, in
	// seconds; null before the first.
	LastMessageAgeS *float64 `json:"last_message_age_s"`
}

// Broker is one Kafka broker.
type Broker struct {
	ID   int32  `json:"id"`
	Host string `json:"host"`
	Port int32  `json:"port"`
}

// Topic is a topic with its partitions' offsets and rates.
type Topic struct {
	Name       string      `json:"name"`
	Rate       float64     `json:"messages_per_s"`
	Partitions []Partition `json:"partitions"`
}

// Partition is one partition of a topic.
type Partition struct {
	Partition int32   `json:"partition"`
	Leader    int32   `json:"leader"`
	Start     int64   `json:"start"`
	End       int64   `json:"end"`
	Rate      float64 `json:"messages_per_s"`
}

// Group is a consumer group with its members and lag.
type Group struct {
	Group      string        `json:"group"`
	State      string        `json:"state"`
	Protocol   string        `json:"protocol"`
	Members    []Member      `json:"members"`
	LagTotal   *int64        `json:"lag_total"`
	Partitions []GroupOffset `json:"partitions"`
}

// Member is one member of a group.
type Member struct {
	MemberID   string  `json:"member_id"`
	ClientID   string  `json:"client_id"`
	Host       string  `json:"host"`
	Partitions []int32 `json:"partitions"`
}

// GroupOffset is a group's position in one partition.
type GroupOffset struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Committed int64  `json:"committed"`
	End       int64  `json:"end"`
	Lag       int64  `json:"lag"`
}

// LagPoint is a group's total lag at a moment.
type LagPoint struct {
	T     int64  `json:"t"`
	Group string `json:"group"`
	Lag   int64  `json:"lag"`
}

// DeadLetters summarises the rejected records.
type DeadLetters struct {
	Total    int64               `json:"total"`
	PerS     float64             `json:"per_s"`
	ByReason []store.ReasonCount `json:"by_reason"`
	Latest   []store.Rejection   `json:"latest"`
}

// ProcPoint is the processors' throughput and latency over one sample.
type ProcPoint struct {
	T   int64   `json:"t"`
	In  float64 `json:"ticks_in_per_s"`
	Out float64 `json:"ticks_out_per_s"`
	// The rest are null when no batch was committed in the sample.
	BatchAvg  *float64 `json:"batch_size_avg"`
	CommitP50 *float64 `json:"commit_ms_p50"`
	CommitP99 *float64 `json:"commit_ms_p99"`
	E2EP50    *float64 `json:"e2e_ms_p50"`
	E2EP99    *float64 `json:"e2e_ms_p99"`
}

// monitor samples Kafka and PostgreSQL and aggregates the processors'
// batch announcements.
type monitor struct {
	mu sync.Mutex // guards everything below
	// batches announced since the last sample
	records, ticks, batches int64
	commitMs, e2e50, e2e99  []float64

	procHist []ProcPoint
	lagHist  []LagPoint
	lastEnds map[string]map[int32]int64
	lastDLQ  int64
	lastAt   time.Time
	snap     *Pipeline

	feedMu   sync.Mutex // guards lastFeed; sample holds mu only part of the time
	lastFeed map[string]feedMark
}

// feedMark is a connector's message count at a sample, for its rate.
type feedMark struct {
	messages int64
	at       time.Time
}

// feeds turns the connectors' snapshots into the panel's rows, with the
// rate since the previous sample.
func (m *monitor) feeds(snaps []feed.Snapshot, now time.Time) []Feed {
	m.feedMu.Lock()
	defer m.feedMu.Unlock()
	if m.lastFeed == nil {
		m.lastFeed = make(map[string]feedMark)
	}
	out := make([]Feed, 0, len(snaps))
	for _, sn := range snaps {
		f := Feed{Snapshot: sn}
		if prev, ok := m.lastFeed[sn.Source]; ok && now.After(prev.at) {
			f.MessagesPerS = float64(sn.Messages-prev.messages) / now.Sub(prev.at).Seconds()
		}
		m.lastFeed[sn.Source] = feedMark{sn.Messages, now}
		if !sn.LastMessage.IsZero() {
			age := max(now.Sub(sn.LastMessage).Seconds(), 0)
			f.LastMessageAgeS = &age
		}
		out = append(out, f)
	}
	return out
}

func (m *monitor) batch(data []byte) {
	var b store.BatchMeta
	if json.Unmarshal(data, &b) != nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.records += int64(b.Records)
	m.ticks += int64(b.Ticks)
	m.batches++
	if b.PrevCommitMs > 0 {
		m.commitMs = append(m.commitMs, b.PrevCommitMs)
	}
	if b.PrevE2EP99Ms > 0 {
		m.e2e50 = append(m.e2e50, b.PrevE2EP50Ms)
		m.e2e99 = append(m.e2e99, b.PrevE2EP99Ms)
	}
}

func pct(xs []float64, p float64) *float64 {
	if len(xs) == 0 {
		return nil
	}
	slices.Sort(xs)
	v := xs[min(len(xs)-1, int(p*float64(len(xs))))]
	return &v
}

func appendCapped[T any](s []T, v T) []T {
	s = append(s, v)
	if len(s) > pipelineHistory {
		s = s[len(s)-pipelineHistory:]
	}
	return s
}

// sample builds a fresh snapshot.
func (s *Server) sample(ctx context.Context, adm *kadm.Client) *Pipeline {
	s.sampling.Lock()
	defer s.sampling.Unlock()
	m := s.mon
	now := time.Now()
	p := &Pipeline{GeneratedAt: now.UTC(), Brokers: []Broker{}, Topics: []Topic{}, Groups: []Group{}}
	m.mu.Lock()
	dt := now.Sub(m.lastAt).Seconds()
	first := m.lastAt.IsZero()
	if first || dt <= 0 {
		dt = pipelineEvery.Seconds()
	}
	if !first {
		pt := ProcPoint{T: now.Unix(), In: float64(m.records) / dt, Out: float64(m.ticks) / dt,
			CommitP50: pct(m.commitMs, 0.5), CommitP99: pct(m.commitMs, 0.99), E2EP50: pct(m.e2e50, 0.5), E2EP99: pct(m.e2e99, 0.99)}
		if m.batches > 0 {
			avg := float64(m.records) / float64(m.batches)
			pt.BatchAvg = &avg
		}
		m.procHist = appendCapped(m.procHist, pt)
	}
	m.records, m.ticks, m.batches = 0, 0, 0
	m.commitMs, m.e2e50, m.e2e99 = m.commitMs[:0], m.e2e50[:0], m.e2e99[:0]
	lastEnds := m.lastEnds
	m.mu.Unlock()

	ends := map[string]map[int32]int64{}
	if adm == nil {
		msg := "no Kafka brokers configured for this server (pass --brokers)"
		p.KafkaError = &msg
	} else if err := s.sampleKafka(ctx, adm, p, lastEnds, ends, dt); err != nil {
		msg := err.Error()
		p.KafkaError = &msg
	}

	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var dbErr error
	if p.DeadLetters.ByReason, dbErr = s.read.RejectedByReason(rctx); dbErr == nil {
		for _, r := range p.DeadLetters.ByReason {
			p.DeadLetters.Total += r.Count
		}
		p.DeadLetters.Latest, dbErr = s.read.LatestRejected(rctx, 20)
	}
	if dbErr == nil {
		p.Tables, dbErr = s.read.Tables(rctx)
	}
	if dbErr == nil {
		var n int64
		if n, dbErr = s.read.FailedRuns(rctx, now.Add(-24*time.Hour)); dbErr == nil {
			p.FailedRuns24h = &n
		}
	}
	if s.disk != nil {
		p.DataDir = s.disk.measure(now)
	}
	if s.cfg.Feeds != nil {
		p.Feeds = m.feeds(s.cfg.Feeds(), now)
	}
	if dbErr != nil {
		msg := dbErr.Error()
		p.DatabaseError = &msg
	}

	m.mu.Lock()
	if !first && dbErr == nil {
		p.DeadLetters.PerS = float64(p.DeadLetters.Total-m.lastDLQ) / dt
	}
	if dbErr == nil {
		m.lastDLQ = p.DeadLetters.Total
	}
	if len(ends) > 0 {
		m.lastEnds = ends
	}
	for _, g := range p.Groups {
		if g.LagTotal != nil {
			m.lagHist = appendCapped(m.lagHist, LagPoint{T: now.Unix(), Group: g.Group, Lag: *g.LagTotal})
		}
	}
	m.lastAt = now
	p.LagHistory = slices.Clone(m.lagHist)
	p.ProcessorHistory = slices.Clone(m.procHist)
	m.snap = p
	m.mu.Unlock()
	if p.DeadLetters.ByReason == nil {
		p.DeadLetters.ByReason = []store.ReasonCount{}
	}
	if p.DeadLetters.Latest == nil {
		p.DeadLetters.Latest = []store.Rejection{}
	}
	return p
}

func (s *Server) sampleKafka(ctx context.Context, adm *kadm.Client, p *Pipeline, lastEnds, ends map[string]map[int32]int64, dt float64) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	topics := []string{kafka.TopicTicks, kafka.TopicDLQ, kafka.TopicAnomalies}
	md, err := adm.Metadata(ctx, topics...)
	if err != nil {
		return err
	}
	for _, b := range md.Brokers {
		p.Brokers = append(p.Brokers, Broker{ID: b.NodeID, Host: b.Host, Port: b.Port})
	}
	startOffs, err := adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return err
	}
	endOffs, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return err
	}
	for _, name := range topics {
		td, ok := md.Topics[name]
		if !ok || td.Err != nil {
			continue
		}
		t := Topic{Name: name}
		ends[name] = map[int32]int64{}
		for _, pd := range td.Partitions.Sorted() {
			pp := Partition{Partition: pd.Partition, Leader: pd.Leader}
			if o, ok := startOffs.Lookup(name, pd.Partition); ok && o.Err == nil {
				pp.Start = o.Offset
			}
			if o, ok := endOffs.Lookup(name, pd.Partition); ok && o.Err == nil {
				pp.End = o.Offset
				ends[name][pd.Partition] = o.Offset
				if prev, ok := lastEnds[name][pd.Partition]; ok && pp.End >= prev {
					pp.Rate = float64(pp.End-prev) / dt
				}
			}
			t.Rate += pp.Rate
			t.Partitions = append(t.Partitions, pp)
		}
		p.Topics = append(p.Topics, t)
	}
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return err
	}
	lags, err := adm.Lag(ctx, listed.Groups()...)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(lags))
	for name := range lags {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		l := lags[name]
		g := Group{Group: name, State: l.State, Protocol: l.Protocol, Members: []Member{}, Partitions: []GroupOffset{}}
		for _, mem := range l.Members {
			mm := Member{MemberID: mem.MemberID, ClientID: mem.ClientID, Host: mem.ClientHost, Partitions: []int32{}}
			if a, ok := mem.Assigned.AsConsumer(); ok {
				for _, t := range a.Topics {
					mm.Partitions = append(mm.Partitions, t.Partitions...)
				}
			}
			slices.Sort(mm.Partitions)
			g.Members = append(g.Members, mm)
		}
		if l.Error() == nil {
			total := l.Lag.Total()
			g.LagTotal = &total
			s.cfg.Metrics.SetLag(name, total)
			for _, ml := range l.Lag.Sorted() {
				if ml.Err != nil {
					continue
				}
				g.Partitions = append(g.Partitions, GroupOffset{Topic: ml.Topic, Partition: ml.Partition,
					Committed: ml.Commit.At, End: ml.End.Offset, Lag: ml.Lag})
			}
		}
		p.Groups = append(p.Groups, g)
	}
	return nil
}

// pipelineLoop samples every pipelineEvery and pushes the newest sample to
// browsers as a "pipeline" event whose histories hold only the newest point.
func (s *Server) pipelineLoop(ctx context.Context, adm *kadm.Client) {
	t := time.NewTicker(pipelineEvery)
	defer t.Stop()
	for {
		p := s.sample(ctx, adm)
		if g := groupLagFrom(p, s.cfg.Group); g >= 0 {
			s.hub.lag.Store(g)
		}
		live := *p
		live.LagHistory = lastOf(p.LagHistory, len(p.Groups))
		live.ProcessorHistory = lastOf(p.ProcessorHistory, 1)
		if data, err := json.Marshal(live); err == nil {
			s.hub.publish(&message{event: "pipeline", frame: frame("pipeline", data)})
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func lastOf[T any](s []T, n int) []T {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

func groupLagFrom(p *Pipeline, group string) int64 {
	for _, g := range p.Groups {
		if g.Group == group && g.LagTotal != nil {
			return *g.LagTotal
		}
	}
	return -1
}

func (s *Server) apiPipeline(w http.ResponseWriter, r *http.Request) {
	s.mon.mu.Lock()
	p := s.mon.snap
	s.mon.mu.Unlock()
	if p == nil || r.URL.Query().Get("fresh") != "" {
		p = s.sample(r.Context(), s.adm)
	}
	writeJSON(w, http.StatusOK, p)
}
