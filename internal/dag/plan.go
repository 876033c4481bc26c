package dag

import (
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// defaultTaskTimeout bounds an attempt of a task whose Timeout is zero.
const defaultTaskTimeout = 10 * time.Minute

// cronStarBit is the bit robfig/cron sets in a field that was written as
// "*"; it is not a value of the field.
const cronStarBit = 1 << 63

// dagPlan is a validated DAG with what the engine derives from it.
type dagPlan struct {
	DAG
	loc *time.Location
	// sched is nil for a DAG that only runs when triggered.
	sched *cron.SpecSchedule
	// daily is true when the schedule fires at most once a day (one minute
	// and one hour), so that a run's logical date is the slot's date.
	daily bool
	// order lists the tasks so that every task comes after its deps.
	order []string
	tasks map[string]*taskPlan
	roots []string
}

// taskPlan is a task with its place in the DAG.
type taskPlan struct {
	Task
	pos        int
	dependents []string
}

// planDAGs validates dags and plans each one. The error lists every
// problem found.
func planDAGs(dags []DAG) (map[string]*dagPlan, error) {
	plans := make(map[string]*dagPlan, len(dags))
	var errs []error
	for i, d := range dags {
		p, err := planDAG(d)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if d.Name == "" {
			errs = append(errs, fmt.Errorf("DAG #%d has no name", i+1))
			continue
		}
		if _, dup := plans[d.Name]; dup {
			errs = append(errs, fmt.Errorf("DAG %q is defined twice", d.Name))
			continue
		}
		plans[d.Name] = p
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("invalid DAGs: %w", err)
	}
	return plans, nil
}

// planDAG validates one DAG — its name, tasks, dependencies, parameter
// declarations and schedule — and plans it.
func planDAG(d DAG) (*dagPlan, error) {
	name := d.Name
	if name == "" {
		name = "(unnamed)"
	}
	if strings.TrimSpace(d.Name) != d.Name || strings.ContainsAny(d.Name, " \t\n") {
		return nil, fmt.Errorf("DAG %q: the name must not contain spaces", d.Name)
	}
	p := &dagPlan{DAG: d, loc: d.Location, tasks: make(map[string]*taskPlan, len(d.Tasks))}
	if p.loc == nil {
		p.loc = time.UTC
	}
	var errs []error
	if len(d.Tasks) == 0 {
		errs = append(errs, fmt.Errorf("DAG %q has no tasks", name))
	}
	for i, t := range d.Tasks {
		switch {
		case t.Name == "":
			errs = append(errs, fmt.Errorf("DAG %q: task #%d has no name", name, i+1))
			continue
		case p.tasks[t.Name] != nil:
			errs = append(errs, fmt.Errorf("DAG %q: task %q is defined twice", name, t.Name))
			continue
		case t.Run == nil:
			errs = append(errs, fmt.Errorf("DAG %q: task %q has no Run function", name, t.Name))
		case t.Retries < 0:
			errs = append(errs, fmt.Errorf("DAG %q: task %q has negative Retries %d", name, t.Name, t.Retries))
		case t.Timeout < 0:
			errs = append(errs, fmt.Errorf("DAG %q: task %q has negative Timeout %s", name, t.Name, t.Timeout))
		}
		p.tasks[t.Name] = &taskPlan{Task: t}
	}
	for _, t := range d.Tasks {
		if t.Name == "" {
			continue
		}
		for _, dep := range t.Deps {
			switch {
			case dep == t.Name:
				errs = append(errs, fmt.Errorf("DAG %q: task %q depends on itself", name, t.Name))
			case p.tasks[dep] == nil:
				errs = append(errs, fmt.Errorf("DAG %q: task %q depends on unknown task %q", name, t.Name, dep))
			}
		}
	}
	seen := map[string]bool{}
	for _, dp := range d.Params {
		if err := dp.checkDecl(); err != nil {
			errs = append(errs, fmt.Errorf("DAG %q: %w", name, err))
		}
		if seen[dp.Name] {
			errs = append(errs, fmt.Errorf("DAG %q: parameter %q is declared twice", name, dp.Name))
		}
		seen[dp.Name] = true
		// A scheduled run is given nothing: it must be able to run on the
		// defaults.
		if dp.Required && strings.TrimSpace(dp.Default) == "" && d.Schedule != "" {
			errs = append(errs, fmt.Errorf("DAG %q: parameter %s is required and has no default, but scheduled runs are given none", name, dp.Name))
		}
	}
	if len(errs) == 0 {
		if err := p.sortTasks(); err != nil {
			errs = append(errs, fmt.Errorf("DAG %q: %w", name, err))
		}
	}
	if d.Schedule != "" {
		if err := p.parseSchedule(); err != nil {
			errs = append(errs, fmt.Errorf("DAG %q: %w", name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// sortTasks orders the tasks by dependency (keeping the definition order
// where it is free) and finds each task's dependents, or reports a cycle.
func (p *dagPlan) sortTasks() error {
	indeg := make(map[string]int, len(p.Tasks))
	for _, t := range p.Tasks {
		seen := map[string]bool{}
		for _, dep := range t.Deps {
			if seen[dep] {
				continue
			}
			seen[dep] = true
			indeg[t.Name]++
			p.tasks[dep].dependents = append(p.tasks[dep].dependents, t.Name)
		}
	}
	done := make(map[string]bool, len(p.Tasks))
	for len(p.order) < len(p.Tasks) {
		progressed := false
		for _, t := range p.Tasks {
			if done[t.Name] || indeg[t.Name] > 0 {
				continue
			}
			done[t.Name] = true
			progressed = true
			p.tasks[t.Name].pos = len(p.order)
			p.order = append(p.order, t.Name)
			if len(t.Deps) == 0 {
				p.roots = append(p.roots, t.Name)
			}
			for _, dn := range p.tasks[t.Name].dependents {
				indeg[dn]--
			}
		}
		if !progressed {
			return fmt.Errorf("tasks form a cycle: %s", p.findCycle(done))
		}
	}
	return nil
}

// findCycle describes one dependency cycle among the tasks not in done.
func (p *dagPlan) findCycle(done map[string]bool) string {
	const (
		unvisited = iota
		onPath
		finished
	)
	state := map[string]int{}
	var path []string
	var cycle []string
	var visit func(string) bool
	visit = func(n string) bool {
		state[n] = onPath
		path = append(path, n)
		for _, dep := range p.tasks[n].Deps {
			if done[dep] {
				continue
			}
			switch state[dep] {
			case onPath:
				for i, m := range path {
					if m == dep {
						cycle = append(append([]string{}, path[i:]...), dep)
						return true
					}
				}
			case unvisited:
				if visit(dep) {
					return true
				}
			}
		}
		path = path[:len(path)-1]
		state[n] = finished
		return false
	}
	for _, t := range p.Tasks {
		if !done[t.Name] && state[t.Name] == unvisited && visit(t.Name) {
			// Deps point upstream; show the cycle in run order.
			for i, j := 0, len(cycle)-1; i < j; i, j = i+1, j-1 {
				cycle[i], cycle[j] = cycle[j], cycle[i]
			}
			return strings.Join(cycle, " → ")
		}
	}
	return "(unknown)"
}

// parseSchedule reads the DAG's cron expression in its Location.
func (p *dagPlan) parseSchedule() error {
	spec := strings.TrimSpace(p.Schedule)
	if strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") {
		return fmt.Errorf("schedule %q: set the DAG's Location instead of a TZ= prefix", p.Schedule)
	}
	s, err := cron.ParseStandard(spec)
	if err != nil {
		return fmt.Errorf("schedule %q is not a five-field cron expression (minute hour day-of-month month day-of-week, e.g. \"30 16 * * 1-5\"): %w", p.Schedule, err)
	}
	ss, ok := s.(*cron.SpecSchedule)
	if !ok {
		return fmt.Errorf("schedule %q is not a calendar schedule; use a five-field cron expression such as \"*/5 * * * *\"", p.Schedule)
	}
	c := *ss
	c.Location = p.loc
	p.sched = &c
	p.daily = bits.OnesCount64(c.Minute&^cronStarBit) == 1 && bits.OnesCount64(c.Hour&^cronStarBit) == 1
	return nil
}

// next is the first slot strictly after t, in the DAG's Location; false
// for a DAG without schedule or a schedule that never fires.
func (p *dagPlan) next(t time.Time) (time.Time, bool) {
	if p.sched == nil {
		return time.Time{}, false
	}
	n := p.sched.Next(t)
	if n.IsZero() {
		return time.Time{}, false
	}
	return n.In(p.loc), true
}

// logicalDate maps a moment to the logical date of the run it belongs to:
// midnight in the DAG's Location for daily and triggered-only DAGs, the
// moment itself (to the minute) for sub-daily schedules.
func (p *dagPlan) logicalDate(t time.Time) time.Time {
	t = t.In(p.loc)
	if p.sched != nil && !p.daily {
		return t.Truncate(time.Minute)
	}
	return midnight(t)
}

// midnight is the start of t's day in t's location.
func midnight(t time.Time) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, t.Location())
}

// downstream lists every task that depends, directly or not, on task.
func (p *dagPlan) downstream(task string) []string {
	var out []string
	seen := map[string]bool{task: true}
	queue := []string{task}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		for _, dn := range p.tasks[n].dependents {
			if !seen[dn] {
				seen[dn] = true
				out = append(out, dn)
				queue = append(queue, dn)
			}
		}
	}
	return out
}

// timeout is the bound of one attempt of task.
func (t *taskPlan) timeout() time.Duration {
	if t.Timeout > 0 {
		return t.Timeout
	}
	return defaultTaskTimeout
}
