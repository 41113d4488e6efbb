package httperr

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestWrite(t *testing.T) {
	str := func(s string) *string { return &s }
	tests := []struct {
		name       string
		err        *Error
		wantStatus int
		wantRetry  string
		wantBody   Body
	}{
		{
			name:       "bad field names its param",
			err:        New(http.StatusBadRequest, "invalid_value", "num_gpus", "num_gpus must be between 1 and 8"),
			wantStatus: http.StatusBadRequest,
			wantBody:   Body{Error: Detail{Message: "num_gpus must be between 1 and 8", Type: "invalid_request_error", Param: str("num_gpus"), Code: "invalid_value"}},
		},
		{
			name:       "no param is null",
			err:        New(http.StatusUnauthorized, "missing_token", "", "missing API token"),
			wantStatus: http.StatusUnauthorized,
			wantBody:   Body{Error: Detail{Message: "missing API token", Type: "authentication_error", Code: "missing_token"}},
		},
		{
			name:       "not found",
			err:        New(http.StatusNotFound, "model_not_found", "model", "no such model"),
			wantStatus: http.StatusNotFound,
			wantBody:   Body{Error: Detail{Message: "no such model", Type: "not_found_error", Param: str("model"), Code: "model_not_found"}},
		},
		{
			name:       "conflict",
			err:        New(http.StatusConflict, "duplicate_model_name", "model_name", "exists"),
			wantStatus: http.StatusConflict,
			wantBody:   Body{Error: Detail{Message: "exists", Type: "conflict_error", Param: str("model_name"), Code: "duplicate_model_name"}},
		},
		{
			name:       "retry after rounds up to whole seconds",
			err:        &Error{Status: http.StatusTooManyRequests, Code: "queue_full", Message: "full", RetryAfter: 1500 * time.Millisecond},
			wantStatus: http.StatusTooManyRequests,
			wantRetry:  "2",
			wantBody:   Body{Error: Detail{Message: "full", Type: "rate_limit_error", Code: "queue_full"}},
		},
		{
			name:       "retry after under a second is 1",
			err:        &Error{Status: http.StatusServiceUnavailable, Code: "no_capacity", Message: "later", RetryAfter: time.Nanosecond},
			wantStatus: http.StatusServiceUnavailable,
			wantRetry:  "1",
			wantBody:   Body{Error: Detail{Message: "later", Type: "service_unavailable_error", Code: "no_capacity"}},
		},
		{
			name:       "whole seconds stay",
			err:        &Error{Status: http.StatusServiceUnavailable, Code: "no_capacity", Message: "later", RetryAfter: 30 * time.Second},
			wantStatus: http.StatusServiceUnavailable,
			wantRetry:  "30",
			wantBody:   Body{Error: Detail{Message: "later", Type: "service_unavailable_error", Code: "no_capacity"}},
		},
		{
			name:       "server error type",
			err:        New(http.StatusInternalServerError, "internal_error", "", "boom"),
			wantStatus: http.StatusInternalServerError,
			wantBody:   Body{Error: Detail{Message: "boom", Type: "server_error", Code: "internal_error"}},
		},
		{
			name:       "unprocessable is an invalid request",
			err:        New(http.StatusUnprocessableEntity, "quota_exceeded", "settings.min_instances", "over quota"),
			wantStatus: http.StatusUnprocessableEntity,
			wantBody:   Body{Error: Detail{Message: "over quota", Type: "invalid_request_error", Param: str("settings.min_instances"), Code: "quota_exceeded"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			Write(rec, tt.err)
			if rec.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d", rec.Code, tt.wantStatus)
			}
			if got := rec.Header().Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", got)
			}
			if got := rec.Header().Get("Retry-After"); got != tt.wantRetry {
				t.Errorf("Retry-After = %q, want %q", got, tt.wantRetry)
			}
			var got Body
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("body %q: %v", rec.Body, err)
			}
			if diff := cmp.Diff(tt.wantBody, got); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantBody, tt.err.Body()); diff != "" {
				t.Errorf("Body() (-want +got):\n%s", diff)
			}
		})
	}
}

// TestWriteRawShape checks the literal JSON keys an OpenAI SDK parses,
// including "param": null rather than an absent key.
func TestWriteRawShape(t *testing.T) {
	rec := httptest.NewRecorder()
	Encode(rec, http.StatusBadRequest, "invalid_json", "", "not JSON")
	var raw map[string]map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	want := map[string]map[string]any{"error": {
		"message": "not JSON", "type": "invalid_request_error", "param": nil, "code": "invalid_json",
	}}
	if diff := cmp.Diff(want, raw); diff != "" {
		t.Errorf("raw body (-want +got):\n%s", diff)
	}
}
