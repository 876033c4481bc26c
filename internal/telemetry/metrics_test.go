package telemetry_test

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stockpipe/stockpipe/internal/telemetry"
)

func TestDAGRunFinished(t *testing.T) {
	// A component without metrics records nothing and does not fail.
	var none *telemetry.Metrics
	none.DAGRunFinished("market_close", "failed")

	m := telemetry.New()
	m.DAGRunFinished("market_close", "failed")
	m.DAGRunFinished("market_close", "failed")
	m.DAGRunFinished("market_close", "success")
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, err := io.ReadAll(rec.Result().Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`stockpipe_dag_runs_total{dag="market_close",state="failed"} 2`,
		`stockpipe_dag_runs_total{dag="market_close",state="success"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
