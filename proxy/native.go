package proxy

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

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
	hold, body, herr := p.readRequest(w, r)
	if herr != nil {
		httperr.Write(w, herr)
		return
	}
	in, herr := parseNative(body)
	if herr != nil {
		httperr.Write(w, herr)
		return
	}
	model := r.PathValue("owner") + "/" + r.PathValue("model")
	t, err := p.resolve(r, model)
	if err != nil {
		p.writeErr(w, err, model)
		return
	}
	up, err := completionBody(in, t.Model)
	if err != nil {
		p.log.Error("native request translation", "model", t.Model, "err", err)
		httperr.Encode(w, http.StatusInternalServerError, "internal_error", "", "could not translate the request")
		return
	}
	start := time.Now()
	p.serve(w, r, t, hold, func(ep *endpoint, a *attempt) {
		p.complete(w, r, ep, a, up, start)
	})
}

// parseNative reads and checks a native request body. A rejected one gets a
// 400 naming the field.
func parseNative(body []byte) (nativeRequest, *httperr.Error) {
	var in nativeRequest
	if err := json.Unmarshal(body, &in); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return in, httperr.New(http.StatusBadRequest, "invalid_type", typeErr.Field, fmt.Sprintf("%s must be of type %s", typeErr.Field, typeErr.Type))
		}
		return in, httperr.New(http.StatusBadRequest, "invalid_json", "", "request body must be a JSON object")
	}
	switch {
	case in.Input == nil:
		return in, httperr.New(http.StatusBadRequest, "missing_input", "input", "input is required")
	case in.Stream:
		return in, httperr.New(http.StatusBadRequest, "stream_unsupported", "stream", "streaming is served by /v1/openai/completions and /v1/openai/chat/completions")
	case in.MaxNewTokens != nil && *in.MaxNewTokens < 1:
		return in, httperr.New(http.StatusBadRequest, "invalid_value", "max_new_tokens", "max_new_tokens must be >= 1")
	}
	return in, nil
}

// completionBody is the OpenAI completion request for in on model.
func completionBody(in nativeRequest, model string) ([]byte, error) {
	maxTokens := DefaultNativeMaxTokens
	if in.MaxNewTokens != nil {
		maxTokens = *in.MaxNewTokens
	}
	return json.Marshal(map[string]any{
		"model": model, "prompt": *in.Input, "max_tokens": maxTokens,
		"temperature": in.Temperature, "top_p": in.TopP, "stop": in.Stop,
	})
}

// complete runs the completion up on ep and answers the client in the
// native shape. The outbound request carries the client's context: the model
// server sees it cancelled when the client leaves, and nothing is answered.
func (p *Proxy) complete(w http.ResponseWriter, r *http.Request, ep *endpoint, a *attempt, up []byte, start time.Time) {
	ctx := withAttempt(r.Context(), a)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+ep.addr+"/v1/completions", bytes.NewReader(up))
	if err != nil {
		p.log.Error("completion request", "host", ep.addr, "err", err)
		httperr.Encode(w, http.StatusBadGateway, "upstream_error", "", "could not reach the model server")
		return
	}
	// The client's headers go on (tracing, request ids), as on the
	// OpenAI paths, less thaw's own and those of the client's hop.
	req.Header = r.Header.Clone()
	stripInternal(req.Header)
	for _, h := range []string{"Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
		"Proxy-Authorization", "Proxy-Connection", "Content-Length", "Accept-Encoding"} {
		req.Header.Del(h)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		p.upstreamError(w, req, err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		p.nativeUpstreamError(w, resp)
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
		if ctx.Err() != nil {
			return // the client left
		}
		p.log.Warn("unreadable completion", "host", ep.addr, "err", err, "choices", len(c.Choices))
		httperr.Encode(w, http.StatusBadGateway, "upstream_error", "", "the model server returned an unreadable completion")
		return
	}
	writeJSON(w, nativeResponse{
		RequestID: newRequestID(),
		InferenceStatus: inferenceStatus{
			Status: "succeeded", RuntimeMS: time.Since(start).Milliseconds(),
			TokensGenerated: c.Usage.CompletionTokens, TokensInput: c.Usage.PromptTokens,
		},
		Results:        []nativeResult{{GeneratedText: c.Choices[0].Text}},
		NumTokens:      c.Usage.CompletionTokens,
		NumInputTokens: c.Usage.PromptTokens,
	})
}

// nativeUpstreamError answers a model server's non-200 in thaw's shape, as
// the OpenAI-compatible paths do.
func (p *Proxy) nativeUpstreamError(w http.ResponseWriter, resp *http.Response) {
	if resp.StatusCode < 400 {
		p.log.Warn("unexpected completion status", "status", resp.StatusCode)
		httperr.Encode(w, http.StatusBadGateway, "upstream_error", "", "the model server returned an unexpected answer")
		return
	}
	e, err := p.readUpstreamError(resp)
	if err != nil {
		if resp.Request.Context().Err() != nil {
			return // the client left
		}
		p.log.Warn("model server error answer", "err", err)
		httperr.Encode(w, http.StatusBadGateway, "upstream_error", "", "the model server failed to answer")
		return
	}
	httperr.Write(w, e)
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "req-" + hex.EncodeToString(b[:])
}
