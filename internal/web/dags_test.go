package web_test

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/dag"
	fx "github.com/stockpipe/stockpipe/internal/fixture"
	"github.com/stockpipe/stockpipe/internal/job"
	"github.com/stockpipe/stockpipe/internal/web"
)

// dagServer starts a scheduler node with a two-task demo DAG and a server
// whose DAG pages and API use an insert-only client, as serve does.
func dagServer(t *testing.T, token string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	ran := new(atomic.Int64)
	dags := []dag.DAG{{
		Name: "demo", Description: "two steps", Schedule: "30 16 * * 1-5", Location: mustLoc(t, "America/New_York"),
		Params: []dag.Param{{Name: "k", Type: dag.Text}},
		Tasks: []dag.Task{
			{Name: "first", Run: func(ctx context.Context, tc *dag.TaskContext) error {
				ran.Add(1)
				tc.Log.Info("first ran")
				return nil
			}},
			{Name: "second", Deps: []string{"first"}, Run: func(ctx context.Context, tc *dag.TaskContext) error { ran.Add(1); return nil }},
		},
	}}
	hs, _ := schedServer(t, token, func(*pgxpool.Pool) []dag.DAG { return dags })
	return hs, ran
}

// schedServer starts, on a fresh database, a scheduler node running the
// DAGs dags returns and a server whose DAG pages and API use an
// insert-only client, as serve does.
func schedServer(t *testing.T, token string, dagsOf func(*pgxpool.Pool) []dag.DAG) (*httptest.Server, *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	pool := fx.DB(t, 8)
	log := slog.New(slog.DiscardHandler)
	dags := dagsOf(pool)
	worker, err := dag.New(dag.Config{Pool: pool, DAGs: dags, Logger: log, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := worker.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = worker.Stop(context.Background()) })
	client, err := dag.NewClient(dag.Config{Pool: pool, DAGs: dags, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	// Guarded as up serves on loopback: the pages must work through it.
	srv, err := web.New(web.Config{Pool: pool, Scheduler: client, AuthToken: token, RequireToken: token != "", Logger: log, RestrictHosts: true})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = srv.Run(rctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return hs, pool
}

// TestDAGAPI triggers a two-task DAG through the API (with the token) and
// follows the run to success through the run endpoint.
func TestDAGAPI(t *testing.T) {
	hs, ran := dagServer(t, "tok")
	post := func(auth, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, hs.URL+"/api/dags/demo/trigger", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := post("", `{"date":"2026-11-02"}`); code != http.StatusUnauthorized {
		t.Fatalf("trigger without the token: %d", code)
	}
	if code, body := post("tok", `{"date":"02/11/2026"}`); code != http.StatusBadRequest {
		t.Fatalf("bad date: %d %s", code, body)
	}
	code, body := post("tok", `{"date":"2026-11-02","params":{"k":"v"}}`)
	if code != http.StatusAccepted {
		t.Fatalf("trigger: %d %s", code, body)
	}
	var tr struct {
		RunID int64 `json:"run_id"`
	}
	if err := json.Unmarshal([]byte(body), &tr); err != nil || tr.RunID == 0 {
		t.Fatalf("trigger answer %s", body)
	}
	get := func(path string, v any) int {
		resp, err := http.Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if v != nil {
			_ = json.NewDecoder(resp.Body).Decode(v)
		}
		return resp.StatusCode
	}
	var run struct {
		Run struct {
			State  string
			Params map[string]string
		}
		Tasks []struct {
			Task, State string
			Deps        []string
			Log         string
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code := get("/api/dags/runs/"+itoa(tr.RunID), &run); code != 200 {
			t.Fatalf("run: %d", code)
		}
		if run.Run.State == "success" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if run.Run.State != "success" || len(run.Tasks) != 2 || run.Tasks[1].Deps[0] != "first" || run.Run.Params["k"] != "v" ||
		!strings.Contains(run.Tasks[0].Log, "first ran") || ran.Load() != 2 {
		t.Fatalf("run %+v, tasks ran %d", run, ran.Load())
	}
	var list []struct {
		Name    string
		NextRun *time.Time `json:"next_run"`
		Recent  []struct{ ID int64 }
	}
	if code := get("/api/dags", &list); code != 200 || len(list) != 1 || list[0].NextRun == nil || len(list[0].Recent) != 1 {
		t.Fatalf("dags: %d %+v", code, list)
	}
	if code := get("/api/dags/runs/999999", nil); code != 404 {
		t.Errorf("unknown run: %d", code)
	}
	if code := get("/api/dags/runs?dag=nosuch", nil); code != 404 {
		t.Errorf("unknown dag: %d", code)
	}
	for _, p := range []string{"/dags", "/dags/run/1"} {
		if code := get(p, nil); code != 200 {
			t.Errorf("%s: %d", p, code)
		}
	}
}

func mustLoc(t *testing.T, name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestBrowserDAGs(t *testing.T) {
	hs, _ := dagServer(t, "")
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(hs.URL+"/dags")); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "the DAG listed", `window.stockpipe && window.stockpipe.loaded && document.querySelector('[data-dag="demo"]') !== null`)
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`[data-dag="demo"] button.trigger`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-dag="demo"] input[name=date]`)),
		chromedp.SetValue(chromedp.CSS(`[data-dag="demo"] input[name=date]`), "2026-11-02"),
		chromedp.Click(chromedp.CSS(`[data-dag="demo"] button[type=submit]`)),
	); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "the run to show as a successful square", `document.querySelector('[data-dag="demo"] .runs a[data-state="success"]') !== null`)
	screenshot(t, ctx, "dags")
	href := eval[string](t, ctx, `document.querySelector('[data-dag="demo"] .runs a[data-state="success"]').getAttribute('href')`)
	if err := chromedp.Do(ctx, chromedp.Navigate(hs.URL+href)); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "the task graph", `window.stockpipe && window.stockpipe.loaded && document.querySelector('#graph [data-task="second"][data-state="success"]') !== null`)
	screenshot(t, ctx, "dag-run")
}

// failedQualityRun starts a server with the shipped market_close DAG
// (triggered only) over a date whose stored records are all rejected ones,
// triggers that date and waits for the run to finish. It returns the
// server and the run's id.
func failedQualityRun(t *testing.T) (*httptest.Server, int64) {
	t.Helper()
	hs, pool := schedServer(t, "", func(pool *pgxpool.Pool) []dag.DAG {
		for _, d := range job.Shipped(job.Deps{Pool: pool}) {
			if d.Name == job.DAGMarketClose {
				d.Schedule = "" // only the run the test triggers
				return []dag.DAG{d}
			}
		}
		t.Fatal("no shipped market_close DAG")
		return nil
	})
	if _, err := pool.Exec(context.Background(), `
		INSERT INTO rejected_ticks (topic, partition, "offset", reason, received_at)
		SELECT 'ticks', 0, g, 'malformed_json', '2026-11-04 15:00:00+00' FROM generate_series(1, 20) g`); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, hs.URL+"/api/dags/market_close/trigger", strings.NewReader(`{"date":"2026-11-04"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr struct {
		RunID int64 `json:"run_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("trigger: %s, %v", resp.Status, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var run struct{ Run struct{ Finished *time.Time } }
		getJSON(t, hs.URL+"/api/dags/runs/"+itoa(tr.RunID), &run)
		if run.Run.Finished != nil {
			return hs, tr.RunID
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %d did not finish", tr.RunID)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// TestDAGAPIFailedChecks reads a failed quality run through the run API:
// the run and its quality_checks task are failed, and the task carries
// each check with its measured value and threshold.
func TestDAGAPIFailedChecks(t *testing.T) {
	hs, id := failedQualityRun(t)
	var body struct {
		Run   struct{ State string }
		Tasks []struct {
			Task, State, Error string
			Attempts           int
			Checks             []struct {
				Name, Measured, Limit, Detail, Unit, Op string
				Passed, Skipped                         bool
				Value, Threshold                        float64
			}
		}
	}
	getJSON(t, hs.URL+"/api/dags/runs/"+itoa(id), &body)
	if body.Run.State != "failed" {
		t.Errorf("run state %q, want failed", body.Run.State)
	}
	states := map[string]string{}
	for _, task := range body.Tasks {
		states[task.Task] = task.State
		if task.Task != "quality_checks" {
			if task.Checks != nil {
				t.Errorf("%s has checks %+v", task.Task, task.Checks)
			}
			continue
		}
		if task.Attempts != 1 || !strings.Contains(task.Error, "1 of 5 quality checks failed: reject_rate 100% > 5%") {
			t.Errorf("quality_checks: %d attempt(s), error %q", task.Attempts, task.Error)
		}
		if len(task.Checks) != 5 {
			t.Fatalf("quality_checks has %d checks, want 5", len(task.Checks))
		}
		for _, c := range task.Checks {
			if c.Name == "reject_rate" {
				if c.Passed || c.Value != 1 || c.Threshold != 0.05 || c.Measured != "100%" || c.Limit != "≤ 5%" ||
					c.Unit != "ratio" || c.Op != "<=" || !strings.Contains(c.Detail, "20 record(s) rejected") {
					t.Errorf("reject_rate %+v", c)
				}
			} else if !c.Passed {
				t.Errorf("check %+v failed", c)
			}
		}
	}
	want := map[string]string{"daily_candles": "success", "quality_checks": "failed", "anomaly_summary": "success"}
	if len(states) != len(want) {
		t.Errorf("tasks %v, want %v", states, want)
	}
	for task, state := range want {
		if states[task] != state {
			t.Errorf("task %s is %q, want %q", task, states[task], state)
		}
	}
}

// TestBrowserFailedChecks shows a failed quality run in Chromium: its page
// has the table of checks with the failing one marked failed in words, and
// the jobs page paints the run red, not as a success.
func TestBrowserFailedChecks(t *testing.T) {
	hs, id := failedQualityRun(t)
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(hs.URL+"/dags/run/"+itoa(id))); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "the checks table", `window.stockpipe && window.stockpipe.loaded && !document.querySelector('#checks-panel').hidden &&
		document.querySelectorAll('#checks [data-task="quality_checks"] tbody tr').length === 5`)
	row := `document.querySelector('#checks [data-task="quality_checks"] tr[data-check="reject_rate"]')`
	cells := eval[[]string](t, ctx, `Array.from(`+row+`.cells, (c) => c.textContent.trim())`)
	if want := []string{"reject_rate", "100%", "≤ 5%", "✕ fail"}; len(cells) < 4 || !slices.Equal(cells[:4], want) {
		t.Errorf("reject_rate row %q, want it to start %q", cells, want)
	}
	if got := eval[string](t, ctx, row+`.dataset.result`); got != "fail" {
		t.Errorf("reject_rate row marked %q", got)
	}
	// No ticks are stored: candles are not reconciled with them.
	results := eval[[]string](t, ctx, `Array.from(document.querySelectorAll('#checks tbody tr'), (r) => r.dataset.check + ' ' + r.cells[3].textContent.trim())`)
	want := []string{"missing_minutes ✓ pass", "seq_order ✓ pass", "ohlc_consistency ✓ pass", "candles_match_ticks – skipped", "reject_rate ✕ fail"}
	if !slices.Equal(results, want) {
		t.Errorf("results %q, want %q", results, want)
	}
	// The failure's colour is the failed state's, not the success one's.
	colour := func(sel string) string {
		return eval[string](t, ctx, `getComputedStyle(document.querySelector('`+sel+`')).color`)
	}
	if fail, pass := colour(`tr[data-check="reject_rate"] .result .state-text`), colour(`tr[data-check="seq_order"] .result .state-text`); fail == pass {
		t.Errorf("failed and passed checks share the colour %s", fail)
	}
	if got := eval[string](t, ctx, `document.querySelector('#run-state').textContent`); got != "failed" {
		t.Errorf("run badge %q", got)
	}
	eval[bool](t, ctx, `document.querySelector('#checks-panel').scrollIntoView({ block: 'start' }) ?? true`)
	screenshot(t, ctx, "dag-run-failed-checks")

	if err := chromedp.Do(ctx, chromedp.Navigate(hs.URL+"/dags")); err != nil {
		t.Fatal(err)
	}
	sq := `document.querySelector('[data-dag="market_close"] .runs a[data-run-id="` + itoa(id) + `"]')`
	until(t, ctx, "the run's square", `window.stockpipe && window.stockpipe.loaded && `+sq+` !== null`)
	if got := eval[string](t, ctx, sq+`.dataset.state`); got != "failed" {
		t.Errorf("the run's square is %q, want failed", got)
	}
	legend := func(state string) string {
		return eval[string](t, ctx, `getComputedStyle(document.querySelector('.run-legend .run-sq[data-state="`+state+`"]')).backgroundColor`)
	}
	bg := eval[string](t, ctx, `getComputedStyle(`+sq+`).backgroundColor`)
	if bg != legend("failed") || bg == legend("success") {
		t.Errorf("the run's square is %s; failed is %s, success %s", bg, legend("failed"), legend("success"))
	}
	if mark := eval[string](t, ctx, `getComputedStyle(`+sq+`, '::after').content`); mark != `"✕"` {
		t.Errorf("the run's square is marked %s, want ✕", mark)
	}
	if n := eval[int](t, ctx, `document.querySelectorAll('[data-dag="market_close"] .runs a[data-state="success"]').length`); n != 0 {
		t.Errorf("%d market_close runs shown as successes", n)
	}
	screenshot(t, ctx, "dags-failed-checks")
}

// TestBrowserNextRunSaidOnce: a scheduled DAG's next run is shown in the
// browser's zone, and in UTC as well only where that says something else.
func TestBrowserNextRunSaidOnce(t *testing.T) {
	hs, _ := dagServer(t, "")
	for _, tc := range []struct {
		tz      string
		utcLine bool
	}{{"UTC", false}, {"America/New_York", true}} {
		ctx := browser(t)
		timezone(t, ctx, tc.tz)
		navigate(t, ctx, hs.URL+"/dags")
		until(t, ctx, "the demo DAG's next run", `window.stockpipe && window.stockpipe.loaded && document.querySelector('[data-dag="demo"] .next-local') !== null`)
		text := eval[string](t, ctx, `document.querySelector('[data-dag="demo"] .dag-facts').textContent`)
		if got := eval[bool](t, ctx, `document.querySelector('[data-dag="demo"] .next-utc') !== null`); got != tc.utcLine {
			t.Errorf("browser in %s: UTC line shown %v, want %v (facts: %q)", tc.tz, got, tc.utcLine, text)
		}
	}
}

// TestNotFoundPages: an unknown page, a run that does not exist and a
// malformed symbol get the dashboard's own 404 page, which says what was
// not found and links the way back; unknown API paths stay JSON.
func TestNotFoundPages(t *testing.T) {
	hs, _ := dagServer(t, "")
	for _, tc := range []struct{ path, says string }{
		{"/nowhere", "There is no page at /nowhere."},
		{"/dags/run/999999", "There is no run 999999"},
		{"/dags/run/abc", `"abc" is not a run`},
		{"/symbol/" + url.PathEscape("$$$"), "is not a ticker"},
	} {
		resp, err := http.Get(hs.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body := string(b)
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(resp.Header.Get("Content-Type"), "text/html") {
			t.Errorf("%s: %s %s, want a 404 page", tc.path, resp.Status, resp.Header.Get("Content-Type"))
		}
		if !strings.Contains(html.UnescapeString(body), tc.says) || !strings.Contains(body, `href="/dags"`) || !strings.Contains(body, "app.css") {
			t.Errorf("%s: the page does not say %q with the site's navigation and style:\n%s", tc.path, tc.says, body)
		}
	}
	resp, err := http.Get(hs.URL + "/api/nowhere")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(resp.Header.Get("Content-Type"), "json") {
		t.Errorf("/api/nowhere: %s %s, want a JSON 404", resp.Status, resp.Header.Get("Content-Type"))
	}
}
