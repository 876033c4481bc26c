package web

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// statusTTL is how long a component check is reused: every open page
// polls /api/status, and a hundred browsers must not cost a hundred pings.
const statusTTL = 2 * time.Second

// Status is what /api/status answers: whether the components behind the
// dashboard answer now. Each field is "ok" or "error: " and the reason.
// The pages' status dot is green only when OK is true; an open event
// stream alone says nothing about the database behind it.
type Status struct {
	OK        bool      `json:"ok"`
	CheckedAt time.Time `json:"checked_at"`
	Database  string    `json:"database"`
	// Broker is empty when the server has no brokers configured.
	Broker string `json:"broker,omitempty"`
	// LiveUpdates is whether the server is LISTENing for committed
	// batches: after the database comes back it takes a moment to.
	LiveUpdates string `json:"live_updates"`
	// Checks are the other readiness checks the server was given
	// (Config.Ready), such as the processor's in up.
	Checks map[string]string `json:"checks,omitempty"`
}

// statusCache shares one round of checks among the requests of statusTTL.
type statusCache struct {
	mu   sync.Mutex
	last *Status
	busy chan struct{} // closed when the round in progress ends; nil if none
}

func (s *Server) apiStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.currentStatus(r.Context())
	if err != nil {
		return // the client left
	}
	writeJSON(w, http.StatusOK, st)
}

// currentStatus returns a recent Status, running the checks when the last
// round is older than statusTTL. Concurrent callers wait for one round.
func (s *Server) currentStatus(ctx context.Context) (Status, error) {
	c := &s.stat
	for {
		c.mu.Lock()
		if c.last != nil && time.Since(c.last.CheckedAt) < statusTTL {
			st := *c.last
			c.mu.Unlock()
			return st, nil
		}
		if c.busy == nil {
			busy := make(chan struct{})
			c.busy = busy
			c.mu.Unlock()
			// Detached: a caller leaving must not fail the others' round.
			st := s.checkStatus(context.WithoutCancel(ctx))
			c.mu.Lock()
			c.last, c.busy = &st, nil
			c.mu.Unlock()
			close(busy)
			return st, nil
		}
		busy := c.busy
		c.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return Status{}, ctx.Err()
		}
	}
}

// checkStatus runs every check at once, each bounded by two seconds.
func (s *Server) checkStatus(ctx context.Context) Status {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	result := func(err error) string {
		if err != nil {
			return "error: " + err.Error()
		}
		return "ok"
	}
	st := Status{LiveUpdates: "ok"}
	if !s.live.Load() {
		st.LiveUpdates = "error: not listening for committed batches (reconnecting to the database)"
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Go(func() {
		r := result(s.read.Ping(ctx))
		mu.Lock()
		st.Database = r
		mu.Unlock()
	})
	if s.admCl != nil {
		wg.Go(func() {
			r := result(s.admCl.Ping(ctx))
			mu.Lock()
			st.Broker = r
			mu.Unlock()
		})
	}
	for _, c := range s.cfg.Ready {
		// The database and the brokers are checked above, through the
		// server's own pool and client; a second check of the same thing
		// would only cost a connection per round.
		if c.Name == "database" || (c.Name == "broker" && s.admCl != nil) {
			continue
		}
		wg.Go(func() {
			r := result(c.Check(ctx))
			mu.Lock()
			if st.Checks == nil {
				st.Checks = map[string]string{}
			}
			st.Checks[c.Name] = r
			mu.Unlock()
		})
	}
	wg.Wait()
	st.OK = st.Database == "ok" && (st.Broker == "" || st.Broker == "ok") && st.LiveUpdates == "ok"
	for _, r := range st.Checks {
		st.OK = st.OK && r == "ok"
	}
	st.CheckedAt = time.Now().UTC()
	return st
}
