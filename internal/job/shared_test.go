package job

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/analytics"
	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/fixture"
	"github.com/stockpipe/stockpipe/internal/generate"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
	"github.com/stockpipe/stockpipe/internal/store"
)

// dagsNY is New York, where trading dates are.
var dagsNY = func() *time.Location {
	loc, err := time.LoadLocation("America/New_York")
	if err != nil {
		panic(err)
	}
	return loc
}()

// dagsDate returns midnight New York of a date in November 2026, the
// logical date the engine gives a New York daily DAG. 2026-11-02 is a
// Monday, the day after daylight saving time ends: 14:30 UTC is 09:30 in
// New York.
func dagsDate(day int) time.Time { return time.Date(2026, 11, day, 0, 0, 0, 0, dagsNY) }

var dagsSymbols = []string{"AAPL", "MSFT", "XOM"}

// dagsEnv is a migrated database with the stream's output for some
// simulated sessions, and the shipped DAGs over it.
type dagsEnv struct {
	t    *testing.T
	pool *pgxpool.Pool
	deps Deps
	dags map[string]dag.DAG
}

func newDagsEnv(t *testing.T, deps Deps) *dagsEnv {
	t.Helper()
	pool := fixture.DB(t, 8)
	deps.Pool = pool
	e := &dagsEnv{t: t, pool: pool, deps: deps, dags: map[string]dag.DAG{}}
	for _, d := range Shipped(deps) {
		e.dags[d.Name] = d
	}
	return e
}

// session is one simulated stretch of trading.
type session struct {
	start  time.Time
	dur    time.Duration
	rate   float64 // ticks per second across the symbols
	faults float64
	seed   uint64
}

// simulate feeds the sessions, in order, through the stream's computation
// as the processor does it (decode, rules, analytics.Partition, one
// Flush per batch) and stores each batch with the processor's sink. One
// partition holds every symbol; seqs and prices carry over from one
// session to the next as a resumed simulator continues them.
func (e *dagsEnv) simulate(sessions ...session) {
	e.t.Helper()
	ctx := context.Background()
	syms, err := generate.LookupSymbols(dagsSymbols)
	if err != nil {
		e.t.Fatal(err)
	}
	part, err := analytics.New(analytics.Config{})
	if err != nil {
		e.t.Fatal(err)
	}
	sink := store.NewSink(e.pool)
	dec := market.NewDecoder()
	rules := market.DefaultRules()
	resume := map[string]generate.Resume{}
	b := &store.Batch{Group: "stockpipe", Topic: kafka.TopicTicks}
	var out analytics.Output
	var offset int64
	commit := func() {
		part.Flush(&out)
		b.Candles, b.Anomalies = out.Candles, out.Anomalies
		if _, err := sink.Commit(ctx, b); err != nil {
			e.t.Fatal(err)
		}
		b.Reset()
		out.Reset()
	}
	for _, s := range sessions {
		sim, err := generate.NewSimulator(generate.SimConfig{
			Symbols: syms, Rate: s.rate, Seed: s.seed, Start: s.start,
			Faults: s.faults, AnomalyRate: generate.DefaultAnomalyRate, Resume: maps.Clone(resume),
		})
		if err != nil {
			e.t.Fatal(err)
		}
		end := s.start.Add(s.dur)
		for {
			rec, ok, err := sim.Next()
			if err != nil {
				e.t.Fatal(err)
			}
			if !ok || !rec.TS.Before(end) {
				break
			}
			offset++
			var tk market.Tick
			err = dec.Decode(rec.Value, &tk)
			if err == nil && string(rec.Key) != tk.Symbol {
				err = &market.Rejection{Reason: market.ReasonKeyMismatch, Detail: "key is not the symbol"}
			}
			if err == nil {
				err = rules.Check(&tk, tk.TS)
			}
			if err == nil {
				switch part.Apply(&tk, &out) {
				case analytics.Duplicate:
					continue
				case analytics.Late:
					err = &market.Rejection{Reason: market.ReasonLate, Detail: "behind the watermark"}
				}
			}
			if err != nil {
				var rj *market.Rejection
				if !errors.As(err, &rj) {
					rj = &market.Rejection{Reason: market.ReasonMalformedJSON, Detail: err.Error()}
				}
				// Produced at its event time: the record's timestamp.
				b.Rejected = append(b.Rejected, store.Rejected{Topic: kafka.TopicTicks, Offset: offset, RecordTS: rec.TS,
					Reason: rj.Reason, Detail: rj.Detail, Key: slices.Clone(rec.Key), Raw: slices.Clone(rec.Value)})
			} else {
				b.Ticks = append(b.Ticks, store.TickRow{Tick: tk, Offset: offset})
				if r := resume[tk.Symbol]; tk.Seq > r.Seq {
					resume[tk.Symbol] = generate.Resume{Seq: tk.Seq, Price: tk.Price}
				}
			}
			if len(b.Ticks)+len(b.Rejected) >= 10_000 {
				commit()
			}
		}
	}
	commit()
}

// runTask runs one task of a DAG as the engine would, with the DAG's
// parameters overridden by params: parameters the DAG cannot take are
// refused, as the engine refuses them, with a *dag.ParamError.
func (e *dagsEnv) runTask(name, task string, logical time.Time, params map[string]string) error {
	e.t.Helper()
	d, ok := e.dags[name]
	if !ok {
		e.t.Fatalf("no DAG %s", name)
	}
	i := slices.IndexFunc(d.Tasks, func(t dag.Task) bool { return t.Name == task })
	if i < 0 {
		e.t.Fatalf("DAG %s has no task %s", name, task)
	}
	typed, err := d.ParseParams(params)
	if err != nil {
		return err
	}
	tc := &dag.TaskContext{DAG: name, RunID: 1, LogicalDate: logical, Params: typed, Pool: e.pool,
		Log: slog.New(slog.NewTextHandler(dagsLogWriter{e.t}, nil)).With("task", task)}
	ctx, cancel := context.WithTimeout(context.Background(), d.Tasks[i].Timeout)
	defer cancel()
	return d.Tasks[i].Run(ctx, tc)
}

// run runs every task of a DAG in dependency order and fails the test if
// any task fails, its checks included.
func (e *dagsEnv) run(name string, logical time.Time, params map[string]string) {
	e.t.Helper()
	if err := e.runChecked(name, logical, params); err != nil {
		e.t.Fatalf("%s for %s: %v", name, logical.Format(time.DateOnly), err)
	}
}

// runChecked runs every task of a DAG in dependency order, as the engine
// would: a task whose checks fail does not stop the tasks that do not
// depend on it, and its *dag.ChecksFailedError is returned (joined with any
// other's). Any other error fails the test.
func (e *dagsEnv) runChecked(name string, logical time.Time, params map[string]string) error {
	e.t.Helper()
	done := map[string]bool{}
	var verdicts []error
next:
	for _, task := range e.dags[name].Tasks {
		for _, dep := range task.Deps {
			if !done[dep] {
				continue next
			}
		}
		err := e.runTask(name, task.Name, logical, params)
		if err != nil && !errors.Is(err, dag.ErrChecksFailed) {
			e.t.Fatalf("%s.%s for %s: %v", name, task.Name, logical.Format(time.DateOnly), err)
		}
		if err != nil {
			verdicts = append(verdicts, err)
			continue
		}
		done[task.Name] = true
	}
	return errors.Join(verdicts...)
}

type dagsLogWriter struct{ t *testing.T }

func (w dagsLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (e *dagsEnv) count(query string, args ...any) int64 {
	e.t.Helper()
	var n int64
	if err := e.pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	return n
}

func (e *dagsEnv) exec(query string, args ...any) int64 {
	e.t.Helper()
	tag, err := e.pool.Exec(context.Background(), query, args...)
	if err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	return tag.RowsAffected()
}

func (e *dagsEnv) dump(query string) []string { return pgtest.Rows(e.t, e.pool, query) }

// report returns a date's quality report by check name.
func (e *dagsEnv) report(day string) (bool, map[string]dag.CheckResult) {
	e.t.Helper()
	var passed bool
	var doc []byte
	if err := e.pool.QueryRow(context.Background(),
		`SELECT passed, checks FROM quality_reports WHERE date = $1::date`, day).Scan(&passed, &doc); err != nil {
		e.t.Fatalf("quality report of %s: %v", day, err)
	}
	return passed, e.checks(doc)
}

func (e *dagsEnv) checks(doc []byte) map[string]dag.CheckResult {
	e.t.Helper()
	var cs []dag.CheckResult
	if err := json.Unmarshal(doc, &cs); err != nil {
		e.t.Fatal(err)
	}
	m := map[string]dag.CheckResult{}
	for _, c := range cs {
		m[c.Name] = c
	}
	return m
}

func TestDAGShippedDefinitions(t *testing.T) {
	dags := Shipped(Deps{})
	want := map[string]string{
		DAGMarketClose: "30 16 * * 1-5", DAGRetention: "15 * * * *", DAGPipelineHealth: "*/5 * * * *", DAGBackfill: "",
	}
	if len(dags) != len(want) {
		t.Fatalf("%d DAGs, want %d", len(dags), len(want))
	}
	for _, d := range dags {
		sched, ok := want[d.Name]
		if !ok || d.Schedule != sched {
			t.Errorf("DAG %s schedule %q, want %q", d.Name, d.Schedule, sched)
		}
		loc := "America/New_York"
		if d.Name == DAGPipelineHealth {
			loc = "UTC"
		}
		if d.Location == nil || d.Location.String() != loc {
			t.Errorf("DAG %s location %v, want %s", d.Name, d.Location, loc)
		}
		seen := map[string]bool{}
		for _, task := range d.Tasks {
			if task.Run == nil || task.Timeout <= 0 {
				t.Errorf("%s.%s has no Run or timeout", d.Name, task.Name)
			}
			for _, dep := range task.Deps {
				if !seen[dep] {
					t.Errorf("%s.%s depends on %s, which is not an earlier task", d.Name, task.Name, dep)
				}
			}
			seen[task.Name] = true
		}
	}
	if got := dags[1].Defaults()["retention"]; got != "168h0m0s" {
		t.Errorf("default retention %q, want 7 days", got)
	}
	// They pass the engine's validation: tasks, schedules, parameter
	// declarations (types, bounds, defaults within them).
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s, err := dag.NewClient(dag.Config{Pool: pool, Logger: slog.New(slog.DiscardHandler), DAGs: dags})
	if err != nil {
		t.Fatalf("shipped DAGs: %v", err)
	}
	if len(s.DAGs()) != len(want) {
		t.Error("the client lost shipped DAGs")
	}
	// Every parameter is documented, and every default is its own
	// parameter's: a run on the defaults alone is valid (except backfill's,
	// which needs a symbol).
	for _, d := range dags {
		for _, p := range d.Params {
			if p.Doc == "" {
				t.Errorf("%s.%s has no Doc", d.Name, p.Name)
			}
		}
		given := map[string]string{}
		if d.Name == DAGBackfill {
			given["symbol"] = "AAPL"
		}
		if _, err := d.ParseParams(given); err != nil {
			t.Errorf("%s on its defaults: %v", d.Name, err)
		}
	}
}

// sixDays is a short session on each of Monday to Saturday.
func sixDays() []session {
	var ss []session
	for i := range 6 {
		ss = append(ss, session{start: time.Date(2026, 11, 2+i, 14, 30, 0, 0, time.UTC), dur: 10 * time.Minute,
			rate: 10, faults: 0.01, seed: uint64(10 + i)})
	}
	return ss
}
