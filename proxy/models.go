package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/httperr"
)

// modelObject is OpenAI's model object.
type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func objectOf(m Model) modelObject {
	return modelObject{ID: m.ID, Object: "model", Created: m.Created.Unix(), OwnedBy: m.Owner}
}

// models serves GET /v1/models: the caller's models.
func (p *Proxy) models(w http.ResponseWriter, r *http.Request) {
	out := struct {
		Object string        `json:"object"`
		Data   []modelObject `json:"data"`
	}{Object: "list", Data: []modelObject{}}
	for _, m := range p.cfg.Resolver.Models(auth.User(r.Context())) {
		out.Data = append(out.Data, objectOf(m))
	}
	writeJSON(w, out)
}

// model serves GET /v1/models/{model} (OpenAI's models.retrieve): one of
// the caller's models, or 404 for any other, whether it does not exist or
// belongs to someone else.
func (p *Proxy) model(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("model")
	if id == "" {
		p.models(w, r) // "/v1/models/"
		return
	}
	for _, m := range p.cfg.Resolver.Models(auth.User(r.Context())) {
		if m.ID == id {
			writeJSON(w, objectOf(m))
			return
		}
	}
	httperr.Encode(w, http.StatusNotFound, "model_not_found", "model", fmt.Sprintf("The model `%s` does not exist.", id))
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
