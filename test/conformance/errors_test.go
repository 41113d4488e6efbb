package conformance

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// checkError checks an error answer: status, and OpenAI's error shape with
// the status as a number in code, the given type and param (nil for none).
func checkError(t *testing.T, r reply, status int, typ string, param any) {
	t.Helper()
	if r.status != status {
		t.Errorf("status = %d, want %d: %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	o := r.json(t)
	checkKeys(t, "error answer", o, []string{"error"}, nil)
	e := sub(t, o, "error")
	checkKeys(t, "error", e, []string{"message", "type", "param", "code"}, nil)
	if msg, _ := e["message"].(string); msg == "" {
		t.Errorf("message = %#v, want a text", e["message"])
	}
	if e["type"] != typ || e["param"] != param || e["code"] != float64(status) {
		t.Errorf("type, param, code = %#v, %#v, %#v; want %q, %#v, %d",
			e["type"], e["param"], e["code"], typ, param, status)
	}
}

func testErrors(t *testing.T, srv server) {
	limit := maxModelLen(t, srv)
	const chat, cmpl = "/v1/chat/completions", "/v1/completions"
	tests := []struct {
		name, path string
		body       obj
		status     int
		typ        string
		param      any
	}{
		{"chat max_tokens 10^12", chat, obj{"messages": chatMessages, "max_tokens": 1_000_000_000_000}, 400, "BadRequestError", "max_tokens"},
		{"completion max_tokens 10^12", cmpl, obj{"prompt": "hi", "max_tokens": 1_000_000_000_000}, 400, "BadRequestError", "max_tokens"},
		{"chat max_tokens max_model_len+1", chat, obj{"messages": chatMessages, "max_tokens": limit + 1}, 400, "BadRequestError", "max_tokens"},
		{"completion max_tokens max_model_len+1", cmpl, obj{"prompt": "hi", "max_tokens": limit + 1}, 400, "BadRequestError", "max_tokens"},
		{"chat max_completion_tokens max_model_len+1", chat, obj{"messages": chatMessages, "max_completion_tokens": limit + 1}, 400, "BadRequestError", "max_completion_tokens"},
		{"chat max_tokens 0", chat, obj{"messages": chatMessages, "max_tokens": 0}, 400, "BadRequestError", "max_tokens"},
		{"chat unknown model", chat, obj{"model": "nobody/nothing", "messages": chatMessages}, 404, "NotFoundError", "model"},
		{"completion unknown model", cmpl, obj{"model": "nobody/nothing", "prompt": "hi"}, 404, "NotFoundError", "model"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkError(t, post(t, srv, tt.path, tt.body), tt.status, tt.typ, tt.param)
		})
	}
	// Invalid JSON fails vLLM's request validation before its OpenAI layer:
	// type "Bad Request" and param "body.<offset of the error>".
	for _, path := range []string{chat, cmpl} {
		t.Run("invalid JSON "+path, func(t *testing.T) {
			body := `{"model": "` + srv.model + `", "prompt": `
			r := send(t, srv, http.MethodPost, path, body)
			checkError(t, r, 400, "Bad Request", fmt.Sprintf("body.%d", len(body)))
			r = send(t, srv, http.MethodPost, path, `{"model": }`)
			checkError(t, r, 400, "Bad Request", "body.10")
		})
	}
}

// testContextCap: a prompt plus max_tokens over the context is not an error:
// the output is capped at what fits, with finish_reason length. The prompt
// is sized from the server's own count so that little room is left.
func testContextCap(t *testing.T, srv server) {
	limit := maxModelLen(t, srv)
	promptTokens := func(words int) int {
		o := postOK(t, srv, "/v1/completions", obj{"prompt": strings.Repeat("the ", words), "max_tokens": 1})
		return int(num(t, sub(t, o, "usage"), "prompt_tokens"))
	}
	words := limit / 2
	perWord := float64(promptTokens(words)) / float64(words)
	words = int(float64(limit-24) / perWord)
	prompt := promptTokens(words)
	if room := limit - prompt; room < 2 || room > 64 {
		t.Fatalf("a prompt of %d words is %d tokens, leaving %d of %d; want a little room", words, prompt, room, limit)
	}
	o := postOK(t, srv, "/v1/completions", obj{"prompt": strings.Repeat("the ", words), "max_tokens": limit / 2,
		"ignore_eos": true})
	c := list(t, o, "choices")
	_, completion := checkUsage(t, sub(t, o, "usage"), 1, limit/2)
	if len(c) != 1 || c[0]["finish_reason"] != "length" || completion != limit-prompt {
		t.Errorf("finish_reason %v after %d completion tokens; want length after the %d that fit",
			c[0]["finish_reason"], completion, limit-prompt)
	}
}

func testUnknownRoute(t *testing.T, srv server) {
	for _, tt := range []struct{ method, path, body string }{
		{http.MethodGet, "/v1/nothing-here", ""},
		{http.MethodPost, "/v1/nothing-here", `{}`},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := send(t, srv, tt.method, tt.path, tt.body)
			if r.status != http.StatusNotFound || strings.TrimSpace(string(r.body)) != `{"detail":"Not Found"}` {
				t.Errorf("%s %s = %d %s, want 404 {\"detail\":\"Not Found\"}", tt.method, tt.path, r.status, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
		})
	}
}
