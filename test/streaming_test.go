package test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// sseEvent is one `data:` line of a server-sent event stream and when the
// client read it.
type sseEvent struct {
	data string
	at   time.Time
}

// stream posts body to path as dev and reads the event stream to its end.
func (p *thawProc) stream(t *testing.T, path string, body any) (*http.Response, []sseEvent) {
	t.Helper()
	j, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.Base+path, bytes.NewReader(j))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+devToken)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST %s stream: %s", path, response{Status: resp.StatusCode, Header: resp.Header, Body: b})
	}
	var events []sseEvent
	if err := eachEvent(resp.Body, func(data string) { events = append(events, sseEvent{data: data, at: time.Now()}) }); err != nil {
		t.Errorf("reading the stream: %v", err)
	}
	return resp, events
}

// checkStream asserts the shape and pacing of an event stream of 60 tokens
// at 200 tokens/s, and returns the text it carried. text extracts a chunk's
// text.
func checkStream(t *testing.T, what string, resp *http.Response, events []sseEvent, object string, text func(chunk []byte) string) string {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("%s: Content-Type %q, want text/event-stream", what, ct)
	}
	if len(events) == 0 || events[len(events)-1].data != "[DONE]" {
		t.Fatalf("%s: stream does not end with data: [DONE]; %d events, last %v", what, len(events), events[max(len(events)-1, 0):])
	}
	chunks := events[:len(events)-1]
	var content strings.Builder
	withText := 0
	for i, e := range chunks {
		var c struct {
			Object string `json:"object"`
		}
		if err := json.Unmarshal([]byte(e.data), &c); err != nil {
			t.Fatalf("%s: chunk %d is not JSON (%v): %s", what, i, err, e.data)
		}
		if c.Object != object {
			t.Errorf("%s: chunk %d object %q, want %q", what, i, c.Object, object)
		}
		if s := text([]byte(e.data)); s != "" {
			withText++
			content.WriteString(s)
		}
	}
	if withText < 5 {
		t.Errorf("%s: %d chunks carried text, want several (one per token)", what, withText)
	}
	spread := chunks[len(chunks)-1].at.Sub(chunks[0].at)
	t.Logf("%s: %d chunks over %v", what, len(chunks), spread)
	// 60 tokens at 200 tokens/s take about 300ms: tokens must arrive as
	// they are generated, not all at the end.
	if spread < 150*time.Millisecond {
		t.Errorf("%s: first and last chunk arrived %v apart; tokens are not flushed as generated", what, spread)
	}
	if content.Len() == 0 {
		t.Errorf("%s: stream carried no text", what)
	}
	return content.String()
}

// TestStreaming: stream: true gives server-sent events, one chunk per token
// flushed as generated, ending with data: [DONE]; for chat and completions.
func TestStreaming(t *testing.T) {
	p := startThaw(t, thawOpts{})
	name := uniqueName("stream")
	p.create(t, devToken, llmRequest(name, "A100-80GB", 1, 8, 0, 1))
	model := "dev/" + name

	resp, events := p.stream(t, "/v1/openai/chat/completions", chatBody(model, 60, true))
	checkStream(t, "chat", resp, events, "chat.completion.chunk", func(b []byte) string {
		var c struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		_ = json.Unmarshal(b, &c)
		if len(c.Choices) == 0 {
			return ""
		}
		return c.Choices[0].Delta.Content
	})

	resp, events = p.stream(t, "/v1/openai/completions", map[string]any{
		"model": model, "prompt": "Once upon a time", "max_tokens": 60, "stream": true,
	})
	checkStream(t, "completions", resp, events, "text_completion", func(b []byte) string {
		var c struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
		}
		_ = json.Unmarshal(b, &c)
		if len(c.Choices) == 0 {
			return ""
		}
		return c.Choices[0].Text
	})
}
