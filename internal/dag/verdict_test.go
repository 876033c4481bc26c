package dag_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/stockpipe/stockpipe/internal/dag"
)

// TestChecksFailedErrorMessage checks the one line that names each failed
// check with its value against its threshold, and that the verdict is
// found by errors.Is and errors.As.
func TestChecksFailedErrorMessage(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("quality report of 2026-11-02: %w", &dag.ChecksFailedError{Kind: "quality", Checks: []dag.CheckResult{
		{Name: "reject_rate", Value: 0.0855, Threshold: 0.01, Unit: dag.UnitRatio},
		{Name: "seq_order", Passed: true, Value: 0, Threshold: 0},
		{Name: "missing_minutes", Value: 12, Threshold: 0},
		{Name: "candles_match_ticks", Passed: true, Skipped: true, Detail: "skipped: no ticks"},
		{Name: "tick_age", Value: 0, Threshold: 300, Unit: dag.UnitSeconds, Detail: "no ticks stored"},
		{Name: "topics", Value: 3, Threshold: 6, Op: dag.Equal},
	}})
	const want = "quality report of 2026-11-02: 4 of 6 quality checks failed: reject_rate 8.55% > 1%; missing_minutes 12 > 0; " +
		"tick_age: no ticks stored; topics 3 ≠ 6"
	if err.Error() != want {
		t.Errorf("message\n %q\nwant\n %q", err, want)
	}
	if !errors.Is(err, dag.ErrChecksFailed) {
		t.Error("errors.Is(err, ErrChecksFailed) is false")
	}
	var cf *dag.ChecksFailedError
	if !errors.As(err, &cf) || len(cf.Failed()) != 4 {
		t.Errorf("errors.As found %+v", cf)
	}
	if got := (dag.CheckResult{Threshold: 0.05, Unit: dag.UnitRatio}).Limit(); got != "≤ 5%" {
		t.Errorf("limit %q", got)
	}
}

// TestVerdict checks that Verdict fails only when a check failed.
func TestVerdict(t *testing.T) {
	passed := []dag.CheckResult{{Name: "a", Passed: true}, {Name: "b", Passed: true, Skipped: true}}
	if err := dag.Verdict("quality", passed); err != nil {
		t.Errorf("all passed: %v", err)
	}
	failed := append(slices.Clone(passed), dag.CheckResult{Name: "c", Value: 2, Threshold: 1})
	var cf *dag.ChecksFailedError
	if err := dag.Verdict("quality", failed); !errors.As(err, &cf) || len(cf.Checks) != 3 || err.Error() != "1 of 3 quality checks failed: c 2 > 1" {
		t.Errorf("one failed: %v", err)
	}
}
