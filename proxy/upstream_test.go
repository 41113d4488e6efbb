package proxy

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestUpstreamErrors: a model server's error answer (vLLM's, FastAPI's,
// OpenAI's shape) reaches the client in thaw's OpenAI shape with its status,
// on the OpenAI-compatible and the native paths alike. A 5xx's message,
// which may name server paths, is not passed on.
func TestUpstreamErrors(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		contentType string
		retryAfter  string
		body        string
		want        apiErr
		wantMsg     string
	}{
		{"vLLM", 400, "application/json", "",
			`{"object":"error","message":"This model's maximum context length is 4096 tokens.","type":"BadRequestError","param":null,"code":400}`,
			apiErr{Status: 400, Type: "invalid_request_error", Code: "bad_request"},
			"This model's maximum context length is 4096 tokens."},
		{"vLLM, nested, with a param", 400, "application/json", "",
			`{"error":{"message":"temperature must be non-negative","type":"BadRequestError","param":"temperature","code":400}}`,
			apiErr{Status: 400, Type: "invalid_request_error", Code: "bad_request", Param: strp("temperature")},
			"temperature must be non-negative"},
		{"vLLM 0.32, invalid body", 400, "application/json", "",
			`{"error":{"message":"Input should be a valid integer (parameter=body.max_tokens, value=x)","type":"Bad Request","param":"body.max_tokens","code":400}}`,
			apiErr{Status: 400, Type: "invalid_request_error", Code: "bad_request", Param: strp("max_tokens")},
			"Input should be a valid integer (parameter=body.max_tokens, value=x)"},
		{"vLLM 404", 404, "application/json", "",
			`{"object":"error","message":"The model ` + "`x`" + ` does not exist.","type":"NotFoundError","param":null,"code":404}`,
			apiErr{Status: 404, Type: "not_found_error", Code: "not_found"},
			"The model `x` does not exist."},
		{"FastAPI validation", 422, "application/json", "",
			`{"detail":[{"type":"int_parsing","loc":["body","max_tokens"],"msg":"Input should be a valid integer","input":"x"}]}`,
			apiErr{Status: 422, Type: "invalid_request_error", Code: "invalid_request", Param: strp("max_tokens")},
			"max_tokens: Input should be a valid integer"},
		{"FastAPI detail string", 404, "application/json", "",
			`{"detail":"Not Found"}`,
			apiErr{Status: 404, Type: "not_found_error", Code: "not_found"},
			"Not Found"},
		{"OpenAI shape with a string code", 400, "application/json", "",
			`{"error":{"message":"prompt too long","type":"invalid_request_error","param":"prompt","code":"too_long"}}`,
			apiErr{Status: 400, Type: "invalid_request_error", Code: "too_long", Param: strp("prompt")},
			"prompt too long"},
		{"5xx message with a server path", 500, "application/json", "",
			`{"object":"error","message":"[Errno 2] No such file or directory: '/models/alice/config.json'","type":"InternalServerError","param":null,"code":500}`,
			apiErr{Status: 500, Type: "server_error", Code: "upstream_error"},
			"the model server answered 500 Internal Server Error"},
		{"plain text with Retry-After", 503, "text/plain; charset=utf-8", "5",
			"Service Unavailable\n",
			apiErr{Status: 503, Type: "service_unavailable_error", Code: "unavailable", RetryAfter: "5"},
			"the model server answered 503 Service Unavailable"},
		{"plain text 4xx", 429, "text/plain", "",
			"slow down\n",
			apiErr{Status: 429, Type: "rate_limit_error", Code: "rate_limited"},
			"slow down"},
		{"HTML", 413, "text/html", "",
			"<html><body>too big</body></html>",
			apiErr{Status: 413, Type: "invalid_request_error", Code: "body_too_large"},
			"the model server answered 413 Request Entity Too Large"},
		{"error body over 1 MiB", 400, "application/json", "",
			`{"object":"error","message":"` + strings.Repeat("x", maxErrorBody) + `","code":400}`,
			apiErr{Status: 400, Type: "invalid_request_error", Code: "bad_request"},
			"the model server answered 400 Bad Request"},
	}
	paths := map[string]string{
		"chat":   "/v1/openai/chat/completions",
		"native": "/v1/inference/alice/m",
	}
	for _, tt := range tests {
		for kind, path := range paths {
			t.Run(tt.name+"/"+kind, func(t *testing.T) {
				h := newHarness(t, Config{})
				up := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ map[string]any) {
					w.Header().Set("Content-Type", tt.contentType)
					if tt.retryAfter != "" {
						w.Header().Set("Retry-After", tt.retryAfter)
					}
					w.WriteHeader(tt.status)
					_, _ = w.Write([]byte(tt.body))
				})
				h.p.SetEndpoints("d1", 1, map[string]string{"i1": up.addr()})
				body := chatBody
				if kind == "native" {
					body = `{"input":"x"}`
				}
				r := h.post(context.Background(), "alice", path, body)
				got, msg := errOf(t, r)
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("error (-want +got):\n%s", diff)
				}
				if msg != tt.wantMsg {
					t.Errorf("message = %.200q, want %q", msg, tt.wantMsg)
				}
				if ct := r.header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q", ct)
				}
			})
		}
	}
}

// TestNoInternalDetailsInErrors: when the model server cannot be reached or
// hangs up, the client gets a plain message: no address, no OS error. One
// that refuses connections holds the request (it may be replaced) until
// the hold timeout, then 503 no_capacity; one that hangs up is 502.
func TestNoInternalDetailsInErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusing := ln.Addr().String()
	ln.Close()
	hangsUp := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ map[string]any) {
		hangUp(w, false)
	})
	tests := []struct {
		name, addr, path, body string
		wantMsg                string
	}{
		{"refused", refusing, "/v1/openai/chat/completions", chatBody, "no instance of alice/m became available within the hold timeout (1s)"},
		{"refused, native", refusing, "/v1/inference/alice/m", `{"input":"x"}`, "no instance of alice/m became available within the hold timeout (1s)"},
		{"hangs up", hangsUp.addr(), "/v1/completions", `{"model":"alice/m","prompt":"x"}`, "the model server failed to answer"},
		{"hangs up, native", hangsUp.addr(), "/v1/inference/alice/m", `{"input":"x"}`, "the model server failed to answer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{HoldTimeout: time.Second})
			h.p.SetEndpoints("d1", 1, map[string]string{"i1": tt.addr})
			r := h.post(context.Background(), "alice", tt.path, tt.body)
			got, msg := errOf(t, r)
			want := apiErr{Status: 502, Type: "service_unavailable_error", Code: "upstream_error"}
			if tt.addr == refusing {
				want = apiErr{Status: 503, Type: "service_unavailable_error", Code: "no_capacity", RetryAfter: "30"}
			}
			if diff := cmp.Diff(want, got); diff != "" || msg != tt.wantMsg {
				t.Errorf("error (-want +got):\n%s\nmessage %q, want %q", diff, msg, tt.wantMsg)
			}
			for _, leak := range []string{"127.0.0.1", "dial", "tcp", "connect", "EOF", strings.Split(tt.addr, ":")[1]} {
				if strings.Contains(r.body, leak) {
					t.Errorf("body %s shows %q", r.body, leak)
				}
			}
			eventually(t, "in flight back to 0", func() bool { return h.p.Counts()["d1"] == (Load{}) })
		})
	}
}
