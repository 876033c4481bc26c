package web

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/stockpipe/stockpipe/internal/market"
)

func (s *Server) render(w http.ResponseWriter, status int, name string, data any) {
	// Render to a buffer first so a template error is a clean 500, not half
	// a page.
	var buf bytes.Buffer
	if err := s.pages.ExecuteTemplate(&buf, name, data); err != nil {
		s.log.Error("rendering page", "page", name, "err", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// notFound answers 404 with a page in the dashboard's style that says what
// was not found and where to go instead.
func (s *Server) notFound(w http.ResponseWriter, what string) {
	s.render(w, http.StatusNotFound, "notfound.html", struct{ Title, Version, What string }{"stockpipe — not found", s.cfg.Version, what})
}

func (s *Server) overview(w http.ResponseWriter, _ *http.Request) {
	s.render(w, http.StatusOK, "overview.html", struct{ Title, Version string }{"stockpipe — market overview", s.cfg.Version})
}

func (s *Server) symbolPage(w http.ResponseWriter, r *http.Request) {
	sym := r.PathValue("symbol")
	// Tickers are upper case; a typed or shared /symbol/aapl is sent to the
	// one address per symbol rather than answered 404.
	if up := strings.ToUpper(sym); up != sym && market.ValidSymbol(up) {
		u := *r.URL
		u.Path, u.RawPath = "/symbol/"+up, ""
		// Not an open redirect: the path is set above to /symbol/ and a
		// valid ticker, so it cannot name another host.
		http.Redirect(w, r, u.RequestURI(), http.StatusMovedPermanently) //nolint:gosec // see above
		return
	}
	if !market.ValidSymbol(sym) {
		s.notFound(w, fmt.Sprintf("%q is not a ticker: tickers are 1 to 12 capital letters, digits, dots or dashes, starting with a letter.", sym))
		return
	}
	q := r.URL.Query()
	iv := q.Get("interval")
	if !intervals[iv] {
		iv = "1m"
	}
	rng := q.Get("range")
	switch rng {
	case "1h", "1d", "5d", "all":
	default:
		rng = "1d"
	}
	at := ""
	if t, err := time.Parse(time.RFC3339Nano, q.Get("at")); err == nil {
		at = t.UTC().Format(time.RFC3339Nano)
	}
	s.render(w, http.StatusOK, "symbol.html", struct {
		Title, Version, Symbol, Interval, Range, At string
	}{sym + " — stockpipe", s.cfg.Version, sym, iv, rng, at})
}
