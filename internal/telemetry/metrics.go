// Package telemetry holds stockpipe's Prometheus metrics. Each process makes
// one Metrics and hands it to the components it runs; a nil *Metrics is
// valid and records nothing, so components never check.
package telemetry

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the process's counters, histograms and gauges.
type Metrics struct {
	reg *prometheus.Registry

	Produced   prometheus.Counter
	Consumed   prometheus.Counter
	Rejected   *prometheus.CounterVec // by reason
	Committed  prometheus.Counter     // tick rows stored
	Duplicates prometheus.Counter
	Anomalies  *prometheus.CounterVec // by kind
	Batches    prometheus.Counter
	Fenced     prometheus.Counter
	BatchSize  prometheus.Histogram
	Commit     prometheus.Histogram // seconds per batch transaction
	EndToEnd   prometheus.Histogram // seconds from tick ts to commit
	Lag        *prometheus.GaugeVec // by group
	Partitions prometheus.Gauge     // assigned to this processor
	HTTP       *prometheus.CounterVec
	HTTPTime   *prometheus.HistogramVec
	DAGRuns    *prometheus.CounterVec // finished scheduler runs, by dag and state
}

// New returns Metrics registered in a fresh registry, with the Go runtime
// and process collectors.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &Metrics{reg: reg}
	m.Produced = prometheus.NewCounter(prometheus.CounterOpts{Name: "stockpipe_produced_total", Help: "Records the generator or replay had acknowledged by the broker."})
	m.Consumed = prometheus.NewCounter(prometheus.CounterOpts{Name: "stockpipe_consumed_total", Help: "Records the processor read and committed."})
	m.Rejected = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "stockpipe_rejected_total", Help: "Records sent to the dead-letter path, by reason."}, []string{"reason"})
	m.Committed = prometheus.NewCounter(prometheus.CounterOpts{Name: "stockpipe_committed_ticks_total", Help: "Tick rows stored in PostgreSQL."})
	m.Duplicates = prometheus.NewCounter(prometheus.CounterOpts{Name: "stockpipe_duplicates_total", Help: "Ticks dropped because their (symbol, seq) was seen before."})
	m.Anomalies = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "stockpipe_anomalies_total", Help: "Anomalies detected and stored, by kind."}, []string{"kind"})
	m.Batches = prometheus.NewCounter(prometheus.CounterOpts{Name: "stockpipe_batches_total", Help: "Batch transactions committed."})
	m.Fenced = prometheus.NewCounter(prometheus.CounterOpts{Name: "stockpipe_fenced_total", Help: "Batches refused because a partition had moved to another processor."})
	m.BatchSize = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "stockpipe_batch_records", Help: "Records per committed batch.",
		Buckets: prometheus.ExponentialBuckets(1, 4, 9)})
	m.Commit = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "stockpipe_commit_seconds", Help: "Time to commit a batch transaction.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)})
	m.EndToEnd = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "stockpipe_end_to_end_seconds", Help: "From a tick's ts to the commit that stored it.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)})
	m.Lag = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "stockpipe_consumer_lag", Help: "Records in the ticks topic not yet committed by the group."}, []string{"group"})
	m.Partitions = prometheus.NewGauge(prometheus.GaugeOpts{Name: "stockpipe_assigned_partitions", Help: "Partitions this processor owns."})
	m.HTTP = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "stockpipe_http_requests_total", Help: "HTTP requests by route and status."}, []string{"route", "code"})
	m.HTTPTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "stockpipe_http_request_seconds", Help: "HTTP request time by route (event streams excluded).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"route"})
	m.DAGRuns = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "stockpipe_dag_runs_total",
		Help: "Scheduler runs this node finished, by DAG and final state (success or failed, failed checks included)."}, []string{"dag", "state"})
	for _, c := range []prometheus.Collector{m.Produced, m.Consumed, m.Rejected, m.Committed, m.Duplicates, m.Anomalies,
		m.Batches, m.Fenced, m.BatchSize, m.Commit, m.EndToEnd, m.Lag, m.Partitions, m.HTTP, m.HTTPTime, m.DAGRuns} {
		f(c)
	}
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Registry returns the registry, for tests that read values back.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// ObserveBatch records one committed batch.
func (m *Metrics) ObserveBatch(records, stored, duplicates int, commit time.Duration) {
	if m == nil {
		return
	}
	m.Consumed.Add(float64(records))
	m.Committed.Add(float64(stored))
	m.Duplicates.Add(float64(duplicates))
	m.Batches.Inc()
	m.BatchSize.Observe(float64(records))
	m.Commit.Observe(commit.Seconds())
}

// Reject records one rejected record.
func (m *Metrics) Reject(reason string) {
	if m != nil {
		m.Rejected.WithLabelValues(reason).Inc()
	}
}

// Anomaly records one stored anomaly.
func (m *Metrics) Anomaly(kind string) {
	if m != nil {
		m.Anomalies.WithLabelValues(kind).Inc()
	}
}

// EndToEndLatency records a tick's latency from its ts to its commit.
func (m *Metrics) EndToEndLatency(d time.Duration) {
	if m != nil {
		m.EndToEnd.Observe(d.Seconds())
	}
}

// SetPartitions records how many partitions the processor owns.
func (m *Metrics) SetPartitions(n int) {
	if m != nil {
		m.Partitions.Set(float64(n))
	}
}

// AddProduced counts acknowledged records.
func (m *Metrics) AddProduced(n int) {
	if m != nil {
		m.Produced.Add(float64(n))
	}
}

// SetLag records a group's lag.
func (m *Metrics) SetLag(group string, lag int64) {
	if m != nil {
		m.Lag.WithLabelValues(group).Set(float64(lag))
	}
}

// FenceHit counts a fenced batch.
func (m *Metrics) FenceHit() {
	if m != nil {
		m.Fenced.Inc()
	}
}

// DAGRunFinished counts a scheduler run that finished in state (success or
// failed).
func (m *Metrics) DAGRunFinished(dag, state string) {
	if m != nil {
		m.DAGRuns.WithLabelValues(dag, state).Inc()
	}
}
