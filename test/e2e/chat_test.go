package e2e

import (
	"strings"
	"testing"
)

func TestCheckChat(t *testing.T) {
	const good = `{"object":"chat.completion","choices":[{"message":{"role":"assistant","content":"hi there"}}],` +
		`"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`
	for _, tc := range []struct {
		name      string
		status    int
		body      string
		maxTokens int
		want      string // a part of the problem; "" for none
	}{
		{"valid", 200, good, 2, ""},
		{"no bound", 200, good, 0, ""},
		{"not 200", 503, `{"error":{}}`, 2, "not 200: HTTP 503"},
		{"not JSON", 200, `<html>`, 2, "body is not JSON"},
		{"another object", 200, strings.Replace(good, "chat.completion", "text_completion", 1), 2, "object is not chat.completion"},
		{"empty content", 200, strings.Replace(good, "hi there", "", 1), 2, "no choice with content"},
		{"another role", 200, strings.Replace(good, "assistant", "user", 1), 2, "role is not assistant"},
		{"no usage", 200, good[:strings.Index(good, `,"usage"`)] + "}", 2, "no usage"},
		{"more tokens than asked", 200, good, 1, "usage is wrong for max_tokens 1"},
		{"a total that does not add up", 200, strings.Replace(good, `"total_tokens":5`, `"total_tokens":6`, 1), 2, "usage is wrong"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := CheckChat(tc.status, []byte(tc.body), tc.maxTokens)
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Errorf("CheckChat = %q, want %q", got, tc.want)
			}
		})
	}
}
