package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/generate"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/market"
)

// soakGroup is the consumer group of the processor a soak runs: the process
// command's default.
const soakGroup = "stockpipe"

// SoakConfig configures a soak: a long paced run with the processor in a
// process of its own, so that its memory can be watched and it can be
// killed.
type SoakConfig struct {
	Duration time.Duration // how long ticks are produced, default 10 minutes
	Rate     float64       // ticks per second, default 20,000
	Symbols  int           // default 30
	Faults   float64       // probability that a record is a fault, default 0
	// KillEvery, if positive, SIGKILLs the processor this often and starts
	// it again at once.
	KillEvery time.Duration
	// SampleEvery is how often the processor's memory and the lag are
	// read, default 5 s.
	SampleEvery time.Duration
	// Processor returns the command that runs a processor against the
	// given broker and database (the stockpipe binary's process command),
	// in the consumer group "stockpipe".
	Processor func(brokers []string, databaseURL string) *exec.Cmd
	// DataDir holds the embedded broker and PostgreSQL; empty means a
	// temporary directory removed afterwards.
	DataDir string
	Seed    uint64
	Logger  *slog.Logger // default discards
}

// SoakSample is one reading during a soak.
type SoakSample struct {
	At        float64 `json:"at_s"`      // seconds since production started
	RSSMB     float64 `json:"rss_mb"`    // the processor's resident set
	Lag       int64   `json:"lag"`       // records in the topic not yet committed
	Committed int64   `json:"committed"` // records committed so far
	Life      int     `json:"life"`      // which processor process (0 = first)
}

// SoakReport is the outcome of a soak.
type SoakReport struct {
	Date     time.Time `json:"date"`
	Machine  Machine   `json:"machine"`
	Duration float64   `json:"duration_s"`
	Rate     float64   `json:"rate"`
	Symbols  int       `json:"symbols"`
	Faults   float64   `json:"faults"`

	Produced int64 `json:"produced"`
	// Expected* are what the generator says must be stored and rejected.
	ExpectedStored int64 `json:"expected_stored"`
	// ExpectedRejected counts the malformed and invalid records, each
	// rejected once for its own reason.
	ExpectedRejected int64 `json:"expected_rejected"`
	// ExpectedLate counts the late ticks and the resends of late ticks:
	// nothing of a late tick is stored, so its resend is late again.
	ExpectedLate     int64            `json:"expected_late"`
	Late             int64            `json:"late"`
	Stored           int64            `json:"stored"`
	Rejected         int64            `json:"rejected"`
	RejectedByReason map[string]int64 `json:"rejected_by_reason"`
	Kills            int              `json:"kills"`
	// CatchUpSeconds is how long the processor took, after production
	// ended, to commit everything.
	CatchUpSeconds float64 `json:"catch_up_s"`

	MaxLag int64 `json:"max_lag"`
	// Steady is the processor's resident memory after the first minute
	// of each process's life (warm-up excluded).
	SteadyMinMB float64 `json:"steady_rss_min_mb"`
	SteadyMaxMB float64 `json:"steady_rss_max_mb"`
	SteadyFirst float64 `json:"steady_rss_first_mb"`
	SteadyLast  float64 `json:"steady_rss_last_mb"`
	PeakRSSMB   float64 `json:"peak_rss_mb"`
	// RSSDriftPct compares the mean of the last quarter of the steady
	// samples with the mean of the first quarter: growth, not the
	// moment-to-moment swing of garbage collection and checkpoints.
	RSSDriftPct  float64 `json:"rss_drift_pct"`
	RSSSpreadPct float64 `json:"rss_spread_pct"`

	Samples []SoakSample `json:"samples"`
	Passed  bool         `json:"passed"`
	Notes   []string     `json:"notes,omitempty"`
}

func (c *SoakConfig) setDefaults() error {
	if c.Duration == 0 {
		c.Duration = 10 * time.Minute
	}
	if c.Rate == 0 {
		c.Rate = 20_000
	}
	if c.Symbols == 0 {
		c.Symbols = 30
	}
	if c.SampleEvery == 0 {
		c.SampleEvery = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
	switch {
	case c.Duration < time.Second:
		return errors.New("soak duration must be at least 1s")
	case c.Rate <= 0 || math.IsInf(c.Rate, 0) || math.IsNaN(c.Rate):
		return errors.New("a soak needs a rate above 0")
	case c.Symbols < 1 || c.Symbols > 9999:
		return errors.New("symbols must be between 1 and 9999")
	case c.Faults < 0 || c.Faults > 0.5:
		return errors.New("faults must be between 0 and 0.5")
	case c.KillEvery < 0:
		return errors.New("kill interval must not be negative")
	case c.Processor == nil:
		return errors.New("no processor command")
	}
	return nil
}

// Soak runs the pipeline for cfg.Duration at cfg.Rate with the processor in
// its own process, optionally killing it, and checks at the end that every
// tick was stored exactly once.
func Soak(ctx context.Context, cfg SoakConfig) (SoakReport, error) {
	if err := cfg.setDefaults(); err != nil {
		return SoakReport{}, err
	}
	log := cfg.Logger
	rep := SoakReport{Date: time.Now().UTC(), Duration: cfg.Duration.Seconds(), Rate: cfg.Rate, Symbols: cfg.Symbols,
		Faults:  cfg.Faults,
		Machine: Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS, Arch: runtime.GOARCH, Go: runtime.Version(), Database: "embedded", Broker: "embedded"}}
	syms, err := symbols(cfg.Symbols)
	if err != nil {
		return rep, err
	}
	dataDir := cfg.DataDir
	if dataDir == "" {
		var remove func()
		if dataDir, remove, err = tempDataDir("stockpipe-soak-"); err != nil {
			return rep, err
		}
		defer remove()
	}
	dbURL, stopPG, err := startPostgres(ctx, dataDir, log)
	if err != nil {
		return rep, err
	}
	defer stopPG()
	b, err := kafka.StartBroker("127.0.0.1:0", filepath.Join(dataDir, "kafka"))
	if err != nil {
		return rep, err
	}
	defer b.Close()
	kcfg := kafka.Config{Brokers: b.Addrs(), ClientID: "stockpipe-soak"}
	cl, err := kgo.NewClient(kcfg.Opts()...)
	if err != nil {
		return rep, err
	}
	defer cl.Close()
	if err := kafka.EnsureTopics(ctx, cl, log, kafka.Topics(6)); err != nil {
		return rep, err
	}
	pool, err := openDB(ctx, dbURL, log)
	if err != nil {
		return rep, err
	}
	defer pool.Close()
	if err := machineInfo(ctx, pool, &rep.Machine); err != nil {
		return rep, err
	}

	proc := &child{cmd: func() *exec.Cmd { return cfg.Processor(kcfg.Brokers, dbURL) }, log: log}
	if err := proc.start(); err != nil {
		return rep, err
	}
	defer proc.stop()

	sim, err := generate.NewSimulator(generate.SimConfig{Symbols: syms, Rate: cfg.Rate, Seed: cfg.Seed,
		Count: int64(cfg.Rate * cfg.Duration.Seconds()), Start: time.Now().UTC(), Faults: cfg.Faults})
	if err != nil {
		return rep, err
	}
	prod, err := kafka.NewProducer(kcfg, kafka.TopicTicks)
	if err != nil {
		return rep, err
	}
	defer prod.Close()

	start := time.Now()
	genDone := make(chan error, 1)
	var produced int64
	go func() {
		n, err := generate.Run(ctx, sim, generate.Pace{Speed: 1}, func(ctx context.Context, r generate.Record) error {
			return prod.Send(ctx, r.Key, r.Value)
		})
		if err == nil {
			err = prod.Flush(ctx)
		}
		produced = n
		genDone <- err
	}()

	sample := func() error {
		c, err := committedOffsets(ctx, pool, soakGroup, kafka.TopicTicks)
		if err != nil {
			return err
		}
		end, err := endOffsets(ctx, cl)
		if err != nil {
			return err
		}
		s := SoakSample{At: time.Since(start).Seconds(), RSSMB: proc.rssMB(), Lag: max(end-c, 0), Committed: c, Life: proc.lives - 1}
		rep.Samples = append(rep.Samples, s)
		rep.MaxLag = max(rep.MaxLag, s.Lag)
		log.Info("soak", "at", time.Duration(s.At*float64(time.Second)).Round(time.Second), "rss_mb", s.RSSMB, "lag", s.Lag, "committed", s.Committed, "kills", rep.Kills)
		return nil
	}
	tick := time.NewTicker(cfg.SampleEvery)
	defer tick.Stop()
	var kill <-chan time.Time
	if cfg.KillEvery > 0 {
		kt := time.NewTicker(cfg.KillEvery)
		defer kt.Stop()
		kill = kt.C
	}
	for running := true; running; {
		select {
		case <-ctx.Done():
			return rep, ctx.Err()
		case err := <-genDone:
			if err != nil {
				return rep, fmt.Errorf("producing: %w", err)
			}
			running = false
		case <-tick.C:
			if err := sample(); err != nil {
				return rep, err
			}
		case <-kill:
			if err := proc.kill(); err != nil {
				return rep, err
			}
			rep.Kills++
			if err := proc.start(); err != nil {
				return rep, err
			}
		}
	}
	rep.Produced = produced
	st := sim.Stats()
	rep.ExpectedStored = st.Valid - st.Late
	rep.ExpectedRejected = st.Malformed + st.Invalid
	rep.ExpectedLate = st.Late + st.LateDuplicates

	// Catch up: everything produced committed.
	caught := time.Now()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		c, err := committedOffsets(ctx, pool, soakGroup, kafka.TopicTicks)
		if err != nil {
			return rep, err
		}
		if c >= produced {
			break
		}
		if time.Now().After(deadline) {
			return rep, fmt.Errorf("the processor committed %d of %d records within 5 minutes of the end", c, produced)
		}
		select {
		case <-ctx.Done():
			return rep, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	rep.CatchUpSeconds = time.Since(caught).Seconds()
	if err := sample(); err != nil {
		return rep, err
	}
	proc.stop()

	if err := pool.QueryRow(ctx, `SELECT count(*) FROM ticks`).Scan(&rep.Stored); err != nil {
		return rep, err
	}
	rep.RejectedByReason = map[string]int64{}
	rows, err := pool.Query(ctx, `SELECT reason, count(*) FROM rejected_ticks GROUP BY reason`)
	if err != nil {
		return rep, err
	}
	for rows.Next() {
		var r string
		var n int64
		if err := rows.Scan(&r, &n); err != nil {
			return rep, err
		}
		rep.RejectedByReason[r] = n
		if r == string(market.ReasonLate) {
			rep.Late = n
		} else {
			rep.Rejected += n
		}
	}
	if err := rows.Err(); err != nil {
		return rep, err
	}
	rep.evaluate(cfg)
	return rep, nil
}

// evaluate summarises the memory samples and decides pass or fail.
func (r *SoakReport) evaluate(cfg SoakConfig) {
	var steady []float64
	lifeStart := map[int]float64{}
	for _, s := range r.Samples {
		if _, ok := lifeStart[s.Life]; !ok {
			lifeStart[s.Life] = s.At
		}
		r.PeakRSSMB = max(r.PeakRSSMB, s.RSSMB)
		if s.RSSMB > 0 && s.At-lifeStart[s.Life] >= 60 {
			steady = append(steady, s.RSSMB)
		}
	}
	ok := r.Stored == r.ExpectedStored && r.Rejected == r.ExpectedRejected && r.Late == r.ExpectedLate
	if !ok {
		r.Notes = append(r.Notes, fmt.Sprintf("stored %d (want %d), rejected %d (want %d), late %d (want %d)",
			r.Stored, r.ExpectedStored, r.Rejected, r.ExpectedRejected, r.Late, r.ExpectedLate))
	}
	if len(steady) > 0 {
		r.SteadyFirst, r.SteadyLast = steady[0], steady[len(steady)-1]
		r.SteadyMinMB, r.SteadyMaxMB = slices.Min(steady), slices.Max(steady)
		q := max(len(steady)/4, 1)
		mean := func(xs []float64) float64 {
			var t float64
			for _, x := range xs {
				t += x
			}
			return t / float64(len(xs))
		}
		head, tail := mean(steady[:q]), mean(steady[len(steady)-q:])
		r.RSSDriftPct = (tail - head) / head * 100
		med := slices.Sorted(slices.Values(steady))[len(steady)/2]
		r.RSSSpreadPct = (r.SteadyMaxMB - r.SteadyMinMB) / med * 100
		if math.Abs(r.RSSDriftPct) > 10 {
			ok = false
			r.Notes = append(r.Notes, fmt.Sprintf("processor memory moved %.1f%% from the first quarter of the steady samples to the last", r.RSSDriftPct))
		}
	} else {
		r.Notes = append(r.Notes, "no processor lived a minute: no steady memory samples")
	}
	// Lag is bounded if it never exceeded what a minute of ticks plus a
	// restart's worth would be; the table shows the figure.
	if bound := int64(cfg.Rate * 60); r.MaxLag > bound {
		ok = false
		r.Notes = append(r.Notes, fmt.Sprintf("lag reached %d records, more than a minute of ticks (%d)", r.MaxLag, bound))
	}
	r.Passed = ok
}

// WriteTable prints the report for people.
func (r SoakReport) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format+"\n", args...) }
	p("stockpipe soak")
	p("  date\t%s", r.Date.Format(time.RFC3339))
	p("  machine\t%d CPUs, %s/%s, %s; PostgreSQL %s (fsync %s)", r.Machine.CPUs, r.Machine.OS, r.Machine.Arch, r.Machine.Go, r.Machine.PostgreSQL, r.Machine.Fsync)
	p("  workload\t%s at %.0f ticks/s, %d symbols, faults %.3g, processor killed %d times", time.Duration(r.Duration*float64(time.Second)), r.Rate, r.Symbols, r.Faults, r.Kills)
	p("accounting")
	p("  produced\t%d", r.Produced)
	p("  stored\t%d (want %d)", r.Stored, r.ExpectedStored)
	reasons := make([]string, 0, len(r.RejectedByReason))
	for k, v := range r.RejectedByReason {
		reasons = append(reasons, k+" "+strconv.FormatInt(v, 10))
	}
	slices.Sort(reasons)
	p("  rejected, not late\t%d (want %d)", r.Rejected, r.ExpectedRejected)
	p("  rejected as late\t%d (want %d: the late ticks and their resends)", r.Late, r.ExpectedLate)
	p("  rejected by reason\t%s", strings.Join(reasons, ", "))
	p("  catch-up after the end\t%.1f s", r.CatchUpSeconds)
	p("processor")
	p("  max lag\t%d records", r.MaxLag)
	p("  resident memory\tpeak %.0f MiB; steady (after each process's first minute) %.0f–%.0f MiB, first %.0f, last %.0f, drift %+.1f%% (last quarter's mean vs first quarter's)",
		r.PeakRSSMB, r.SteadyMinMB, r.SteadyMaxMB, r.SteadyFirst, r.SteadyLast, r.RSSDriftPct)
	p("result\t%s", map[bool]string{true: "PASS", false: "FAIL"}[r.Passed])
	for _, n := range r.Notes {
		p("  - %s", n)
	}
	return tw.Flush()
}

// child is the processor process, restarted after each kill.
type child struct {
	cmd   func() *exec.Cmd
	log   *slog.Logger
	c     *exec.Cmd
	done  chan struct{}
	lives int
}

func (p *child) start() error {
	c := p.cmd()
	c.Stdout, c.Stderr = os.Stderr, os.Stderr
	if err := c.Start(); err != nil {
		return fmt.Errorf("starting the processor: %w", err)
	}
	p.c, p.done = c, make(chan struct{})
	p.lives++
	go func(c *exec.Cmd, done chan struct{}) {
		_ = c.Wait()
		close(done)
	}(c, p.done)
	return nil
}

func (p *child) kill() error {
	if p.c == nil {
		return nil
	}
	if err := p.c.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("killing the processor: %w", err)
	}
	<-p.done
	p.c = nil
	return nil
}

// stop ends the processor gracefully, killing it if it takes too long.
func (p *child) stop() {
	if p.c == nil {
		return
	}
	_ = p.c.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.c.Process.Kill()
		<-p.done
	}
	p.c = nil
}

// rssMB reads the processor's resident set size; 0 if it is not running.
func (p *child) rssMB() float64 {
	if p.c == nil {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.c.Process.Pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseFloat(f[0], 64)
				return kb / 1024
			}
		}
	}
	return 0
}

func endOffsets(ctx context.Context, cl *kgo.Client) (int64, error) {
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, kafka.TopicTicks)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("reading the end offsets of %s: %w", kafka.TopicTicks, err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n, nil
}
