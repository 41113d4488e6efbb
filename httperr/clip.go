package httperr

import "unicode/utf8"

// MaxQuoted bounds how much of a client's value an error message repeats.
const MaxQuoted = 80

// Clip cuts s to MaxQuoted bytes for quoting in an error message, so a
// megabyte-long value does not come back in full (see Truncate).
func Clip(s string) string { return Truncate(s, MaxQuoted) }

// Truncate cuts s to at most n bytes on a rune boundary, marking a cut
// with "...".
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}
