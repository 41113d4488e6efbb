package httperr

import "net/http"

// InsufficientQuota is OpenAI's answer to an exhausted budget: 429 with
// type and code "insufficient_quota". thaw gives it to a user over their
// spending limit.
func InsufficientQuota(param, msg string) *Error {
	e := New(http.StatusTooManyRequests, "insufficient_quota", param, msg)
	e.Type = "insufficient_quota"
	return e
}
