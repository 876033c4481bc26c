package feed

import (
	"sync"
	"time"
)

// Stats is what a connector reports about itself: the per-connector line of
// the 5-second log and the connector panel on /pipeline. Safe for concurrent
// use.
type Stats struct {
	mu             sync.Mutex
	source         string
	state          string
	connectedSince time.Time
	messages       int64
	reconnects     int64
	errors         int64
	lastMessage    time.Time
	lastError      string
}

// NewStats returns the statistics of a connector to source.
func NewStats(source string) *Stats { return &Stats{source: source, state: StateConnecting} }

// A connector's states, as shown to the user.
const (
	StateConnecting   = "connecting"
	StateConnected    = "connected"
	StateReconnecting = "reconnecting"
	StateMarketClosed = "market closed"
	StateStopped      = "stopped"
)

// Connected records that a connection is up and subscribed. Every
// connection after the first counts as a reconnect.
func (s *Stats) Connected(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == StateReconnecting {
		s.reconnects++
	}
	s.state, s.connectedSince = StateConnected, now
}

// Disconnected records that the connection was lost with err, and that the
// connector is trying again.
func (s *Stats) Disconnected(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state, s.connectedSince = StateReconnecting, time.Time{}
	if err != nil {
		s.errors++
		s.lastError = err.Error()
	}
}

// SetState records a state other than connected or reconnecting (market
// closed, stopped).
func (s *Stats) SetState(state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state = state
	if state != StateConnected {
		s.connectedSince = time.Time{}
	}
}

// Error counts an error that did not drop the connection (a provider's
// error message, an undecodable frame).
func (s *Stats) Error(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errors++
	s.lastError = err.Error()
}

// Messages counts n provider messages that arrived at now.
func (s *Stats) Messages(n int, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.messages += int64(n)
	s.lastMessage = now
}

// Snapshot is a copy of the statistics at one moment.
type Snapshot struct {
	Source         string    `json:"source"`
	State          string    `json:"state"`
	ConnectedSince time.Time `json:"connected_since"`
	Messages       int64     `json:"messages"`
	Reconnects     int64     `json:"reconnects"`
	Errors         int64     `json:"errors"`
	LastMessage    time.Time `json:"last_message"`
	LastError      string    `json:"last_error,omitempty"`
}

// Snapshot returns the current statistics.
func (s *Stats) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Snapshot{Source: s.source, State: s.state, ConnectedSince: s.connectedSince, Messages: s.messages,
		Reconnects: s.reconnects, Errors: s.errors, LastMessage: s.lastMessage, LastError: s.lastError}
}
