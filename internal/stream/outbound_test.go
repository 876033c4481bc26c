package stream

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/anomaly"
)

// TestAnomalyRecordIsJSON: whatever an anomaly's detail holds, and even if
// a detector broke its promise of finite values, the record is JSON that
// any reader decodes back to the anomaly.
func TestAnomalyRecordIsJSON(t *testing.T) {
	ts := time.Date(2026, 11, 2, 9, 30, 0, 123456789, time.FixedZone("EST", -5*3600))
	for _, a := range []anomaly.Anomaly{
		{Symbol: "BRK.B", TS: ts, Kind: anomaly.KindPriceJump, Severity: anomaly.SeverityHigh, Value: -12.5, Threshold: -6,
			Detail: "BRK.B fell 3.20% (270 → 261.36) in 14ms, 12.5σ of its recent tick-to-tick volatility"},
		{Symbol: "AAPL", TS: ts, Kind: anomaly.KindVolumeBurst, Severity: anomaly.SeverityLow, Value: 1e21, Threshold: 5e-7,
			Detail: "a \"quoted\" bell \a, tab \t, vertical tab \v, <html> & U+2028 \u2028, bad UTF-8 \xff, NUL \x00"},
		{Symbol: "MSFT", TS: ts, Kind: anomaly.KindSpreadBlowout, Severity: anomaly.SeverityMedium,
			Value: math.NaN(), Threshold: math.Inf(1), Detail: ""},
	} {
		var o outbound
		if err := o.anomaly("anomalies", &a); err != nil {
			t.Fatal(err)
		}
		r := o.recs[0]
		if !json.Valid(r.Value) {
			t.Fatalf("not JSON: %s", r.Value)
		}
		var got struct {
			Symbol, TS, Kind, Severity, Detail string
			Value, Threshold                   *float64
		}
		if err := json.Unmarshal(r.Value, &got); err != nil {
			t.Fatal(err)
		}
		wantDetail := a.Detail
		if a.Symbol == "AAPL" {
			wantDetail = "a \"quoted\" bell \a, tab \t, vertical tab \v, <html> & U+2028 \u2028, bad UTF-8 \ufffd, NUL \x00"
		}
		if got.Symbol != a.Symbol || string(r.Key) != a.Symbol || got.Kind != string(a.Kind) ||
			got.Severity != string(a.Severity) || got.Detail != wantDetail || r.Topic != "anomalies" {
			t.Errorf("record %s (key %s) does not carry %+v", r.Value, r.Key, a)
		}
		if got.TS != "2026-11-02T14:30:00.123456Z" {
			t.Errorf("ts %q, want UTC to the microsecond as stored", got.TS)
		}
		for _, f := range []struct {
			name string
			got  *float64
			want float64
		}{{"value", got.Value, a.Value}, {"threshold", got.Threshold, a.Threshold}} {
			switch {
			case math.IsNaN(f.want) || math.IsInf(f.want, 0):
				if f.got != nil {
					t.Errorf("%s %v for %v, want null", f.name, *f.got, f.want)
				}
			case f.got == nil || *f.got != f.want:
				t.Errorf("%s %v, want %v exactly", f.name, f.got, f.want)
			}
		}
	}
}
