package client

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/thawhq/thaw/httperr"
)

// Error is a non-2xx answer from the API. Message, Type, Param and Code come
// from the OpenAI-shaped body {"error":{"message","type","param","code"}};
// when the body has another shape, Message holds its text (or the HTTP status
// text when the body is empty).
type Error struct {
	// Status is the HTTP status code, e.g. 404.
	Status int
	// Message is the server's human-readable message.
	Message string
	// Type is the error's type, e.g. "invalid_request_error".
	Type string
	// Param names the offending request field, when the server said.
	Param string
	// Code is the error's code, e.g. "not_found".
	Code string
}

// Error reads like "404 not_found: deployment x not found".
func (e *Error) Error() string {
	label := e.Code
	if label == "" || isNumber(label) {
		label = e.Type
	}
	if label == "" {
		label = strings.ToLower(http.StatusText(e.Status))
	}
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if e.Param != "" && !strings.Contains(msg, e.Param) {
		msg += " (param " + e.Param + ")"
	}
	if label == "" {
		return fmt.Sprintf("%d: %s", e.Status, msg)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, label, msg)
}

// isNumber reports whether s is all digits, like a code that repeats the
// HTTP status and says nothing more.
func isNumber(s string) bool {
	return strings.Trim(s, "0123456789") == ""
}

// maxErrorText bounds how much of a non-JSON error body lands in Message.
const maxErrorText = 500

// decodeError builds an *Error from a non-2xx response body. It never fails:
// fields that are null, numbers or strings are all accepted, and a body that
// is not the OpenAI shape becomes the message text.
func decodeError(status int, body []byte) *Error {
	e := &Error{Status: status}
	var env struct {
		Error  json.RawMessage `json:"error"`
		Detail json.RawMessage `json:"detail"` // DeepInfra and FastAPI shape
	}
	if err := json.Unmarshal(body, &env); err == nil {
		var obj struct {
			Message json.RawMessage `json:"message"`
			Type    json.RawMessage `json:"type"`
			Param   json.RawMessage `json:"param"`
			Code    json.RawMessage `json:"code"`
		}
		switch {
		case json.Unmarshal(env.Error, &obj) == nil && obj.Message != nil:
			e.Message = lenientString(obj.Message)
			e.Type = lenientString(obj.Type)
			e.Param = lenientString(obj.Param)
			e.Code = lenientString(obj.Code)
			return e
		case len(env.Error) > 0:
			e.Message = lenientString(env.Error)
		case len(env.Detail) > 0:
			e.Message = lenientString(env.Detail)
		}
		if e.Message != "" {
			return e
		}
	}
	e.Message = httperr.Truncate(strings.TrimSpace(string(body)), maxErrorText)
	return e
}

// lenientString turns a JSON string, number, bool or null into text; other
// values (objects, arrays) become their compact JSON.
func lenientString(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) == nil {
		return buf.String()
	}
	return string(raw)
}
