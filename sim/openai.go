package sim

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// The OpenAI wire types the simulator reads and writes: only the fields
// thaw and OpenAI clients use. Unknown request fields are ignored, as
// vLLM ignores sampling parameters that do not matter here.

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// requestParams are the request fields both endpoints take alike.
type requestParams struct {
	Model         string         `json:"model"`
	MaxTokens     *int           `json:"max_tokens"`
	N             *int           `json:"n"`
	Stream        bool           `json:"stream"`
	StreamOptions *streamOptions `json:"stream_options"`
	// IgnoreEOS is vLLM's extension: generate until max_tokens (or the
	// context is full) even where the model would stop.
	IgnoreEOS bool `json:"ignore_eos"`
}

type chatRequest struct {
	requestParams
	Messages            []chatMessage `json:"messages"`
	MaxCompletionTokens *int          `json:"max_completion_tokens"`
}

type completionRequest struct {
	requestParams
	Prompt json.RawMessage `json:"prompt"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type assistantMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// delta is a chat chunk's piece of the message: the role (first chunk
// only, with empty content) or the content generated since the last chunk.
type delta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

// choice is one choice of any of the four response kinds: Message for
// chat.completion, Delta for chat.completion.chunk, Text for
// text_completion (whole or chunk).
type choice struct {
	Index        int               `json:"index"`
	Message      *assistantMessage `json:"message,omitempty"`
	Delta        *delta            `json:"delta,omitempty"`
	Text         *string           `json:"text,omitempty"`
	Logprobs     any               `json:"logprobs"`
	FinishReason *string           `json:"finish_reason"`
	// StopReason is vLLM's: the stop string or token id that ended the
	// choice, null when it ran to its length or the model's EOS.
	StopReason any `json:"stop_reason"`
}

type response struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Created int64    `json:"created"`
	Model   string   `json:"model"`
	Choices []choice `json:"choices"`
	Usage   *usage   `json:"usage,omitempty"`
}

type modelCard struct {
	ID          string `json:"id"`
	Object      string `json:"object"`
	Created     int64  `json:"created"`
	OwnedBy     string `json:"owned_by"`
	Root        string `json:"root"`
	MaxModelLen int    `json:"max_model_len"`
}

type modelList struct {
	Object string      `json:"object"`
	Data   []modelCard `json:"data"`
}

// apiError is an error response in OpenAI's (and vLLM's) shape.
type apiError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    int     `json:"code"`
}

// errorType maps a status to the type name vLLM puts in its errors.
func errorType(status int) string {
	switch status {
	case http.StatusNotFound:
		return "NotFoundError"
	case http.StatusRequestEntityTooLarge:
		return "RequestEntityTooLarge"
	default:
		return "BadRequestError"
	}
}

// writeError writes an OpenAI-shaped error about the request field param
// ("" for none). It is the one place where request errors become statuses.
func writeError(w http.ResponseWriter, status int, param, format string, args ...any) {
	e := apiError{Message: fmt.Sprintf(format, args...), Type: errorType(status), Code: status}
	if param != "" {
		e.Param = &param
	}
	writeJSON(w, status, map[string]apiError{"error": e})
}

// writeBodyError writes the 400 of a body that is not JSON or not the
// request's shape, as vLLM's request validation does: type "Bad Request"
// and param "body", "body.<offset>" where the JSON breaks, or
// "body.<field>" for a field of the wrong type.
func writeBodyError(w http.ResponseWriter, body []byte, err error) {
	param := "body"
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case strings.HasPrefix(err.Error(), "unexpected end of JSON input"):
		param = fmt.Sprintf("body.%d", len(body))
	case errors.As(err, &syntax):
		param = fmt.Sprintf("body.%d", max(syntax.Offset-1, 0))
	case errors.As(err, &typ) && typ.Field != "":
		param = "body." + typ.Field
	}
	writeJSON(w, http.StatusBadRequest, map[string]apiError{"error": {
		Message: fmt.Sprintf("invalid JSON body: %v", err),
		Type:    "Bad Request",
		Param:   &param,
		Code:    http.StatusBadRequest,
	}})
}

// writeDetail writes the error of a route that does not exist, as vLLM's
// web framework does: {"detail": "Not Found"} (404) or
// {"detail": "Method Not Allowed"} (405).
func writeDetail(w http.ResponseWriter, status int) {
	writeJSON(w, status, map[string]string{"detail": http.StatusText(status)})
}

// writeJSON writes v as a JSON response with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// An error here means the client left; there is nobody to tell.
	_ = json.NewEncoder(w).Encode(v)
}

// newID returns prefix followed by 16 random hex digits, like vLLM's
// "chatcmpl-..." and "cmpl-..." ids.
func newID(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails.
	return prefix + hex.EncodeToString(b[:])
}

// countWords is the simulator's tokenizer: one whitespace-separated word
// is one token.
func countWords(s string) int {
	return len(strings.Fields(s))
}

// contentWords counts the words of a message's content, which is a
// string, null, or an array of content parts of which the text parts count.
func contentWords(raw json.RawMessage) (int, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return countWords(s), nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return 0, fmt.Errorf("content must be a string or an array of content parts")
	}
	n := 0
	for _, p := range parts {
		if p.Type == "text" {
			n += countWords(p.Text)
		}
	}
	return n, nil
}

// promptWords counts the tokens of a completion prompt: a string, an array
// of token ids, or an array holding exactly one of those (the simulator
// serves one prompt per request).
func promptWords(raw json.RawMessage) (int, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, fmt.Errorf("prompt is required")
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return countWords(s), nil
	}
	var ids []int
	if err := json.Unmarshal(raw, &ids); err == nil {
		return len(ids), nil
	}
	var batch []json.RawMessage
	if err := json.Unmarshal(raw, &batch); err != nil {
		return 0, fmt.Errorf("prompt must be a string, an array of token ids, or an array of one of those")
	}
	if len(batch) != 1 {
		return 0, fmt.Errorf("the simulator serves one prompt per request; got %d", len(batch))
	}
	return promptWords(batch[0])
}
