package vllmtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/test/e2e"
)

// TestDevVLLM: `thaw dev --engine vllm` serves a deployment of the test
// model with real vLLM, as a developer on a workstation would run it.
//   - cold: the OpenAI Python SDK's first request wakes it from zero
//     instances and is served (chat, stream, completions);
//   - at its batch limit: 8 concurrent requests at max_batch_size 4, and
//     vLLM's own metrics never show more than 4 running;
//   - a client that stops a stream mid-way frees its slot: vLLM stops
//     generating for it and the next request is served at once;
//   - idle, it scales to zero and no vLLM process is left.
func TestDevVLLM(t *testing.T) {
	e := needEngine(t)
	port := e2e.FreeAddrT(t)
	_, p, _ := net.SplitHostPort(port)
	data := t.TempDir()
	th := e2e.StartThawT(t, e2e.ThawConfig{
		Args: []string{"dev", "--engine", "vllm", "--vllm-bin", e.vllm, "--vllm-cache-dir", e.compiled,
			"--data-dir", data,
			// One instance at most, on a port the test knows: vLLM's own
			// /metrics are read there.
			"--instance-ports", p + "-" + p,
			"--idle-timeout", "30s", "--hold-timeout", "5m"},
		Env:  e.env(),
		Proc: e2e.ProcConfig{StopTimeout: 30 * time.Second},
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("thaw dev output (tail):\n%s", th.Out.Tail(32<<10))
		}
	})
	batch, gpus := 4, 1
	d, err := api(th).Create(context.Background(), deploy.CreateRequest{
		ModelName: "tiny", GPU: "A100-80GB", NumGPUs: &gpus, MaxBatchSize: &batch,
		HF:       &deploy.HF{Repo: testRepo},
		Settings: &deploy.Settings{MinInstances: 0, MaxInstances: 1},
	})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	model := d.FullName
	metrics := "http://" + port + "/metrics"

	t.Run("cold/python-sdk", func(t *testing.T) {
		r := runSDK(t, e, th.Base+"/v1/openai", devToken, model)
		checkSDK(t, r, model)
		if r.Chat.ColdStart == "" {
			t.Errorf("the first request has no X-Thaw-Cold-Start: it did not wake the deployment")
		}
		t.Logf("cold: first answer after %.1fs (X-Thaw-Cold-Start %s)", r.Chat.Seconds, r.Chat.ColdStart)
	})

	t.Run("batch-limit", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		peak := make(chan float64, 1)
		go func() {
			var most float64
			defer func() { peak <- most }()
			for ctx.Err() == nil {
				if v, err := gauge(ctx, metrics, "vllm:num_requests_running"); err == nil && v > most {
					most = v
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() {
				if _, err := chat(context.Background(), th.Base, model, 160, false); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		cancel()
		close(errs)
		for err := range errs {
			t.Errorf("one of 8 concurrent requests: %v", err)
		}
		most := <-peak
		t.Logf("8 concurrent requests at max_batch_size 4: at most %.0f running in vLLM", most)
		if most > 4 {
			t.Errorf("vLLM ran %.0f requests at once; max_batch_size is 4", most)
		}
		if most < 2 {
			t.Errorf("vLLM never ran more than %.0f request at once: the batch was not used", most)
		}
	})

	t.Run("stream-cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		resp, err := chat(ctx, th.Base, model, 1500, true)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		br := bufio.NewReader(resp.Body)
		for n := 0; n < 3; {
			line, err := br.ReadString('\n')
			if err != nil {
				cancel()
				t.Fatalf("stream ended before 3 chunks: %v", err)
			}
			if strings.HasPrefix(line, "data: ") {
				n++
			}
		}
		cancel() // the client leaves mid-stream
		resp.Body.Close()
		left := time.Now()
		if !e2e.Eventually(20*time.Second, 50*time.Millisecond, func() bool {
			v, err := gauge(context.Background(), metrics, "vllm:num_requests_running")
			return err == nil && v == 0
		}) {
			t.Errorf("vLLM still generates for a client that left 20s ago")
		}
		start := time.Now()
		if _, err := chat(context.Background(), th.Base, model, 8, false); err != nil {
			t.Fatalf("the request after a cancelled stream: %v", err)
		}
		t.Logf("cancelled stream: vLLM idle %v after the client left; next request served in %v",
			start.Sub(left).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		if took := time.Since(start); took > 20*time.Second {
			t.Errorf("the request after a cancelled stream took %v", took)
		}
	})

	t.Run("engine-killed", func(t *testing.T) {
		pid := servePID(data)
		if pid == 0 {
			t.Fatalf("no vLLM API server process under %s: %s", data, strings.Join(procsUnder(data), ", "))
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		// Sent at once: it meets the dead instance or is held until the
		// replacement is ready; either way the user gets an answer.
		if _, err := chat(context.Background(), th.Base, model, 8, false); err != nil {
			t.Fatalf("a request right after vLLM was killed: %v", err)
		}
		t.Logf("vLLM killed: the next request was served after %v (by a replacement)", time.Since(killed).Round(time.Millisecond))
		if servePID(data) == pid {
			t.Errorf("the killed vLLM (pid %d) still runs", pid)
		}
	})

	t.Run("scale-to-zero", func(t *testing.T) {
		var last deploy.View
		if !e2e.Eventually(2*time.Minute, 200*time.Millisecond, func() bool {
			last, err = api(th).Get(context.Background(), d.ID)
			return err == nil && last.Instances.Running == 0 && last.Instances.Desired == 0
		}) {
			t.Fatalf("not at zero instances 2m after the last request: %+v (%v)", last.Instances, err)
		}
		var left []string
		if !e2e.Eventually(30*time.Second, 100*time.Millisecond, func() bool {
			left = procsUnder(data)
			return len(left) == 0
		}) {
			t.Errorf("at zero instances, vLLM processes are left: %s", strings.Join(left, ", "))
		}
		if c, err := net.DialTimeout("tcp", port, time.Second); err == nil {
			c.Close()
			t.Errorf("at zero instances, something still listens on the instance's port %s", port)
		}
	})
}

// chat sends a chat completion of maxTokens tokens (ignore_eos: the random
// test model would stop anywhere) as user dev. Without stream it reads the
// whole answer and checks it is a 200 with that many tokens; with stream it
// returns the open 200 response for the caller to read.
func chat(ctx context.Context, base, model string, maxTokens int, stream bool) (*http.Response, error) {
	body, _ := json.Marshal(map[string]any{
		"model": model, "max_tokens": maxTokens, "ignore_eos": true, "stream": stream,
		"messages": []map[string]string{{"role": "user", "content": "Tell me a story"}},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/openai/chat/completions", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+devToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	if stream {
		return resp, nil
	}
	defer resp.Body.Close()
	var out struct {
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	if out.Usage.CompletionTokens != maxTokens {
		return nil, fmt.Errorf("%d completion tokens, asked for %d", out.Usage.CompletionTokens, maxTokens)
	}
	return resp, nil
}

// servePID is the vLLM API server (`vllm serve`) thaw started under dir, or
// 0.
func servePID(dir string) int {
	pids := e2e.ProcsWhere(func(pid int) bool {
		cmdline, _ := os.ReadFile(e2e.ProcFile(pid, "cmdline"))
		return bytes.Contains(cmdline, []byte("serve\x00"+testRepo+"\x00")) && under(pid, dir)
	})
	if len(pids) == 0 {
		return 0
	}
	return pids[0]
}
