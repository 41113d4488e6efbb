package e2e

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// OpenAI is the official OpenAI Go client on base (e.g.
// "http://127.0.0.1:10000/v1/openai/") with token, sending each request
// once (no retry: what a user sees is what thaw and Envoy did), for
// timeout at most.
func OpenAI(base, token string, timeout time.Duration) openai.Client {
	return openai.NewClient(option.WithBaseURL(base), option.WithAPIKey(token),
		option.WithMaxRetries(0), option.WithRequestTimeout(timeout))
}

// ChatOnce sends one chat of up to 8 tokens to model, streamed or not, and
// says what was wrong with the answer: "" when it has content (and, not
// streamed, a usage with completion tokens).
func ChatOnce(ctx context.Context, c openai.Client, model string, stream bool) string {
	params := openai.ChatCompletionNewParams{Model: model, MaxTokens: openai.Int(8),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")}}
	if !stream {
		res, err := c.Chat.Completions.New(ctx, params)
		switch {
		case err != nil:
			return ErrText(err)
		case len(res.Choices) == 0 || res.Choices[0].Message.Content == "":
			return "no content: " + res.RawJSON()
		case res.Usage.CompletionTokens <= 0:
			return "no completion tokens in the usage: " + res.RawJSON()
		}
		return ""
	}
	s := c.Chat.Completions.NewStreaming(ctx, params)
	defer s.Close()
	acc := openai.ChatCompletionAccumulator{}
	chunks := 0
	for s.Next() {
		chunks++
		acc.AddChunk(s.Current())
	}
	switch {
	case s.Err() != nil:
		return fmt.Sprintf("stream after %d chunks: %s", chunks, ErrText(s.Err()))
	case len(acc.Choices) == 0 || acc.Choices[0].Message.Content == "":
		return fmt.Sprintf("stream of %d chunks with no content", chunks)
	}
	return ""
}

// ErrText is an OpenAI client's error with, for an HTTP answer, the answer
// itself: its headers say whether Envoy or thaw sent it.
func ErrText(err error) string {
	var apiErr *openai.Error
	if errors.As(err, &apiErr) && apiErr.Response != nil {
		return fmt.Sprintf("%v: %q", err, apiErr.DumpResponse(true))
	}
	return err.Error()
}

// BurstConfig says what StartBurst sends.
type BurstConfig struct {
	// Client sends the requests (OpenAI).
	Client openai.Client
	// Model is the model asked for.
	Model string
	// N is how many chats are sent; every other one is streamed.
	N int
	// Parallel is how many are in flight at most.
	Parallel int
}

// BurstResult is one request of a burst.
type BurstResult struct {
	I      int       // its index, from 0
	Stream bool      // whether it was streamed
	Done   time.Time // when its answer ended
	Err    string    // what was wrong (ChatOnce); "" for an answer with content
}

// Burst is a running StartBurst.
type Burst struct {
	// Sent counts the requests sent (or about to be), Answered those
	// whose answer ended, well or not.
	Sent, Answered atomic.Int64

	wg      sync.WaitGroup
	results []BurstResult
}

// StartBurst sends cfg.N chats, at most cfg.Parallel at a time, in the
// background, until each is answered or ctx is done.
func StartBurst(ctx context.Context, cfg BurstConfig) *Burst {
	b := &Burst{results: make([]BurstResult, cfg.N)}
	slots := make(chan struct{}, max(cfg.Parallel, 1))
	for i := range cfg.N {
		b.wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			b.Sent.Add(1)
			stream := i%2 == 1
			msg := ChatOnce(ctx, cfg.Client, cfg.Model, stream)
			b.results[i] = BurstResult{I: i, Stream: stream, Done: time.Now(), Err: msg}
			b.Answered.Add(1)
		})
	}
	return b
}

// Wait waits for every request of the burst and returns their results,
// in the order they were started.
func (b *Burst) Wait() []BurstResult {
	b.wg.Wait()
	return b.results
}

// TrickleResult is one request of a trickle.
type TrickleResult struct {
	Start time.Time     // when it was sent
	Took  time.Duration // until its answer ended
	Err   string        // what was wrong (ChatOnce); "" for an answer with content
}

// StartTrickle sends chats to model with c, one after another from two
// goroutines, every other one streamed, until the returned stop is
// called, which returns every request's result.
func StartTrickle(ctx context.Context, c openai.Client, model string) (stop func() []TrickleResult) {
	var (
		mu      sync.Mutex // guards results
		results []TrickleResult
		wg      sync.WaitGroup
		halt    atomic.Bool
	)
	for g := range 2 {
		wg.Go(func() {
			for i := 0; !halt.Load() && ctx.Err() == nil; i++ {
				start := time.Now()
				msg := ChatOnce(ctx, c, model, (i+g)%2 == 1)
				mu.Lock()
				results = append(results, TrickleResult{Start: start, Took: time.Since(start), Err: msg})
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	return func() []TrickleResult {
		halt.Store(true)
		wg.Wait()
		return results
	}
}
