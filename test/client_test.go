package test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/thawhq/thaw/client"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/test/e2e"
)

// httpClient is shared by all tests; it keeps enough idle connections for
// the bursts and never retries.
var httpClient = &http.Client{
	Timeout: 90 * time.Second,
	Transport: &http.Transport{
		MaxIdleConns:        512,
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	},
}

// response is what a user sees of one HTTP exchange.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) String() string {
	b := r.Body
	if len(b) > 2000 {
		b = append(b[:2000:2000], "...(truncated)"...)
	}
	return fmt.Sprintf("HTTP %d %s", r.Status, b)
}

// decode unmarshals the body into v or fails the test with the response.
func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %T: %v; response: %s", v, err, r)
	}
}

// do sends one request. body may be nil, []byte or string (sent as is), or
// any other value (sent as JSON). An empty token sends no Authorization.
func (p *thawProc) do(t *testing.T, method, path, token string, body any) response {
	t.Helper()
	r, err := p.doCtx(context.Background(), method, path, token, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// doCtx is do with a context and the transport error returned.
func (p *thawProc) doCtx(ctx context.Context, method, path, token string, body any) (response, error) {
	var b []byte
	switch v := body.(type) {
	case nil:
	case []byte:
		b = v
	case string:
		b = []byte(v)
	default:
		j, err := json.Marshal(v)
		if err != nil {
			return response{}, err
		}
		b = j
	}
	r, err := e2e.Send(ctx, httpClient, method, p.Base+path, token, b)
	return response(r), err
}

// apiError is OpenAI's error shape.
type apiError struct {
	Error *struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    any     `json:"code"`
	} `json:"error"`
}

// checkError reports (with t.Errorf) unless r has one of the statuses and
// OpenAI's error shape with a message and a type. When field is set, the
// error must name it in error.param or in the message. It returns the
// decoded error.param ("" if absent).
func checkError(t *testing.T, what string, r response, statuses []int, field string) string {
	t.Helper()
	if r.Status >= 500 && !slices.Contains(statuses, r.Status) {
		t.Errorf("%s: got a 5xx for bad input: %s", what, r)
		return ""
	}
	if !slices.Contains(statuses, r.Status) {
		t.Errorf("%s: status %d, want one of %v; response: %s", what, r.Status, statuses, r)
	}
	var e apiError
	if err := json.Unmarshal(r.Body, &e); err != nil || e.Error == nil {
		t.Errorf("%s: body is not {\"error\":{...}}: %s", what, r)
		return ""
	}
	if e.Error.Message == "" || e.Error.Type == "" {
		t.Errorf("%s: error needs a message and a type: %s", what, r)
	}
	param := ""
	if e.Error.Param != nil {
		param = *e.Error.Param
	}
	if field != "" && param != field && !strings.Contains(e.Error.Message, field) {
		t.Errorf("%s: error does not name %q (param %q): %s", what, field, param, r)
	}
	return param
}

// instancesOf describes d's instances, for failure messages and logs.
func instancesOf(d deploy.View) string {
	i := d.Instances
	return fmt.Sprintf("running=%d pending=%d desired=%d reason=%q", i.Running, i.Pending, i.Desired, i.Reason)
}

// api returns a deploy API client of p as token's user.
func (p *thawProc) api(token string) *client.Client {
	return &client.Client{BaseURL: p.Base, Token: token, HTTP: httpClient}
}

// llmBody is a POST /deploy/llm body.
func llmBody(name, gpu string, numGPUs, batch, minInst, maxInst int) map[string]any {
	return map[string]any{
		"model_name":     name,
		"gpu":            gpu,
		"num_gpus":       numGPUs,
		"max_batch_size": batch,
		"hf":             map[string]any{"repo": "meta-llama/Llama-2-7b-chat-hf"},
		"settings":       map[string]any{"min_instances": minInst, "max_instances": maxInst},
	}
}

// llmRequest is llmBody as the client package sends it.
func llmRequest(name, gpu string, numGPUs, batch, minInst, maxInst int) deploy.CreateRequest {
	return deploy.CreateRequest{
		ModelName:    name,
		GPU:          gpu,
		NumGPUs:      &numGPUs,
		MaxBatchSize: &batch,
		HF:           &deploy.HF{Repo: "meta-llama/Llama-2-7b-chat-hf"},
		Settings:     &deploy.Settings{MinInstances: minInst, MaxInstances: maxInst},
	}
}

// create creates the deployment req as token's user and returns the deploy
// object, failing the test unless it was created.
func (p *thawProc) create(t *testing.T, token string, req deploy.CreateRequest) deploy.View {
	t.Helper()
	d, err := p.api(token).Create(context.Background(), req)
	if err != nil {
		t.Fatalf("POST /deploy/llm %s: %v", req.ModelName, err)
	}
	if d.ID == "" || d.ModelName != req.ModelName {
		t.Fatalf("POST /deploy/llm: deploy object lacks deploy_id or model_name %q: %+v", req.ModelName, d)
	}
	return d
}

// get returns GET /deploy/{id} as dev, failing the test unless it answers.
func (p *thawProc) get(t *testing.T, id string) deploy.View {
	t.Helper()
	d, err := p.api(devToken).Get(context.Background(), id)
	if err != nil {
		t.Fatalf("GET /deploy/%s: %v", id, err)
	}
	return d
}

// list returns GET /deploy/list as token's user: a JSON array of deploy
// objects, as DeepInfra returns it.
// It decodes the body itself (not through the client package, which
// also accepts {"data":[...]}) so that any other shape fails the test.
func (p *thawProc) list(t *testing.T, token string) []deploy.View {
	t.Helper()
	r := p.do(t, http.MethodGet, "/deploy/list", token, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /deploy/list: %s", r)
	}
	var ds []deploy.View
	r.decode(t, &ds)
	return ds
}

// waitDeploy polls GET /deploy/{id} every 100ms until cond holds, failing
// the test with the last object after timeout.
func (p *thawProc) waitDeploy(t *testing.T, id string, timeout time.Duration, what string, cond func(deploy.View) bool) deploy.View {
	t.Helper()
	var last deploy.View
	ok := waitFor(timeout, 100*time.Millisecond, func() bool {
		last = p.get(t, id)
		return cond(last)
	})
	if !ok {
		t.Fatalf("deployment %s: not %s within %v; last instances: %s (status %q)", id, what, timeout, instancesOf(last), last.Status)
	}
	return last
}

// chatBody is a chat completion request.
func chatBody(model string, maxTokens int, stream bool) map[string]any {
	return map[string]any{
		"model":      model,
		"messages":   []map[string]string{{"role": "user", "content": "Say hello to the tests"}},
		"max_tokens": maxTokens,
		"stream":     stream,
	}
}

// chat sends a non-streaming chat completion as dev.
func (p *thawProc) chat(t *testing.T, model string, maxTokens int) response {
	t.Helper()
	return p.do(t, http.MethodPost, "/v1/openai/chat/completions", devToken, chatBody(model, maxTokens, false))
}

// checkChat returns a description of what is wrong with r as a chat
// completion answer for maxTokens, or "" if it is a valid one.
func checkChat(r response, maxTokens int) string {
	return e2e.CheckChat(r.Status, r.Body, maxTokens)
}

// coldStartHeader is the response header that tells how long a request
// waited for a cold start.
const coldStartHeader = "X-Thaw-Cold-Start"

// parseColdStart parses the cold-start header: a Go duration ("512ms") or
// a number of seconds ("0.512").
func parseColdStart(v string) (time.Duration, bool) {
	if d, err := time.ParseDuration(v); err == nil {
		return d, true
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		return time.Duration(f * float64(time.Second)), true
	}
	return 0, false
}

// uniqueName is a model name unique to this test run, so simulator
// processes can be told apart by their command line.
func uniqueName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "e2e-" + prefix + "-" + hex.EncodeToString(b)
}
