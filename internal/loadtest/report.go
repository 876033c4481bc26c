package loadtest

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Machine describes where the test ran.
type Machine struct {
	CPUs              int    `json:"cpus"`
	OS                string `json:"os"`
	Arch              string `json:"arch"`
	Go                string `json:"go"`
	PostgreSQL        string `json:"postgresql"`
	Fsync             string `json:"fsync"`
	SynchronousCommit string `json:"synchronous_commit"`
	Database          string `json:"database"` // embedded or external
	Broker            string `json:"broker"`   // embedded or external
}

// Latency is a latency distribution in milliseconds.
type Latency struct {
	Method     string  `json:"method"` // "exact": every sample kept
	Samples    int64   `json:"samples"`
	P50        float64 `json:"p50_ms"`
	P99        float64 `json:"p99_ms"`
	P999       float64 `json:"p999_ms"`
	Max        float64 `json:"max_ms,omitempty"`     // exact only
	Reconnects int     `json:"reconnects,omitempty"` // live stream only
}

// SSELoad is what many browsers on the overview's stream cost: the events
// each gets, and this process's CPU while they are connected, over the
// span from the first tick produced to the last commit.
type SSELoad struct {
	Clients  int     `json:"clients"`
	Path     string  `json:"path"`      // the stream they read
	LiveRate int     `json:"live_rate"` // the server's; 0 = every update
	Seconds  float64 `json:"seconds"`   // the span measured
	// Events and bytes per second per client: the mean over the clients,
	// and the most any one got.
	EventsPerSecondMean float64 `json:"events_per_s_mean"`
	EventsPerSecondMax  float64 `json:"events_per_s_max"`
	BytesPerSecondMean  float64 `json:"bytes_per_s_mean"`
	// CPUPerSecond is this process's CPU seconds per second over the span:
	// the web server's, with the generator's, broker's, processor's and the
	// clients' own, which all run in it.
	CPUPerSecond float64 `json:"process_cpu_s_per_s"`
	// Reconnects counts streams that ended under a client (the server
	// drops one that falls too far behind) and were opened again.
	Reconnects int `json:"reconnects"`
}

// Target is one goal and whether the run met it.
type Target struct {
	Name     string `json:"name"`
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	Status   string `json:"status"` // pass, fail or n/a
	Note     string `json:"note,omitempty"`
}

// Report is the outcome of a load test.
type Report struct {
	Date         time.Time `json:"date"`
	Machine      Machine   `json:"machine"`
	Mode         string    `json:"mode"` // paced or as fast as possible
	Count        int64     `json:"count"`
	Rate         float64   `json:"rate"` // requested ticks/s, 0 = unpaced
	Symbols      int       `json:"symbols"`
	Partitions   int32     `json:"partitions"`
	BaselineRows int       `json:"baseline_rows"`

	Produced       int64   `json:"produced"`
	ProduceSeconds float64 `json:"produce_seconds"`
	Committed      int64   `json:"committed"` // records covered by consumer_offsets
	Stored         int64   `json:"stored"`
	Duplicates     int64   `json:"duplicates"`
	Rejected       int64   `json:"rejected"`
	Batches        int64   `json:"batches"`
	// ElapsedSeconds runs from the first record produced to the last commit.
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	Throughput     float64 `json:"throughput_per_s"`

	TickToCommit Latency `json:"tick_to_commit"`
	TickToSSE    Latency `json:"tick_to_sse"`

	// TicksBytes is what the stored ticks take in PostgreSQL, rows and
	// indexes (every partition of ticks, pg_total_relation_size), and
	// BytesPerTick that per stored tick, IndexBytesPerTick the indexes'
	// share of it.
	TicksBytes        int64   `json:"ticks_bytes"`
	BytesPerTick      float64 `json:"bytes_per_tick"`
	IndexBytesPerTick float64 `json:"index_bytes_per_tick"`
	// LiveRate is the web server's: updates per symbol per second a
	// browser gets of prices and forming candles; 0 = every one.
	LiveRate int `json:"live_rate"`
	// SSE is what --sse-clients measured; absent without them.
	SSE *SSELoad `json:"sse_clients,omitempty"`

	// CPU and memory of this process, which runs the generator, broker,
	// processor and web server together.
	CPUSeconds    float64 `json:"cpu_seconds"`
	CPUPerMillion float64 `json:"cpu_seconds_per_million"`
	PeakRSSMB     float64 `json:"peak_rss_mib"`
	// PostgresCPUSeconds is the server's CPU time over the same span, when
	// it runs on this machine.
	PostgresCPUSeconds *float64 `json:"postgres_cpu_seconds,omitempty"`

	CopyRows     int64   `json:"copy_rows"`
	CopySeconds  float64 `json:"copy_seconds"`
	CopyRate     float64 `json:"copy_rows_per_s"`
	NaiveRows    int64   `json:"naive_rows"`
	NaiveSeconds float64 `json:"naive_seconds"`
	NaiveRate    float64 `json:"naive_rows_per_s"`
	VsCopy       float64 `json:"pipeline_vs_copy"`
	VsNaive      float64 `json:"pipeline_vs_naive"`

	// Scaling compares this run with one of more symbols (loadtest
	// --compare-symbols); absent otherwise.
	Scaling *Scaling `json:"symbol_scaling,omitempty"`

	Targets []Target `json:"targets"`
	Notes   []string `json:"notes,omitempty"`
}

// Scaling is what holding more symbols costs: the same workload run again
// with Symbols symbols, in the same conditions.
type Scaling struct {
	Symbols       int     `json:"symbols"`
	Throughput    float64 `json:"throughput_per_s"`
	CPUPerMillion float64 `json:"cpu_seconds_per_million"`
	PeakRSSMB     float64 `json:"peak_rss_mib"`
	VsCopy        float64 `json:"pipeline_vs_copy"`
	// Ratio is Throughput over the first run's throughput.
	Ratio float64 `json:"throughput_ratio"`
}

// Scalings' goal: holding many more symbols keeps most of the throughput.
const scalingGoal = 0.8

// CompareSymbols records other, a run of the same workload with more
// symbols, and its target.
func (r *Report) CompareSymbols(other *Report) {
	sc := &Scaling{Symbols: other.Symbols, Throughput: other.Throughput, CPUPerMillion: other.CPUPerMillion,
		PeakRSSMB: other.PeakRSSMB, VsCopy: other.VsCopy}
	if r.Throughput > 0 {
		sc.Ratio = other.Throughput / r.Throughput
	}
	r.Scaling = sc
	t := Target{Name: fmt.Sprintf("throughput at %d vs %d symbols", other.Symbols, r.Symbols),
		Goal: fmt.Sprintf("≥ %.1f×", scalingGoal), Measured: fmt.Sprintf("%.2f×", sc.Ratio), Status: status(sc.Ratio >= scalingGoal)}
	if r.Rate > 0 {
		t.Status, t.Note = "n/a", "needs an unpaced run (--rate 0)"
	}
	r.Targets = append(r.Targets, t)
}

func status(ok bool) string {
	if ok {
		return "pass"
	}
	return "fail"
}

// evaluate fills the ratios and the targets.
func (r *Report) evaluate() {
	if r.CopyRate > 0 {
		r.VsCopy = r.Throughput / r.CopyRate
	}
	if r.NaiveRate > 0 {
		r.VsNaive = r.Throughput / r.NaiveRate
	}
	r.Targets = []Target{
		{Name: "throughput vs raw COPY", Goal: "≥ 0.9×", Measured: fmt.Sprintf("%.2f×", r.VsCopy), Status: status(r.VsCopy >= 0.9)},
		{Name: "throughput vs naive consumer", Goal: "≥ 100×", Measured: fmt.Sprintf("%.1f×", r.VsNaive), Status: status(r.VsNaive >= 100)},
	}
	if r.Rate > 0 {
		// Paced, throughput is the pacing rate, not the capacity.
		for i := range r.Targets {
			r.Targets[i].Status, r.Targets[i].Note = "n/a", "needs an unpaced run (--rate 0)"
		}
	}
	latency := func(name, goal string, l Latency, limit float64) Target {
		t := Target{Name: name, Goal: goal, Measured: fmt.Sprintf("%.1f ms", l.P99)}
		switch {
		case r.Rate == 0:
			t.Status, t.Note = "n/a", "needs --rate"
		case l.Samples == 0:
			t.Status, t.Note = "fail", "no samples"
		default:
			t.Status = status(l.P99 <= limit)
			if r.Rate != 20_000 {
				t.Note = fmt.Sprintf("measured at %.0f ticks/s", r.Rate)
			}
		}
		return t
	}
	r.Targets = append(r.Targets,
		latency("p99 tick→commit", "≤ 15 ms at 20,000 ticks/s", r.TickToCommit, 15),
		latency("p99 tick→browser", "≤ 50 ms", r.TickToSSE, 50))
	// Half the 174.8 bytes of the layout before day partitions.
	r.Targets = append(r.Targets, Target{Name: "bytes per stored tick", Goal: "≤ 87.4", Measured: fmt.Sprintf("%.1f", r.BytesPerTick), Status: status(r.BytesPerTick <= 87.4)})
	r.Notes = append(r.Notes, "CPU and RSS are this process's, which holds generator, broker, processor and web server")
	if r.LiveRate > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("tick→SSE is read from the conflated stream browsers get (live rate %d): a symbol's price updated faster than that waits up to %v for its turn, its newest trade winning; --live-rate 0 measures every update", r.LiveRate, time.Second/time.Duration(r.LiveRate)))
	}
	if r.Machine.Fsync == "off" || r.Machine.SynchronousCommit == "off" {
		r.Notes = append(r.Notes, "PostgreSQL runs without durable commits (fsync or synchronous_commit off), which flatters the naive baseline most")
	}
}

// WriteTable prints the report as aligned text.
func (r Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "  %s\t%s\n", k, fmt.Sprintf(format, a...)) }
	lat := func(l Latency) string {
		if l.Samples == 0 {
			return "no samples"
		}
		s := fmt.Sprintf("p50 %.1f  p99 %.1f  p99.9 %.1f ms", l.P50, l.P99, l.P999)
		if l.Max > 0 {
			s += fmt.Sprintf("  max %.1f", l.Max)
		}
		s += fmt.Sprintf("  (%s, %d samples", l.Method, l.Samples)
		if l.Reconnects > 0 {
			s += fmt.Sprintf(", %d reconnects", l.Reconnects)
		}
		return s + ")"
	}
	m := r.Machine
	fmt.Fprintln(tw, "stockpipe load test")
	row("date", "%s", r.Date.Format(time.RFC3339))
	row("machine", "%d CPUs, %s/%s, %s", m.CPUs, m.OS, m.Arch, m.Go)
	row("postgresql", "%s (%s; fsync %s, synchronous_commit %s)", m.PostgreSQL, m.Database, m.Fsync, m.SynchronousCommit)
	row("broker", "%s, %d partitions", m.Broker, r.Partitions)
	rate := "as fast as possible"
	if r.Rate > 0 {
		rate = fmt.Sprintf("%.0f ticks/s (paced)", r.Rate)
	}
	row("workload", "%d ticks, %d symbols, %s", r.Count, r.Symbols, rate)
	fmt.Fprintln(tw, "pipeline")
	row("produced", "%d in %.2f s", r.Produced, r.ProduceSeconds)
	row("committed", "%d records (%d stored, %d duplicates, %d rejected) in %d batches", r.Committed, r.Stored, r.Duplicates, r.Rejected, r.Batches)
	row("throughput", "%.0f ticks/s (%d in %.2f s, first produce → last commit)", r.Throughput, r.Produced, r.ElapsedSeconds)
	row("tick→commit", "%s", lat(r.TickToCommit))
	row("tick→SSE", "%s", lat(r.TickToSSE))
	row("stored size", "%.1f bytes per tick (%.1f rows, %.1f indexes; %.1f MB in ticks)",
		r.BytesPerTick, r.BytesPerTick-r.IndexBytesPerTick, r.IndexBytesPerTick, float64(r.TicksBytes)/1e6)
	live := "every update"
	if r.LiveRate > 0 {
		live = fmt.Sprintf("%d per symbol per second", r.LiveRate)
	}
	row("live rate", "%s (prices and forming candles, per browser)", live)
	row("CPU (this process)", "%.2f s (%.2f s per million ticks)", r.CPUSeconds, r.CPUPerMillion)
	row("peak RSS (this process)", "%.0f MiB", r.PeakRSSMB)
	if r.PostgresCPUSeconds != nil {
		row("CPU (PostgreSQL)", "%.2f s", *r.PostgresCPUSeconds)
	} else {
		row("CPU (PostgreSQL)", "not available")
	}
	if l := r.SSE; l != nil {
		fmt.Fprintln(tw, "SSE clients")
		row("clients", "%d on %s, %.1f s measured", l.Clients, l.Path, l.Seconds)
		row("events per client", "mean %.1f/s, max %.1f/s (mean %.1f KiB/s)", l.EventsPerSecondMean, l.EventsPerSecondMax, l.BytesPerSecondMean/1024)
		row("CPU (this process)", "%.2f s per second while they were connected (of %d CPUs; clients included)", l.CPUPerSecond, r.Machine.CPUs)
		row("reconnects", "%d", l.Reconnects)
	}
	fmt.Fprintln(tw, "baselines (same rows)")
	row("raw binary COPY", "%.0f rows/s (%d rows in %.2f s)", r.CopyRate, r.CopyRows, r.CopySeconds)
	row("naive row-by-row", "%.0f rows/s (%d rows in %.2f s, one commit per row)", r.NaiveRate, r.NaiveRows, r.NaiveSeconds)
	row("pipeline / COPY", "%.2f×", r.VsCopy)
	row("pipeline / naive", "%.1f×", r.VsNaive)
	if sc := r.Scaling; sc != nil {
		fmt.Fprintf(tw, "with %d symbols (same workload)\n", sc.Symbols)
		row("throughput", "%.0f ticks/s (%.2f× the %d-symbol run; %.2f× raw COPY)", sc.Throughput, sc.Ratio, r.Symbols, sc.VsCopy)
		row("CPU (this process)", "%.2f s per million ticks", sc.CPUPerMillion)
		row("peak RSS (this process)", "%.0f MiB", sc.PeakRSSMB)
	}
	fmt.Fprintln(tw, "targets\tgoal\tmeasured\tstatus")
	for _, t := range r.Targets {
		st := strings.ToUpper(t.Status)
		if t.Note != "" {
			st += " (" + t.Note + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", t.Name, t.Goal, t.Measured, st)
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(tw, "notes")
		for _, n := range r.Notes {
			fmt.Fprintf(tw, "  - %s\n", n)
		}
	}
	return tw.Flush()
}
