package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// chatCompletion is the part of an OpenAI chat completion CheckChat checks.
type chatCompletion struct {
	Object  string `json:"object"`
	Choices []struct {
		Message struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
}

// CheckChat says what is wrong with an answer (its status and body) as a
// non-streamed chat completion of at most maxTokens tokens (0: any number),
// "" if nothing: a 200, object chat.completion, an assistant choice with
// content, and a usage that adds up.
func CheckChat(status int, body []byte, maxTokens int) string {
	var c chatCompletion
	jsonErr := json.Unmarshal(body, &c)
	if len(body) > 2000 {
		body = append(body[:2000:2000], "...(truncated)"...)
	}
	answer := fmt.Sprintf("HTTP %d %s", status, body)
	switch {
	case status != http.StatusOK:
		return "not 200: " + answer
	case jsonErr != nil:
		return fmt.Sprintf("body is not JSON (%v): %s", jsonErr, answer)
	}
	switch {
	case c.Object != "chat.completion":
		return "object is not chat.completion: " + answer
	case len(c.Choices) == 0 || c.Choices[0].Message.Content == "":
		return "no choice with content: " + answer
	case c.Choices[0].Message.Role != "assistant":
		return "message role is not assistant: " + answer
	case c.Usage == nil:
		return "no usage: " + answer
	case c.Usage.PromptTokens <= 0 || c.Usage.CompletionTokens <= 0 ||
		maxTokens > 0 && c.Usage.CompletionTokens > maxTokens ||
		c.Usage.TotalTokens != c.Usage.PromptTokens+c.Usage.CompletionTokens:
		return fmt.Sprintf("usage is wrong for max_tokens %d: %s", maxTokens, answer)
	}
	return ""
}
