package feed

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"
)

// Recorder writes what arrived from a provider as JSON lines
//
//	{"at":"2026-11-02T14:30:00.123456789Z","source":"finnhub","msg":<the provider's message>}
//
// so a live session can be replayed later exactly (ReadRecording). Safe for
// concurrent use.
type Recorder struct {
	mu  sync.Mutex
	w   *bufio.Writer
	err error
}

// NewRecorder records to w; Close flushes it.
func NewRecorder(w io.Writer) *Recorder { return &Recorder{w: bufio.NewWriter(w)} }

// Entry is one line of a recording.
type Entry struct {
	At     time.Time       `json:"at"`
	Source string          `json:"source"`
	Msg    json.RawMessage `json:"msg"`
}

// Record writes msg, a provider's JSON message, as arrived at at. A nil
// Recorder records nothing, so connectors call it unconditionally.
func (r *Recorder) Record(source string, at time.Time, msg []byte) {
	if r == nil {
		return
	}
	if !json.Valid(msg) {
		// Kept as a JSON string so the line stays valid and the replay
		// meets the same undecodable message.
		msg, _ = json.Marshal(string(msg))
	}
	b, err := json.Marshal(Entry{At: at.UTC(), Source: source, Msg: msg})
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return
	}
	b = append(b, '\n')
	// Flush only at line boundaries: each write then holds whole lines, so
	// two recorders appending to one file (O_APPEND; say ingest and up
	// given the same --record) interleave lines, never parts of them.
	if err == nil && r.w.Buffered() > 0 && len(b) > r.w.Available() {
		err = r.w.Flush()
	}
	if err == nil {
		_, err = r.w.Write(b)
	}
	r.err = err
}

// Close flushes the recording and reports the first write error.
func (r *Recorder) Close() error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return fmt.Errorf("writing the recording: %w", r.err)
	}
	if err := r.w.Flush(); err != nil {
		return fmt.Errorf("writing the recording: %w", err)
	}
	return nil
}

// Event is a trade or a quote (exactly one of the two is set), in the order
// a provider's message carried them.
type Event struct {
	Trade *Trade
	Quote *Quote
}

// Decoder turns one provider message into events. An error means the
// message is not one the provider documents; a live connector counts it
// and reads on, and so does ReadRecording.
type Decoder func(msg []byte) ([]Event, error)

// Deliver hands events to h in order.
func Deliver(h Handler, evs []Event) error {
	for _, ev := range evs {
		var err error
		switch {
		case ev.Trade != nil:
			err = h.Trade(*ev.Trade)
		case ev.Quote != nil:
			err = h.Quote(*ev.Quote)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// ReadRecording reads a recording from r and hands each message's events
// to h, in the order they arrived, decoded by the decoder of the message's
// source. Messages the decoder refuses are skipped and counted, as the live
// connector skipped them. A source without a decoder is an error naming it.
// pace, if set, is called with each message's arrival time before it is
// delivered, to space the replay as the session was; its error stops the
// replay.
func ReadRecording(r io.Reader, decoders map[string]Decoder, h Handler, pace func(at time.Time) error) (messages, skipped int64, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 16<<20)
	line := 0
	for sc.Scan() {
		line++
		if len(sc.Bytes()) == 0 {
			continue
		}
		var e Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return messages, skipped, fmt.Errorf("recording line %d is not a recorded message: %w", line, err)
		}
		dec, ok := decoders[e.Source]
		if !ok {
			return messages, skipped, fmt.Errorf("recording line %d: no decoder for source %q", line, e.Source)
		}
		if pace != nil {
			if err := pace(e.At); err != nil {
				return messages, skipped, err
			}
		}
		messages++
		evs, derr := dec(e.Msg)
		if derr != nil {
			skipped++
			continue
		}
		if err := Deliver(h, evs); err != nil {
			return messages, skipped, err
		}
	}
	if err := sc.Err(); err != nil {
		return messages, skipped, fmt.Errorf("reading the recording: %w", err)
	}
	return messages, skipped, nil
}
