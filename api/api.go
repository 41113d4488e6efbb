package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/httperr"
	"github.com/thawhq/thaw/meter"
	"github.com/thawhq/thaw/spend"
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
	// Ledger, when set, serves usage, statements and accounts (GET /usage,
	// GET /deploy/{id}/usage, GET /usage/invoices, GET/PUT /account, GET
	// /account/events), priced by Prices, limited by Policy.
	Ledger Ledger
	Prices meter.Prices
	Policy spend.Policy
	// Blocker tells a user over their spending limit: the account shows it,
	// and min_instances above 0 is refused to them. Required with Ledger.
	Blocker Blocker
	// Journal and Instances, when set, serve a deployment's events (GET
	// /deploy/{id}/events, JSON or a server-sent event stream) and its
	// instances (GET /deploy/{id}/instances).
	Journal   Journal
	Instances InstanceLister
	// Stats and GPUs, when set, serve a deployment's time series (GET
	// /deploy/{id}/stats) and the GPU types offered, with prices (GET /gpus).
	Stats StatsSource
	GPUs  GPUSource
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
	if cfg.Ledger != nil && (cfg.Prices == nil || cfg.Blocker == nil) {
		return nil, errors.New("api: Ledger needs Prices and Blocker")
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
	a.registerDeployEvents(mux, wrap)
	a.registerStats(mux, wrap)
	if a.cfg.Ledger == nil {
		return
	}
	mux.Handle("GET /usage", wrap(http.HandlerFunc(a.usage)))
	mux.Handle("GET /deploy/{id}/usage", wrap(http.HandlerFunc(a.deployUsage)))
	mux.Handle("GET /usage/invoices", wrap(http.HandlerFunc(a.invoices)))
	mux.Handle("GET /account", wrap(http.HandlerFunc(a.getAccount)))
	mux.Handle("PUT /account", wrap(http.HandlerFunc(a.putAccount)))
	mux.Handle("GET /account/events", wrap(http.HandlerFunc(a.events)))
}

func (a *API) create(w http.ResponseWriter, r *http.Request) {
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	req, err := deploy.DecodeCreate(body)
	if err != nil {
		a.writeErr(w, "create", err)
		return
	}
	d, err := deploy.Normalize(req)
	if err != nil {
		a.writeErr(w, "create", err)
		return
	}
	if !a.mayRun(w, r, d.Settings) {
		return
	}
	now := a.cfg.Now().UTC()
	d.Owner = auth.User(r.Context())
	d.CreatedAt, d.UpdatedAt = now, now
	saved, err := a.cfg.Store.Create(*d, func(others []*deploy.Deployment) error {
		return deploy.CheckQuota(a.cfg.GPUQuota, d, others)
	})
	if err != nil {
		a.writeErr(w, "create", err)
		return
	}
	a.cfg.Logger.Info("deployment created", "deploy", saved.ID, "model", saved.FullName(),
		"gpu", saved.Config.GPU, "num_gpus", saved.Config.NumGPUs, "min", saved.Settings.MinInstances, "max", saved.Settings.MaxInstances)
	a.recordCreated(saved)
	writeJSON(w, http.StatusOK, deploy.NewView(&saved, a.cfg.Live.Live(saved)))
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	status := deploy.Status(r.URL.Query().Get("status"))
	if status != "" && !validStatus(status) {
		httperr.Encode(w, http.StatusBadRequest, "invalid_status", "status",
			fmt.Sprintf("unknown status %q, want one of initializing, deploying, running, stopped, failed, deleted", httperr.Clip(string(status))))
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
	id := r.PathValue("id")
	d, err := a.cfg.Store.Fetch(id)
	if err != nil || d.Owner != auth.User(r.Context()) {
		notFound(w, id)
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
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	req, err := deploy.DecodeUpdate(body)
	if err != nil {
		a.writeErr(w, "update", err)
		return
	}
	if req.Settings == nil {
		httperr.Encode(w, http.StatusBadRequest, "missing_settings", "settings", "settings is required: only settings (min_instances, max_instances) can change")
		return
	}
	if err := deploy.ValidateSettings(*req.Settings); err != nil {
		a.writeErr(w, "update", err)
		return
	}
	if !a.mayRun(w, r, *req.Settings) {
		return
	}
	saved, err := a.cfg.Store.Update(d.ID, func(d *deploy.Deployment) {
		d.Settings = *req.Settings
		d.UpdatedAt = a.cfg.Now().UTC()
	}, func(d *deploy.Deployment, others []*deploy.Deployment) error {
		return deploy.CheckQuota(a.cfg.GPUQuota, d, others)
	})
	if errors.Is(err, deploy.ErrNotFound) { // deleted meanwhile
		notFound(w, d.ID)
		return
	}
	if err != nil {
		a.writeErr(w, "update", err)
		return
	}
	a.cfg.Logger.Info("deployment updated", "deploy", saved.ID, "min", saved.Settings.MinInstances, "max", saved.Settings.MaxInstances)
	a.recordUpdated(d.Settings, saved)
	writeJSON(w, http.StatusOK, deploy.NewView(&saved, a.cfg.Live.Live(saved)))
}

func (a *API) delete(w http.ResponseWriter, r *http.Request) {
	d, ok := a.mine(w, r)
	if !ok {
		return
	}
	err := a.cfg.Store.Delete(d.ID)
	if errors.Is(err, deploy.ErrNotFound) { // deleted meanwhile
		notFound(w, d.ID)
		return
	}
	if err != nil {
		a.writeErr(w, "delete", err)
		return
	}
	a.cfg.Logger.Info("deployment deleted", "deploy", d.ID, "model", d.FullName())
	a.recordDeleted(d)
	d.UpdatedAt = a.cfg.Now().UTC()
	writeJSON(w, http.StatusOK, deploy.NewView(&d, deploy.Live{Status: deploy.StatusDeleted}))
}

// mayRun refuses, with OpenAI's 429 insufficient_quota, settings that keep
// instances running (min_instances above 0) for a user over their spending
// limit; scaling to zero and max_instances stay theirs to change.
func (a *API) mayRun(w http.ResponseWriter, r *http.Request, s deploy.Settings) bool {
	if a.cfg.Blocker == nil || s.MinInstances == 0 {
		return true
	}
	msg, blocked := a.cfg.Blocker.Blocked(auth.User(r.Context()))
	if !blocked {
		return true
	}
	httperr.Write(w, httperr.InsufficientQuota("settings.min_instances",
		"min_instances above 0 is refused while over the spending limit: "+msg))
	return false
}

// readBody reads a request body of at most MaxBody bytes, writing 413 (or
// 400) when it cannot.
func (a *API) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httperr.Encode(w, http.StatusRequestEntityTooLarge, "body_too_large", "", fmt.Sprintf("request body over %d bytes", a.cfg.MaxBody))
			return nil, false
		}
		httperr.Encode(w, http.StatusBadRequest, "bad_body", "", "could not read request body")
		return nil, false
	}
	return body, true
}

// storeUnavailable is all a client learns of a store failure; the detail
// (a path, an OS or Nomad error) goes to the log only.
const storeUnavailable = "deployment store unavailable; nothing was changed, retry later"

// unavailable answers 503 with code and message, and Retry-After 5 s: a
// backing store could not be read or written, and a retry may succeed.
func unavailable(w http.ResponseWriter, code, message string) {
	e := httperr.New(http.StatusServiceUnavailable, code, "", message)
	e.RetryAfter = 5 * time.Second
	httperr.Write(w, e)
}

// writeErr maps the deploy API's errors to statuses, in one place. Only a
// *deploy.FieldError's message, written for the API's user, reaches the
// response; any other error is a store failure, logged and answered 503.
func (a *API) writeErr(w http.ResponseWriter, op string, err error) {
	if errors.Is(err, deploy.ErrConflict) {
		// Another replica changed the deployment since this one read it:
		// nothing was written, and the store now holds that change.
		httperr.Encode(w, http.StatusConflict, "conflict", "",
			"the deployment was changed by another request at the same time, and this change was not applied; read it again (GET /deploy/{deploy_id}) and retry")
		return
	}
	var fe *deploy.FieldError
	if !errors.As(err, &fe) {
		// The store could not be read or written (Nomad unreachable, disk
		// full): nothing was changed, and a retry may succeed.
		a.cfg.Logger.Error("deployment store failed", "op", op, "err", err)
		unavailable(w, "store_unavailable", storeUnavailable)
		return
	}
	status, code := http.StatusUnprocessableEntity, "invalid_value"
	switch {
	case errors.Is(fe, deploy.ErrBadJSON):
		status, code = http.StatusBadRequest, "invalid_json"
	case errors.Is(fe, deploy.ErrWrongType):
		status, code = http.StatusBadRequest, "invalid_type"
	case errors.Is(fe, deploy.ErrUnknownField):
		status, code = http.StatusBadRequest, "unknown_field"
	case errors.Is(fe, deploy.ErrRepeatedField):
		status, code = http.StatusBadRequest, "repeated_field"
	case errors.Is(fe, deploy.ErrMalformed):
		status, code = http.StatusBadRequest, "invalid_value"
	case errors.Is(fe, deploy.ErrOverQuota):
		code = "quota_exceeded"
	case errors.Is(fe, deploy.ErrDuplicate):
		status, code = http.StatusConflict, "duplicate_model_name"
	}
	httperr.Encode(w, status, code, fe.Field, fe.Message)
}

// notFound answers 404 for the deployment id, whether it does not exist or
// belongs to someone else.
func notFound(w http.ResponseWriter, id string) {
	httperr.Encode(w, http.StatusNotFound, "deployment_not_found", "deploy_id", fmt.Sprintf("deployment %q not found", httperr.Clip(id)))
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
