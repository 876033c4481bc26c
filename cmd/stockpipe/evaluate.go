package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/stockpipe/stockpipe/internal/anomaly"
	"github.com/stockpipe/stockpipe/internal/generate"
	"github.com/stockpipe/stockpipe/internal/store"
)

func evaluateCommand() *command {
	c := newCommand("evaluate", "score stored anomalies against the simulator's ground truth (precision and recall per kind)",
		"stockpipe evaluate --truth truth.jsonl --database-url postgres://stockpipe@127.0.0.1:5432/stockpipe")
	truthPath := c.fs.String("truth", "", "ground-truth file written by 'stockpipe generate --truth'")
	url := c.fs.String("database-url", "", "PostgreSQL URL (or DATABASE_URL)")
	tol := c.fs.Duration("tolerance", 2*time.Second, "how far apart in event time a detection and an injected anomaly may be and still match")
	jsonOut := c.fs.Bool("json", false, "print JSON instead of a table")
	dbWait := c.fs.Duration("db-wait", time.Minute, "how long to wait for an unreachable PostgreSQL before giving up (0 = until interrupted)")
	var pr peer
	pr.register(c)
	c.run = func(rc *runCtx) error {
		if *truthPath == "" {
			return errors.New("--truth is required (the file 'stockpipe generate --truth FILE' wrote)")
		}
		truth, err := readTruth(*truthPath)
		if err != nil {
			return err
		}
		if len(truth) == 0 {
			return fmt.Errorf("--truth %s holds no anomalies", *truthPath)
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
		from, to := truth[0].TS, truth[0].TS
		kinds := map[string]bool{}
		for _, t := range truth {
			from, to = minTime(from, t.TS), maxTime(to, t.TS)
			kinds[string(t.Kind)] = true
		}
		kindList := make([]string, 0, len(kinds))
		for k := range kinds {
			kindList = append(kindList, k)
		}
		// Only detections in the period the truth covers can be judged.
		detected, err := store.NewReader(pool).Detections(rc.ctx, kindList, from.Add(-*tol), to.Add(*tol))
		if err != nil {
			return err
		}
		scores := anomaly.Score(truth, detected, *tol)
		if *jsonOut {
			enc := json.NewEncoder(rc.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(scores)
		}
		fmt.Fprintf(rc.stdout, "%-16s %8s %9s %8s %10s %7s\n", "kind", "injected", "detected", "matched", "precision", "recall")
		for _, s := range scores {
			fmt.Fprintf(rc.stdout, "%-16s %8d %9d %8d %10.3f %7.3f\n", s.Kind, s.Truth, s.Detected, s.Matched, s.Precision, s.Recall)
		}
		fmt.Fprintf(rc.stdout, "(matched by symbol, kind and |Δts| ≤ %v)\n", *tol)
		return nil
	}
	return c
}

func readTruth(path string) ([]anomaly.Labeled, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--truth: %w", err)
	}
	defer f.Close()
	truth, err := generate.ReadTruth(f)
	if err != nil {
		return nil, fmt.Errorf("--truth %s: %w", path, err)
	}
	return labeled(truth), nil
}

// labeled reduces ground truth to what scoring matches on.
func labeled(truth []generate.Anomaly) []anomaly.Labeled {
	out := make([]anomaly.Labeled, len(truth))
	for i, a := range truth {
		out[i] = anomaly.Labeled{Symbol: a.Symbol, Kind: anomaly.Kind(a.Kind), TS: a.TS}
	}
	return out
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
