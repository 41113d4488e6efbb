package httperr

import (
	"strings"
	"testing"
)

func TestTruncate(t *testing.T) {
	for _, tt := range []struct {
		name string
		s    string
		n    int
		want string
	}{
		{"short stays", "abc", 3, "abc"},
		{"cut is marked", "abcdef", 3, "abc..."},
		{"cut on a rune boundary", "aé", 2, "a..."},
		{"nothing fits", "éé", 1, "..."},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Truncate(tt.s, tt.n); got != tt.want {
				t.Errorf("Truncate(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
			}
		})
	}
	if got := Clip(strings.Repeat("x", 1<<20)); got != strings.Repeat("x", MaxQuoted)+"..." {
		t.Errorf("Clip of 1 MiB = %d bytes, want %d and the mark", len(got), MaxQuoted)
	}
}
