package web

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // the CSV's tz works on hosts without a zone database

	"github.com/stockpipe/stockpipe/internal/market"
	"github.com/stockpipe/stockpipe/internal/store"
)

// Limits on list sizes: a request may ask for less, never for more.
const (
	maxCandles   = 10_000
	maxTicks     = 1_000
	maxAnomalies = 1_000
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// badParam is a request parameter problem, answered with 400.
type badParam struct{ msg string }

func (e *badParam) Error() string { return e.msg }

// fail answers err: 400 for a bad parameter, 404 for an unknown symbol,
// 503 when the database is away, 500 otherwise (logged).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var bp *badParam
	switch {
	case errors.As(err, &bp):
		writeError(w, http.StatusBadRequest, bp.msg)
	case errors.Is(err, store.ErrUnknownSymbol):
		writeError(w, http.StatusNotFound, err.Error())
	case r.Context().Err() != nil:
		// The client left; nobody reads the answer.
	default:
		s.log.Error("API request failed", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusServiceUnavailable, "the database did not answer; try again shortly")
	}
}

// symbolParam validates the symbol parameter and checks that it is known.
func (s *Server) symbolParam(r *http.Request, required bool) (string, error) {
	sym := r.URL.Query().Get("symbol")
	if sym == "" {
		if required {
			return "", &badParam{"symbol is required, e.g. ?symbol=AAPL"}
		}
		return "", nil
	}
	if !market.ValidSymbol(sym) {
		return "", &badParam{"symbol " + strconv.Quote(sym) + " is not a ticker (1 to 12 of A-Z 0-9 . -, starting with a letter)"}
	}
	ok, err := s.read.KnownSymbol(r.Context(), sym)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("%w: %s has no data", store.ErrUnknownSymbol, sym)
	}
	return sym, nil
}

func timeParam(r *http.Request, name string) (time.Time, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		if secs, ierr := strconv.ParseInt(v, 10, 64); ierr == nil && secs >= 0 && secs < 1<<35 {
			return time.Unix(secs, 0).UTC(), nil
		}
		return time.Time{}, &badParam{name + " " + strconv.Quote(v) + " is not an RFC 3339 time (2026-11-25T14:30:00Z) or Unix seconds"}
	}
	return t, nil
}

func limitParam(r *http.Request, def, max int) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, &badParam{"limit " + strconv.Quote(v) + " must be a positive integer"}
	}
	return min(n, max), nil
}

func (s *Server) apiSymbols(w http.ResponseWriter, r *http.Request) {
	sym, err := s.symbolParam(r, false)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q, err := s.read.Quotes(r.Context(), sym)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for i := range q {
		roundQuote(&q[i])
	}
	writeJSON(w, http.StatusOK, q)
}

var intervals = map[string]bool{"1m": true, "5m": true, "1d": true}

func (s *Server) apiCandles(w http.ResponseWriter, r *http.Request) {
	q := store.CandleQuery{Interval: r.URL.Query().Get("interval")}
	if q.Interval == "" {
		q.Interval = "1m"
	}
	var err error
	if !intervals[q.Interval] {
		err = &badParam{"interval " + strconv.Quote(q.Interval) + " must be 1m, 5m or 1d"}
	}
	format := r.URL.Query().Get("format")
	if err == nil && format != "" && format != "json" && format != "csv" {
		err = &badParam{"format " + strconv.Quote(format) + " must be json or csv"}
	}
	// The CSV's times: UTC unless the page asks for the zone its reader
	// chose (each time carries its offset either way).
	loc := time.UTC
	if tz := r.URL.Query().Get("tz"); err == nil && tz != "" {
		if format != "csv" {
			err = &badParam{"tz is for format=csv; the JSON gives Unix seconds and UTC times"}
		} else if l, lerr := time.LoadLocation(tz); lerr != nil || tz == "Local" {
			err = &badParam{"tz " + strconv.Quote(tz) + " is not an IANA time zone (America/New_York, Europe/London, UTC)"}
		} else {
			loc = l
		}
	}
	if err == nil {
		q.From, err = timeParam(r, "from")
	}
	if err == nil {
		q.To, err = timeParam(r, "to")
	}
	if err == nil && !q.From.IsZero() && !q.To.IsZero() && q.To.Before(q.From) {
		err = &badParam{"to is before from"}
	}
	if err == nil {
		q.Limit, err = limitParam(r, 1000, maxCandles)
	}
	if err == nil {
		q.Symbol, err = s.symbolParam(r, true)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if format == "csv" {
		candles, more, err := s.read.Candles(r.Context(), q)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		roundCandles(candles)
		if link := nextLink(r.URL.Path, format, r.URL.Query().Get("tz"), q, candles, more); link != "" {
			w.Header().Set("Link", link)
		}
		writeCandlesCSV(w, q, candles, loc)
		return
	}
	key := fmt.Sprintf("%s|%s|%d|%d|%d", q.Symbol, q.Interval, q.From.UnixNano(), q.To.UnixNano(), q.Limit)
	// The query runs detached from this request so that a client leaving
	// does not fail the others sharing it.
	ctx := context.WithoutCancel(r.Context())
	a, err := s.cache.get(q.Symbol+"|"+q.Interval, key, func() (cachedAnswer, error) {
		candles, more, err := s.read.Candles(ctx, q)
		if err != nil {
			return cachedAnswer{}, err
		}
		roundCandles(candles)
		body, err := json.Marshal(struct {
			Symbol   string         `json:"symbol"`
			Interval string         `json:"interval"`
			Candles  []store.Candle `json:"candles"`
		}{q.Symbol, q.Interval, candles})
		return cachedAnswer{body: body, link: nextLink(r.URL.Path, format, "", q, candles, more)}, err
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if a.link != "" {
		w.Header().Set("Link", a.link)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(a.body)
}

// nextLink is the Link header of a truncated /api/candles answer: the
// request for the following page in the query's direction, or "" when
// nothing is left. Forward (with from) it continues after the last candle,
// up to the same to; backward (without from) it ends before the first.
// Buckets are whole seconds (minutes, New York midnights), so a second
// past the last one skips it and nothing else. The link is built from the
// parsed query, not the request's own parameters, because the JSON answer
// with it is cached and shared by every request asking the same. The body
// keeps its shape: clients that do not page see no change.
func nextLink(path, format, tz string, q store.CandleQuery, candles []store.Candle, more bool) string {
	if !more || len(candles) == 0 {
		return ""
	}
	v := url.Values{}
	v.Set("symbol", q.Symbol)
	v.Set("interval", q.Interval)
	v.Set("limit", strconv.Itoa(q.Limit))
	if format == "csv" {
		v.Set("format", "csv")
		if tz != "" {
			v.Set("tz", tz)
		}
	}
	if q.Forward() {
		v.Set("from", candles[len(candles)-1].Bucket.Add(time.Second).Format(time.RFC3339Nano))
		if !q.To.IsZero() {
			v.Set("to", q.To.UTC().Format(time.RFC3339Nano))
		}
	} else {
		v.Set("to", candles[0].Bucket.Add(-time.Second).Format(time.RFC3339Nano))
	}
	return "<" + path + "?" + v.Encode() + `>; rel="next"`
}

func writeCandlesCSV(w http.ResponseWriter, q store.CandleQuery, candles []store.Candle, loc *time.Location) {
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+q.Symbol+"-"+q.Interval+`.csv"`)
	cw := csv.NewWriter(w)
	_ = cw.Write(strings.Split("bucket,open,high,low,close,volume,vwap,trades,sma_5,sma_20,ema_12,ema_26,bb_upper,bb_lower,rsi_14,final", ","))
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	opt := func(v *float64) string {
		if v == nil {
			return ""
		}
		return f(*v)
	}
	for _, c := range candles {
		_ = cw.Write([]string{c.Bucket.In(loc).Format(time.RFC3339), f(c.Open), f(c.High), f(c.Low), f(c.Close),
			strconv.FormatInt(c.Volume, 10), opt(c.VWAP), strconv.FormatInt(c.Trades, 10),
			opt(c.SMA5), opt(c.SMA20), opt(c.EMA12), opt(c.EMA26), opt(c.BBUpper), opt(c.BBLower), opt(c.RSI14),
			strconv.FormatBool(c.Final)})
	}
	cw.Flush()
}

func (s *Server) apiTicks(w http.ResponseWriter, r *http.Request) {
	limit, err := limitParam(r, 50, maxTicks)
	var sym string
	if err == nil {
		sym, err = s.symbolParam(r, true)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	trades, err := s.read.Trades(r.Context(), sym, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for i := range trades {
		t := &trades[i]
		t.Price = round(t.Price)
		roundPtr(t.Bid) // nil, and null in the answer, for a tick without a quote
		roundPtr(t.Ask)
	}
	writeJSON(w, http.StatusOK, struct {
		Symbol string        `json:"symbol"`
		Ticks  []store.Trade `json:"ticks"`
	}{sym, trades})
}

func (s *Server) apiAnomalies(w http.ResponseWriter, r *http.Request) {
	limit, err := limitParam(r, 100, maxAnomalies)
	var since time.Time
	if err == nil {
		since, err = timeParam(r, "since")
	}
	var sym string
	if err == nil {
		sym, err = s.symbolParam(r, false)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	list, err := s.read.Anomalies(r.Context(), sym, since, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for i := range list {
		list[i].Value, list[i].Threshold = round(list[i].Value), round(list[i].Threshold)
	}
	writeJSON(w, http.StatusOK, struct {
		Anomalies []store.Anomaly `json:"anomalies"`
	}{list})
}

// The API and the CSV give prices, indicators, changes and anomaly values
// to six decimal places (the README says so). Sums and differences of
// binary floating-point numbers carry noise in the last digits (100.26 -
// 100 is 0.2600000000000051); six places keep sub-cent prices and drop it.
const decimalScale = 1e6

// roundLimit is where rounding stops: above it, v·10⁶ no longer has a
// fractional part to round (2⁵³ / 10⁶), and the value is returned as is.
const roundLimit = 1 << 53 / decimalScale

// round rounds v to six decimal places. The result is the double nearest
// the decimal, so encoding/json and strconv print it short
// (270.10200000000003 → 270.102).
func round(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) || math.Abs(v) >= roundLimit {
		return v
	}
	r := math.Round(v*decimalScale) / decimalScale
	if r == 0 {
		return 0 // not -0: a change of -1e-12 is no change
	}
	return r
}

func roundPtr(v *float64) {
	if v != nil {
		*v = round(*v)
	}
}

// roundCandles rounds in place; the JSON answer and the CSV both go through
// it, so they agree digit for digit.
func roundCandles(cs []store.Candle) {
	for i := range cs {
		c := &cs[i]
		c.Open, c.High, c.Low, c.Close = round(c.Open), round(c.High), round(c.Low), round(c.Close)
		for _, p := range []*float64{c.VWAP, c.SMA5, c.SMA20, c.EMA12, c.EMA26, c.BBUpper, c.BBLower, c.RSI14} {
			roundPtr(p)
		}
	}
}

func roundQuote(q *store.Quote) {
	q.Last, q.DayOpen, q.Change, q.ChangePct = round(q.Last), round(q.DayOpen), round(q.Change), round(q.ChangePct)
	for i := range q.Spark {
		q.Spark[i] = round(q.Spark[i])
	}
}
