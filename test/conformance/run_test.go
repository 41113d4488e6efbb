package conformance

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// run runs every case against srv.
func run(t *testing.T, srv server) {
	cases := []struct {
		name string
		f    func(*testing.T, server)
	}{
		{"health", testHealth},
		{"models", testModels},
		{"chat", testChat},
		{"completion", testCompletion},
		{"chat stream", testChatStream},
		{"completion stream", testCompletionStream},
		{"n=2", testTwoChoices},
		{"n=2 stream", testTwoChoicesStream},
		{"errors", testErrors},
		{"context caps the output", testContextCap},
		{"unknown route", testUnknownRoute},
		{"metrics", testMetrics},
		{"waiting when the batch is full", testWaiting},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.f(t, srv) })
	}
}

// chatMessages is a short chat prompt.
var chatMessages = []obj{{"role": "user", "content": "Say hello to the conformance suite"}}

// finishReasons are the finish reasons a random model can give when it is
// not asked for tools: it may emit its end-of-sequence token any time.
var finishReasons = []string{"length", "stop"}

// checkFinish checks a finish_reason, and that the choice was stopped by
// max_tokens when it generated all of them.
func checkFinish(t *testing.T, c obj) {
	t.Helper()
	r, _ := c["finish_reason"].(string)
	if !slices.Contains(finishReasons, r) {
		t.Errorf("finish_reason = %#v, want one of %q", c["finish_reason"], finishReasons)
	}
}

// checkUsage checks a usage object: whole numbers that add up, at least one
// prompt token, at most maxTokens completion tokens per choice (and at least
// one each: every choice generates one token before it can stop).
func checkUsage(t *testing.T, u obj, choices, maxTokens int) (prompt, completion int) {
	t.Helper()
	p, c, total := num(t, u, "prompt_tokens"), num(t, u, "completion_tokens"), num(t, u, "total_tokens")
	if p < 1 || c < float64(choices) || c > float64(choices*maxTokens) || total != p+c {
		t.Errorf("usage %v: want prompt_tokens >= 1, completion_tokens in [%d, %d], total their sum",
			u, choices, choices*maxTokens)
	}
	return int(p), int(c)
}

// checkKeys checks that o has every key of need and no key outside allow
// (need is implied): the fields a client relies on, and no field vLLM does
// not send.
func checkKeys(t *testing.T, what string, o any, need, allow []string) {
	t.Helper()
	got := keys(o)
	for _, k := range need {
		if !slices.Contains(got, k) {
			t.Errorf("%s lacks %q: has %q", what, k, got)
		}
	}
	for _, k := range got {
		if !slices.Contains(need, k) && !slices.Contains(allow, k) {
			t.Errorf("%s has %q, which vLLM does not send (keys %q)", what, k, got)
		}
	}
}

func testHealth(t *testing.T, srv server) {
	r := send(t, srv, http.MethodGet, "/health", "")
	if r.status != http.StatusOK || len(r.body) != 0 {
		t.Errorf("GET /health = %d %q, want 200 with an empty body", r.status, r.body)
	}
}

// maxModelLen is the served model's context length from /v1/models.
func maxModelLen(t *testing.T, srv server) int {
	t.Helper()
	r := send(t, srv, http.MethodGet, "/v1/models", "")
	if r.status != http.StatusOK {
		t.Fatalf("GET /v1/models = %d %s", r.status, r.body)
	}
	data := list(t, r.json(t), "data")
	if len(data) != 1 {
		t.Fatalf("GET /v1/models lists %d models, want 1", len(data))
	}
	return int(num(t, data[0], "max_model_len"))
}

func testModels(t *testing.T, srv server) {
	r := send(t, srv, http.MethodGet, "/v1/models", "")
	if r.status != http.StatusOK {
		t.Fatalf("GET /v1/models = %d %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	o := r.json(t)
	checkKeys(t, "model list", o, []string{"object", "data"}, nil)
	if o["object"] != "list" {
		t.Errorf("object = %#v, want list", o["object"])
	}
	data := list(t, o, "data")
	if len(data) != 1 {
		t.Fatalf("data has %d models, want 1: %s", len(data), r.body)
	}
	card := data[0]
	checkKeys(t, "model card", card, []string{"id", "object", "created", "owned_by", "root", "max_model_len"},
		[]string{"parent", "permission"})
	if card["id"] != srv.model || card["object"] != "model" {
		t.Errorf("id, object = %#v, %#v; want %q, model", card["id"], card["object"], srv.model)
	}
	if root, _ := card["root"].(string); root == "" {
		t.Errorf("root = %#v, want the model's path", card["root"])
	}
	if n := num(t, card, "max_model_len"); n < 64 || n != float64(int(n)) {
		t.Errorf("max_model_len = %v, want a whole number of tokens, at least 64", n)
	}
}

// Keys of the non-streamed answers: what clients need, and what else vLLM
// sends (null unless asked for).
var (
	responseNeed  = []string{"id", "object", "created", "model", "choices", "usage"}
	responseAllow = []string{"service_tier", "system_fingerprint", "prompt_logprobs", "prompt_token_ids",
		"prompt_text", "kv_transfer_params", "ec_transfer_params", "metrics"}
	choiceAllow = []string{"logprobs", "stop_reason", "token_ids", "routed_experts", "prompt_logprobs",
		"prompt_token_ids"}
	messageAllow = []string{"refusal", "annotations", "audio", "function_call", "tool_calls", "reasoning",
		"reasoning_content"}
	usageNeed  = []string{"prompt_tokens", "completion_tokens", "total_tokens"}
	usageAllow = []string{"prompt_tokens_details", "completion_tokens_details"}
)

func testChat(t *testing.T, srv server) {
	const maxTokens = 8
	c := checkOneChoice(t, srv, answer{
		path: "/v1/chat/completions", fields: obj{"messages": chatMessages, "max_tokens": maxTokens},
		what: "chat completion", idPrefix: "chatcmpl-", object: "chat.completion", choiceKey: "message",
	})
	if c["index"] != 0.0 {
		t.Errorf("index = %#v, want 0", c["index"])
	}
	m := sub(t, c, "message")
	checkKeys(t, "message", m, []string{"role", "content"}, messageAllow)
	if m["role"] != "assistant" {
		t.Errorf("role = %#v, want assistant", m["role"])
	}
	if _, ok := m["content"].(string); !ok {
		t.Errorf("content = %#v, want a string", m["content"])
	}
}

// answer is a request for one choice and what its answer must say.
type answer struct {
	path   string
	fields obj
	// what names the answer in failures.
	what             string
	idPrefix, object string
	// choiceKey is the key holding the choice's output: message or text.
	choiceKey string
}

// checkOneChoice posts a request whose fields ask for one choice of at most
// fields["max_tokens"] tokens, checks the answer's keys, identity, finish
// and usage (a choice stopped for length generated all its tokens), and
// returns the choice.
func checkOneChoice(t *testing.T, srv server, a answer) obj {
	t.Helper()
	maxTokens := a.fields["max_tokens"].(int)
	o := postOK(t, srv, a.path, a.fields)
	checkKeys(t, a.what, o, responseNeed, responseAllow)
	checkIdentity(t, o, srv, a.idPrefix, a.object)
	choices := list(t, o, "choices")
	if len(choices) != 1 {
		t.Fatalf("%d choices, want 1", len(choices))
	}
	c := choices[0]
	checkKeys(t, "choice", c, []string{"index", a.choiceKey, "finish_reason"}, choiceAllow)
	checkFinish(t, c)
	u := sub(t, o, "usage")
	checkKeys(t, "usage", u, usageNeed, usageAllow)
	_, completion := checkUsage(t, u, 1, maxTokens)
	if c["finish_reason"] == "length" && completion != maxTokens {
		t.Errorf("finish_reason length after %d tokens, want %d", completion, maxTokens)
	}
	return c
}

func testCompletion(t *testing.T, srv server) {
	c := checkOneChoice(t, srv, answer{
		path: "/v1/completions", fields: obj{"prompt": "Once upon a time", "max_tokens": 8},
		what: "completion", idPrefix: "cmpl-", object: "text_completion", choiceKey: "text",
	})
	if _, ok := c["text"].(string); !ok || c["index"] != 0.0 {
		t.Errorf("text, index = %#v, %#v; want a string, 0", c["text"], c["index"])
	}
}

// checkIdentity checks an answer's or chunk's id, object, created and model.
func checkIdentity(t *testing.T, o obj, srv server, idPrefix, object string) {
	t.Helper()
	if id, _ := o["id"].(string); !strings.HasPrefix(id, idPrefix) || len(id) <= len(idPrefix) {
		t.Errorf("id = %#v, want %q followed by more", o["id"], idPrefix)
	}
	if o["object"] != object || o["model"] != srv.model {
		t.Errorf("object, model = %#v, %#v; want %q, %q", o["object"], o["model"], object, srv.model)
	}
	if c := num(t, o, "created"); c < 1.7e9 {
		t.Errorf("created = %v, want a unix time", c)
	}
}

func testTwoChoices(t *testing.T, srv server) {
	const maxTokens = 6
	for _, path := range []string{"/v1/chat/completions", "/v1/completions"} {
		t.Run(path, func(t *testing.T) {
			req := obj{"n": 2, "max_tokens": maxTokens, "prompt": "Once upon a time"}
			if strings.Contains(path, "chat") {
				req = obj{"n": 2, "max_tokens": maxTokens, "messages": chatMessages}
			}
			o := postOK(t, srv, path, req)
			choices := list(t, o, "choices")
			var idx []float64
			for _, c := range choices {
				idx = append(idx, num(t, c, "index"))
				checkFinish(t, c)
			}
			slices.Sort(idx)
			if !slices.Equal(idx, []float64{0, 1}) {
				t.Errorf("choice indexes %v, want 0 and 1", idx)
			}
			checkUsage(t, sub(t, o, "usage"), 2, maxTokens)
		})
	}
}

// chunkAllow are the keys a stream chunk may have besides id, object,
// created, model and choices.
var chunkAllow = []string{"usage", "system_fingerprint", "prompt_token_ids", "prompt_text", "metrics"}

func testChatStream(t *testing.T, srv server) {
	const maxTokens = 8
	for _, includeUsage := range []bool{false, true} {
		t.Run(fmt.Sprintf("include_usage=%v", includeUsage), func(t *testing.T) {
			req := obj{"messages": chatMessages, "max_tokens": maxTokens, "stream": true}
			if includeUsage {
				req["stream_options"] = obj{"include_usage": true}
			}
			cs := chunks(t, post(t, srv, "/v1/chat/completions", req))
			if len(cs) < 2 {
				t.Fatalf("%d chunks, want a role chunk, content and a finish", len(cs))
			}
			first := list(t, cs[0], "choices")
			if len(first) != 1 {
				t.Fatalf("first chunk has %d choices, want 1: %v", len(first), cs[0])
			}
			if d := sub(t, first[0], "delta"); len(d) != 2 || d["role"] != "assistant" || d["content"] != "" {
				t.Errorf("first delta = %v, want {role: assistant, content: \"\"}", d)
			}
			checkStream(t, srv, cs, "chatcmpl-", "chat.completion.chunk", includeUsage, maxTokens, 1)
		})
	}
}

func testCompletionStream(t *testing.T, srv server) {
	const maxTokens = 8
	for _, includeUsage := range []bool{false, true} {
		t.Run(fmt.Sprintf("include_usage=%v", includeUsage), func(t *testing.T) {
			req := obj{"prompt": "Once upon a time", "max_tokens": maxTokens, "stream": true}
			if includeUsage {
				req["stream_options"] = obj{"include_usage": true}
			}
			cs := chunks(t, post(t, srv, "/v1/completions", req))
			checkStream(t, srv, cs, "cmpl-", "text_completion", includeUsage, maxTokens, 1)
		})
	}
}

func testTwoChoicesStream(t *testing.T, srv server) {
	const maxTokens = 6
	req := obj{"messages": chatMessages, "max_tokens": maxTokens, "n": 2, "stream": true,
		"stream_options": obj{"include_usage": true}}
	cs := chunks(t, post(t, srv, "/v1/chat/completions", req))
	checkStream(t, srv, cs, "chatcmpl-", "chat.completion.chunk", true, maxTokens, 2)
	// Each choice's first chunk carries the role.
	for i := range 2 {
		for _, c := range cs {
			ch := list(t, c, "choices")
			if len(ch) == 1 && ch[0]["index"] == float64(i) {
				if d := sub(t, ch[0], "delta"); d["role"] != "assistant" {
					t.Errorf("choice %d's first delta = %v, want the role", i, d)
				}
				break
			}
		}
	}
}

// checkStream checks a stream's chunks (before [DONE]): one id, object and
// model throughout; each choice finishes exactly once, in a chunk of one
// choice, and then sends nothing; usage only in a last chunk with no
// choices when includeUsage, and nowhere otherwise.
func checkStream(t *testing.T, srv server, cs []obj, idPrefix, object string, includeUsage bool, maxTokens, n int) {
	t.Helper()
	finished := map[float64]bool{}
	var id any
	for i, c := range cs {
		checkKeys(t, fmt.Sprintf("chunk %d", i), c, []string{"id", "object", "created", "model", "choices"}, chunkAllow)
		checkIdentity(t, c, srv, idPrefix, object)
		if i == 0 {
			id = c["id"]
		} else if c["id"] != id {
			t.Errorf("chunk %d id %v, want the first chunk's %v", i, c["id"], id)
		}
		choices := list(t, c, "choices")
		if includeUsage && i == len(cs)-1 {
			if len(choices) != 0 {
				t.Errorf("last chunk has choices %v, want [] with the usage", choices)
			}
			u := sub(t, c, "usage")
			checkKeys(t, "usage", u, usageNeed, usageAllow)
			checkUsage(t, u, n, maxTokens)
			continue
		}
		if u, ok := c["usage"]; ok && u != nil {
			t.Errorf("chunk %d has usage %v, want none but in the last with include_usage", i, u)
		}
		if len(choices) != 1 {
			t.Errorf("chunk %d has %d choices, want 1", i, len(choices))
			continue
		}
		ch := choices[0]
		idx := num(t, ch, "index")
		if finished[idx] {
			t.Errorf("chunk %d for choice %v after its finish_reason", i, idx)
		}
		if object == "text_completion" {
			checkKeys(t, fmt.Sprintf("chunk %d choice", i), ch, []string{"index", "text"},
				append([]string{"finish_reason"}, choiceAllow...))
		} else {
			checkKeys(t, fmt.Sprintf("chunk %d choice", i), ch, []string{"index", "delta"},
				append([]string{"finish_reason"}, choiceAllow...))
		}
		if r, ok := ch["finish_reason"]; ok && r != nil {
			checkFinish(t, ch)
			finished[idx] = true
		}
	}
	if len(finished) != n {
		t.Errorf("%d choices sent a finish_reason, want %d", len(finished), n)
	}
}
