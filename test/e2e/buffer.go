package e2e

import (
	"bytes"
	"strings"
	"sync"
)

// Buffer is a bytes.Buffer safe for concurrent writes and reads: what a
// child process writes while the test reads it. Its zero value is empty and
// keeps everything.
type Buffer struct {
	// Limit, when > 0, is how many of the last bytes written are kept
	// (for long-running processes such as the bench's); set it before the
	// first Write.
	Limit int

	// mu guards b.
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.b.Write(p)
	if s.Limit > 0 && s.b.Len() > 2*s.Limit {
		keep := bytes.Clone(s.b.Bytes()[s.b.Len()-s.Limit:])
		s.b.Reset()
		s.b.Write(keep)
	}
	return n, err
}

// Tail returns the last n bytes kept.
func (s *Buffer) Tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.b.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// TailLines returns the last n lines kept, without the final newline.
func (s *Buffer) TailLines(n int) string { return TailLines(s.String(), n) }

// String returns everything kept.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TailLines returns the last n lines of s, without its final newline.
func TailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
