package sim

import (
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"time"
)

// RequestRecord is one line of the request log (Config.RequestLog): what a
// model server received, and whether the caller cancelled it. Tests use it
// to check what reaches a model server (no caller token, no routing header)
// and that a client leaving cancels the request upstream too.
type RequestRecord struct {
	Model   string      `json:"model"`
	Method  string      `json:"method"`
	Path    string      `json:"path"`
	Header  http.Header `json:"header"`
	Start   time.Time   `json:"start"`
	End     time.Time   `json:"end"`
	Aborted bool        `json:"aborted"` // the request's context ended before the handler did
}

// requestLog writes a RequestRecord per inference request to w.
type requestLog struct {
	model string
	// mu serializes writes to w.
	mu sync.Mutex
	w  io.Writer
}

func (l *requestLog) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			next.ServeHTTP(w, r)
			return
		}
		rec := RequestRecord{Model: l.model, Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Start: time.Now()}
		defer func() {
			rec.End = time.Now()
			rec.Aborted = r.Context().Err() != nil
			b, _ := json.Marshal(rec)
			l.mu.Lock()
			defer l.mu.Unlock()
			_, _ = l.w.Write(append(b, '\n'))
		}()
		next.ServeHTTP(w, r)
	})
}
