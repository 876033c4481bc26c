package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/job"
	"github.com/stockpipe/stockpipe/internal/kafka"
)

// schedFlags configure the shipped DAGs; shared by scheduler, dag and up.
type schedFlags struct {
	retention  time.Duration
	partitions int
	group      string
	replayDir  string
	archiveDir string
}

func (f *schedFlags) register(c *command, withPartitions bool) {
	c.fs.DurationVar(&f.retention, "retention", 7*24*time.Hour, "how long the retention DAG keeps raw ticks (candles are kept)")
	c.fs.StringVar(&f.replayDir, "replay-dir", "", "directory below which the backfill DAG's file parameter must lie; the web may name a file only if this is set")
	c.fs.StringVar(&f.archiveDir, "archive-dir", "", "before dropping a day of ticks, write it and its candles to Parquet under DIR "+
		"(DIR/ticks/date=YYYY-MM-DD/part-0.parquet, DIR/candles/…; replay them with replay --parquet); empty: no archive")
	if withPartitions {
		c.fs.IntVar(&f.partitions, "partitions", 6, "partition count the health DAG expects of the ticks topic")
	}
	if c.fs.Lookup("group") == nil {
		c.fs.StringVar(&f.group, "group", "stockpipe", "the processors' consumer group, for the health DAG's lag check")
	}
}

// dags are the shipped DAGs as these flags configure them. log, if not
// nil, is told what the DAGs' helpers outside the engine did (the archive).
func (f *schedFlags) dags(pool *pgxpool.Pool, kcfg kafka.Config, group string, log *slog.Logger) []dag.DAG {
	if f.partitions == 0 {
		f.partitions = 6
	}
	if group == "" {
		group = f.group
	}
	return job.Shipped(job.Deps{Pool: pool, Kafka: kcfg, Group: group,
		Partitions: int32(f.partitions), Retention: f.retention, ReplayDir: f.replayDir, PullTrades: alpacaPuller(kcfg),
		Archive: archiver(pool, f.archiveDir, log)})
}

// config is a scheduler's configuration with the shipped DAGs.
func (f *schedFlags) config(pool *pgxpool.Pool, kcfg kafka.Config, group string, log *slog.Logger) dag.Config {
	return dag.Config{Pool: pool, DAGs: f.dags(pool, kcfg, group, log), Logger: log}
}

func schedulerCommand() *command {
	c := newCommand("scheduler", "run the batch DAGs (daily candles, data quality, retention, health, backfill)",
		"stockpipe scheduler --database-url postgres://stockpipe@127.0.0.1:5432/stockpipe --brokers 127.0.0.1:9092")
	url := c.fs.String("database-url", "", "PostgreSQL URL (or DATABASE_URL)")
	var kf kafkaFlags
	kf.register(c.fs, "Kafka brokers, for the health and CSV-backfill DAGs (optional)")
	var sf schedFlags
	sf.register(c, true)
	var pr peer
	pr.register(c)
	c.run = func(rc *runCtx) error {
		if err := pr.brokers(rc, &kf, false); err != nil {
			return err
		}
		kcfg, err := optionalKafka(rc, &kf, "stockpipe-scheduler")
		if err != nil {
			return err
		}
		dbURL, err := pr.databaseURL(rc, *url)
		if err != nil {
			return err
		}
		pool, err := openDB(rc, dbURL, 8)
		if err != nil {
			return err
		}
		defer pool.Close()
		return runScheduler(rc, sf.config(pool, kcfg, "", rc.log))
	}
	return c
}

// runScheduler runs a scheduler node until rc.ctx ends.
func runScheduler(rc *runCtx, cfg dag.Config) error {
	s, err := dag.New(cfg)
	if err != nil {
		return err
	}
	if err := s.Start(rc.ctx); err != nil {
		if rc.ctx.Err() != nil {
			return nil // interrupted while starting: nothing to stop
		}
		return err
	}
	<-rc.ctx.Done()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(rc.ctx), 10*time.Second)
	defer cancel()
	return s.Stop(ctx)
}

func optionalKafka(rc *runCtx, kf *kafkaFlags, clientID string) (kafka.Config, error) {
	if kf.brokers == "" {
		return kafka.Config{}, nil
	}
	return kf.config(rc, clientID)
}

func dagCommand() *command {
	c := newCommand("dag", "list, trigger and inspect the batch DAGs",
		"stockpipe dag trigger market_close --date 2026-11-02 --database-url postgres://…")
	c.usage = "list | trigger NAME [--date D] [--param k=v]… | runs [NAME] | backfill NAME --from D --to D"
	c.positional = true
	url := c.fs.String("database-url", "", "PostgreSQL URL (or DATABASE_URL)")
	dbWait := c.fs.Duration("db-wait", time.Minute, "how long to wait for an unreachable PostgreSQL before giving up (0 = until interrupted)")
	var kf kafkaFlags
	kf.register(c.fs, "Kafka brokers, passed to runs that need them (optional)")
	date := c.fs.String("date", "", "logical date of the run, YYYY-MM-DD (default: today in the DAG's time zone)")
	from := c.fs.String("from", "", "first logical date of a backfill, YYYY-MM-DD")
	to := c.fs.String("to", "", "last logical date of a backfill, YYYY-MM-DD")
	limit := c.fs.Int("limit", 20, "runs to list")
	var params paramList
	c.fs.Var(&params, "param", "run parameter k=v (repeatable)")
	var sf schedFlags
	sf.register(c, false)
	// A run takes its defaults from the scheduler node that executes it:
	// here --retention, when given on the command line, only gives the
	// run's retention parameter (see runParams).
	var pr peer
	pr.register(c)
	c.run = func(rc *runCtx) error {
		args := c.args
		if len(args) == 0 {
			return errors.New("dag: say what to do: list, trigger NAME, runs [NAME] or backfill NAME (see 'stockpipe dag --help')")
		}
		verb, rest := args[0], args[1:]
		name := ""
		if len(rest) > 0 {
			name = rest[0]
		}
		switch verb {
		case "list", "runs":
		case "trigger", "backfill":
			if name == "" {
				return fmt.Errorf("dag %s: which DAG? (stockpipe dag list shows them)", verb)
			}
		default:
			return fmt.Errorf("dag: unknown action %q: use list, trigger, runs or backfill", verb)
		}
		if err := pr.brokers(rc, &kf, false); err != nil {
			return err
		}
		kcfg, err := optionalKafka(rc, &kf, "stockpipe-dag")
		if err != nil {
			return err
		}
		// What is asked of a DAG is checked before the database is: a
		// misspelt name or a bad value is a one-line answer at once, not
		// after waiting --db-wait for an unreachable PostgreSQL.
		d, known := findDAG(sf.dags(nil, kcfg, "", nil), name)
		if name != "" && !known {
			return fmt.Errorf("dag %s: no DAG named %q (stockpipe dag list shows them)", verb, name)
		}
		var (
			date0, from0, to0 time.Time
		)
		switch verb {
		case "trigger":
			if err := runParams(c, d, &params, sf.retention); err != nil {
				return fmt.Errorf("dag %s: %w", verb, err)
			}
			if date0, err = parseDate(*date, "--date", d); err != nil {
				return err
			}
			if file := params.m["file"]; file != "" && sf.replayDir != "" {
				f, err := job.OpenReplayFile(sf.replayDir, file)
				if err != nil {
					return fmt.Errorf("--param file: %w", err)
				}
				f.Close()
			}
		case "backfill":
			if err := runParams(c, d, &params, sf.retention); err != nil {
				return fmt.Errorf("dag %s: %w", verb, err)
			}
			if *from == "" || *to == "" {
				return errors.New("dag backfill: --from and --to are required (YYYY-MM-DD)")
			}
			if from0, err = parseDate(*from, "--from", d); err != nil {
				return err
			}
			if to0, err = parseDate(*to, "--to", d); err != nil {
				return err
			}
			if to0.Before(from0) {
				return errors.New("dag backfill: --to is before --from")
			}
		}
		dbURL, err := pr.databaseURL(rc, *url)
		if err != nil {
			return err
		}
		pool, err := openDBWithin(rc, dbURL, 2, *dbWait)
		if err != nil {
			return err
		}
		defer pool.Close()
		s, err := dag.NewClient(sf.config(pool, kcfg, "", rc.log))
		if err != nil {
			return err
		}
		switch verb {
		case "list":
			return listDAGs(rc, s)
		case "runs":
			return listRuns(rc, s, name, *limit)
		case "trigger":
			id, err := s.Trigger(rc.ctx, name, date0, params.m)
			if err != nil {
				return fmt.Errorf("dag trigger: %w", err)
			}
			fmt.Fprintf(rc.stdout, "triggered %s for %s: run %d (a running scheduler executes it, with %s)\n",
				name, date0.Format("2006-01-02"), id, describeGiven(params.m))
			return nil
		default: // backfill
			ids, err := s.Backfill(rc.ctx, name, from0, to0, params.m)
			if err != nil {
				return fmt.Errorf("dag backfill: %w", err)
			}
			fmt.Fprintf(rc.stdout, "queued %d runs of %s from %s to %s: %v (new runs, with %s)\n",
				len(ids), name, *from, *to, ids, describeGiven(params.m))
			return nil
		}
	}
	return c
}

// runParams checks the parameters given for a run of d as the DAG
// declares them — each name one it has (a misspelt one would otherwise be
// ignored), each value of its type and within its bounds — as Trigger
// will, but before the database is opened. --retention on the command
// line gives the retention parameter.
func runParams(c *command, d dag.DAG, params *paramList, retention time.Duration) error {
	explicit := false
	c.fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "retention" })
	if explicit {
		if _, ok := d.Param("retention"); !ok {
			return fmt.Errorf("--retention: DAG %s has no retention parameter", d.Name)
		}
		if v, ok := params.m["retention"]; ok && v != retention.String() {
			if keep, err := time.ParseDuration(v); err != nil || keep != retention {
				return fmt.Errorf("--retention %s and --param retention=%s disagree", retention, v)
			}
		}
		if err := params.Set("retention=" + retention.String()); err != nil {
			return err
		}
	}
	_, err := d.ParseParams(params.m)
	return err
}

// describeGiven says what a run was given, for the trigger's answer.
func describeGiven(given map[string]string) string {
	if len(given) == 0 {
		return "the DAG's defaults as that scheduler has them"
	}
	return formatParams(given) + " over that scheduler's defaults"
}

// formatParams writes parameters as k=v,k=v in name order.
func formatParams(p map[string]string) string {
	kv := make([]string, 0, len(p))
	for _, k := range slices.Sorted(maps.Keys(p)) {
		kv = append(kv, k+"="+p[k])
	}
	return strings.Join(kv, ",")
}

// findDAG returns the DAG of dags named name.
func findDAG(dags []dag.DAG, name string) (dag.DAG, bool) {
	for _, d := range dags {
		if d.Name == name {
			return d, true
		}
	}
	return dag.DAG{}, false
}

// parseDate reads YYYY-MM-DD as midnight in the DAG's zone; empty is today.
func parseDate(s, flag string, d dag.DAG) (time.Time, error) {
	loc := d.Location
	if loc == nil {
		loc = time.UTC
	}
	if s == "" {
		y, m, dd := time.Now().In(loc).Date()
		return time.Date(y, m, dd, 0, 0, 0, 0, loc), nil
	}
	t, err := time.ParseInLocation("2006-01-02", s, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q is not a date like 2026-11-02", flag, s)
	}
	return t, nil
}

// listDAGs prints the DAGs — schedule, next run, tasks — and then the
// parameters each takes, with their types, bounds and defaults (as this
// process has them; a run takes those of the scheduler that executes it).
func listDAGs(rc *runCtx, s *dag.Scheduler) error {
	w := tabwriter.NewWriter(rc.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "DAG\tSCHEDULE\tNEXT RUN\tTASKS\tDESCRIPTION")
	for _, d := range s.DAGs() {
		sched, next := "manual", "-"
		if d.Schedule != "" {
			loc := "UTC"
			if d.Location != nil {
				loc = d.Location.String()
			}
			sched = d.Schedule + " (" + loc + ")"
			if t, ok := s.NextRun(d.Name, time.Now()); ok {
				next = t.Format("2006-01-02 15:04 MST")
			}
		}
		var tasks []string
		for _, t := range d.Tasks {
			tasks = append(tasks, t.Name)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", d.Name, sched, next, strings.Join(tasks, " → "), d.Description)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(rc.stdout, "\nParameters (--param NAME=VALUE):")
	w = tabwriter.NewWriter(rc.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "DAG\tPARAMETER\tTYPE\tDEFAULT\tMEANING")
	for _, d := range s.DAGs() {
		for _, p := range d.Params {
			def := p.Default
			if def == "" {
				def = "-"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", d.Name, p.Name, p.Describe(), def, p.Doc)
		}
	}
	return w.Flush()
}

// listRuns prints the runs of dag (all DAGs for ""), newest first: how
// each came to be (KIND), its tasks' states — a running task with the node
// running it and how long ago that node last reported — and the parameters
// it runs with.
func listRuns(rc *runCtx, s *dag.Scheduler, name string, limit int) error {
	runs, err := s.Runs(rc.ctx, name, limit)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(rc.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "RUN\tDAG\tLOGICAL DATE\tSTATE\tKIND\tSTARTED\tTOOK\tTASKS\tPARAMS\tERROR")
	for _, r := range runs {
		_, tasks, err := s.Run(rc.ctx, r.ID)
		if err != nil {
			return err
		}
		var ts []string
		// The first failed task's error says why the run failed: a
		// failure, or the checks that failed with their values.
		why := ""
		for _, t := range tasks {
			ts = append(ts, describeTask(t))
			if why == "" && t.State == dag.TaskFailed {
				why = t.Task + ": " + strings.Join(strings.Fields(t.Error), " ")
			}
		}
		started, took := "-", "-"
		if r.Started != nil {
			started = r.Started.Local().Format("2006-01-02 15:04:05")
			if r.Finished != nil {
				took = r.Finished.Sub(*r.Started).Round(time.Millisecond).String()
			}
		}
		kind := string(r.Kind)
		if r.Kind == dag.KindLegacy {
			kind = "-" // recorded before runs had kinds
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.DAG, r.LogicalDate.Format("2006-01-02 15:04"), r.State, kind,
			started, took, strings.Join(ts, " "), describeRunParams(r), why)
	}
	return w.Flush()
}

// describeTask is a task's name and state, with its attempts when there
// were several and, while it runs, the node running it and the age of its
// heartbeat.
func describeTask(t dag.TaskRun) string {
	var notes []string
	if t.State == dag.TaskRunning {
		beat := "no heartbeat yet"
		if t.Heartbeat != nil {
			beat = "heartbeat " + t.HeartbeatAge.Round(time.Second).String() + " ago"
			if t.HeartbeatAge > dag.DefaultHeartbeatTimeout {
				beat += ", node presumed stopped: another node takes it over"
			}
		}
		notes = append(notes, "on "+t.Node, beat)
	}
	if t.Attempts > 1 {
		notes = append(notes, fmt.Sprintf("attempt %d", t.Attempts))
	}
	if len(notes) == 0 {
		return t.Task + ":" + string(t.State)
	}
	return t.Task + ":" + string(t.State) + "[" + strings.Join(notes, ", ") + "]"
}

// describeRunParams is the parameters the run executes with, or, before
// it starts, those it was given and that the defaults of the scheduler
// that starts it are still to come.
func describeRunParams(r dag.Run) string {
	switch {
	case r.Params != nil && len(r.Params) == 0:
		return "-"
	case r.Params != nil:
		return formatParams(r.Params)
	case len(r.Given) == 0:
		return "(defaults when it starts)"
	default:
		return formatParams(r.Given) + ",(defaults when it starts)"
	}
}

// paramList collects repeated --param k=v flags.
type paramList struct{ m map[string]string }

func (p *paramList) String() string {
	var kv []string
	for k, v := range p.m {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}

func (p *paramList) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q is not k=v", s)
	}
	if p.m == nil {
		p.m = map[string]string{}
	}
	p.m[k] = v
	return nil
}
