package test

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
)

// TestIsolation: a user sees, changes and calls only their own deployments
// (another user's gets 404), and a missing or wrong token gets 401.
func TestIsolation(t *testing.T) {
	t.Parallel()
	const alice = "tok-a"
	p := startThaw(t, thawOpts{Users: []string{"alice=" + alice}})
	name := uniqueName("iso")
	d := p.create(t, devToken, llmRequest(name, "A100-80GB", 1, 8, 0, 1))
	model := "dev/" + name
	notFound := []int{http.StatusNotFound}

	r := p.do(t, http.MethodGet, "/deploy/"+d.ID, alice, nil)
	checkError(t, "alice GET dev's deployment", r, notFound, "")
	r = p.do(t, http.MethodPut, "/deploy/"+d.ID, alice, map[string]any{"settings": map[string]any{"min_instances": 0, "max_instances": 2}})
	checkError(t, "alice PUT dev's deployment", r, notFound, "")
	r = p.do(t, http.MethodDelete, "/deploy/"+d.ID, alice, nil)
	checkError(t, "alice DELETE dev's deployment", r, notFound, "")
	if got := p.get(t, d.ID); got.Settings.MaxInstances != 1 {
		t.Errorf("alice's PUT changed dev's deployment: settings %+v", got.Settings)
	}

	for _, o := range p.list(t, alice) {
		if o.ID == d.ID || o.ModelName == name {
			t.Errorf("alice's /deploy/list shows dev's deployment %s", d.ID)
		}
	}
	if ids := modelIDs(t, p, alice); slices.Contains(ids, model) {
		t.Errorf("alice's /v1/openai/models shows %s: %v", model, ids)
	}
	if ids := modelIDs(t, p, devToken); !slices.Contains(ids, model) {
		t.Errorf("dev's /v1/openai/models lacks %s: %v", model, ids)
	}

	for _, m := range []string{model, "deploy_id:" + d.ID} {
		r = p.do(t, http.MethodPost, "/v1/openai/chat/completions", alice, chatBody(m, 4, false))
		checkError(t, "alice calls "+m, r, notFound, "")
	}
	r = p.do(t, http.MethodPost, "/v1/inference/"+model, alice, map[string]any{"input": "hello"})
	checkError(t, "alice native inference on "+model, r, notFound, "")

	unauthorized := []int{http.StatusUnauthorized}
	for _, tok := range []string{"", "tok-wrong"} {
		who := "no token"
		if tok != "" {
			who = "wrong token"
		}
		r = p.do(t, http.MethodGet, "/deploy/list", tok, nil)
		checkError(t, who+" GET /deploy/list", r, unauthorized, "")
		r = p.do(t, http.MethodGet, "/deploy/"+d.ID, tok, nil)
		checkError(t, who+" GET /deploy/{id}", r, unauthorized, "")
		r = p.do(t, http.MethodPost, "/deploy/llm", tok, llmBody(uniqueName("x"), "A100-80GB", 1, 8, 0, 1))
		checkError(t, who+" POST /deploy/llm", r, unauthorized, "")
		r = p.do(t, http.MethodPost, "/v1/openai/chat/completions", tok, chatBody(model, 4, false))
		checkError(t, who+" chat", r, unauthorized, "")
		r = p.do(t, http.MethodGet, "/v1/openai/models", tok, nil)
		checkError(t, who+" models", r, unauthorized, "")
	}

	// dev still owns and calls the deployment.
	if msg := checkChat(p.chat(t, model, 4), 4); msg != "" {
		t.Errorf("dev calling its own deployment: %s", msg)
	}
}

// modelIDs returns the ids of GET /v1/openai/models as token's user.
func modelIDs(t *testing.T, p *thawProc, token string) []string {
	t.Helper()
	r := p.do(t, http.MethodGet, "/v1/openai/models", token, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /v1/openai/models: %s", r)
	}
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(r.Body, &list); err != nil || list.Object != "list" {
		t.Fatalf("GET /v1/openai/models: not an OpenAI list (%v): %s", err, r)
	}
	var ids []string
	for _, m := range list.Data {
		ids = append(ids, m.ID)
	}
	return ids
}
