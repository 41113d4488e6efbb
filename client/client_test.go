package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/thawhq/thaw/deploy"
)

// seen is one request as the fake server received it.
type seen struct {
	Method, Path, Query, Auth, Body string
}

// fakeAPI answers every request with status and body and records it.
type fakeAPI struct {
	status int
	body   string

	mu   sync.Mutex // mu guards reqs.
	reqs []seen
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.reqs = append(f.reqs, seen{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Authorization"), string(b)})
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(f.status)
	io.WriteString(w, f.body)
}

func (f *fakeAPI) requests() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seen(nil), f.reqs...)
}

const viewJSON = `{"deploy_id":"d-1","model_name":"m","full_name":"dev/m","type":"llm","status":"running","fail_reason":"",
"instances":{"running":1,"pending":1,"desired":2,"reason":"no free A100-80GB"},
"config":{"gpu":"A100-80GB","num_gpus":1,"max_batch_size":8,"weights":{"repo":"org/r"}},
"settings":{"min_instances":0,"max_instances":2}}`

var wantView = deploy.View{
	ID: "d-1", ModelName: "m", FullName: "dev/m", Type: "llm", Status: deploy.StatusRunning,
	Instances: deploy.Instances{Running: 1, Pending: 1, Desired: 2, Reason: "no free A100-80GB"},
	Config:    deploy.Config{GPU: "A100-80GB", NumGPUs: 1, MaxBatchSize: 8, Weights: deploy.Weights{Repo: "org/r"}},
	Settings:  deploy.Settings{MinInstances: 0, MaxInstances: 2},
}

func start(t *testing.T, status int, body string) (*Client, *fakeAPI) {
	t.Helper()
	f := &fakeAPI{status: status, body: body}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	// Without the scheme on purpose: New must add it.
	return New(strings.TrimPrefix(srv.URL, "http://")+"/", "tok-1"), f
}

func ptr[T any](v T) *T { return &v }

func TestRequests(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		status int
		body   string
		call   func(c *Client) (any, error)
		want   any
		req    seen
	}{{
		name: "create", status: 200, body: viewJSON,
		call: func(c *Client) (any, error) {
			return c.Create(ctx, deploy.CreateRequest{ModelName: "m", GPU: "A100-80GB", NumGPUs: ptr(1), HF: &deploy.HF{Repo: "org/r"}})
		},
		want: wantView,
		req: seen{Method: "POST", Path: "/deploy/llm", Auth: "Bearer tok-1",
			Body: `{"model_name":"m","gpu":"A100-80GB","num_gpus":1,"max_batch_size":null,"hf":{"repo":"org/r"},"settings":null}`},
	}, {
		name: "get", status: 200, body: viewJSON,
		call: func(c *Client) (any, error) { return c.Get(ctx, "d-1") },
		want: wantView,
		req:  seen{Method: "GET", Path: "/deploy/d-1", Auth: "Bearer tok-1"},
	}, {
		name: "get escapes the id", status: 200, body: viewJSON,
		call: func(c *Client) (any, error) { return c.Get(ctx, "a/b c") },
		want: wantView,
		req:  seen{Method: "GET", Path: "/deploy/a%2Fb%20c", Auth: "Bearer tok-1"},
	}, {
		name: "update sends settings only", status: 200, body: viewJSON,
		call: func(c *Client) (any, error) {
			return c.Update(ctx, "d-1", deploy.Settings{MinInstances: 1, MaxInstances: 3})
		},
		want: wantView,
		req: seen{Method: "PUT", Path: "/deploy/d-1", Auth: "Bearer tok-1",
			Body: `{"settings":{"min_instances":1,"max_instances":3}}`},
	}, {
		name: "list array", status: 200, body: "[" + viewJSON + "]",
		call: func(c *Client) (any, error) { return c.List(ctx, "") },
		want: []deploy.View{wantView},
		req:  seen{Method: "GET", Path: "/deploy/list", Auth: "Bearer tok-1"},
	}, {
		name: "list with status, wrapped in data", status: 200, body: `{"data":[` + viewJSON + `]}`,
		call: func(c *Client) (any, error) { return c.List(ctx, "running") },
		want: []deploy.View{wantView},
		req:  seen{Method: "GET", Path: "/deploy/list", Query: "status=running", Auth: "Bearer tok-1"},
	}, {
		name: "empty list", status: 200, body: `[]`,
		call: func(c *Client) (any, error) { return c.List(ctx, "") },
		want: []deploy.View{},
		req:  seen{Method: "GET", Path: "/deploy/list", Auth: "Bearer tok-1"},
	}, {
		name: "delete 204", status: 204,
		call: func(c *Client) (any, error) { return nil, c.Delete(ctx, "d-1") },
		req:  seen{Method: "DELETE", Path: "/deploy/d-1", Auth: "Bearer tok-1"},
	}, {
		name: "delete 200 with a body", status: 200, body: `{"deploy_id":"d-1","status":"deleted"}`,
		call: func(c *Client) (any, error) { return nil, c.Delete(ctx, "d-1") },
		req:  seen{Method: "DELETE", Path: "/deploy/d-1", Auth: "Bearer tok-1"},
	}, {
		name: "delete raw keeps the answer", status: 200, body: `{"deploy_id":"d-1","status":"deleted"}`,
		call: func(c *Client) (any, error) { b, err := c.DeleteRaw(ctx, "d-1"); return string(b), err },
		want: `{"deploy_id":"d-1","status":"deleted"}`,
		req:  seen{Method: "DELETE", Path: "/deploy/d-1", Auth: "Bearer tok-1"},
	}, {
		name: "delete raw 204 is empty", status: 204,
		call: func(c *Client) (any, error) { b, err := c.DeleteRaw(ctx, "d-1"); return string(b), err },
		want: "",
		req:  seen{Method: "DELETE", Path: "/deploy/d-1", Auth: "Bearer tok-1"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, f := start(t, tt.status, tt.body)
			got, err := tt.call(c)
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]seen{tt.req}, f.requests()); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   *Error
		text   string
	}{{
		name: "openai shape", status: 404,
		body: `{"error":{"message":"deployment x not found","type":"not_found_error","param":null,"code":"not_found"}}`,
		want: &Error{Status: 404, Message: "deployment x not found", Type: "not_found_error", Code: "not_found"},
		text: "404 not_found: deployment x not found",
	}, {
		name: "numeric code, param named", status: 400,
		body: `{"error":{"message":"must be 1..8","type":"invalid_request_error","param":"num_gpus","code":400}}`,
		want: &Error{Status: 400, Message: "must be 1..8", Type: "invalid_request_error", Param: "num_gpus", Code: "400"},
		text: "400 invalid_request_error: must be 1..8 (param num_gpus)",
	}, {
		name: "type only", status: 401,
		body: `{"error":{"message":"missing bearer token","type":"authentication_error"}}`,
		want: &Error{Status: 401, Message: "missing bearer token", Type: "authentication_error"},
		text: "401 authentication_error: missing bearer token",
	}, {
		name: "error as a string", status: 409, body: `{"error":"model_name taken"}`,
		want: &Error{Status: 409, Message: "model_name taken"},
		text: "409 conflict: model_name taken",
	}, {
		name: "detail shape", status: 422, body: `{"detail":"bad gpu"}`,
		want: &Error{Status: 422, Message: "bad gpu"},
		text: "422 unprocessable entity: bad gpu",
	}, {
		name: "plain text", status: 502, body: "upstream down\n",
		want: &Error{Status: 502, Message: "upstream down"},
		text: "502 bad gateway: upstream down",
	}, {
		name: "empty body", status: 503,
		want: &Error{Status: 503},
		text: "503 service unavailable: Service Unavailable",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := start(t, tt.status, tt.body)
			_, err := c.Get(context.Background(), "x")
			var got *Error
			if !errors.As(err, &got) {
				t.Fatalf("err = %#v, want *Error", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if got.Error() != tt.text {
				t.Errorf("Error() = %q, want %q", got.Error(), tt.text)
			}
		})
	}
}

func TestRawKeepsServerJSON(t *testing.T) {
	body := `{"deploy_id":"d-1","extra_field":{"kept":true}}`
	c, _ := start(t, 200, body)
	got, err := c.GetRaw(context.Background(), "d-1")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != body {
		t.Errorf("GetRaw = %s, want %s", got, body)
	}
	items, err := c.ListRaw(context.Background(), "")
	if err == nil {
		t.Errorf("ListRaw of an object without data = %s, want an error", items)
	}
}

func TestNetworkError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close() // nothing listens there any more
	_, err := New(addr, "t").List(context.Background(), "")
	if err == nil || !strings.Contains(err.Error(), "is thaw running at "+addr+"?") {
		t.Errorf("err = %v, want a hint naming %s", err, addr)
	}
}

func TestEmptyID(t *testing.T) {
	c, f := start(t, 200, viewJSON)
	if _, err := c.Get(context.Background(), ""); err == nil {
		t.Error("Get(\"\") succeeded")
	}
	if err := c.Delete(context.Background(), " "); err == nil {
		t.Error("Delete(\" \") succeeded")
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("%d requests sent for empty ids", n)
	}
}

func TestNormalizeURL(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8080":         "http://127.0.0.1:8080",
		"http://localhost:8080/": "http://localhost:8080",
		"https://thaw.example":   "https://thaw.example",
	} {
		if got := NormalizeURL(in); got != want {
			t.Errorf("NormalizeURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// The request body must be valid JSON the server's types decode.
func TestCreateBodyDecodes(t *testing.T) {
	c, f := start(t, 200, viewJSON)
	req := deploy.CreateRequest{ModelName: "m", GPU: "H100-80GB", Settings: &deploy.Settings{MaxInstances: 2}, ExtraArgs: deploy.ExtraArgs{"--seed", "1"}}
	if _, err := c.Create(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	var got deploy.CreateRequest
	if err := json.Unmarshal([]byte(f.requests()[0].Body), &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(req, got); diff != "" {
		t.Errorf("decoded body (-want +got):\n%s", diff)
	}
}
