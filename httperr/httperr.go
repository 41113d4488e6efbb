package httperr

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// Body is OpenAI's error envelope.
type Body struct {
	Error Detail `json:"error"`
}

// Detail is the inside of the envelope. Param names the offending field.
type Detail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

// Error is an HTTP error thaw returns to a client.
type Error struct {
	Status  int
	Type    string // OpenAI error type, e.g. "invalid_request_error"
	Code    string // machine-readable, e.g. "model_not_found"
	Param   string // offending field, if any
	Message string
	// RetryAfter, when positive, is sent as the Retry-After header.
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Message }

// New returns an Error with the OpenAI type that matches status.
func New(status int, code, param, msg string) *Error {
	return &Error{Status: status, Type: typeFor(status), Code: code, Param: param, Message: msg}
}

func typeFor(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusNotFound:
		return "not_found_error"
	case http.StatusConflict:
		return "conflict_error"
	case http.StatusTooManyRequests:
		return "rate_limit_error"
	case http.StatusServiceUnavailable, http.StatusGatewayTimeout, http.StatusBadGateway:
		return "service_unavailable_error"
	}
	if status >= 500 {
		return "server_error"
	}
	return "invalid_request_error"
}

// Body returns e's JSON envelope, for writers that are not a
// ResponseWriter (a rewritten proxied response).
func (e *Error) Body() Body {
	d := Detail{Message: e.Message, Type: e.Type, Code: e.Code}
	if d.Type == "" {
		d.Type = typeFor(e.Status)
	}
	if e.Param != "" {
		p := e.Param
		d.Param = &p
	}
	return Body{Error: d}
}

// Write sends e as JSON with its status (and Retry-After when set).
func Write(w http.ResponseWriter, e *Error) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(e.Body())
}

// Encode is a convenience for the common case.
func Encode(w http.ResponseWriter, status int, code, param, msg string) {
	Write(w, New(status, code, param, msg))
}
