package sim

import (
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// TestOpenAISDK talks to the simulator with the official OpenAI Go SDK, the
// way thaw's users do, to check that the wire shapes are what it expects.
func TestOpenAISDK(t *testing.T) {
	_, url := startHandler(t, Config{Model: "acme/llama", TokensPerSecond: 1000})
	client := openai.NewClient(option.WithBaseURL(url+"/v1"), option.WithAPIKey("unused"),
		option.WithMaxRetries(0))
	ctx := t.Context()

	type result struct {
		Content      string
		FinishReason string
		Usage        [3]int64
	}
	usageOf := func(u openai.CompletionUsage) [3]int64 {
		return [3]int64{u.PromptTokens, u.CompletionTokens, u.TotalTokens}
	}
	want := result{Content: "lorem ipsum dolor", FinishReason: "length", Usage: [3]int64{2, 3, 5}}

	chatParams := openai.ChatCompletionNewParams{
		Model:     "acme/llama",
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi there")},
		MaxTokens: openai.Int(3),
	}
	chat, err := client.Chat.Completions.New(ctx, chatParams)
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	got := result{chat.Choices[0].Message.Content, chat.Choices[0].FinishReason, usageOf(chat.Usage)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("chat (-want +got):\n%s", diff)
	}

	chatParams.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := client.Chat.Completions.NewStreaming(ctx, chatParams)
	var acc openai.ChatCompletionAccumulator
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("chat stream: %v", err)
	}
	got = result{acc.Choices[0].Message.Content, acc.Choices[0].FinishReason, usageOf(acc.Usage)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("chat stream (-want +got):\n%s", diff)
	}

	cmpl, err := client.Completions.New(ctx, openai.CompletionNewParams{
		Model:     "acme/llama",
		Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("hi there")},
		MaxTokens: openai.Int(3),
	})
	if err != nil {
		t.Fatalf("completion: %v", err)
	}
	got = result{cmpl.Choices[0].Text, string(cmpl.Choices[0].FinishReason), usageOf(cmpl.Usage)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("completion (-want +got):\n%s", diff)
	}

	models, err := client.Models.List(ctx)
	if err != nil {
		t.Fatalf("models: %v", err)
	}
	if len(models.Data) != 1 || models.Data[0].ID != "acme/llama" || models.Data[0].OwnedBy != "thaw-sim" {
		t.Errorf("models = %+v, want acme/llama owned by thaw-sim", models.Data)
	}

	chatParams.Model = "other"
	_, err = client.Chat.Completions.New(ctx, chatParams)
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("chat with another model: error %v, want an *openai.Error", err)
	}
	gotErr := [3]string{http.StatusText(apiErr.StatusCode), apiErr.Type, apiErr.Message}
	wantErr := [3]string{"Not Found", "NotFoundError", "The model `other` does not exist. Valid aliases: acme/llama."}
	if diff := cmp.Diff(wantErr, gotErr); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
}
