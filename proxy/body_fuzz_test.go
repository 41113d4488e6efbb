package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/thawhq/thaw/httperr"
)

// fuzzMaxBody is MaxBody of FuzzInferenceBody's proxy: small, so that the
// fuzzer reaches the limit and its inputs stay quick to minimize.
const fuzzMaxBody = 1 << 10

// FuzzInferenceBody feeds arbitrary bodies to the inference body reader,
// the OpenAI-compatible model extraction and rewrite, and the native
// translation. None may panic; a body accepted has a non-empty model (and
// rewrites to a body naming the served model, other fields kept), a native
// body accepted translates to a valid completion request; a body rejected
// gets a 4xx in thaw's error shape.
func FuzzInferenceBody(f *testing.F) {
	for _, seed := range []string{
		`{"model":"alice/m","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"deploy_id:d1","prompt":"x","stream":true}`,
		`{"model":"alice/m",}`,                               // trailing comma
		`{"x":{"model":"alice/m"}}`,                          // nested model only
		`{"model":{"model":"alice/m"}}`,                      // model not a string
		`{"model":"alice/m","max_tokens":1e400}`,             // huge number
		`{"model":"alice/m","n":-0.0e-99999999999999999}`,    // tiny number
		"{\"model\":\"alice/\xff\xfe\",\"prompt\":\"\xc3\"}", // invalid UTF-8
		`{"model":"alice/m","model":""}`,                     // duplicate keys
		`{"model":"","model":"alice/m"}`,
		`{"Model":"alice/m"}`,
		`{"mod\u0065l":"alice/m"}`,
		`{"model":"alice/m"} {"model":"bob/m"}`, // trailing data
		"\xef\xbb\xbf{\"model\":\"alice/m\"}",   // BOM
		`{"model":"\u0000"}`,
		`{"model":"\ud800"}`,
		`null`, `[]`, `""`, ``, `{}`,
		strings.Repeat("[", fuzzMaxBody),                                 // deep nesting
		`{"model":"a/b","p":"` + strings.Repeat("x", fuzzMaxBody) + `"}`, // over MaxBody
		`{"input":"Say hi","max_new_tokens":5,"temperature":0.2}`,
		`{"input":"x","max_new_tokens":99999999999999999999}`,
		`{"input":"x","max_new_tokens":0}`,
		`{"input":"x","max_new_tokens":1.5}`,
		`{"input":null}`,
		`{"input":"x","input":null}`,
		`{"INPUT":"x","Stream":false}`,
		`{"input":"x","stream":"true"}`,
		`{"input":"<script>&","stop":["\n",null],"top_p":1e308}`,
		`{"input":"x","temperature":NaN}`,
	} {
		f.Add([]byte(seed))
	}
	p, err := New(Config{
		Resolver: &fakeResolver{}, Demand: &fakeSink{last: map[string]Load{}},
		MaxBody: fuzzMaxBody, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		w := httptest.NewRecorder()
		got, herr := p.readBody(w, httptest.NewRequest(http.MethodPost, "/v1/chat/completions", bytes.NewReader(body)))
		if len(body) > fuzzMaxBody {
			if herr == nil || herr.Status != http.StatusRequestEntityTooLarge {
				t.Fatalf("body of %d bytes over MaxBody %d: %v, want 413", len(body), fuzzMaxBody, herr)
			}
			return
		}
		if herr != nil || !bytes.Equal(got, body) {
			t.Fatalf("readBody = %q, %v; want the body as sent", got, herr)
		}
		checkOpenAIBody(t, body)
		checkNativeBody(t, body)
	})
}

func checkOpenAIBody(t *testing.T, body []byte) {
	fields, model, herr := parseInference(body)
	if herr != nil {
		checkRejected(t, herr)
		return
	}
	if model == "" {
		t.Fatalf("accepted %q with an empty model", body)
	}
	out, err := withModel(fields, "owner/served")
	if err != nil {
		t.Fatalf("rewrite of accepted %q: %v", body, err)
	}
	again, served, herr := parseInference(out)
	if herr != nil || served != "owner/served" || len(again) != len(fields) {
		t.Fatalf("rewritten body %q: model %q, %d fields (was %d), %v", out, served, len(again), len(fields), herr)
	}
	for k, v := range fields {
		if k != "model" && !jsonEqual(v, again[k]) {
			t.Fatalf("rewrite changed %q: %s -> %s", k, v, again[k])
		}
	}
}

func checkNativeBody(t *testing.T, body []byte) {
	in, herr := parseNative(body)
	if herr != nil {
		checkRejected(t, herr)
		return
	}
	if in.Input == nil || in.Stream || (in.MaxNewTokens != nil && *in.MaxNewTokens < 1) {
		t.Fatalf("accepted native %q: %+v", body, in)
	}
	up, err := completionBody(in, "owner/served")
	if err != nil {
		t.Fatalf("translation of accepted %q: %v", body, err)
	}
	var c struct {
		Model     string `json:"model"`
		Prompt    string `json:"prompt"`
		MaxTokens int    `json:"max_tokens"`
	}
	if err := json.Unmarshal(up, &c); err != nil || c.Model != "owner/served" || c.Prompt != *in.Input || c.MaxTokens < 1 {
		t.Fatalf("native %q translated to %s (%v)", body, up, err)
	}
}

// checkRejected: a rejection is a 4xx that thaw's error shape carries.
func checkRejected(t *testing.T, e *httperr.Error) {
	t.Helper()
	if e.Status < 400 || e.Status > 499 || e.Code == "" || e.Message == "" {
		t.Fatalf("rejection %+v, want a 4xx with a code and a message", e)
	}
	w := httptest.NewRecorder()
	httperr.Write(w, e)
	var b httperr.Body
	if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil || b.Error.Message != e.Message {
		t.Fatalf("error body %q (%v)", w.Body.String(), err)
	}
}

// jsonEqual reports whether a and b hold the same JSON value (numbers
// compared as written).
func jsonEqual(a, b json.RawMessage) bool {
	x, errA := decodeNumbers(a)
	y, errB := decodeNumbers(b)
	return errA == nil && errB == nil && reflect.DeepEqual(x, y)
}

func decodeNumbers(raw json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}
