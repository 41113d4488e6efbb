package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/httperr"
	"github.com/thawhq/thaw/httpserve"
	"github.com/thawhq/thaw/routing"
)

// Authz returns the handler of Envoy's ext_authz HTTP service, to be
// mounted at routing.AuthzPrefix (which it strips). It authenticates the bearer
// token and resolves the model the request names (body "model", a
// deploy.ModelRef, or the native /v1/inference/<owner>/<name> path) among
// the caller's deployments. It answers 200 with routing.DeployIDHeader and
// routing.RouteHeader, or the same OpenAI-shaped 401/404/400 the built-in
// router would give, which Envoy returns to the client: such a request
// never reaches a model server.
//
// Only the canonical name on the OpenAI paths of a deployment with a ready
// instance goes direct: a cold deployment's requests are held by the
// activator, and the deploy_id: form must be rewritten to the served name
// and the native path translated, which only the activator does.
//
// A direct answer also carries a grant (routing.GrantHeader) issued with
// grants: the direct route removes the caller's token before the request
// goes on, and an activator it may fall back to authenticates it by that.
func (p *Proxy) Authz(users *auth.Users, grants *auth.Grants) http.Handler {
	a := &authorizer{p: p, grants: grants}
	return http.StripPrefix(routing.AuthzPrefix, users.Require(http.HandlerFunc(a.authz)))
}

// authorizer is the ext_authz service.
type authorizer struct {
	p      *Proxy
	grants *auth.Grants
}

func (a *authorizer) authz(w http.ResponseWriter, r *http.Request) {
	p := a.p
	user := auth.User(r.Context())
	path := r.URL.Path
	if native, ok := strings.CutPrefix(path, routing.NativePrefix); ok && r.Method == http.MethodPost {
		owner, name, ok := strings.Cut(native, "/")
		if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
			allow(w, "-", routing.Activator) // thaw's router answers 404
			return
		}
		a.authzModel(w, user, owner+"/"+name, false)
		return
	}
	if !routing.IsOpenAIPath(path) || r.Method != http.MethodPost {
		// Not a request a model server takes: thaw answers it.
		allow(w, "-", routing.Activator)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, p.cfg.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			allow(w, "-", routing.Activator) // the activator answers 413
			return
		}
		if httpserve.IsTimeout(err) {
			httperr.Encode(w, http.StatusRequestTimeout, "body_timeout", "", "the request body did not arrive in time")
			return
		}
		httperr.Encode(w, http.StatusBadRequest, "bad_body", "", "could not read the request body")
		return
	}
	partial := strings.EqualFold(r.Header.Get(routing.PartialBodyHeader), "true")
	model, found, complete := modelField(body)
	switch {
	case partial && !found:
		// "model" lies past the part Envoy sent: the activator reads the
		// whole body and checks it.
		allow(w, "-", routing.Activator)
		return
	case !partial && !complete:
		httperr.Encode(w, http.StatusBadRequest, "invalid_json", "", "request body must be a JSON object")
		return
	case model == "":
		httperr.Encode(w, http.StatusBadRequest, "missing_model", "model", modelUsage)
		return
	}
	a.authzModel(w, user, model, true)
}

// authzModel resolves model for user and answers.
func (a *authorizer) authzModel(w http.ResponseWriter, user, model string, openAI bool) {
	p := a.p
	t, err := p.cfg.Resolver.Resolve(user, model)
	if err != nil {
		p.writeErr(w, err, model)
		return
	}
	// Cold deployments go to the activator route, whose retries also cover
	// an activator replica dying while it holds the request.
	route := routing.Activator
	if openAI && model == t.Model && p.ready(t.DeployID) {
		route = routing.Direct
		if a.grants != nil {
			w.Header().Set(routing.GrantHeader, a.grants.Issue(user, t.DeployID, time.Now()))
		}
	}
	allow(w, t.DeployID, route)
}

func allow(w http.ResponseWriter, deployID, route string) {
	w.Header().Set(routing.DeployIDHeader, deployID)
	w.Header().Set(routing.RouteHeader, route)
	w.WriteHeader(http.StatusOK)
}

// modelField finds the top-level "model" of a JSON object that may be cut
// short. found: a "model" string was read; complete: body is one whole,
// valid JSON object. A "model" that is not a string reads as empty.
func modelField(body []byte) (model string, found, complete bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", false, false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return model, found, false
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return model, found, false
		}
		if key == "model" { // the last one wins, as in Go's and Python's decoders
			found = true
			if json.Unmarshal(v, &model) != nil {
				model = ""
			}
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return model, found, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return model, found, false // trailing data
	}
	return model, found, true
}
