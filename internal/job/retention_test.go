package job

import (
	"slices"
	"testing"
	"time"
)

func TestDAGRetention(t *testing.T) {
	t.Parallel()
	e := newDagsEnv(t, Deps{Retention: 24 * time.Hour})
	e.simulate(sixDays()...)
	// Rejected records: half received long ago, half now.
	e.exec(`UPDATE rejected_ticks SET received_at = '2026-11-03 15:00:00+00' WHERE id % 2 = 0`)
	logical := dagsDate(7)
	cutoff := dagsDate(6) // one day before the logical date
	ticksKept := e.count(`SELECT count(*) FROM ticks WHERE ts >= $1`, cutoff)
	ticksOld := e.count(`SELECT count(*) FROM ticks WHERE ts < $1`, cutoff)
	rejKept := e.count(`SELECT count(*) FROM rejected_ticks WHERE received_at >= $1`, cutoff)
	rejOld := e.count(`SELECT count(*) FROM rejected_ticks WHERE received_at < $1`, cutoff)
	candles := e.dump(`SELECT * FROM candles ORDER BY symbol, interval, bucket`)
	if ticksKept == 0 || ticksOld == 0 || rejKept == 0 || rejOld == 0 {
		t.Fatalf("fixture: %d/%d ticks, %d/%d rejected kept/old", ticksKept, ticksOld, rejKept, rejOld)
	}

	// Small batches, so that deleting takes many statements.
	e.run(DAGRetention, logical, map[string]string{"batch_size": "1000"})
	if n := e.count(`SELECT count(*) FROM ticks WHERE ts < $1`, cutoff); n != 0 {
		t.Errorf("%d ticks older than the cutoff remain", n)
	}
	if n := e.count(`SELECT count(*) FROM ticks`); n != ticksKept {
		t.Errorf("%d ticks remain, want the %d since the cutoff", n, ticksKept)
	}
	if n := e.count(`SELECT count(*) FROM rejected_ticks`); n != rejKept {
		t.Errorf("%d rejected records remain, want %d", n, rejKept)
	}
	if got := e.dump(`SELECT * FROM candles ORDER BY symbol, interval, bucket`); !slices.Equal(got, candles) {
		t.Error("retention changed the candles")
	}
	if n := e.count(`SELECT count(*) FROM pg_stat_user_tables WHERE relname IN ('ticks', 'rejected_ticks', 'candles')
		AND last_vacuum IS NOT NULL AND last_analyze IS NOT NULL`); n != 3 {
		t.Errorf("%d of 3 tables vacuumed and analysed", n)
	}
	// Running it again deletes nothing more; a retention parameter
	// overrides the default.
	e.run(DAGRetention, logical, nil)
	if n := e.count(`SELECT count(*) FROM ticks`); n != ticksKept {
		t.Errorf("a re-run left %d ticks, want %d", n, ticksKept)
	}
	// Half an hour before the logical date's midnight: only the last
	// session's ticks remain.
	lastDay := e.count(`SELECT count(*) FROM ticks WHERE ts >= $1`, logical)
	e.run(DAGRetention, logical, map[string]string{"retention": "30m"})
	if n := e.count(`SELECT count(*) FROM ticks`); n != lastDay || n == 0 {
		t.Errorf("a retention of 30m left %d ticks, want the %d of the logical date", n, lastDay)
	}
	// An hourly run with a retention shorter than a day (up's) counts back
	// from its own slot: at 15:35 New York, six hours keep 09:35 on.
	slot := time.Date(2026, 11, 7, 15, 35, 0, 0, dagsNY)
	since := slot.Add(-6 * time.Hour)
	recent := e.count(`SELECT count(*) FROM ticks WHERE ts >= $1`, since)
	if recent == 0 || recent == lastDay {
		t.Fatalf("fixture: %d of the last day's %d ticks after %v", recent, lastDay, since)
	}
	e.run(DAGRetention, slot, map[string]string{"retention": "6h"})
	if n := e.count(`SELECT count(*) FROM ticks`); n != recent {
		t.Errorf("6h at %v left %d ticks, want the %d since %v", slot, n, recent, since)
	}
	if err := e.runTask(DAGRetention, "drop_old_ticks", logical, map[string]string{"batch_size": "0"}); err == nil {
		t.Error("batch_size 0 was accepted")
	}
}
