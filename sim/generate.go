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
	maxTokens    int
	stream       bool
	includeUsage bool
}

func (s *Server) serveChat(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if !s.decode(w, r, &req) {
		return
	}
	if len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "messages must be a non-empty array")
		return
	}
	prompt := 0
	for i, m := range req.Messages {
		n, err := contentWords(m.Content)
		if err != nil {
			writeError(w, http.StatusBadRequest, "messages[%d]: %v", i, err)
			return
		}
		prompt += n
	}
	maxTokens := req.MaxTokens
	if req.MaxCompletionTokens != nil {
		maxTokens = req.MaxCompletionTokens
	}
	j, ok := newJob(w, prompt, maxTokens, req.requestParams)
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
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	j, ok := newJob(w, prompt, req.MaxTokens, req.requestParams)
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
			writeError(w, http.StatusRequestEntityTooLarge, "request body larger than %d bytes", tooBig.Limit)
			return false
		}
		writeError(w, http.StatusBadRequest, "reading request body: %v", err)
		return false
	}
	if err := json.Unmarshal(body, req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: %v", err)
		return false
	}
	// Like vLLM, an absent model means the served one.
	if model := req.model(); model != "" && model != s.cfg.Model {
		writeError(w, http.StatusNotFound, "The model `%s` does not exist.", model)
		return false
	}
	return true
}

// newJob validates the parameters shared by both endpoints; maxTokens is
// the endpoint's token limit (p.MaxTokens, or chat's max_completion_tokens).
// On failure it writes the error and returns false.
func newJob(w http.ResponseWriter, prompt int, maxTokens *int, p requestParams) (job, bool) {
	n, stream, opts := p.N, p.Stream, p.StreamOptions
	j := job{promptTokens: max(prompt, 1), maxTokens: defaultMaxTokens, stream: stream}
	if maxTokens != nil {
		if *maxTokens <= 0 {
			writeError(w, http.StatusBadRequest, "max_tokens must be at least 1, got %d.", *maxTokens)
			return job{}, false
		}
		j.maxTokens = min(*maxTokens, MaxModelLen)
	}
	if n != nil && *n != 1 {
		writeError(w, http.StatusBadRequest, "the simulator generates one choice per request; n must be 1, got %d.", *n)
		return job{}, false
	}
	if opts != nil && !stream {
		writeError(w, http.StatusBadRequest, "Stream options can only be defined when `stream=True`.")
		return job{}, false
	}
	j.includeUsage = opts != nil && opts.IncludeUsage
	return j, true
}

// generate waits for a slot, produces j.maxTokens tokens at the configured
// rate and writes them, whole or streamed. It returns early, freeing the
// slot, when the client goes away.
func (s *Server) generate(w http.ResponseWriter, r *http.Request, j job) {
	ctx := r.Context()
	created := time.Now().Unix()
	out := &writer{w: w, rc: http.NewResponseController(w), j: j, created: created, model: s.cfg.Model}
	if j.stream {
		// Like vLLM, a stream's headers go out before the request is
		// scheduled.
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		_ = out.rc.Flush()
	}

	if err := s.lim.acquire(ctx); err != nil {
		s.log.Debug("sim request left while waiting", "id", j.id)
		return
	}
	defer s.lim.release()
	s.metrics.promptTokens.Add(float64(j.promptTokens))

	var text strings.Builder
	timer := time.NewTimer(s.interval)
	defer timer.Stop()
	next := time.Now()
	for i := range j.maxTokens {
		next = next.Add(s.interval)
		timer.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			s.log.Debug("sim request left while generating", "id", j.id, "tokens", i)
			return
		case <-timer.C:
		}
		s.metrics.generationTokens.Inc()
		tok := token(i)
		if j.stream {
			if err := out.chunk(i == 0, &tok, nil, nil); err != nil {
				return
			}
			continue
		}
		text.WriteString(tok)
	}

	u := &usage{PromptTokens: j.promptTokens, CompletionTokens: j.maxTokens,
		TotalTokens: j.promptTokens + j.maxTokens}
	s.metrics.requestSuccess.WithLabelValues(finishLength).Inc()
	s.log.Debug("sim request done", "id", j.id, "prompt_tokens", j.promptTokens,
		"completion_tokens", j.maxTokens)
	if !j.stream {
		writeJSON(w, http.StatusOK, out.whole(text.String(), u))
		return
	}
	reason := finishLength
	if err := out.chunk(false, nil, &reason, nil); err != nil {
		return
	}
	if j.includeUsage {
		if err := out.chunk(false, nil, nil, u); err != nil {
			return
		}
	}
	_ = out.event("[DONE]")
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

// whole returns the non-streamed response.
func (o *writer) whole(text string, u *usage) response {
	reason := finishLength
	c := choice{FinishReason: &reason}
	resp := o.base("text_completion")
	if o.j.chat {
		resp.Object = "chat.completion"
		c.Message = &assistantMessage{Role: "assistant", Content: text}
	} else {
		c.Text = &text
	}
	resp.Choices = []choice{c}
	resp.Usage = u
	return resp
}

// chunk writes one stream chunk: a token (tok set), the finishing chunk
// (reason set), or the usage chunk (u set, no choices).
func (o *writer) chunk(first bool, tok, reason *string, u *usage) error {
	resp := o.base("text_completion")
	if o.j.chat {
		resp.Object = "chat.completion.chunk"
	}
	resp.Choices = []choice{}
	resp.Usage = u
	if u == nil {
		c := choice{FinishReason: reason}
		switch {
		case o.j.chat:
			c.Delta = &delta{}
			if first {
				c.Delta.Role = "assistant"
			}
			if tok != nil {
				c.Delta.Content = *tok
			}
		case tok != nil:
			c.Text = tok
		default:
			empty := ""
			c.Text = &empty
		}
		resp.Choices = append(resp.Choices, c)
	}
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
