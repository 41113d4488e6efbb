package localrt

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
)

const (
	// tailLines is how many last lines of a child's stderr are kept for
	// its failure report.
	tailLines = 5
	// maxLine bounds a logged line, in bytes; longer lines are cut.
	maxLine = 4096
)

// lineLog is the stdout or stderr of a child: it logs each line at debug
// level and keeps the last tailLines lines.
type lineLog struct {
	log    *slog.Logger
	stream string

	// mu guards buf and lines: Write runs in exec's copying goroutine,
	// last and tail in the instance's wait goroutine.
	mu    sync.Mutex
	buf   []byte   // the line being written, up to maxLine bytes
	lines []string // the last complete lines, oldest first
}

func newLineLog(log *slog.Logger, stream string) *lineLog {
	return &lineLog{log: log, stream: stream}
}

// Write logs the complete lines of p and buffers the rest.
func (w *lineLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if room := maxLine - len(w.buf); room > 0 {
			w.buf = append(w.buf, chunk[:min(room, len(chunk))]...)
		}
		if i < 0 {
			break
		}
		w.endLine()
		p = p[i+1:]
	}
	return n, nil
}

// endLine logs and keeps the buffered line. Called with mu held.
func (w *lineLog) endLine() {
	line := strings.TrimRight(string(w.buf), "\r \t")
	w.buf = w.buf[:0]
	if line == "" {
		return
	}
	w.log.LogAttrs(context.Background(), slog.LevelDebug, "model server output",
		slog.String("stream", w.stream), slog.String("line", line))
	w.lines = append(w.lines, line)
	if len(w.lines) > tailLines {
		w.lines = w.lines[len(w.lines)-tailLines:]
	}
}

// flushLocked ends an unterminated last line. Called with mu held.
func (w *lineLog) flushLocked() {
	if len(w.buf) > 0 {
		w.endLine()
	}
}

// last returns the last non-empty line written, "" if none.
func (w *lineLog) last() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushLocked()
	if len(w.lines) == 0 {
		return ""
	}
	return w.lines[len(w.lines)-1]
}

// tail returns the last lines written, oldest first.
func (w *lineLog) tail() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushLocked()
	return append([]string(nil), w.lines...)
}
