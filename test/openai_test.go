package test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// newOpenAI is the official OpenAI Go client pointed at thaw.
func newOpenAI(base, token string) openai.Client {
	return openai.NewClient(
		option.WithBaseURL(base),
		option.WithAPIKey(token),
		option.WithMaxRetries(0),
		option.WithRequestTimeout(60*time.Second),
	)
}

// TestOpenAIClient drives thaw with the official OpenAI Go SDK: chat with
// and without streaming, completions, the models list, and a deployment
// addressed as deploy_id:<id>; under /v1/openai/ and /v1/.
func TestOpenAIClient(t *testing.T) {
	p := startThaw(t, thawOpts{})
	name := uniqueName("sdk")
	d := p.create(t, devToken, llmRequest(name, "A100-80GB", 1, 8, 0, 1))
	model := "dev/" + name
	ctx := context.Background()
	client := newOpenAI(p.Base+"/v1/openai/", devToken)

	chat := func(t *testing.T, c openai.Client, model string) {
		t.Helper()
		res, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:     model,
			Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello")},
			MaxTokens: openai.Int(8),
		})
		if err != nil {
			t.Fatalf("chat %s: %v", model, err)
		}
		if len(res.Choices) == 0 || res.Choices[0].Message.Content == "" {
			t.Errorf("chat %s: no content: %s", model, res.RawJSON())
		}
		if res.Usage.CompletionTokens <= 0 || res.Usage.CompletionTokens > 8 || res.Usage.PromptTokens <= 0 {
			t.Errorf("chat %s: usage %+v, want 1..8 completion tokens and some prompt tokens", model, res.Usage)
		}
	}

	t.Run("chat", func(t *testing.T) { chat(t, client, model) })

	t.Run("chat stream", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model:     model,
			Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Count to ten")},
			MaxTokens: openai.Int(20),
		})
		defer stream.Close()
		acc := openai.ChatCompletionAccumulator{}
		chunks := 0
		for stream.Next() {
			chunks++
			acc.AddChunk(stream.Current())
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("stream: %v", err)
		}
		if chunks < 5 {
			t.Errorf("stream: %d chunks for 20 tokens, want one per token", chunks)
		}
		if len(acc.Choices) == 0 || acc.Choices[0].Message.Content == "" {
			t.Errorf("stream: accumulated no content from %d chunks", chunks)
		}
	})

	t.Run("completions", func(t *testing.T) {
		res, err := client.Completions.New(ctx, openai.CompletionNewParams{
			Model:     openai.CompletionNewParamsModel(model),
			Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
			MaxTokens: openai.Int(8),
		})
		if err != nil {
			t.Fatalf("completions: %v", err)
		}
		if len(res.Choices) == 0 || res.Choices[0].Text == "" {
			t.Errorf("completions: no text: %s", res.RawJSON())
		}
		if res.Usage.CompletionTokens <= 0 {
			t.Errorf("completions: usage %+v", res.Usage)
		}
	})

	t.Run("models", func(t *testing.T) {
		page, err := client.Models.List(ctx)
		if err != nil {
			t.Fatalf("models: %v", err)
		}
		var ids []string
		for _, m := range page.Data {
			ids = append(ids, m.ID)
		}
		if !slices.Contains(ids, model) {
			t.Errorf("models list %v does not include %s", ids, model)
		}
	})

	t.Run("deploy_id model", func(t *testing.T) { chat(t, client, "deploy_id:"+d.ID) })

	t.Run("v1 base", func(t *testing.T) { chat(t, newOpenAI(p.Base+"/v1/", devToken), model) })
}
