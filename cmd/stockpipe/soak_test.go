package main

import (
	"encoding/json"
	"testing"

	"github.com/stockpipe/stockpipe/internal/loadtest"
)

// TestShortSoakWithKills runs loadtest --soak briefly with the processor
// killed every two seconds: every tick stored once, every bad record
// rejected, the kills counted.
func TestShortSoakWithKills(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and several processes")
	}
	// The soak starts this binary's "process" command; children of the
	// test binary run the CLI when this is set.
	t.Setenv(asCLI, "1")
	code, out, errs := runCLI(t, "loadtest", "--soak", "7s", "--kill-every", "2s", "--rate", "3000",
		"--faults", "0.02", "--json", "--log-level", "warn")
	if code != 0 {
		t.Fatalf("loadtest --soak: code %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	var rep loadtest.SoakReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out)
	}
	if rep.Produced != 21_000 {
		t.Errorf("produced %d, want 21000", rep.Produced)
	}
	if rep.Kills < 3 {
		t.Errorf("processor killed %d times, want at least 3", rep.Kills)
	}
	if rep.Stored != rep.ExpectedStored || rep.ExpectedStored == 0 {
		t.Errorf("stored %d, want %d", rep.Stored, rep.ExpectedStored)
	}
	if rep.Rejected != rep.ExpectedRejected || rep.ExpectedRejected == 0 {
		t.Errorf("rejected (not late) %d, want %d", rep.Rejected, rep.ExpectedRejected)
	}
	if rep.Late != rep.ExpectedLate {
		t.Errorf("rejected as late %d, want %d", rep.Late, rep.ExpectedLate)
	}
	if !rep.Passed || len(rep.Samples) == 0 {
		t.Errorf("soak did not pass or took no samples: %+v", rep.Notes)
	}
}
