package dag

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// CheckResult is one check a task carried out: kept with its task run
// (task_runs.checks) and, by the shipped DAGs, in their reports
// (quality_reports.checks, pipeline_health.checks), stored as JSON. A check
// passes when Value compares to Threshold as Op says (at most, by default),
// unless Detail says otherwise: a check that could not be carried out fails
// whatever its Value. A skipped check (nothing to check, or no broker
// configured) passes.
type CheckResult struct {
	Name      string  `json:"name"`
	Passed    bool    `json:"passed"`
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
	// Unit is UnitCount (empty), UnitRatio or UnitSeconds.
	Unit string `json:"unit,omitempty"`
	// Op is AtMost (or empty) or Equal.
	Op      string `json:"op,omitempty"`
	Detail  string `json:"detail"`
	Skipped bool   `json:"skipped,omitempty"`
}

// ErrChecksFailed is what errors.Is finds in the error of a task whose
// checks were carried out and found failures (see ChecksFailedError).
var ErrChecksFailed = errors.New("checks failed")

// Units of a check's Value and Threshold.
const (
	UnitCount   = ""        // a number of things
	UnitRatio   = "ratio"   // a share between 0 and 1, shown as a percentage
	UnitSeconds = "seconds" // a duration
)

// Comparisons a check's Value must satisfy against its Threshold to pass.
const (
	AtMost = "<=" // the default
	Equal  = "="
)

// ChecksFailedError is the verdict of a task whose checks found failures.
// It is not a fault of the task: the data was read and measured, and a
// retry would measure the same thing. The engine therefore fails the task
// at once, without retrying it, and keeps Checks with the task run.
type ChecksFailedError struct {
	// Kind names the checks in the message, as in "2 of 5 quality checks
	// failed".
	Kind string
	// Checks are all the task's checks, passed ones included.
	Checks []CheckResult
}

// Error names each failed check with its measured value against its
// threshold, on one line.
func (e *ChecksFailedError) Error() string {
	failed := e.Failed()
	parts := make([]string, len(failed))
	for i, c := range failed {
		parts[i] = c.Summary()
	}
	kind := e.Kind
	if kind != "" {
		kind += " "
	}
	return fmt.Sprintf("%d of %d %schecks failed: %s", len(failed), len(e.Checks), kind, strings.Join(parts, "; "))
}

// Is makes errors.Is(err, ErrChecksFailed) true.
func (e *ChecksFailedError) Is(target error) bool { return target == ErrChecksFailed }

// Failed returns the checks that did not pass, in their order.
func (e *ChecksFailedError) Failed() []CheckResult {
	var out []CheckResult
	for _, c := range e.Checks {
		if !c.Passed {
			out = append(out, c)
		}
	}
	return out
}

// Verdict returns a *ChecksFailedError naming the checks of the given
// kind ("quality", "health") when any of them failed, else nil: what a
// checking task returns once it has recorded its checks.
func Verdict(kind string, checks []CheckResult) error {
	for _, c := range checks {
		if !c.Passed {
			return &ChecksFailedError{Kind: kind, Checks: checks}
		}
	}
	return nil
}

// Summary describes the check in a few words: "reject_rate 8.55% > 5%"
// when its value breaks its threshold, or its name and detail when the
// check failed without a value to show for it (it could not be carried
// out).
func (c CheckResult) Summary() string {
	if c.Skipped {
		return c.Name + " skipped"
	}
	breaks := ""
	switch c.Op {
	case Equal:
		if c.Value != c.Threshold {
			breaks = "≠"
		}
	default:
		if c.Value > c.Threshold {
			breaks = ">"
		}
	}
	if breaks != "" {
		return fmt.Sprintf("%s %s %s %s", c.Name, c.FormatValue(c.Value), breaks, c.FormatValue(c.Threshold))
	}
	if c.Passed {
		return fmt.Sprintf("%s %s %s", c.Name, c.FormatValue(c.Value), c.Limit())
	}
	detail := c.Detail
	if detail == "" {
		detail = "failed"
	}
	return c.Name + ": " + detail
}

// Limit is the threshold with its comparison, as in "≤ 5%" or "= 6".
func (c CheckResult) Limit() string {
	op := "≤"
	if c.Op == Equal {
		op = "="
	}
	return op + " " + c.FormatValue(c.Threshold)
}

// FormatValue writes v in the check's unit: ratios as percentages,
// durations in seconds, counts as whole numbers where they are whole.
func (c CheckResult) FormatValue(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return strconv.FormatFloat(v, 'g', -1, 64)
	case c.Unit == UnitRatio:
		// Three significant digits keep a small rate from reading as 0%
		// against a threshold of 0%.
		return strconv.FormatFloat(v*100, 'g', 3, 64) + "%"
	case c.Unit == UnitSeconds && math.Abs(v) < 1:
		return strconv.FormatFloat(v, 'g', 2, 64) + "s"
	case c.Unit == UnitSeconds:
		return trimZeros(strconv.FormatFloat(v, 'f', 1, 64)) + "s"
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return strconv.FormatFloat(v, 'f', 0, 64)
	default:
		return strconv.FormatFloat(v, 'g', 4, 64)
	}
}

// trimZeros drops a decimal fraction's trailing zeros ("1.50" → "1.5",
// "2.0" → "2").
func trimZeros(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// PermanentError is a task's error that retrying cannot cure (bad input,
// missing data, a file that may not be read): the task fails at once,
// without using its retries, and its River job is cancelled rather than
// retried. Any other error is taken for a transient one and retried.
type PermanentError struct{ Err error }

// Permanent wraps err (nil stays nil) as a *PermanentError.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// Error is the wrapped error's message.
func (e *PermanentError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *PermanentError) Unwrap() error { return e.Err }
