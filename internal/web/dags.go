package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/job"
)

// runJSON is a DAG run as the API shows it.
type runJSON struct {
	ID          int64     `json:"id"`
	DAG         string    `json:"dag"`
	LogicalDate time.Time `json:"logical_date"`
	State       string    `json:"state"`
	// Kind is how the run came to be: "scheduled", "manual", "backfill",
	// or "legacy" for runs recorded before runs had kinds.
	Kind string `json:"kind"`
	// Params are the parameters the run executes with: the DAG's defaults
	// as the scheduler node ParamsNode has them, overridden by
	// GivenParams. Null until the run starts.
	Params      map[string]string `json:"params"`
	GivenParams map[string]string `json:"given_params"`
	ParamsNode  string            `json:"params_node"`
	Started     *time.Time        `json:"started"`
	Finished    *time.Time        `json:"finished"`
}

// toRunJSON is r as the API shows it.
func toRunJSON(r dag.Run) runJSON {
	given := r.Given
	if given == nil {
		given = map[string]string{}
	}
	return runJSON{ID: r.ID, DAG: r.DAG, LogicalDate: r.LogicalDate.UTC(), State: string(r.State), Kind: string(r.Kind),
		Params: r.Params, GivenParams: given, ParamsNode: r.ParamsNode, Started: r.Started, Finished: r.Finished}
}

type taskJSON struct {
	Task       string     `json:"task"`
	Deps       []string   `json:"deps"`
	State      string     `json:"state"`
	Attempts   int        `json:"attempts"`
	Started    *time.Time `json:"started"`
	Finished   *time.Time `json:"finished"`
	DurationMs int64      `json:"duration_ms"`
	Error      string     `json:"error"`
	Log        string     `json:"log"`
	// Checks are the results of the checks the task carried out; null for
	// a task that checks nothing.
	Checks []checkJSON `json:"checks"`
	// Node is the scheduler node that runs (or last ran) the task;
	// Heartbeat is when it last reported the running attempt alive, and
	// HeartbeatAgeMs how long before this answer that was, by the
	// database's clock. A running task whose heartbeat is older than
	// HeartbeatTimeoutMs is taken over by a live node.
	Node               string     `json:"node"`
	Heartbeat          *time.Time `json:"heartbeat"`
	HeartbeatAgeMs     *int64     `json:"heartbeat_age_ms"`
	HeartbeatTimeoutMs int64      `json:"heartbeat_timeout_ms"`
}

// checkJSON is one check of a task run. Measured and Limit are Value and
// Threshold written as the scheduler writes them in its errors ("8.55%",
// "≤ 5%"), so that the page and the error agree.
type checkJSON struct {
	Name      string  `json:"name"`
	Passed    bool    `json:"passed"`
	Skipped   bool    `json:"skipped"`
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
	Unit      string  `json:"unit"`
	Op        string  `json:"op"`
	Measured  string  `json:"measured"`
	Limit     string  `json:"limit"`
	Detail    string  `json:"detail"`
}

// toChecksJSON is checks as the API shows them; nil stays nil.
func toChecksJSON(checks []dag.CheckResult) []checkJSON {
	if checks == nil {
		return nil
	}
	out := make([]checkJSON, len(checks))
	for i, c := range checks {
		op := c.Op
		if op == "" {
			op = dag.AtMost
		}
		out[i] = checkJSON{Name: c.Name, Passed: c.Passed, Skipped: c.Skipped, Value: c.Value, Threshold: c.Threshold,
			Unit: c.Unit, Op: op, Measured: c.FormatValue(c.Value), Limit: c.Limit(), Detail: c.Detail}
	}
	return out
}

// scheduler is the server's scheduler, or nil after answering 503 when it
// has none.
func (s *Server) scheduler(w http.ResponseWriter) *dag.Scheduler {
	if s.cfg.Scheduler == nil {
		writeError(w, http.StatusServiceUnavailable, "this server has no scheduler configured")
	}
	return s.cfg.Scheduler
}

// dag returns the scheduler's DAG named name.
func (s *Server) dag(name string) (dag.DAG, bool) {
	for _, d := range s.cfg.Scheduler.DAGs() {
		if d.Name == name {
			return d, true
		}
	}
	return dag.DAG{}, false
}

func (s *Server) apiDAGs(w http.ResponseWriter, r *http.Request) {
	sch := s.scheduler(w)
	if sch == nil {
		return
	}
	type taskDef struct {
		Name string   `json:"name"`
		Deps []string `json:"deps"`
	}
	// paramDef is a parameter's declaration: its type with its bounds, as
	// in "integer ≥ 0", its default ("" for none) and what it does.
	type paramDef struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		Default  string `json:"default"`
		Required bool   `json:"required"`
		Doc      string `json:"doc"`
	}
	type dagJSON struct {
		Name        string     `json:"name"`
		Description string     `json:"description"`
		Schedule    string     `json:"schedule"`
		TimeZone    string     `json:"timezone"`
		NextRun     *time.Time `json:"next_run"`
		// Params are the parameters' defaults by name, as this server has
		// them; ParamDefs declare them, in order.
		Params    map[string]string `json:"params"`
		ParamDefs []paramDef        `json:"param_defs"`
		Tasks     []taskDef         `json:"tasks"`
		Recent    []runJSON         `json:"recent"`
	}
	out := []dagJSON{}
	for _, d := range sch.DAGs() {
		j := dagJSON{Name: d.Name, Description: d.Description, Schedule: d.Schedule, TimeZone: "UTC", Params: d.Defaults(),
			ParamDefs: []paramDef{}, Tasks: []taskDef{}, Recent: []runJSON{}}
		if d.Location != nil {
			j.TimeZone = d.Location.String()
		}
		for _, p := range d.Params {
			j.ParamDefs = append(j.ParamDefs, paramDef{Name: p.Name, Type: p.Describe(), Default: p.Default, Required: p.Required, Doc: p.Doc})
		}
		if t, ok := sch.NextRun(d.Name, time.Now()); ok {
			t = t.UTC()
			j.NextRun = &t
		}
		for _, t := range d.Tasks {
			deps := t.Deps
			if deps == nil {
				deps = []string{}
			}
			j.Tasks = append(j.Tasks, taskDef{Name: t.Name, Deps: deps})
		}
		runs, err := sch.Runs(r.Context(), d.Name, 25)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		for i := len(runs) - 1; i >= 0; i-- {
			j.Recent = append(j.Recent, toRunJSON(runs[i]))
		}
		out = append(out, j)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) apiDAGRuns(w http.ResponseWriter, r *http.Request) {
	sch := s.scheduler(w)
	if sch == nil {
		return
	}
	name := r.URL.Query().Get("dag")
	if name != "" {
		if _, ok := s.dag(name); !ok {
			writeError(w, http.StatusNotFound, "no DAG named "+strconv.Quote(name))
			return
		}
	}
	limit, err := limitParam(r, 50, 500)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	runs, err := sch.Runs(r.Context(), name, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := []runJSON{}
	for _, run := range runs {
		out = append(out, toRunJSON(run))
	}
	writeJSON(w, http.StatusOK, map[string]any{"runs": out})
}

func (s *Server) apiDAGRun(w http.ResponseWriter, r *http.Request) {
	sch := s.scheduler(w)
	if sch == nil {
		return
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, "run id "+strconv.Quote(r.PathValue("id"))+" is not a positive integer")
		return
	}
	run, tasks, err := sch.Run(r.Context(), id)
	if err != nil {
		if errors.Is(err, dag.ErrRunNotFound) {
			writeError(w, http.StatusNotFound, "no run "+strconv.FormatInt(id, 10))
			return
		}
		s.fail(w, r, err)
		return
	}
	deps := map[string][]string{}
	if d, ok := s.dag(run.DAG); ok {
		for _, t := range d.Tasks {
			deps[t.Name] = t.Deps
		}
	}
	out := []taskJSON{}
	for _, t := range tasks {
		d := deps[t.Task]
		if d == nil {
			d = []string{}
		}
		tj := taskJSON{Task: t.Task, Deps: d, State: string(t.State), Attempts: t.Attempts, Started: t.Started,
			Finished: t.Finished, DurationMs: t.Duration.Milliseconds(), Error: t.Error, Log: t.Log, Checks: toChecksJSON(t.Checks),
			Node: t.Node, Heartbeat: t.Heartbeat, HeartbeatTimeoutMs: dag.DefaultHeartbeatTimeout.Milliseconds()}
		if t.Heartbeat != nil {
			age := t.HeartbeatAge.Milliseconds()
			tj.HeartbeatAgeMs = &age
		}
		out = append(out, tj)
	}
	writeJSON(w, http.StatusOK, map[string]any{"run": toRunJSON(run), "tasks": out})
}

func (s *Server) apiTrigger(w http.ResponseWriter, r *http.Request) {
	sch := s.scheduler(w)
	if sch == nil {
		return
	}
	name := r.PathValue("name")
	d, ok := s.dag(name)
	if !ok {
		writeError(w, http.StatusNotFound, "no DAG named "+strconv.Quote(name))
		return
	}
	var body struct {
		Date   string            `json:"date"`
		Params map[string]string `json:"params"`
	}
	if r.ContentLength != 0 {
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			writeError(w, http.StatusBadRequest, "the body must be JSON like {\"date\":\"2026-11-02\",\"params\":{}}")
			return
		}
	}
	loc := d.Location
	if loc == nil {
		loc = time.UTC
	}
	logical := time.Now().In(loc)
	logical = time.Date(logical.Year(), logical.Month(), logical.Day(), 0, 0, 0, 0, loc)
	if body.Date != "" {
		t, err := time.ParseInLocation("2006-01-02", body.Date, loc)
		if err != nil {
			writeError(w, http.StatusBadRequest, "date "+strconv.Quote(body.Date)+" is not a date like 2026-11-02")
			return
		}
		logical = t
	}
	if code, msg := s.checkWebParams(r, d, body.Params); code != 0 {
		writeError(w, code, msg)
		return
	}
	id, err := sch.Trigger(r.Context(), name, logical, body.Params)
	var bad *dag.ParamError
	if errors.As(err, &bad) {
		// Checked above already; the scheduler's DAG is the authority.
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("DAG triggered from the web", "dag", name, "date", logical.Format("2006-01-02"), "run", id)
	writeJSON(w, http.StatusAccepted, map[string]int64{"run_id": id})
}

// watchRuns publishes a "dagrun" event for every run whose state or tasks
// changed, looking every two seconds: runs change a few times a minute at
// most, and other scheduler nodes may be running them. It looks at runs that
// are active or changed in the last ten minutes, whatever their logical date
// (a backfill of last year is as live as today's run), and includes the
// task states so a run page follows each task.
func (s *Server) watchRuns(ctx context.Context) {
	sch := s.cfg.Scheduler
	if sch == nil {
		return
	}
	seen := map[int64]string{}
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for first := true; ; first = false {
		// Read straight from the scheduler's history table: the
		// scheduler's own listing is by logical date, not by change.
		rows, err := s.cfg.Pool.Query(ctx, `SELECT id FROM dag_runs
			WHERE state IN ($1, $2) OR created_at > now() - interval '10 minutes'
			   OR finished_at > now() - interval '10 minutes'
			ORDER BY id DESC LIMIT 200`, dag.RunQueued, dag.RunRunning)
		var ids []int64
		if err == nil {
			ids, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			s.log.Debug("watching DAG runs", "err", err)
		}
		prev := seen
		seen = make(map[int64]string, len(ids)) // forget runs that went quiet
		for _, id := range ids {
			run, tasks, err := sch.Run(ctx, id)
			if err != nil {
				continue
			}
			j := toRunJSON(run)
			key := j.State
			if j.Started != nil {
				key += j.Started.String()
			}
			if j.Finished != nil {
				key += j.Finished.String()
			}
			for _, tr := range tasks {
				key += "|" + tr.Task + ":" + string(tr.State) + ":" + strconv.Itoa(tr.Attempts) + ":" + tr.Node
				// A running task's page shows how recently its node
				// reported: each heartbeat is news, and so is its absence
				// (the page counts the age on from the last one).
				if tr.State == dag.TaskRunning && tr.Heartbeat != nil {
					key += "@" + tr.Heartbeat.String()
				}
			}
			if run.Params != nil {
				key += "|params"
			}
			seen[id] = key
			if prev[id] == key || first {
				continue
			}
			if data, err := json.Marshal(j); err == nil {
				s.hub.publish(&message{event: "dagrun", frame: frame("dagrun", data)})
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) dagsPage(w http.ResponseWriter, _ *http.Request) {
	s.render(w, http.StatusOK, "dags.html", struct{ Title, Version string }{"stockpipe — DAGs", s.cfg.Version})
}

func (s *Server) runPage(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		s.notFound(w, fmt.Sprintf("%q is not a run: runs are numbered 1, 2, 3…", r.PathValue("id")))
		return
	}
	if sch := s.cfg.Scheduler; sch != nil {
		if _, _, err := sch.Run(r.Context(), id); errors.Is(err, dag.ErrRunNotFound) {
			s.notFound(w, fmt.Sprintf("There is no run %d (yet): the DAGs page lists the runs there are.", id))
			return
		}
		// Any other error is the page's to show: it reads the run itself.
	}
	s.render(w, http.StatusOK, "run.html", struct {
		Title, Version string
		RunID          int64
	}{"stockpipe — run " + strconv.FormatInt(id, 10), s.cfg.Version, id})
}

// minWebRetention is the shortest retention a page may ask for without the
// server's token: shorter would let one click delete the day's history.
const minWebRetention = time.Hour

// checkWebParams refuses, before any run exists, parameters the DAG cannot
// take (an unknown name, a value not of its parameter's type or out of its
// bounds: 400, naming the parameter), and those the web may not set: a
// file to replay that is not below the server's replay directory (or any
// file, without one), and a retention under minWebRetention without the
// token. It returns the status and message to answer, or 0.
func (s *Server) checkWebParams(r *http.Request, d dag.DAG, params map[string]string) (int, string) {
	p, err := d.ParseParams(params)
	if err != nil {
		return http.StatusBadRequest, err.Error()
	}
	if _, ok := d.Param("file"); ok && p.Given("file") {
		if s.cfg.ReplayDir == "" {
			return http.StatusForbidden, "a file to replay cannot be named from the web unless the server has a replay directory " +
				"(--replay-dir DIR), and then only a file below it; from the command line: stockpipe dag trigger backfill --param file=…"
		}
		f, err := job.OpenReplayFile(s.cfg.ReplayDir, p.String("file"))
		if err != nil {
			if errors.Is(err, job.ErrOutsideReplayDir) {
				return http.StatusForbidden, err.Error()
			}
			return http.StatusBadRequest, err.Error()
		}
		f.Close()
	}
	if dp, ok := d.Param("retention"); ok && dp.Type.String() == dag.Duration.String() && p.Given("retention") {
		if keep := p.Duration("retention"); keep < minWebRetention && !s.hasToken(r) {
			return http.StatusForbidden, fmt.Sprintf("a retention under %v deletes recent history: from the web it needs the server's token (--auth-token); "+
				"from the command line: stockpipe dag trigger retention --param retention=%s", minWebRetention, p.String("retention"))
		}
	}
	return 0, ""
}
