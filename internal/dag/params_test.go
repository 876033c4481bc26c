package dag_test

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/dag"
)

// typedDAG declares a parameter of each type, with bounds, a required one
// and a rule across two of them.
func typedDAG(run func(context.Context, *dag.TaskContext) error) dag.DAG {
	if run == nil {
		run = func(context.Context, *dag.TaskContext) error { return nil }
	}
	ticker := dag.TextType("symbol", "AAPL (capital letters)", func(s string) bool {
		return s != "" && strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") == ""
	})
	return dag.DAG{
		Name: "typed",
		Params: []dag.Param{
			{Name: "keep", Type: dag.Duration, Default: "168h", Min: "1s", Doc: "how long"},
			{Name: "batch", Type: dag.Integer, Default: "50000", Min: "1"},
			{Name: "rate", Type: dag.Number, Default: "0.05", Min: "0", Max: "1"},
			{Name: "skip", Type: dag.Boolean, Default: "false"},
			{Name: "from", Type: dag.Date},
			{Name: "to", Type: dag.Date},
			{Name: "symbol", Type: ticker, Required: true},
			{Name: "file", Type: dag.FilePath},
			{Name: "note", Type: dag.Text, Default: "none"},
		},
		Validate: func(p dag.Params) error {
			from, okFrom := p.Date("from", time.UTC)
			to, okTo := p.Date("to", time.UTC)
			if okFrom && okTo && to.Before(from) {
				return dag.BadParam("to", "parameter to=%s is before from=%s", p.String("to"), p.String("from"))
			}
			return nil
		},
		Tasks: []dag.Task{{Name: "t", Run: run}},
	}
}

// TestParseParams checks the typed reading of a run's parameters without
// a database: defaults, each type, bounds, required ones, unknown names and
// the DAG's own rule, every refusal naming the parameter.
func TestParseParams(t *testing.T) {
	d := typedDAG(nil)
	p, err := d.ParseParams(map[string]string{"symbol": " AAPL ", "rate": "0.2", "from": "2026-11-02", "to": ""})
	if err != nil {
		t.Fatal(err)
	}
	if p.Duration("keep") != 168*time.Hour || p.Int("batch") != 50000 || p.Float("rate") != 0.2 || p.Float("batch") != 50000 ||
		p.Bool("skip") || p.String("symbol") != "AAPL" || p.String("note") != "none" {
		t.Errorf("values: keep %v batch %v rate %v skip %v symbol %q note %q",
			p.Duration("keep"), p.Int("batch"), p.Float("rate"), p.Bool("skip"), p.String("symbol"), p.String("note"))
	}
	ny, _ := time.LoadLocation("America/New_York")
	if from, ok := p.Date("from", ny); !ok || !from.Equal(time.Date(2026, 11, 2, 0, 0, 0, 0, ny)) {
		t.Errorf("from = %v, %v; want midnight New York of 2026-11-02", from, ok)
	}
	if _, ok := p.Date("to", ny); ok || p.Has("to") || p.Has("file") || !p.Has("keep") {
		t.Error("an empty or absent parameter without a default is unset; one with a default is set")
	}
	if !p.Given("rate") || p.Given("keep") || p.Given("to") {
		t.Error("Given tells the trigger's parameters from defaults")
	}
	want := map[string]string{"keep": "168h", "batch": "50000", "rate": "0.2", "skip": "false", "from": "2026-11-02",
		"to": "", "symbol": "AAPL", "file": "", "note": "none"}
	if got := p.Text(); !maps.Equal(got, want) {
		t.Errorf("Text() = %v, want %v", got, want)
	}

	for _, c := range []struct {
		given map[string]string
		param string
		want  string
	}{
		{map[string]string{"symbol": "A", "sybmol": "AAPL"}, "sybmol",
			`DAG typed has no parameter "sybmol" (it has: keep, batch, rate, skip, from, to, symbol, file, note)`},
		{map[string]string{}, "symbol", `DAG typed: parameter symbol is required: give a symbol (such as AAPL (capital letters))`},
		{map[string]string{"symbol": "aapl"}, "symbol", `DAG typed: parameter symbol="aapl" is not a symbol (such as AAPL (capital letters))`},
		{map[string]string{"symbol": "A", "keep": "banana"}, "keep", `DAG typed: parameter keep="banana" is not a duration ≥ 1s (such as 90s, 5m or 168h)`},
		{map[string]string{"symbol": "A", "keep": "500ms"}, "keep", `DAG typed: parameter keep="500ms" is not a duration ≥ 1s (such as 90s, 5m or 168h)`},
		{map[string]string{"symbol": "A", "batch": "0"}, "batch", `DAG typed: parameter batch="0" is not an integer ≥ 1 (such as 50000)`},
		{map[string]string{"symbol": "A", "batch": "1.5"}, "batch", `DAG typed: parameter batch="1.5" is not an integer ≥ 1 (such as 50000)`},
		{map[string]string{"symbol": "A", "rate": "x"}, "rate", `DAG typed: parameter rate="x" is not a number in [0, 1] (such as 0.05)`},
		{map[string]string{"symbol": "A", "rate": "1.5"}, "rate", `DAG typed: parameter rate="1.5" is not a number in [0, 1] (such as 0.05)`},
		{map[string]string{"symbol": "A", "rate": "NaN"}, "rate", `DAG typed: parameter rate="NaN" is not a number in [0, 1] (such as 0.05)`},
		{map[string]string{"symbol": "A", "skip": "maybe"}, "skip", `DAG typed: parameter skip="maybe" is not a boolean (such as true or false)`},
		{map[string]string{"symbol": "A", "from": "yesterday"}, "from", `DAG typed: parameter from="yesterday" is not a date (such as 2026-11-02)`},
		{map[string]string{"symbol": "A", "from": "2026-11-03", "to": "2026-11-02"}, "to", `DAG typed: parameter to=2026-11-02 is before from=2026-11-03`},
	} {
		_, err := d.ParseParams(c.given)
		var pe *dag.ParamError
		if !errors.As(err, &pe) || pe.DAG != "typed" || pe.Param != c.param || err.Error() != c.want {
			t.Errorf("%v:\n got %v (%+v)\nwant %s", c.given, err, pe, c.want)
		}
	}

	// Reading a parameter as another type, or one not declared, is a bug
	// in the task: it panics, and the engine fails the attempt with it.
	for name, read := range map[string]func(){
		"undeclared": func() { p.String("nope") },
		"wrong type": func() { p.Int("keep") },
	} {
		func() {
			defer func() {
				if r := recover(); r == nil || !strings.Contains(r.(string), "DAG typed") {
					t.Errorf("%s: recovered %v", name, r)
				}
			}()
			read()
		}()
	}
	if got := d.Params[1].Describe(); got != "integer ≥ 1" {
		t.Errorf("Describe = %q", got)
	}
	if got := d.Params[6].Describe(); got != "symbol, required" {
		t.Errorf("Describe = %q", got)
	}
}

// TestNewRejectsBadParamDecls: a declaration that could never be given,
// or whose default breaks its own type or bounds, is refused by New, as
// are required parameters without a default on a scheduled DAG (whose runs
// are given none).
func TestNewRejectsBadParamDecls(t *testing.T) {
	noop := func(context.Context, *dag.TaskContext) error { return nil }
	for want, params := range map[string][]dag.Param{
		`parameter "bad name": a name is letters`: {{Name: "bad name", Type: dag.Text}},
		`parameter untyped has no type`:           {{Name: "untyped"}},
		`default "soon" is not a duration`:        {{Name: "d", Type: dag.Duration, Default: "soon"}},
		`default "2" is not a number in [0, 1]`:   {{Name: "r", Type: dag.Number, Default: "2", Min: "0", Max: "1"}},
		`a boolean has no bounds`:                 {{Name: "b", Type: dag.Boolean, Min: "false"}},
		`Min 5 is above Max 1`:                    {{Name: "n", Type: dag.Integer, Min: "5", Max: "1"}},
		`parameter "p" is declared twice`:         {{Name: "p", Type: dag.Text}, {Name: "p", Type: dag.Text}},
		`parameter s is required and has no default, but scheduled runs are given none`: {
			{Name: "s", Type: dag.Text, Required: true}},
	} {
		_, err := dag.New(dag.Config{Logger: quiet, DAGs: []dag.DAG{{Name: "x", Schedule: "0 1 * * *", Params: params,
			Tasks: []dag.Task{{Name: "a", Run: noop}}}}})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v, want %q", params, err, want)
		}
	}
}

// TestTriggerChecksParams triggers and backfills with an unknown and with
// bad parameters: each is refused with a *ParamError naming the parameter,
// and no run, task run or River job exists afterwards. A good trigger's
// task then reads typed values, the defaults applied.
func TestTriggerChecksParams(t *testing.T) {
	t.Parallel()
	pool, _ := openDB(t)
	ctx := context.Background()
	var seen atomic.Value
	d := typedDAG(func(_ context.Context, tc *dag.TaskContext) error {
		from, _ := tc.Params.Date("from", time.UTC)
		seen.Store([]any{tc.Params.Duration("keep"), tc.Params.Int("batch"), tc.Params.Float("rate"),
			tc.Params.Bool("skip"), from, tc.Params.String("symbol")})
		return nil
	})
	trig := client(t, testConfig(pool, d))
	for _, c := range []struct {
		given map[string]string
		param string
	}{
		{map[string]string{"symbol": "AAPL", "sybmol": "AAPL"}, "sybmol"},
		{map[string]string{"symbol": "AAPL", "batch": "many"}, "batch"},
		{map[string]string{"symbol": "AAPL", "rate": "2"}, "rate"},
		{map[string]string{"symbol": "AAPL", "from": "2026-11-03", "to": "2026-11-02"}, "to"},
		{nil, "symbol"},
	} {
		var pe *dag.ParamError
		if _, err := trig.Trigger(ctx, "typed", day, c.given); !errors.As(err, &pe) || pe.Param != c.param ||
			!strings.Contains(err.Error(), c.param) {
			t.Errorf("Trigger %v: %v, want an error naming %s", c.given, err, c.param)
		}
		if _, err := trig.Backfill(ctx, "typed", day, day.AddDate(0, 0, 2), c.given); !errors.As(err, &pe) || pe.Param != c.param {
			t.Errorf("Backfill %v: %v, want an error naming %s", c.given, err, c.param)
		}
	}
	for _, table := range []string{"dag_runs", "task_runs", "river_job"} {
		if n := count(t, pool, `SELECT count(*) FROM `+table); n != 0 {
			t.Errorf("%d rows in %s after refused triggers", n, table)
		}
	}

	s := start(t, testConfig(pool, d))
	id, err := s.Trigger(ctx, "typed", day, map[string]string{"symbol": "MSFT", "from": "2026-11-02"})
	if err != nil {
		t.Fatal(err)
	}
	run, _ := waitRun(t, s, id)
	if run.State != dag.RunSuccess || run.Params["keep"] != "168h" || run.Params["symbol"] != "MSFT" || run.Params["to"] != "" {
		t.Errorf("run %+v", run)
	}
	want := []any{168 * time.Hour, int64(50000), 0.05, false, time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC), "MSFT"}
	got, _ := seen.Load().([]any)
	if len(got) != len(want) {
		t.Fatalf("the task saw %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("the task saw %v, want %v", got, want)
			break
		}
	}
}

// TestPermanentErrorsAreNotRetried: a task's permanent error (bad input,
// missing data) fails it at its first attempt, its River job cancelled
// rather than retried, while a transient error uses the retries; and a run
// whose recorded parameters the executing node's DAG cannot take (the DAG
// changed since the trigger) fails at once, naming the parameter.
func TestPermanentErrorsAreNotRetried(t *testing.T) {
	t.Parallel()
	pool, _ := openDB(t)
	ctx := context.Background()
	var permanent, transient atomic.Int32
	dags := []dag.DAG{
		{Name: "bad_input", Tasks: []dag.Task{{Name: "t", Retries: 3, Run: func(context.Context, *dag.TaskContext) error {
			permanent.Add(1)
			return dag.Permanent(errors.New("no ticks stored for the range"))
		}}}},
		{Name: "flaky", Tasks: []dag.Task{{Name: "t", Retries: 2, Run: func(context.Context, *dag.TaskContext) error {
			transient.Add(1)
			return errors.New("connection reset")
		}}}},
		{Name: "changed", Tasks: []dag.Task{{Name: "t", Retries: 3, Run: func(context.Context, *dag.TaskContext) error { return nil }}}},
	}
	// The trigger's DAG "changed" still has the parameter "old".
	then := dags[2]
	then.Params = textParams("old", "")
	trig := client(t, testConfig(pool, dags[0], dags[1], then))
	ids := map[string]int64{}
	for _, name := range []string{"bad_input", "flaky", "changed"} {
		var given map[string]string
		if name == "changed" {
			given = map[string]string{"old": "x"}
		}
		id, err := trig.Trigger(ctx, name, day, given)
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = id
	}
	s := start(t, testConfig(pool, dags...))
	for name, wantAttempts := range map[string]int{"bad_input": 1, "flaky": 3, "changed": 1} {
		run, tasks := waitRun(t, s, ids[name])
		if run.State != dag.RunFailed || tasks[0].State != dag.TaskFailed || tasks[0].Attempts != wantAttempts {
			t.Errorf("%s: run %s, task %+v; want failed after %d attempt(s)", name, run.State, tasks[0], wantAttempts)
		}
	}
	if _, tasks, _ := s.Run(ctx, ids["changed"]); !strings.Contains(tasks[0].Error, `DAG changed has no parameter "old"`) {
		t.Errorf("the changed DAG's run failed with %q", tasks[0].Error)
	}
	// River settles a job once its worker has returned, a moment after
	// the task's outcome is recorded.
	for name, state := range map[string]string{"bad_input": "cancelled", "changed": "cancelled", "flaky": "discarded"} {
		eventually(t, 20*time.Second, "the River job of "+name+" to end "+state, func() (bool, error) {
			var got string
			err := pool.QueryRow(ctx, `SELECT state FROM river_job WHERE kind = 'stockpipe_task' AND (args->>'run_id')::bigint = $1`,
				ids[name]).Scan(&got)
			return got == state, err
		})
	}
	if permanent.Load() != 1 || transient.Load() != 3 {
		t.Errorf("the permanent failure ran %d times, the transient one %d", permanent.Load(), transient.Load())
	}
}
