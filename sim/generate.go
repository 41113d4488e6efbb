package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// words is the simulator's vocabulary: generated text cycles through it,
// one word per token, so outputs are deterministic.
var words = strings.Fields("lorem ipsum dolor sit amet consectetur adipiscing elit " +
	"sed do eiusmod tempor incididunt ut labore et dolore magna aliqua")

// token returns the i-th generated token (0-based). Tokens after the first
// carry a leading space, so that streamed deltas concatenate to the text.
func token(i int) string {
	w := words[i%len(words)]
	if i == 0 {
		return w
	}
	return " " + w
}

// job is one validated generation request.
type job struct {
	chat         bool // chat.completion, else text_completion
	id           string
	promptTokens int
	n            int    // choices, each generating tokens tokens
	tokens       int    // tokens generated per choice
	finish       string // finish_reason: finishLength or finishStop
	stream       bool
	includeUsage bool
}

func (s *Server) serveChat(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if !s.decode(w, r, &req) {
		return
	}
	if len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "", "messages must be a non-empty array")
		return
	}
	prompt := 0
	for i, m := range req.Messages {
		n, err := contentWords(m.Content)
		if err != nil {
			writeError(w, http.StatusBadRequest, "", "messages[%d]: %v", i, err)
			return
		}
		prompt += n
	}
	maxTokens, param := req.MaxTokens, "max_tokens"
	if req.MaxCompletionTokens != nil {
		maxTokens, param = req.MaxCompletionTokens, "max_completion_tokens"
	}
	j, ok := s.newJob(w, prompt, maxTokens, param, req.requestParams)
	if !ok {
		return
	}
	j.chat = true
	j.id = newID("chatcmpl-")
	s.generate(w, r, j)
}

func (s *Server) serveCompletion(w http.ResponseWriter, r *http.Request) {
	var req completionRequest
	if !s.decode(w, r, &req) {
		return
	}
	prompt, err := promptWords(req.Prompt)
	if err != nil {
		writeError(w, http.StatusBadRequest, "prompt", "%v", err)
		return
	}
	j, ok := s.newJob(w, prompt, req.MaxTokens, "max_tokens", req.requestParams)
	if !ok {
		return
	}
	j.id = newID("cmpl-")
	s.generate(w, r, j)
}

// modelRequest is a request naming the model it wants.
type modelRequest interface{ model() string }

func (p *requestParams) model() string { return p.Model }

// decode reads the body into req and checks the model. On failure it
// writes the error and returns false.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, req modelRequest) bool {
	// Reading the body to its end lets net/http notice a client that
	// disconnects later, which cancels r.Context().
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "", "request body larger than %d bytes", tooBig.Limit)
			return false
		}
		writeError(w, http.StatusBadRequest, "", "reading request body: %v", err)
		return false
	}
	if err := json.Unmarshal(body, req); err != nil {
		writeBodyError(w, body, err)
		return false
	}
	// Like vLLM, an absent model means the served one.
	if model := req.model(); model != "" && model != s.cfg.Model {
		writeError(w, http.StatusNotFound, "model", "The model `%s` does not exist. Valid aliases: %s.", model, s.cfg.Model)
		return false
	}
	return true
}

// newJob validates the parameters shared by both endpoints, as vLLM does.
// maxTokens is the endpoint's token limit, named param in errors (chat's
// max_completion_tokens wins over max_tokens). On failure it writes the
// error and returns false.
//
// Output is capped by the context: a request generates at most
// MaxModelLen - prompt tokens per choice and then finishes with "length",
// as vLLM does, while a max_tokens that alone exceeds the context is an
// error. Without max_tokens the simulated model stops by itself (finish
// reason "stop") after eosAfter tokens, unless ignore_eos is set.
func (s *Server) newJob(w http.ResponseWriter, prompt int, maxTokens *int, param string, p requestParams) (job, bool) {
	limit := s.cfg.MaxModelLen
	prompt = max(prompt, 1)
	j := job{promptTokens: prompt, n: 1, stream: p.Stream}
	if p.N != nil {
		if *p.N < 1 {
			writeError(w, http.StatusBadRequest, "", "n must be at least 1, got %d.", *p.N)
			return job{}, false
		}
		j.n = *p.N
	}
	if maxTokens != nil {
		if *maxTokens < 1 {
			writeError(w, http.StatusBadRequest, "max_tokens",
				"max_tokens must be at least 1, got %d. (parameter=max_tokens, value=%d)", *maxTokens, *maxTokens)
			return job{}, false
		}
		if *maxTokens > limit {
			writeError(w, http.StatusBadRequest, param,
				"%s=%d cannot be greater than max_model_len=%d. Please request fewer output tokens. (parameter=%s, value=%d)",
				param, *maxTokens, limit, param, *maxTokens)
			return job{}, false
		}
	}
	if prompt >= limit {
		writeError(w, http.StatusBadRequest, "input_tokens",
			"This model's maximum context length is %d tokens. However, your prompt contains %d input tokens, "+
				"which exceeds this limit even without any output tokens. Please reduce the length of the input prompt. "+
				"(parameter=input_tokens, value=%d)",
			limit, prompt, prompt)
		return job{}, false
	}
	room := limit - prompt
	switch {
	case maxTokens != nil:
		j.tokens, j.finish = min(*maxTokens, room), finishLength
	case p.IgnoreEOS:
		j.tokens, j.finish = room, finishLength
	default:
		j.tokens, j.finish = min(eosAfter, room), finishStop
		if j.tokens < eosAfter {
			j.finish = finishLength
		}
	}
	if p.StreamOptions != nil && !p.Stream {
		writeError(w, http.StatusBadRequest, "stream_options",
			"Stream options can only be defined when `stream=True`. (parameter=stream_options)")
		return job{}, false
	}
	j.includeUsage = p.StreamOptions != nil && p.StreamOptions.IncludeUsage
	return j, true
}

// generate waits for a slot, produces j.tokens tokens per choice at the
// configured rate and writes them, whole or streamed. It returns early,
// freeing the slot, when the client goes away. All choices of a request
// generate together, one token each per step, in the one slot: vLLM
// counts a request with n choices as one running request.
func (s *Server) generate(w http.ResponseWriter, r *http.Request, j job) {
	ctx := r.Context()
	arrived := time.Now()
	created := arrived.Unix()
	out := &writer{w: w, rc: http.NewResponseController(w), j: j, created: created, model: s.cfg.Model}
	if j.stream {
		// Like vLLM, a stream's headers go out before the request is
		// scheduled.
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		_ = out.rc.Flush()
	}

	if err := s.lim.acquire(ctx); err != nil {
		s.log.Debug("sim request left while waiting", "id", j.id)
		s.metrics.requestSuccess.WithLabelValues(finishAbort).Inc()
		return
	}
	defer s.lim.release()
	s.metrics.promptTokens.Add(float64(j.promptTokens))

	var text strings.Builder
	timer := time.NewTimer(s.interval)
	defer timer.Stop()
	next := time.Now()
	for i := range j.tokens {
		next = next.Add(s.interval)
		timer.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			s.log.Debug("sim request left while generating", "id", j.id, "tokens", i)
			s.metrics.requestSuccess.WithLabelValues(finishAbort).Inc()
			return
		case <-timer.C:
		}
		s.metrics.generationTokens.Add(float64(j.n))
		if i == 0 {
			s.metrics.firstToken(arrived, time.Now())
		}
		tok := token(i)
		if !j.stream {
			text.WriteString(tok)
			continue
		}
		if err := out.streamToken(i, tok); err != nil {
			return
		}
	}

	completion := j.n * j.tokens
	u := &usage{PromptTokens: j.promptTokens, CompletionTokens: completion,
		TotalTokens: j.promptTokens + completion}
	s.metrics.requestSuccess.WithLabelValues(j.finish).Inc()
	s.log.Debug("sim request done", "id", j.id, "prompt_tokens", j.promptTokens,
		"completion_tokens", completion)
	if !j.stream {
		writeJSON(w, http.StatusOK, out.whole(text.String(), u))
		return
	}
	if j.includeUsage {
		if err := out.usageChunk(u); err != nil {
			return
		}
	}
	_ = out.event("[DONE]")
}

// streamToken writes the i-th token of every choice as stream chunks: on
// the first, a chat's role chunks before them (as vLLM's first chat chunk
// of each choice carries the role); on the last, the finish reason.
func (o *writer) streamToken(i int, tok string) error {
	if i == 0 && o.j.chat {
		for c := range o.j.n {
			if err := o.roleChunk(c); err != nil {
				return err
			}
		}
	}
	var reason *string
	if i == o.j.tokens-1 {
		reason = &o.j.finish
	}
	for c := range o.j.n {
		if err := o.tokenChunk(c, tok, reason); err != nil {
			return err
		}
	}
	return nil
}

// writer builds one request's response objects and writes stream events.
type writer struct {
	w       io.Writer
	rc      *http.ResponseController
	j       job
	created int64
	model   string
}

func (o *writer) base(object string) response {
	return response{ID: o.j.id, Object: object, Created: o.created, Model: o.model}
}

// whole returns the non-streamed response: j.n identical choices.
func (o *writer) whole(text string, u *usage) response {
	resp := o.base("text_completion")
	if o.j.chat {
		resp.Object = "chat.completion"
	}
	resp.Choices = make([]choice, o.j.n)
	for i := range resp.Choices {
		c := choice{Index: i, FinishReason: &o.j.finish}
		if o.j.chat {
			c.Message = &assistantMessage{Role: "assistant", Content: text}
		} else {
			c.Text = &text
		}
		resp.Choices[i] = c
	}
	resp.Usage = u
	return resp
}

// roleChunk writes choice index's first chat chunk: the role, no content.
func (o *writer) roleChunk(index int) error {
	empty := ""
	return o.chunk(choice{Index: index, Delta: &delta{Role: "assistant", Content: &empty}}, nil)
}

// tokenChunk writes choice index's next token; reason is set on its last.
func (o *writer) tokenChunk(index int, tok string, reason *string) error {
	c := choice{Index: index, FinishReason: reason}
	if o.j.chat {
		c.Delta = &delta{Content: &tok}
	} else {
		c.Text = &tok
	}
	return o.chunk(c, nil)
}

// usageChunk writes the usage of the whole request, with no choices.
func (o *writer) usageChunk(u *usage) error { return o.chunk(choice{}, u) }

// chunk writes one stream chunk: c, or no choice and the usage u.
func (o *writer) chunk(c choice, u *usage) error {
	resp := o.base("text_completion")
	if o.j.chat {
		resp.Object = "chat.completion.chunk"
	}
	resp.Choices = []choice{}
	if u == nil {
		resp.Choices = append(resp.Choices, c)
	}
	resp.Usage = u
	b, err := json.Marshal(resp)
	if err != nil {
		return fmt.Errorf("encoding chunk: %w", err)
	}
	return o.event(string(b))
}

// event writes one server-sent event and flushes it to the client.
func (o *writer) event(data string) error {
	if _, err := fmt.Fprintf(o.w, "data: %s\n\n", data); err != nil {
		return err
	}
	if err := o.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}
