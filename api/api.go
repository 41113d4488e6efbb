// Package api serves thaw's deploy API, compatible with DeepInfra's custom
// LLM API: POST /deploy/llm, GET /deploy/list, GET/PUT/DELETE /deploy/{id}.
// Every handler expects auth.Require in front; a user sees and changes only
// their own deployments (another user's answers 404, as if it did not exist).
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/httperr"
)

// Live reports a deployment's run-time status (the fleet implements it).
type Live interface {
	Live(d deploy.Deployment) deploy.Live
}

// Config configures the API.
type Config struct {
	Store *deploy.Store
	Live  Live
	// GPUQuota is the number of GPUs one user may run at once; 0 = none.
	GPUQuota int
	// MaxBody bounds request bodies, in bytes. Default 1 MiB.
	MaxBody int64
	// Now defaults to time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// API is the deploy API's handlers.
type API struct{ cfg Config }

// New returns the API.
func New(cfg Config) (*API, error) {
	if cfg.Store == nil || cfg.Live == nil {
		return nil, errors.New("api: Store and Live are required")
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &API{cfg: cfg}, nil
}

// Register adds the deploy routes to mux, each wrapped by wrap (auth).
func (a *API) Register(mux *http.ServeMux, wrap func(http.Handler) http.Handler) {
	mux.Handle("POST /deploy/llm", wrap(http.HandlerFunc(a.create)))
	mux.Handle("GET /deploy/list", wrap(http.HandlerFunc(a.list)))
	mux.Handle("GET /deploy/{id}", wrap(http.HandlerFunc(a.get)))
	mux.Handle("PUT /deploy/{id}", wrap(http.HandlerFunc(a.update)))
	mux.Handle("DELETE /deploy/{id}", wrap(http.HandlerFunc(a.delete)))
}

func (a *API) create(w http.ResponseWriter, r *http.Request) {
	var req deploy.CreateRequest
	if !a.decode(w, r, &req) {
		return
	}
	d, err := deploy.Normalize(req)
	if err != nil {
		writeErr(w, err)
		return
	}
	now := a.cfg.Now().UTC()
	d.Owner = auth.User(r.Context())
	d.CreatedAt, d.UpdatedAt = now, now
	saved, err := a.cfg.Store.Create(*d, func(others []*deploy.Deployment) error {
		return deploy.CheckQuota(a.cfg.GPUQuota, d, others)
	})
	if err != nil {
		writeErr(w, err)
		return
	}
	a.cfg.Logger.Info("deployment created", "deploy", saved.ID, "model", saved.FullName(),
		"gpu", saved.Config.GPU, "num_gpus", saved.Config.NumGPUs, "min", saved.Settings.MinInstances, "max", saved.Settings.MaxInstances)
	writeJSON(w, http.StatusOK, deploy.NewView(&saved, a.cfg.Live.Live(saved)))
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	status := deploy.Status(r.URL.Query().Get("status"))
	if status != "" && !validStatus(status) {
		httperr.Encode(w, http.StatusBadRequest, "invalid_status", "status",
			fmt.Sprintf("unknown status %q, want one of initializing, deploying, running, stopped, failed, deleted", status))
		return
	}
	out := []deploy.View{}
	for _, d := range a.cfg.Store.List(auth.User(r.Context())) {
		v := deploy.NewView(&d, a.cfg.Live.Live(d))
		if status == "" || v.Status == status {
			out = append(out, v)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// mine returns the caller's deployment named in the path, or writes 404.
func (a *API) mine(w http.ResponseWriter, r *http.Request) (deploy.Deployment, bool) {
	d, err := a.cfg.Store.Get(r.PathValue("id"))
	if err != nil || d.Owner != auth.User(r.Context()) {
		writeErr(w, fmt.Errorf("%w: %s", deploy.ErrNotFound, r.PathValue("id")))
		return deploy.Deployment{}, false
	}
	return d, true
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	d, ok := a.mine(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, deploy.NewView(&d, a.cfg.Live.Live(d)))
}

func (a *API) update(w http.ResponseWriter, r *http.Request) {
	d, ok := a.mine(w, r)
	if !ok {
		return
	}
	var req deploy.UpdateRequest
	if !a.decode(w, r, &req) {
		return
	}
	if req.Settings == nil {
		httperr.Encode(w, http.StatusBadRequest, "missing_settings", "settings", "settings is required: only settings (min_instances, max_instances) can change")
		return
	}
	if err := deploy.ValidateSettings(*req.Settings); err != nil {
		writeErr(w, err)
		return
	}
	saved, err := a.cfg.Store.Update(d.ID, func(d *deploy.Deployment) {
		d.Settings = *req.Settings
		d.UpdatedAt = a.cfg.Now().UTC()
	}, func(d *deploy.Deployment, others []*deploy.Deployment) error {
		return deploy.CheckQuota(a.cfg.GPUQuota, d, others)
	})
	if err != nil {
		writeErr(w, err)
		return
	}
	a.cfg.Logger.Info("deployment updated", "deploy", saved.ID, "min", saved.Settings.MinInstances, "max", saved.Settings.MaxInstances)
	writeJSON(w, http.StatusOK, deploy.NewView(&saved, a.cfg.Live.Live(saved)))
}

func (a *API) delete(w http.ResponseWriter, r *http.Request) {
	d, ok := a.mine(w, r)
	if !ok {
		return
	}
	if err := a.cfg.Store.Delete(d.ID); err != nil {
		writeErr(w, err)
		return
	}
	a.cfg.Logger.Info("deployment deleted", "deploy", d.ID, "model", d.FullName())
	d.UpdatedAt = a.cfg.Now().UTC()
	writeJSON(w, http.StatusOK, deploy.NewView(&d, deploy.Live{Status: deploy.StatusDeleted}))
}

// decode reads a bounded JSON body into v, writing 400/413 on failure.
func (a *API) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httperr.Encode(w, http.StatusRequestEntityTooLarge, "body_too_large", "", fmt.Sprintf("request body over %d bytes", a.cfg.MaxBody))
			return false
		}
		httperr.Encode(w, http.StatusBadRequest, "bad_body", "", "could not read request body")
		return false
	}
	if err := json.Unmarshal(body, v); err != nil {
		var fe *deploy.FieldError
		if errors.As(err, &fe) {
			httperr.Encode(w, http.StatusBadRequest, "invalid_type", fe.Field, fe.Message)
			return false
		}
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			httperr.Encode(w, http.StatusBadRequest, "invalid_type", typeErr.Field,
				fmt.Sprintf("%s must be of type %s", typeErr.Field, typeErr.Type))
			return false
		}
		httperr.Encode(w, http.StatusBadRequest, "invalid_json", "", "request body is not valid JSON: "+err.Error())
		return false
	}
	return true
}

// writeErr maps deploy API errors to statuses, in one place.
func writeErr(w http.ResponseWriter, err error) {
	var fe *deploy.FieldError
	switch {
	case errors.As(err, &fe):
		code := "invalid_value"
		if strings.Contains(fe.Message, "quota") {
			code = "quota_exceeded"
		}
		httperr.Encode(w, http.StatusUnprocessableEntity, code, fe.Field, fe.Message)
	case errors.Is(err, deploy.ErrNotFound):
		httperr.Encode(w, http.StatusNotFound, "deployment_not_found", "deploy_id", err.Error())
	case errors.Is(err, deploy.ErrDuplicate):
		httperr.Encode(w, http.StatusConflict, "duplicate_model_name", "model_name", err.Error())
	default:
		// The store could not be read or written (Nomad unreachable, disk
		// full): nothing was changed, and a retry may succeed.
		slog.Error("deploy api", "err", err)
		e := httperr.New(http.StatusServiceUnavailable, "store_unavailable", "", "the deployment store is unavailable, nothing was changed: "+err.Error())
		e.RetryAfter = 5 * time.Second
		httperr.Write(w, e)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func validStatus(s deploy.Status) bool {
	switch s {
	case deploy.StatusInitializing, deploy.StatusDeploying, deploy.StatusRunning,
		deploy.StatusStopped, deploy.StatusFailed, deploy.StatusDeleted:
		return true
	}
	return false
}
