package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/thawhq/thaw/httperr"
)

// This file turns request bodies into CreateRequest and UpdateRequest. It
// accepts what DeepInfra's documented curl examples send (a trailing comma
// before '}' or ']') and refuses everything else that is not plain JSON,
// with errors that say where the body broke or which field is wrong.

// DecodeCreate decodes the body of POST /deploy/llm. Every error is a
// *FieldError (ErrBadJSON, ErrWrongType, ErrUnknownField or
// ErrRepeatedField); values are checked later, by Normalize.
func DecodeCreate(body []byte) (CreateRequest, error) {
	var req CreateRequest
	err := decodeBody(body, createSchema, nil, &req)
	return req, err
}

// DecodeUpdate decodes the body of PUT /deploy/{id}. The fields of a create
// body other than settings are ignored, as DeepInfra does, since they cannot
// change; any other unknown field is refused. Errors are as DecodeCreate's.
func DecodeUpdate(body []byte) (UpdateRequest, error) {
	var req UpdateRequest
	err := decodeBody(body, updateSchema, createSchema, &req)
	return req, err
}

// schema is the fields a JSON object may hold, from a request type's json
// tags; sub[name] is nil for a field that is not an object of known fields.
type schema struct {
	names []string // in declaration order, for messages
	sub   map[string]*schema
}

var (
	createSchema = schemaOf(reflect.TypeFor[CreateRequest]())
	updateSchema = schemaOf(reflect.TypeFor[UpdateRequest]())
)

// schemaOf returns t's schema, or nil when t is not a struct (or decodes
// itself, like ExtraArgs).
func schemaOf(t reflect.Type) *schema {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]()) {
		return nil
	}
	s := &schema{sub: map[string]*schema{}}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		s.names = append(s.names, name)
		s.sub[name] = schemaOf(f.Type)
	}
	return s
}

// decodeBody checks body against s (fields named in ignored are skipped
// at the top level) and decodes it into v.
func decodeBody(body []byte, s, ignored *schema, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return kindErr(ErrBadJSON, "", "request body is empty: want a JSON object")
	}
	if i := invalidUTF8(body); i >= 0 {
		line, col := position(body, i)
		return kindErr(ErrBadJSON, "", "request body is not valid UTF-8: line %d, column %d (byte %d)", line, col, i)
	}
	sc := stripTrailingCommas(body)
	if err := json.Unmarshal(sc.out, new(json.RawMessage)); err != nil {
		return syntaxErr(sc, err)
	}
	if first := bytes.TrimLeft(sc.out, " \t\r\n"); first[0] != '{' {
		return kindErr(ErrBadJSON, "", "request body must be a JSON object, got %s", jsonKind(first[0]))
	}
	if err := checkFields(sc.out, s, ignored, ""); err != nil {
		return err
	}
	if err := json.Unmarshal(sc.out, v); err != nil {
		return typeErr(err)
	}
	return nil
}

// checkFields refuses unknown and repeated fields in the object obj, and
// in the objects it holds that s describes. path is obj's own path.
func checkFields(obj []byte, s, ignored *schema, path string) error {
	dec := json.NewDecoder(bytes.NewReader(obj))
	if _, err := dec.Token(); err != nil { // '{'
		return kindErr(ErrBadJSON, path, "request body is not valid JSON")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		key, ok := tok.(string)
		if err != nil || !ok {
			return kindErr(ErrBadJSON, path, "request body is not valid JSON")
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return kindErr(ErrBadJSON, path, "request body is not valid JSON")
		}
		field := joinPath(path, httperr.Clip(key))
		sub, known := s.sub[key]
		skip := false
		if !known && ignored != nil {
			_, skip = ignored.sub[key]
		}
		if !known && !skip {
			where, note := "the body", ""
			if path != "" {
				where = path
			}
			if ignored != nil {
				note = " (the other fields of a create body are accepted and ignored: they cannot change)"
			}
			return kindErr(ErrUnknownField, field, "unknown field %q: %s takes %s%s", field, where, strings.Join(s.names, ", "), note)
		}
		if seen[key] {
			return kindErr(ErrRepeatedField, field, "field %q is given more than once: give it once", field)
		}
		seen[key] = true
		if sub != nil && len(raw) > 0 && raw[0] == '{' {
			if err := checkFields(raw, sub, nil, field); err != nil {
				return err
			}
		}
	}
	return nil
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// typeErr turns json.Unmarshal's error (the body is valid JSON by now)
// into a FieldError naming the field.
func typeErr(err error) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		return fe
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return kindErr(ErrWrongType, te.Field, "%s must be %s, got %s", te.Field, jsonTypeName(te.Type), httperr.Clip(te.Value))
	}
	return kindErr(ErrWrongType, "", "request body has a field of the wrong type")
}

// jsonTypeName names the JSON value a Go type decodes from.
func jsonTypeName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer (64-bit)"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return t.String()
}

// jsonKind names the JSON value starting with c.
func jsonKind(c byte) string {
	switch c {
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// syntaxErr says where the body stopped being JSON and what was expected
// there, from json's *SyntaxError.
func syntaxErr(sc scanned, err error) error {
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		return kindErr(ErrBadJSON, "", "request body is not valid JSON")
	}
	b := sc.out
	if se.Offset >= int64(len(b)) && strings.Contains(se.Error(), "end of JSON input") {
		line, col := position(b, len(b))
		what := "the body ends before its JSON value is complete"
		switch {
		case sc.openString >= 0:
			l, c := position(b, sc.openString)
			what = fmt.Sprintf("the string that starts at line %d, column %d is not closed: expected '\"'", l, c)
		case len(sc.open) > 0:
			at := sc.open[len(sc.open)-1]
			l, c := position(b, at)
			if b[at] == '{' {
				what = fmt.Sprintf("the object that starts at line %d, column %d is not closed: expected more fields or '}'", l, c)
			} else {
				what = fmt.Sprintf("the array that starts at line %d, column %d is not closed: expected more values or ']'", l, c)
			}
		}
		return kindErr(ErrBadJSON, "", "request body is not valid JSON: unexpected end at line %d, column %d: %s", line, col, what)
	}
	// Offset counts the bytes read, the offending one included.
	at := int(se.Offset) - 1
	at = max(0, min(at, len(b)))
	line, col := position(b, at)
	return kindErr(ErrBadJSON, "", "request body is not valid JSON: line %d, column %d: %s", line, col, se.Error())
}

// position returns the 1-based line and column (in characters) of byte
// offset off in b.
func position(b []byte, off int) (line, col int) {
	off = max(0, min(off, len(b)))
	before := b[:off]
	line = 1 + bytes.Count(before, []byte{'\n'})
	lineStart := bytes.LastIndexByte(before, '\n') + 1
	return line, utf8.RuneCount(before[lineStart:]) + 1
}

// invalidUTF8 returns the offset of the first byte of b that is not valid
// UTF-8, or -1.
func invalidUTF8(b []byte) int {
	if utf8.Valid(b) {
		return -1
	}
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return -1
}
