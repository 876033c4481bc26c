package dag

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"
)

// logExcerptSize is how much of a task's log task_runs keeps: the end.
const logExcerptSize = 4 << 10

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu        sync.Mutex
	b         []byte
	max       int
	truncated bool
}

// newTailBuffer returns a buffer that keeps the last max bytes.
func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

// Write implements io.Writer; it never fails.
func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 2*t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
		t.truncated = true
	}
	return len(p), nil
}

// WriteString is Write for a string.
func (t *tailBuffer) WriteString(s string) { _, _ = t.Write([]byte(s)) }

// String returns the excerpt: at most max bytes, starting at a line (and
// character) boundary when the beginning was cut off.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.b
	cut := t.truncated
	if len(b) > t.max {
		b = b[len(b)-t.max:]
		cut = true
	}
	if cut {
		if i := bytes.IndexByte(b, '\n'); i >= 0 && i < len(b)-1 {
			b = b[i+1:]
		}
		for len(b) > 0 && !utf8.RuneStart(b[0]) {
			b = b[1:]
		}
	}
	return string(b)
}

// newTaskLogger returns a logger whose records go both to the process
// logger (with attrs identifying the task) and, as compact text lines, to
// buf.
func newTaskLogger(process slog.Handler, buf *tailBuffer, attrs ...slog.Attr) *slog.Logger {
	text := slog.NewTextHandler(buf, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey && a.Value.Kind() == slog.KindTime {
				return slog.String(slog.TimeKey, a.Value.Time().UTC().Format("15:04:05.000"))
			}
			return a
		},
	})
	return slog.New(teeHandler{a: process.WithAttrs(attrs), b: text})
}

// teeHandler sends each record to two handlers.
type teeHandler struct{ a, b slog.Handler }

// Enabled implements slog.Handler: either handler wants l.
func (h teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.a.Enabled(ctx, l) || h.b.Enabled(ctx, l)
}

// Handle implements slog.Handler: r goes to each handler that wants it.
func (h teeHandler) Handle(ctx context.Context, r slog.Record) error {
	var errs []error
	if h.a.Enabled(ctx, r.Level) {
		errs = append(errs, h.a.Handle(ctx, r.Clone()))
	}
	if h.b.Enabled(ctx, r.Level) {
		errs = append(errs, h.b.Handle(ctx, r))
	}
	return errors.Join(errs...)
}

// WithAttrs implements slog.Handler for both handlers.
func (h teeHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return teeHandler{a: h.a.WithAttrs(attrs), b: h.b.WithAttrs(attrs)}
}

// WithGroup implements slog.Handler for both handlers.
func (h teeHandler) WithGroup(name string) slog.Handler {
	return teeHandler{a: h.a.WithGroup(name), b: h.b.WithGroup(name)}
}

// minLevelHandler drops records below a level, for a library's chatty
// logger.
type minLevelHandler struct {
	slog.Handler
	min slog.Level
}

// Enabled implements slog.Handler: l must reach the minimum.
func (h minLevelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

// WithAttrs implements slog.Handler, keeping the minimum.
func (h minLevelHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevelHandler{h.Handler.WithAttrs(attrs), h.min}
}

// WithGroup implements slog.Handler, keeping the minimum.
func (h minLevelHandler) WithGroup(name string) slog.Handler {
	return minLevelHandler{h.Handler.WithGroup(name), h.min}
}

// attemptHeader is the line that separates attempts in a log excerpt.
func attemptHeader(attempt int, now time.Time) string {
	return fmt.Sprintf("--- attempt %d at %s ---\n", attempt, now.UTC().Format(time.RFC3339))
}
