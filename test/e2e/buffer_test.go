package e2e

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestBufferConcurrent(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 100 {
				fmt.Fprintf(&b, "w%d-%d\n", i, j)
				_ = b.Tail(10)
			}
		}()
	}
	wg.Wait()
	if n := strings.Count(b.String(), "\n"); n != 800 {
		t.Errorf("%d lines, want 800", n)
	}
}

func TestBufferTailAndLimit(t *testing.T) {
	var b Buffer
	b.Write([]byte("one\ntwo\nthree\n"))
	if got := b.Tail(6); got != "three\n" {
		t.Errorf("Tail(6) = %q", got)
	}
	if got := b.Tail(100); got != "one\ntwo\nthree\n" {
		t.Errorf("Tail(100) = %q", got)
	}
	if got := b.TailLines(2); got != "two\nthree" {
		t.Errorf("TailLines(2) = %q", got)
	}
	l := Buffer{Limit: 4}
	for range 10 {
		l.Write([]byte("abc"))
	}
	if got := l.String(); len(got) > 8 || !strings.HasSuffix(got, "cabc") {
		t.Errorf("Limit 4 kept %q, want at most 8 bytes ending in the last 4 written", got)
	}
}

func TestEventually(t *testing.T) {
	n := 0
	if !Eventually(time.Second, time.Millisecond, func() bool { n++; return n == 3 }) {
		t.Error("Eventually: false for a condition that holds on the third poll")
	}
	start := time.Now()
	if Eventually(30*time.Millisecond, 5*time.Millisecond, func() bool { return false }) {
		t.Error("Eventually: true for a condition that never holds")
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("Eventually gave up after %v, before its 30ms timeout", d)
	}
}
