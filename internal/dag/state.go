package dag

// RunState is the state of a run, as dag_runs.state holds it.
type RunState string

// Run states.
const (
	RunQueued  RunState = "queued"  // created, no task started yet
	RunRunning RunState = "running" // some task has started
	RunSuccess RunState = "success" // every task succeeded
	RunFailed  RunState = "failed"  // some task failed for good, or its checks failed
)

// TaskState is the state of a task of a run, as task_runs.state holds it.
type TaskState string

// Task run states.
const (
	TaskWaiting        TaskState = "waiting"         // some dependency has not succeeded yet
	TaskQueued         TaskState = "queued"          // enqueued, or waiting for a retry
	TaskRunning        TaskState = "running"         // an attempt is in progress
	TaskSuccess        TaskState = "success"         // the task succeeded
	TaskFailed         TaskState = "failed"          // every attempt failed, or it failed for good (not retried)
	TaskUpstreamFailed TaskState = "upstream_failed" // a task it depends on failed
)

// RunKind is how a run came to be, as dag_runs.kind holds it. Scheduled
// runs are unique per DAG and logical date (the leader never starts a slot
// twice); every manual trigger and every date of a backfill is a run of its
// own, with its own parameters and history, however many runs its date
// already has.
type RunKind string

// Run kinds.
const (
	KindScheduled RunKind = "scheduled" // started by the leader for a schedule slot
	KindManual    RunKind = "manual"    // Trigger: the command line, the web
	KindBackfill  RunKind = "backfill"  // one date of Backfill
	// KindLegacy marks runs recorded before runs had kinds, when a date had
	// one run whoever started it; they count as their date's scheduled run.
	KindLegacy RunKind = "legacy"
)

// Task states by what they say of the run (settleRun): a run with an
// active task is not finished; one with a bad task has failed.
var (
	activeTaskStates = []TaskState{TaskWaiting, TaskQueued, TaskRunning}
	badTaskStates    = []TaskState{TaskFailed, TaskUpstreamFailed}
)

// texts converts states or kinds to the text[] a query takes.
func texts[T ~string](vs []T) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = string(v)
	}
	return out
}
