package sim

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// post sends body to url+path and returns the response; the caller closes
// its body.
func post(t *testing.T, url, path, body string) *http.Response {
	t.Helper()
	resp, err := http.Post(url+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return resp
}

// chatAll sends each chat completion body in turn and reads each answer to
// its end.
func chatAll(t *testing.T, url string, bodies ...string) {
	t.Helper()
	for _, body := range bodies {
		resp := post(t, url, "/v1/chat/completions", body)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// decodeObject decodes a JSON object and checks and removes the fields
// that vary between runs: id (with its prefix) and created.
func decodeObject(t *testing.T, raw []byte, idPrefix string) map[string]any {
	t.Helper()
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("decoding %s: %v", raw, err)
	}
	if id, _ := got["id"].(string); !strings.HasPrefix(id, idPrefix) || len(id) <= len(idPrefix) {
		t.Errorf("id = %q, want prefix %q", got["id"], idPrefix)
	}
	if created, _ := got["created"].(float64); created < float64(time.Now().Add(-time.Hour).Unix()) {
		t.Errorf("created = %v, want a recent unix time", got["created"])
	}
	delete(got, "id")
	delete(got, "created")
	return got
}

func usageOf(prompt, completion int) map[string]any {
	return map[string]any{"prompt_tokens": float64(prompt),
		"completion_tokens": float64(completion), "total_tokens": float64(prompt + completion)}
}

func chatWant(content string, u map[string]any) map[string]any {
	return map[string]any{
		"object": "chat.completion", "model": "m",
		"choices": []any{map[string]any{"index": float64(0), "logprobs": nil, "finish_reason": "length",
			"stop_reason": nil, "message": map[string]any{"role": "assistant", "content": content}}},
		"usage": u,
	}
}

func completionWant(text string, u map[string]any) map[string]any {
	return map[string]any{
		"object": "text_completion", "model": "m",
		"choices": []any{map[string]any{"index": float64(0), "logprobs": nil, "finish_reason": "length",
			"stop_reason": nil, "text": text}},
		"usage": u,
	}
}

// withFinish sets the finish_reason of want's one choice.
func withFinish(want map[string]any, reason string) map[string]any {
	want["choices"].([]any)[0].(map[string]any)["finish_reason"] = reason
	return want
}

func TestNonStreaming(t *testing.T) {
	const rate = 1000
	_, url := startHandler(t, Config{TokensPerSecond: rate})
	sixteen := "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et"
	tests := []struct {
		name, path, body string
		idPrefix         string
		want             map[string]any
	}{{
		name: "chat", path: "/v1/chat/completions", idPrefix: "chatcmpl-",
		body: `{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello  there\nworld"}]}`,
		want: chatWant("lorem ipsum dolor sit amet", usageOf(5, 5)),
	}, {
		name: "chat with content parts and max_completion_tokens", path: "/v1/chat/completions", idPrefix: "chatcmpl-",
		body: `{"model":"m","max_tokens":9,"max_completion_tokens":2,"messages":[{"role":"user","content":[{"type":"text","text":"one two"},{"type":"image_url","image_url":{"url":"x"}}]}]}`,
		want: chatWant("lorem ipsum", usageOf(2, 2)),
	}, {
		name: "chat without max_tokens stops after 16, empty prompt counts one", path: "/v1/chat/completions", idPrefix: "chatcmpl-",
		body: `{"messages":[{"role":"user","content":""}]}`,
		want: withFinish(chatWant(sixteen, usageOf(1, 16)), "stop"),
	}, {
		name: "completion", path: "/v1/completions", idPrefix: "cmpl-",
		body: `{"model":"m","prompt":"once upon a time","max_tokens":3}`,
		want: completionWant("lorem ipsum dolor", usageOf(4, 3)),
	}, {
		name: "completion with token ids, words cycle", path: "/v1/completions", idPrefix: "cmpl-",
		body: `{"model":"m","prompt":[[1,2,3]],"max_tokens":21}`,
		want: completionWant(sixteen+" dolore magna aliqua lorem ipsum", usageOf(3, 21)),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			began := time.Now()
			resp := post(t, url, tt.path, tt.body)
			defer resp.Body.Close()
			var raw json.RawMessage
			if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d %s, want 200", resp.StatusCode, raw)
			}
			got := decodeObject(t, raw, tt.idPrefix)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("response (-want +got):\n%s", diff)
			}
			tokens := tt.want["usage"].(map[string]any)["completion_tokens"].(float64)
			if minTime := time.Duration(tokens) * time.Second / rate; time.Since(began) < minTime {
				t.Errorf("answered after %v, want at least %v for %v tokens at %d/s",
					time.Since(began), minTime, tokens, rate)
			}
		})
	}
}

// TestContextLimits: as vLLM, a max_tokens above the context is refused,
// as is a prompt that fills it, while a prompt plus max_tokens over it is
// capped to what fits, finishing with length.
func TestContextLimits(t *testing.T) {
	_, url := startHandler(t, Config{TokensPerSecond: 1e6, MaxModelLen: 10})
	resp := post(t, url, "/v1/completions", `{"prompt":"one two three four","max_tokens":10}`)
	defer resp.Body.Close()
	var got struct {
		Choices []struct {
			FinishReason string `json:"finish_reason"`
		}
		Usage usage
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := usage{PromptTokens: 4, CompletionTokens: 6, TotalTokens: 10}
	if got.Usage != want || len(got.Choices) != 1 || got.Choices[0].FinishReason != "length" {
		t.Errorf("got %+v, want usage %+v and finish_reason length", got, want)
	}

	for _, tt := range []struct{ name, path, body, param string }{
		{"max_tokens over the context", "/v1/completions", `{"prompt":"hi","max_tokens":11}`, "max_tokens"},
		{"max_completion_tokens over the context", "/v1/chat/completions",
			`{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":11}`, "max_completion_tokens"},
		{"prompt fills the context", "/v1/completions", `{"prompt":"a b c d e f g h i j"}`, "input_tokens"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := post(t, url, tt.path, tt.body)
			defer resp.Body.Close()
			var got struct{ Error apiError }
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 400 || got.Error.Param == nil || *got.Error.Param != tt.param || got.Error.Code != 400 {
				t.Errorf("status %d, error %+v; want 400 with param %q", resp.StatusCode, got.Error, tt.param)
			}
		})
	}
}

// TestEOS: without max_tokens the simulated model stops by itself after
// 16 tokens (finish_reason stop), unless ignore_eos makes it fill the
// context.
func TestEOS(t *testing.T) {
	_, url := startHandler(t, Config{TokensPerSecond: 1e6, MaxModelLen: 40})
	for _, tt := range []struct {
		body       string
		completion int
		reason     string
	}{
		{`{"prompt":"a b"}`, 16, "stop"},
		{`{"prompt":"a b","ignore_eos":true}`, 38, "length"},
		{`{"prompt":"a b","max_tokens":20}`, 20, "length"},
	} {
		resp := post(t, url, "/v1/completions", tt.body)
		var got struct {
			Choices []struct {
				FinishReason string `json:"finish_reason"`
			}
			Usage usage
		}
		err := json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got.Usage.CompletionTokens != tt.completion || got.Choices[0].FinishReason != tt.reason {
			t.Errorf("%s: %d tokens, finish_reason %s; want %d, %s", tt.body,
				got.Usage.CompletionTokens, got.Choices[0].FinishReason, tt.completion, tt.reason)
		}
	}
}

// TestTwoChoices: n choices, indexed, whole and streamed, with the usage
// of all of them.
func TestTwoChoices(t *testing.T) {
	_, url := startHandler(t, Config{TokensPerSecond: 1e6})
	resp := post(t, url, "/v1/completions", `{"prompt":"hi there","max_tokens":2,"n":2}`)
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	got := decodeObject(t, raw, "cmpl-")
	c := func(i int) any {
		return map[string]any{"index": float64(i), "text": "lorem ipsum", "logprobs": nil, "finish_reason": "length", "stop_reason": nil}
	}
	want := map[string]any{"object": "text_completion", "model": "m", "choices": []any{c(0), c(1)}, "usage": usageOf(2, 4)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("n=2 (-want +got):\n%s", diff)
	}

	resp = post(t, url, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":1,"n":2,"stream":true}`)
	events := readEvents(t, resp)
	resp.Body.Close()
	var chunks []any
	for _, e := range events[:len(events)-1] {
		chunks = append(chunks, decodeObject(t, []byte(e.data), "chatcmpl-")["choices"])
	}
	d := func(i int, delta map[string]any, reason any) any {
		return []any{map[string]any{"index": float64(i), "delta": delta, "logprobs": nil, "finish_reason": reason, "stop_reason": nil}}
	}
	role := map[string]any{"role": "assistant", "content": ""}
	wantChunks := []any{d(0, role, nil), d(1, role, nil),
		d(0, map[string]any{"content": "lorem"}, "length"), d(1, map[string]any{"content": "lorem"}, "length")}
	if diff := cmp.Diff(wantChunks, chunks); diff != "" {
		t.Errorf("n=2 stream choices (-want +got):\n%s", diff)
	}
}

// event is one server-sent event and when it arrived.
type event struct {
	data string
	at   time.Time
}

// readEvents reads a whole event stream.
func readEvents(t *testing.T, resp *http.Response) []event {
	t.Helper()
	var events []event
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("stream line %q, want a data line", line)
		}
		events = append(events, event{data: data, at: time.Now()})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return events
}

func TestStreaming(t *testing.T) {
	const rate = 100
	_, url := startHandler(t, Config{TokensPerSecond: rate})
	chatChunk := func(d map[string]any, reason any) map[string]any {
		return map[string]any{"object": "chat.completion.chunk", "model": "m", "choices": []any{
			map[string]any{"index": float64(0), "delta": d, "logprobs": nil, "finish_reason": reason, "stop_reason": nil}}}
	}
	textChunk := func(text string, reason any) map[string]any {
		return map[string]any{"object": "text_completion", "model": "m", "choices": []any{
			map[string]any{"index": float64(0), "text": text, "logprobs": nil, "finish_reason": reason, "stop_reason": nil}}}
	}
	usageChunk := func(object string) map[string]any {
		return map[string]any{"object": object, "model": "m", "choices": []any{}, "usage": usageOf(2, 4)}
	}
	tests := []struct {
		name, path, body string
		idPrefix         string
		want             []map[string]any
	}{{
		name: "chat with usage", path: "/v1/chat/completions", idPrefix: "chatcmpl-",
		body: `{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":4,"messages":[{"role":"user","content":"hi there"}]}`,
		want: []map[string]any{
			chatChunk(map[string]any{"role": "assistant", "content": ""}, nil),
			chatChunk(map[string]any{"content": "lorem"}, nil),
			chatChunk(map[string]any{"content": " ipsum"}, nil),
			chatChunk(map[string]any{"content": " dolor"}, nil),
			chatChunk(map[string]any{"content": " sit"}, "length"),
			usageChunk("chat.completion.chunk"),
		},
	}, {
		name: "completion without usage", path: "/v1/completions", idPrefix: "cmpl-",
		body: `{"model":"m","stream":true,"max_tokens":4,"prompt":"hi there"}`,
		want: []map[string]any{
			textChunk("lorem", nil), textChunk(" ipsum", nil), textChunk(" dolor", nil),
			textChunk(" sit", "length"),
		},
	}, {
		name: "completion with usage", path: "/v1/completions", idPrefix: "cmpl-",
		body: `{"stream":true,"stream_options":{"include_usage":true},"max_tokens":4,"prompt":"hi there"}`,
		want: []map[string]any{
			textChunk("lorem", nil), textChunk(" ipsum", nil), textChunk(" dolor", nil),
			textChunk(" sit", "length"), usageChunk("text_completion"),
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sent := time.Now()
			resp := post(t, url, tt.path, tt.body)
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d, want 200", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream; charset=utf-8" {
				t.Errorf("Content-Type = %q, want text/event-stream; charset=utf-8", ct)
			}
			events := readEvents(t, resp)
			if len(events) == 0 || events[len(events)-1].data != "[DONE]" {
				t.Fatalf("stream does not end in [DONE]: %v", events)
			}
			events = events[:len(events)-1]
			var got []map[string]any
			for _, e := range events {
				got = append(got, decodeObject(t, []byte(e.data), tt.idPrefix))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("chunks (-want +got):\n%s", diff)
			}
			if strings.HasPrefix(tt.idPrefix, "chat") {
				events = events[1:] // the role chunk
			}
			if len(events) < 4 {
				return
			}
			// Four tokens at 100/s: the fourth is generated 30ms after the
			// first at the earliest, so it cannot arrive sooner after the
			// request was sent. (Measured from the first token's arrival
			// instead, a reader starved for a moment under load sees the
			// tokens bunched: that bound flaked.)
			if after := events[3].at.Sub(sent); after < 30*time.Millisecond {
				t.Errorf("token 4 arrived %v after the request, want at least 30ms (paced at 100/s)", after)
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	_, url := startHandler(t, Config{TokensPerSecond: 1000})
	const chat, cmpl = "/v1/chat/completions", "/v1/completions"
	tests := []struct {
		name, path, body string
		wantStatus       int
		wantType         string
		wantParam        any    // nil or the param vLLM names
		wantMessage      string // a substring of the message
	}{
		{"chat other model", chat, `{"model":"x","messages":[{"role":"user","content":"hi"}]}`, 404, "NotFoundError", "model", "The model `x` does not exist."},
		{"completion other model", cmpl, `{"model":"x","prompt":"hi"}`, 404, "NotFoundError", "model", "The model `x` does not exist."},
		{"chat bad JSON", chat, `{"model":`, 400, "Bad Request", "body.9", "invalid JSON"},
		{"completion bad JSON", cmpl, `not json`, 400, "Bad Request", "body.1", "invalid JSON"},
		{"chat wrong field type", chat, `{"messages":"hi"}`, 400, "Bad Request", "body.messages", "invalid JSON"},
		{"not an object", chat, `[1]`, 400, "Bad Request", "body", "invalid JSON"},
		{"chat no messages", chat, `{"model":"m"}`, 400, "BadRequestError", nil, "messages"},
		{"chat empty messages", chat, `{"model":"m","messages":[]}`, 400, "BadRequestError", nil, "messages"},
		{"chat bad content", chat, `{"messages":[{"role":"user","content":7}]}`, 400, "BadRequestError", nil, "messages[0]"},
		{"completion no prompt", cmpl, `{"model":"m"}`, 400, "BadRequestError", "prompt", "prompt"},
		{"completion batched prompts", cmpl, `{"prompt":["a","b"]}`, 400, "BadRequestError", "prompt", "one prompt"},
		{"chat zero max_tokens", chat, `{"max_tokens":0,"messages":[{"role":"user","content":"hi"}]}`, 400, "BadRequestError", "max_tokens", "max_tokens"},
		{"chat negative max_completion_tokens", chat, `{"max_completion_tokens":-3,"messages":[{"role":"user","content":"hi"}]}`, 400, "BadRequestError", "max_tokens", "max_tokens"},
		{"completion negative max_tokens", cmpl, `{"prompt":"hi","max_tokens":-1}`, 400, "BadRequestError", "max_tokens", "max_tokens"},
		{"completion max_tokens over the context", cmpl, `{"prompt":"hi","max_tokens":1000000000000}`, 400, "BadRequestError", "max_tokens", "cannot be greater than max_model_len=4096"},
		{"completion n=0", cmpl, `{"prompt":"hi","n":0}`, 400, "BadRequestError", nil, "n must be at least 1"},
		{"stream options without stream", cmpl, `{"prompt":"hi","stream_options":{"include_usage":true}}`, 400, "BadRequestError", "stream_options", "stream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := post(t, url, tt.path, tt.body)
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			var got struct {
				Error map[string]any `json:"error"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatalf("decoding error body: %v", err)
			}
			msg, _ := got.Error["message"].(string)
			if !strings.Contains(msg, tt.wantMessage) {
				t.Errorf("message = %q, want it to contain %q", msg, tt.wantMessage)
			}
			delete(got.Error, "message")
			want := map[string]any{"type": tt.wantType, "param": tt.wantParam, "code": float64(tt.wantStatus)}
			if diff := cmp.Diff(want, got.Error); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}
