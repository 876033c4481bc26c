package web_test

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/job"
)

// apiRun is a run as /api/dags/runs/{id} shows it.
type apiRun struct {
	Run struct {
		ID          int64
		State, Kind string
		Params      map[string]string
		GivenParams map[string]string `json:"given_params"`
		ParamsNode  string            `json:"params_node"`
		Finished    *time.Time
	}
	Tasks []struct {
		Task, State, Error, Log, Node string
		Attempts                      int
		Finished                      *time.Time
	}
}

// triggerRun posts a trigger of dag with body and returns the new run's
// id.
func triggerRun(t *testing.T, base, dag, body string) int64 {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/api/dags/"+dag+"/trigger", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var tr struct {
		RunID int64 `json:"run_id"`
	}
	if err := json.Unmarshal(b, &tr); err != nil || resp.StatusCode != http.StatusAccepted || tr.RunID == 0 {
		t.Fatalf("trigger of %s: %s %s", dag, resp.Status, b)
	}
	return tr.RunID
}

// finishedRun waits for run id to finish and returns it as the API shows
// it.
func finishedRun(t *testing.T, base string, id int64) apiRun {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var run apiRun
		getJSON(t, base+"/api/dags/runs/"+itoa(id), &run)
		if run.Run.Finished != nil {
			return run
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %d did not finish: %+v", id, run)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDAGAPIRetriggerIsANewRun triggers one date from the web twice, with
// and then without a parameter: two runs, each with its own parameters,
// and the first keeps its history.
func TestDAGAPIRetriggerIsANewRun(t *testing.T) {
	hs, _ := dagServer(t, "")
	first := triggerRun(t, hs.URL, "demo", `{"date":"2026-11-02","params":{"k":"v"}}`)
	one := finishedRun(t, hs.URL, first)
	second := triggerRun(t, hs.URL, "demo", `{"date":"2026-11-02"}`)
	if second == first {
		t.Fatalf("the second trigger of the date reused run %d", first)
	}
	two := finishedRun(t, hs.URL, second)
	if two.Run.State != "success" || two.Run.Kind != "manual" || !maps.Equal(two.Run.Params, map[string]string{"k": ""}) ||
		len(two.Run.GivenParams) != 0 || two.Run.ParamsNode == "" {
		t.Errorf("second run %+v: want the default k=\"\" of the node that ran it", two.Run)
	}
	var again apiRun
	getJSON(t, hs.URL+"/api/dags/runs/"+itoa(first), &again)
	if again.Run.State != "success" || !maps.Equal(again.Run.Params, map[string]string{"k": "v"}) ||
		!maps.Equal(again.Run.GivenParams, map[string]string{"k": "v"}) || !again.Run.Finished.Equal(*one.Run.Finished) {
		t.Errorf("the first run became %+v", again.Run)
	}
	for i, task := range again.Tasks {
		if task.State != "success" || task.Log != one.Tasks[i].Log || task.Node == "" || !task.Finished.Equal(*one.Tasks[i].Finished) {
			t.Errorf("the first run's task %s became %+v", task.Task, task)
		}
	}
	var list struct {
		Runs []struct {
			ID   int64
			Kind string
		}
	}
	getJSON(t, hs.URL+"/api/dags/runs?dag=demo", &list)
	if len(list.Runs) != 2 || list.Runs[0].ID != second || list.Runs[1].ID != first {
		t.Errorf("runs of demo: %+v; want %d then %d", list.Runs, second, first)
	}
}

// TestDAGAPIUnhealthyPipelineHealthIsFailed runs the shipped pipeline_health
// over stale ticks: the run records healthy=false, and /dags's API lists it
// failed (the page paints failed runs red), as does the run's own page.
func TestDAGAPIUnhealthyPipelineHealthIsFailed(t *testing.T) {
	hs, pool := schedServer(t, "", func(p *pgxpool.Pool) []dag.DAG {
		for _, d := range job.Shipped(job.Deps{Pool: p}) {
			if d.Name == job.DAGPipelineHealth {
				d.Schedule = "" // only the run the test triggers
				return []dag.DAG{d}
			}
		}
		t.Fatal("no shipped pipeline_health DAG")
		return nil
	})
	if _, err := pool.Exec(context.Background(), `
		INSERT INTO symbols (symbol) VALUES ('AAPL');
		INSERT INTO ticks (symbol, seq, ts, price, size, bid, ask, kafka_partition, kafka_offset, ingested_at)
		VALUES ('AAPL', 1, now() - interval '1 hour', 100, 10, 99, 101, 0, 0, now() - interval '1 hour')`); err != nil {
		t.Fatal(err)
	}
	id := triggerRun(t, hs.URL, job.DAGPipelineHealth, `{}`)
	run := finishedRun(t, hs.URL, id)
	if run.Run.State != "failed" || len(run.Tasks) != 1 || run.Tasks[0].State != "failed" ||
		!strings.Contains(run.Tasks[0].Error, "health checks failed: tick_age") {
		t.Errorf("unhealthy run %+v", run)
	}
	var healthy bool
	if err := pool.QueryRow(context.Background(), `SELECT healthy FROM pipeline_health`).Scan(&healthy); err != nil || healthy {
		t.Errorf("pipeline_health row: healthy=%v, %v; want one, unhealthy", healthy, err)
	}
	var dags []struct {
		Name   string
		Recent []struct {
			ID    int64
			State string
		}
	}
	getJSON(t, hs.URL+"/api/dags", &dags)
	if len(dags) != 1 || len(dags[0].Recent) != 1 || dags[0].Recent[0].ID != id || dags[0].Recent[0].State != "failed" {
		t.Errorf("/api/dags: %+v; want run %d failed", dags, id)
	}
}

// TestDAGAPIParamsChecked triggers the shipped DAGs through the API with
// parameters they cannot take: each is answered 400 with a message naming
// the parameter and what a valid value is, and no run or River job exists
// afterwards. /api/dags declares each DAG's parameters with their types.
func TestDAGAPIParamsChecked(t *testing.T) {
	e := newGuardEnv(t, nil)
	for _, c := range []struct {
		route, body, want string
	}{
		{"market_close", `{"params":{"max_reject_rate":"lots"}}`, `parameter max_reject_rate=\"lots\" is not a number in [0, 1] (such as 0.05)`},
		{"market_close", `{"params":{"max_reject_rat":"0.2"}}`, `DAG market_close has no parameter \"max_reject_rat\"`},
		{"retention", `{"params":{"batch_size":"-5"}}`, `parameter batch_size=\"-5\" is not an integer ≥ 1`},
		{"retention", `{"params":{"retention":"banana"}}`, `parameter retention=\"banana\" is not a duration ≥ 1s`},
		{"backfill", `{}`, `parameter symbol is required`},
		{"backfill", `{"params":{"symbol":"AAPL","to":"2026-13-01"}}`, `parameter to=\"2026-13-01\" is not a date`},
		{"backfill", `{"params":{"symbol":"AAPL","from":"2026-11-04","to":"2026-11-03"}}`, `parameter to=2026-11-03 is before from=2026-11-04`},
		{"backfill", `{"params":{"symbol":"AAPL","skip_bad":"perhaps"}}`, `parameter skip_bad=\"perhaps\" is not a boolean`},
	} {
		code, body := e.do(t, http.MethodPost, "/api/dags/"+c.route+"/trigger", c.body, map[string]string{"Content-Type": "application/json"})
		if code != http.StatusBadRequest || !strings.Contains(body, c.want) {
			t.Errorf("%s %s: %d %s, want 400 with %s", c.route, c.body, code, body, c.want)
		}
	}
	if n := e.runs(t); n != 0 {
		t.Errorf("%d runs created by refused parameters", n)
	}
	var jobs int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM river_job`).Scan(&jobs); err != nil || jobs != 0 {
		t.Errorf("%d River jobs after refused triggers (%v)", jobs, err)
	}
	var dags []struct {
		Name      string
		Params    map[string]string
		ParamDefs []struct{ Name, Type, Default, Doc string } `json:"param_defs"`
	}
	getJSON(t, e.baseURL+"/api/dags", &dags)
	types := map[string]string{}
	for _, d := range dags {
		for _, p := range d.ParamDefs {
			types[d.Name+"."+p.Name] = p.Type
			if p.Default != d.Params[p.Name] || p.Doc == "" {
				t.Errorf("%s.%s: %+v, default %q in params", d.Name, p.Name, p, d.Params[p.Name])
			}
		}
	}
	for name, want := range map[string]string{
		"market_close.max_reject_rate": "number in [0, 1]", "retention.retention": "duration ≥ 1s",
		"backfill.symbol": "symbol, required", "backfill.from": "date", "pipeline_health.max_lag": "integer ≥ 0",
	} {
		if types[name] != want {
			t.Errorf("/api/dags declares %s as %q, want %q", name, types[name], want)
		}
	}
}
