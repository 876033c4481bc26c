package web_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/stockpipe/stockpipe/internal/orchestrate"
	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
	"github.com/stockpipe/stockpipe/internal/store"
	"github.com/stockpipe/stockpipe/internal/web"
)

// TestDAGAPI triggers a two-task DAG through the API (with the token) and
// follows the run to success through the run endpoint.
// dagServer starts a scheduler node with a two-task demo DAG and a server
// whose DAG pages and API use an insert-only client, as serve does.
func dagServer(t *testing.T, token string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	ctx := context.Background()
	pool, err := store.Open(ctx, pgtest.New(t), 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	log := slog.New(slog.DiscardHandler)
	if err := store.Migrate(ctx, pool, log); err != nil {
		t.Fatal(err)
	}
	if err := orchestrate.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	ran := new(atomic.Int64)
	dags := []orchestrate.DAG{{
		Name: "demo", Description: "two steps", Schedule: "30 16 * * 1-5", Location: mustLoc(t, "America/New_York"),
		Tasks: []orchestrate.Task{
			{Name: "first", Run: func(ctx context.Context, tc *orchestrate.TaskContext) error {
				ran.Add(1)
				tc.Log.Info("first ran")
				return nil
			}},
			{Name: "second", Deps: []string{"first"}, Run: func(ctx context.Context, tc *orchestrate.TaskContext) error { ran.Add(1); return nil }},
		},
	}}
	worker, err := orchestrate.New(orchestrate.Config{Pool: pool, DAGs: dags, Logger: log, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := worker.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = worker.Stop(context.Background()) })
	client, err := orchestrate.NewClient(orchestrate.Config{Pool: pool, DAGs: dags, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := web.New(web.Config{Pool: pool, Scheduler: client, AuthToken: token, RequireToken: token != "", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = srv.Run(rctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return hs, ran
}

// TestDAGAPI triggers a two-task DAG through the API (with the token) and
// follows the run to success through the run endpoint.
func TestDAGAPI(t *testing.T) {
	hs, ran := dagServer(t, "tok")
	post := func(auth, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, hs.URL+"/api/dags/demo/trigger", strings.NewReader(body))
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
