package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/httperr"
)

// DefaultNativeMaxTokens is max_new_tokens for the native inference path
// when the request does not say.
const DefaultNativeMaxTokens = 64

// nativeRequest is DeepInfra's native text-generation input.
type nativeRequest struct {
	Input        *string  `json:"input"`
	MaxNewTokens *int     `json:"max_new_tokens"`
	Temperature  *float64 `json:"temperature,omitempty"`
	TopP         *float64 `json:"top_p,omitempty"`
	Stop         []string `json:"stop,omitempty"`
	Stream       bool     `json:"stream"`
}

type nativeResponse struct {
	RequestID       string          `json:"request_id"`
	InferenceStatus inferenceStatus `json:"inference_status"`
	Results         []nativeResult  `json:"results"`
	NumTokens       int             `json:"num_tokens"`
	NumInputTokens  int             `json:"num_input_tokens"`
}

type inferenceStatus struct {
	Status          string `json:"status"`
	RuntimeMS       int64  `json:"runtime_ms"`
	TokensGenerated int    `json:"tokens_generated"`
	TokensInput     int    `json:"tokens_input"`
}

type nativeResult struct {
	GeneratedText string `json:"generated_text"`
}

// native serves DeepInfra's POST /v1/inference/<owner>/<model> by turning it
// into an OpenAI completion on an instance. Streaming is served by the
// OpenAI-compatible paths only.
func (p *Proxy) native(w http.ResponseWriter, r *http.Request) {
	body, _, herr := p.readBody(w, r)
	if herr != nil {
		httperr.Write(w, herr)
		return
	}
	var in nativeRequest
	if err := json.Unmarshal(body, &in); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			httperr.Encode(w, http.StatusBadRequest, "invalid_type", typeErr.Field, fmt.Sprintf("%s must be of type %s", typeErr.Field, typeErr.Type))
			return
		}
		httperr.Encode(w, http.StatusBadRequest, "invalid_json", "", "invalid request: "+err.Error())
		return
	}
	if in.Input == nil {
		httperr.Encode(w, http.StatusBadRequest, "missing_input", "input", "input is required")
		return
	}
	if in.Stream {
		httperr.Encode(w, http.StatusBadRequest, "stream_unsupported", "stream", "streaming is served by /v1/openai/completions and /v1/openai/chat/completions")
		return
	}
	maxTokens := DefaultNativeMaxTokens
	if in.MaxNewTokens != nil {
		if *in.MaxNewTokens < 1 {
			httperr.Encode(w, http.StatusBadRequest, "invalid_value", "max_new_tokens", "max_new_tokens must be >= 1")
			return
		}
		maxTokens = *in.MaxNewTokens
	}
	model := r.PathValue("owner") + "/" + r.PathValue("model")
	t, err := p.cfg.Resolver.Resolve(auth.User(r.Context()), model)
	if err != nil {
		p.writeErr(w, err, model)
		return
	}
	up, _ := json.Marshal(map[string]any{
		"model": t.Model, "prompt": *in.Input, "max_tokens": maxTokens,
		"temperature": in.Temperature, "top_p": in.TopP, "stop": in.Stop,
	})
	start := time.Now()
	p.serve(w, r, t, func(ep *endpoint, a *attempt) {
		ctx := context.WithValue(r.Context(), attemptKey{}, a)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+ep.addr+"/v1/completions", bytes.NewReader(up))
		if err != nil {
			httperr.Encode(w, http.StatusBadRequest, "bad_request", "", err.Error())
			return
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := p.client.Do(req)
		if err != nil {
			if !(a.dialFailed && a.retry) && ctx.Err() == nil {
				httperr.Encode(w, http.StatusBadGateway, "upstream_error", "", "the model server failed: "+err.Error())
			}
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			// Pass the model server's own error through.
			w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
			w.WriteHeader(resp.StatusCode)
			_, _ = io.Copy(w, resp.Body)
			return
		}
		var c struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
			Usage struct {
				PromptTokens     int `json:"prompt_tokens"`
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&c); err != nil || len(c.Choices) == 0 {
			httperr.Encode(w, http.StatusBadGateway, "upstream_error", "", fmt.Sprintf("the model server returned an unreadable completion: %v", err))
			return
		}
		out := nativeResponse{
			RequestID: newRequestID(),
			InferenceStatus: inferenceStatus{
				Status: "succeeded", RuntimeMS: time.Since(start).Milliseconds(),
				TokensGenerated: c.Usage.CompletionTokens, TokensInput: c.Usage.PromptTokens,
			},
			Results:        []nativeResult{{GeneratedText: c.Choices[0].Text}},
			NumTokens:      c.Usage.CompletionTokens,
			NumInputTokens: c.Usage.PromptTokens,
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "req-" + hex.EncodeToString(b[:])
}
