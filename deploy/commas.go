package deploy

// scanned is a body after stripTrailingCommas, with what the scan saw open
// at the end (for the error of a body cut short).
type scanned struct {
	// out is the body with each trailing comma replaced by a space, so
	// that offsets into out are offsets into the body.
	out []byte
	// open holds the offsets of the '{' and '[' not closed at the end.
	open []int
	// openString is the offset of the '"' of a string not closed at the
	// end, or -1.
	openString int
}

// stripTrailingCommas blanks every comma that directly follows a value and
// is followed, past white space, by '}' or ']': `{"a": 1,}` becomes
// `{"a": 1 }`. Commas inside strings, and commas anywhere else (`[,]`,
// `[1,,]`, `{"a":,}`), are left for the JSON decoder to refuse. Valid JSON
// never has such a comma, so it comes back unchanged; b is not modified.
func stripTrailingCommas(b []byte) scanned {
	out := b
	copied := false
	s := scanned{openString: -1}
	comma := -1     // offset of a comma that may be trailing
	var last byte   // last byte outside strings that is not white space
	escape := false // in a string, the previous byte was a backslash
	for i, c := range b {
		if s.openString >= 0 {
			switch {
			case escape:
				escape = false
			case c == '\\':
				escape = true
			case c == '"':
				s.openString = -1
				last = c
			}
			continue
		}
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case '}', ']':
			if comma >= 0 {
				if !copied {
					out = append([]byte(nil), b...)
					copied = true
				}
				out[comma] = ' '
			}
			if n := len(s.open); n > 0 {
				s.open = s.open[:n-1]
			}
		case '{', '[':
			s.open = append(s.open, i)
		case '"':
			s.openString = i
		}
		comma = -1
		if c == ',' && endsValue(last) {
			comma = i
		}
		last = c
	}
	s.out = out
	return s
}

// endsValue reports whether c can be the last byte of a JSON value: a
// string's quote, a closing bracket, a number's digit, or the last letter
// of true, false or null.
func endsValue(c byte) bool {
	switch {
	case c == '"', c == '}', c == ']', c == 'e', c == 'l':
		return true
	case c >= '0' && c <= '9':
		return true
	}
	return false
}
