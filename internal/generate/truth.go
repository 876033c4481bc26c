package generate

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
)

// ReadTruth reads a ground-truth file written through SimConfig.Truth: one
// Anomaly per JSON line; blank lines are skipped.
func ReadTruth(r io.Reader) ([]Anomaly, error) {
	var out []Anomaly
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var a Anomaly
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		out = append(out, a)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading ground truth: %w", err)
	}
	return out, nil
}
