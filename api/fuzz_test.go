package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/thawhq/thaw/deploy"
)

// fuzzSeeds cover DeepInfra's documented bodies (trailing commas), nested
// garbage, huge numbers, invalid UTF-8, repeated and unknown fields, and
// names Nomad or a shell would read.
var fuzzSeeds = []string{
	deepInfraCreate,
	deepInfraUpdate,
	`{"model_name":"m","gpu":"H100-80GB","num_gpus":1,"max_batch_size":8,"hf":{"repo":"o/r","revision":"main","token":"hf_x"},"settings":{"min_instances":0,"max_instances":1},"extra_args":"--dtype half"}`,
	`{"model_name":"m","gpu":"A100-80GB","hf":{"repo":"o/r",},"settings":{"min_instances":0,"max_instances":1,},}`,
	`{"model_name":"m","gpu":"A100-80GB","hf":{"repo":{"x":[[[{"y":[{},[],"\u0000"]}]]]}}}`,
	`{"extra_args":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`,
	`{"model_name":"m","num_gpus":1e400,"max_batch_size":-99999999999999999999999,"settings":{"max_instances":1.0e0}}`,
	`{"settings":{"min_instances":-9223372036854775808,"max_instances":9223372036854775807}}`,
	"{\"model_name\":\"\xff\xfe\",\"gpu\":\"A100-80GB\"}",
	"{\"model_name\":\"m\xed\xa0\x80\"}",
	`{"model_name":"\ud800","gpu":"A100-80GB","hf":{"repo":"o/r"}}`,
	`{"model_name":"a","model_name":"b"}`,
	`{"settings":{"max_instances":1,"max_instances":2}}`,
	`{"MODEL_NAME":"x","Gpu":"A100-80GB"}`,
	`{"model_name":"M","gpu":"A100-80GB","hf":{"repo":"o/r"}}`,
	`{"model_name":"m2","gpu":"A100-80GB","hf":{"repo":"o/r","revision":"${NOMAD_TOKEN}"}}`,
	`{"model_name":"m2","gpu":"A100-80GB","hf":{"repo":"o/r","revision":"../../x"}}`,
	`{"model_name":"m2","gpu":"A100-80GB","hf":{"repo":"-x/r"},"extra_args":["${attr.unique.hostname}"]}`,
	`{"model_name":"m2","gpu":"A100-80GB","hf":{"repo":"o/r","token":"hf_a\nLD_PRELOAD=/x"}}`,
	`[,]`, `[1,,]`, `{"a":,}`, `{,}`, `null`, `"x"`, `1`, ``, ` `, `{} {}`, `{"model_name":"m"`, `{"a":"\`,
}

// FuzzDeployBody sends any body to POST /deploy/llm and to PUT
// /deploy/{id}: thaw must never panic or answer 5xx, and every refusal is
// a 4xx in OpenAI's error shape.
func FuzzDeployBody(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		store, err := deploy.NewStore(&memBackend{})
		if err != nil {
			t.Fatal(err)
		}
		mux := newMux(t, Config{Store: store, Live: &fakeLive{byID: map[string]deploy.Live{}}, GPUQuota: 4})
		send := func(method, path string, body []byte) *httptest.ResponseRecorder {
			req := httptest.NewRequest(method, path, bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer tok-alice")
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, req)
			return rec
		}
		existing := send(http.MethodPost, "/deploy/llm", []byte(`{"model_name":"m","gpu":"A100-80GB","hf":{"repo":"o/r"}}`))
		var v deploy.View
		if err := json.Unmarshal(existing.Body.Bytes(), &v); err != nil || existing.Code != http.StatusOK {
			t.Fatalf("seeding create: %d %s", existing.Code, existing.Body)
		}
		for _, r := range []struct{ method, path string }{
			{http.MethodPost, "/deploy/llm"},
			{http.MethodPut, "/deploy/" + v.ID},
		} {
			rec := send(r.method, r.path, body)
			checkAnswer(t, r.method+" "+r.path, rec, body)
		}
	})
}

// checkAnswer fails unless rec is a deploy object (200) or a 4xx in
// OpenAI's error shape.
func checkAnswer(t *testing.T, what string, rec *httptest.ResponseRecorder, body []byte) {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s: Content-Type %q for body %q", what, ct, body)
	}
	if rec.Code == http.StatusOK {
		var v deploy.View
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil || v.ID == "" {
			t.Fatalf("%s: 200 without a deploy object: %s (%v) for body %q", what, rec.Body, err, body)
		}
		return
	}
	switch rec.Code {
	case http.StatusBadRequest, http.StatusConflict, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
	default:
		t.Fatalf("%s: status %d (%s) for body %q", what, rec.Code, rec.Body, body)
	}
	var e struct {
		Error *struct {
			Message *string `json:"message"`
			Type    *string `json:"type"`
			Param   *string `json:"param"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error == nil || e.Error.Message == nil || e.Error.Type == nil || e.Error.Code == nil ||
		*e.Error.Message == "" || *e.Error.Type == "" || *e.Error.Code == "" || (e.Error.Param != nil && *e.Error.Param == "") {
		t.Fatalf("%s: %d body is not an OpenAI error: %s (%v) for body %q", what, rec.Code, rec.Body, err, body)
	}
}
