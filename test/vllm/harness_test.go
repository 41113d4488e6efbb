// Package vllmtest runs thaw with the production engine, real vLLM (the CPU
// build `make deps` installs), serving the tiny random Llama `make deps`
// makes (thaw-test/tiny-llama in .cache/hf): woken from zero by the OpenAI
// Python SDK, at its batch limit, with clients that leave, and scaled back
// to zero with no engine process left.
package vllmtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/thawhq/thaw/client"
	"github.com/thawhq/thaw/test/e2e"
)

// devToken is user dev's token in every thaw started here.
const devToken = "tok-vllm-e2e"

// testRepo is the model `make deps` lays out in .cache/hf.
const testRepo = e2e.TinyModel

func TestMain(m *testing.M) { os.Exit(e2e.Main(m)) }

// engine is what a test needs to run real vLLM.
type engine struct {
	root   string // the repository
	vllm   string // bin/vllm
	hfHome string // .cache/hf
	python string // .venv-py/bin/python, with the OpenAI SDK
	// compiled is vLLM's compile cache, shared by every test and run on
	// this machine: only the first start compiles the test model.
	compiled string
}

// needEngine returns the engine's paths, or fails the test: real vLLM and
// its test model are part of what `make deps` installs, so a missing one is
// a broken install, never a reason to skip.
func needEngine(t *testing.T) engine {
	t.Helper()
	root, err := e2e.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	vllm, errBin := e2e.VLLMBin()
	hfHome, errHF := e2e.HFHome()
	python, errPy := e2e.PythonSDK()
	if err := errors.Join(errBin, errHF, errPy); err != nil {
		t.Fatalf("%v\n`make deps` installs real vLLM, its test model and the OpenAI Python SDK", err)
	}
	if err := e2e.HasModel(hfHome, testRepo); err != nil {
		t.Fatal(err)
	}
	return engine{root: root, vllm: vllm, hfHome: hfHome, python: python,
		compiled: filepath.Join(root, ".cache", "vllm-compiled")}
}

// env is the environment thaw passes on to vLLM: the weights cache, offline.
func (e engine) env() []string {
	return []string{"HF_HOME=" + e.hfHome, "HF_HUB_OFFLINE=1", "THAW_DEV_TOKEN=" + devToken}
}

// api is a deploy API client of th as user dev.
func api(th *e2e.Thaw) *client.Client {
	return &client.Client{BaseURL: th.Base, Token: devToken, HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// sdkResult is what testdata/sdk_check.py prints.
type sdkResult struct {
	Chat struct {
		Content          string  `json:"content"`
		FinishReason     string  `json:"finish_reason"`
		CompletionTokens int     `json:"completion_tokens"`
		PromptTokens     int     `json:"prompt_tokens"`
		Model            string  `json:"model"`
		ColdStart        string  `json:"cold_start"`
		Seconds          float64 `json:"seconds"`
	} `json:"chat"`
	Stream struct {
		Roles        []string `json:"roles"`
		Chunks       int      `json:"chunks"`
		FinishReason string   `json:"finish_reason"`
		Usage        int      `json:"usage"`
	} `json:"stream"`
	Completion struct {
		Text             string `json:"text"`
		FinishReason     string `json:"finish_reason"`
		CompletionTokens int    `json:"completion_tokens"`
	} `json:"completion"`
}

// runSDK runs testdata/sdk_check.py against base (an OpenAI base URL).
func runSDK(t *testing.T, e engine, base, token, model string) sdkResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.python, filepath.Join(e.root, "test", "vllm", "testdata", "sdk_check.py"), base, token, model)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("OpenAI Python SDK against %s: %v\n%s\n%s", base, err, out, stderr.String())
	}
	var r sdkResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("sdk_check.py printed %q: %v", out, err)
	}
	return r
}

// checkSDK asserts what a user of the SDK sees: each call generated exactly
// what it asked for (ignore_eos), the stream is framed as OpenAI's.
func checkSDK(t *testing.T, r sdkResult, model string) {
	t.Helper()
	if r.Chat.Model != model || r.Chat.CompletionTokens != 8 || r.Chat.FinishReason != "length" || r.Chat.PromptTokens == 0 {
		t.Errorf("chat: model %q, %d prompt and %d completion tokens, finish %q; want %s, 8 tokens, length",
			r.Chat.Model, r.Chat.PromptTokens, r.Chat.CompletionTokens, r.Chat.FinishReason, model)
	}
	if len(r.Stream.Roles) != 1 || r.Stream.Roles[0] != "assistant" || r.Stream.Chunks == 0 ||
		r.Stream.FinishReason != "length" || r.Stream.Usage != 12 {
		t.Errorf("stream: roles %q, %d content chunks, finish %q, usage %d; want one assistant role, content, length, 12",
			r.Stream.Roles, r.Stream.Chunks, r.Stream.FinishReason, r.Stream.Usage)
	}
	if r.Completion.CompletionTokens != 5 || r.Completion.FinishReason != "length" {
		t.Errorf("completion: %d tokens, finish %q; want 5, length", r.Completion.CompletionTokens, r.Completion.FinishReason)
	}
}

// gauge reads one of vLLM's gauges (summed over its label sets) from the
// Prometheus text at url.
func gauge(ctx context.Context, url, name string) (float64, error) {
	m, err := e2e.ScrapeMetrics(ctx, url)
	if err != nil {
		return 0, err
	}
	sum, found := m.Sum(name, nil)
	if !found {
		return 0, fmt.Errorf("%s: no %s", url, name)
	}
	return sum, nil
}

// procsUnder returns the processes whose working directory or environment
// names dir: every process thaw started for an instance under its data
// directory, children included (they inherit both).
func procsUnder(dir string) []string {
	var out []string
	for _, pid := range e2e.ProcsWhere(func(pid int) bool { return under(pid, dir) }) {
		comm, _ := os.ReadFile(e2e.ProcFile(pid, "comm"))
		out = append(out, fmt.Sprintf("%d %s", pid, bytes.TrimSpace(comm)))
	}
	return out
}

// under says whether pid's working directory or environment names dir.
func under(pid int, dir string) bool {
	cwd, _ := os.Readlink(e2e.ProcFile(pid, "cwd"))
	environ, _ := os.ReadFile(e2e.ProcFile(pid, "environ"))
	return strings.HasPrefix(cwd, dir+"/") || bytes.Contains(environ, []byte(dir+"/"))
}
