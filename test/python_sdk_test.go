package test

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/thawhq/thaw/test/e2e"
)

// TestOpenAIPythonSDK drives thaw with the official OpenAI Python SDK
// (installed into .venv-py by scripts/pyclient.sh, which make test runs):
// chat, streamed chat, completions, models, and a 404 the SDK understands.
func TestOpenAIPythonSDK(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	py, err := e2e.PythonSDK()
	e2e.Need(t, err)
	p := startThaw(t, thawOpts{TokensPerSecond: 20})
	name := uniqueName("pysdk")
	p.create(t, devToken, llmRequest(name, "A100-80GB", 1, 8, 0, 1))
	model := "dev/" + name

	cmd := exec.Command(py, filepath.Join(root, "test", "testdata", "openai_sdk_check.py"), p.Base+"/v1/openai", devToken, model)
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("python SDK check failed: %v\n%s\n%s", err, out, stderr)
	}
	var got struct {
		Chat struct {
			Content          string `json:"content"`
			CompletionTokens int    `json:"completion_tokens"`
		} `json:"chat"`
		Stream struct {
			Chunks []string `json:"chunks"`
			First  float64  `json:"first_s"`
			Last   float64  `json:"last_s"`
			Usage  int      `json:"usage"`
		} `json:"stream"`
		Completion struct {
			Text             string `json:"text"`
			CompletionTokens int    `json:"completion_tokens"`
		} `json:"completion"`
		Models  []string        `json:"models"`
		Missing json.RawMessage `json:"missing"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("python SDK check printed %q: %v", out, err)
	}
	if got.Chat.Content == "" || got.Chat.CompletionTokens != 4 {
		t.Errorf("chat: content %q, completion_tokens %d; want text and 4 tokens", got.Chat.Content, got.Chat.CompletionTokens)
	}
	if len(got.Stream.Chunks) != 6 || got.Stream.Usage != 6 {
		t.Errorf("stream: %d chunks %q, usage %d; want 6 and 6", len(got.Stream.Chunks), got.Stream.Chunks, got.Stream.Usage)
	}
	// 20 tokens/s: 6 tokens take ~250ms from first to last; a response
	// buffered until the end would deliver them all at once.
	if got.Stream.Last-got.Stream.First < 0.15 {
		t.Errorf("stream chunks arrived within %.3fs of each other: not streamed as generated", got.Stream.Last-got.Stream.First)
	}
	if got.Completion.Text == "" || got.Completion.CompletionTokens != 3 {
		t.Errorf("completion: %q, %d tokens; want text and 3", got.Completion.Text, got.Completion.CompletionTokens)
	}
	found := false
	for _, m := range got.Models {
		found = found || m == model
	}
	if !found {
		t.Errorf("models.list() = %v, want it to include %s", got.Models, model)
	}
	if !strings.Contains(string(got.Missing), `"status": 404`) && !strings.Contains(string(got.Missing), `"status":404`) {
		t.Errorf("unknown model: SDK saw %s, want a NotFoundError (404)", got.Missing)
	}
}
