package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/routing"
)

func TestNative(t *testing.T) {
	h := newHarness(t, Config{})
	up := newUpstream(t, nil)
	h.p.SetEndpoints("d1", 2, map[string]string{"i1": up.addr()})
	r := h.post(context.Background(), "alice", "/v1/inference/alice/m", `{"input":"Say hi","max_new_tokens":5,"temperature":0.2}`)
	if r.status != http.StatusOK {
		t.Fatalf("status %d body %s", r.status, r.body)
	}
	var got nativeResponse
	if err := json.Unmarshal([]byte(r.body), &got); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	if !strings.HasPrefix(got.RequestID, "req-") {
		t.Errorf("request_id = %q", got.RequestID)
	}
	got.RequestID, got.InferenceStatus.RuntimeMS = "", 0
	want := nativeResponse{
		InferenceStatus: inferenceStatus{Status: "succeeded", TokensGenerated: 2, TokensInput: 3},
		Results:         []nativeResult{{GeneratedText: "hello world"}},
		NumTokens:       2, NumInputTokens: 3,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("native response (-want +got):\n%s", diff)
	}
	s := up.seen()
	if len(s) != 1 {
		t.Fatalf("upstream saw %d requests", len(s))
	}
	if s[0].Path != "/v1/completions" || s[0].Auth != "" {
		t.Errorf("upstream request path %q auth %q, want /v1/completions without the user's token", s[0].Path, s[0].Auth)
	}
	wantBody := map[string]any{"model": "alice/m", "prompt": "Say hi", "max_tokens": 5.0, "temperature": 0.2, "top_p": nil, "stop": nil}
	if diff := cmp.Diff(wantBody, s[0].Body); diff != "" {
		t.Errorf("upstream completion request (-want +got):\n%s", diff)
	}
}

func TestNativeDefaultMaxTokens(t *testing.T) {
	h := newHarness(t, Config{})
	up := newUpstream(t, nil)
	h.p.SetEndpoints("d1", 2, map[string]string{"i1": up.addr()})
	if r := h.post(context.Background(), "alice", "/v1/inference/alice/m", `{"input":""}`); r.status != 200 {
		t.Fatalf("status %d body %s", r.status, r.body)
	}
	if got := up.seen()[0].Body["max_tokens"]; got != float64(DefaultNativeMaxTokens) {
		t.Errorf("max_tokens = %v, want %d", got, DefaultNativeMaxTokens)
	}
}

// TestNativeColdStart: the native path holds like the OpenAI one.
func TestNativeColdStart(t *testing.T) {
	h := newHarness(t, Config{})
	ch := h.postAsync(context.Background(), "alice", "/v1/inference/alice/m", `{"input":"x"}`)
	h.waitHeld("d1", 1)
	up := newUpstream(t, nil)
	h.p.SetEndpoints("d1", 1, map[string]string{"i1": up.addr()})
	r := wait(t, ch, 3*time.Second)
	if r.status != 200 || !strings.Contains(r.body, "hello world") || r.header.Get(routing.ColdStartHeader) == "" {
		t.Errorf("cold native request: %d %s (%s=%q)", r.status, r.body, routing.ColdStartHeader, r.header.Get(routing.ColdStartHeader))
	}
}

func TestNativeUpstreamError(t *testing.T) {
	h := newHarness(t, Config{})
	up := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":{"message":"prompt too long","type":"invalid_request_error","param":"prompt","code":"too_long"}}`))
	})
	h.p.SetEndpoints("d1", 1, map[string]string{"i1": up.addr()})
	got, msg := errOf(t, h.post(context.Background(), "alice", "/v1/inference/alice/m", `{"input":"x"}`))
	want := apiErr{Status: 400, Type: "invalid_request_error", Code: "too_long", Param: strp("prompt")}
	if diff := cmp.Diff(want, got); diff != "" || msg != "prompt too long" {
		t.Errorf("model server's error passed through (-want +got):\n%s\nmessage %q", diff, msg)
	}
}

func TestNativeErrors(t *testing.T) {
	tests := []struct {
		name, path, body string
		want             apiErr
	}{
		{"missing input", "/v1/inference/alice/m", `{"max_new_tokens":5}`,
			apiErr{Status: 400, Type: "invalid_request_error", Code: "missing_input", Param: strp("input")}},
		{"input not a string", "/v1/inference/alice/m", `{"input":5}`,
			apiErr{Status: 400, Type: "invalid_request_error", Code: "invalid_type", Param: strp("input")}},
		{"invalid JSON", "/v1/inference/alice/m", `{"input":`,
			apiErr{Status: 400, Type: "invalid_request_error", Code: "invalid_json"}},
		{"stream", "/v1/inference/alice/m", `{"input":"x","stream":true}`,
			apiErr{Status: 400, Type: "invalid_request_error", Code: "stream_unsupported", Param: strp("stream")}},
		{"max_new_tokens 0", "/v1/inference/alice/m", `{"input":"x","max_new_tokens":0}`,
			apiErr{Status: 400, Type: "invalid_request_error", Code: "invalid_value", Param: strp("max_new_tokens")}},
		{"unknown model", "/v1/inference/alice/nope", `{"input":"x"}`,
			apiErr{Status: 404, Type: "not_found_error", Code: "model_not_found", Param: strp("model")}},
		{"another user's model", "/v1/inference/bob/m", `{"input":"x"}`,
			apiErr{Status: 404, Type: "not_found_error", Code: "model_not_found", Param: strp("model")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			up := newUpstream(t, nil)
			h.p.SetEndpoints("d1", 2, map[string]string{"i1": up.addr()})
			got, msg := errOf(t, h.post(context.Background(), "alice", tt.path, tt.body))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("error (-want +got):\n%s\nmessage: %s", diff, msg)
			}
			if n := len(up.seen()); n != 0 {
				t.Errorf("upstream saw %d requests, want 0", n)
			}
		})
	}
}
