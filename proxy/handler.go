package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/httperr"
)

// ColdStartHeader carries how long a request was held waiting for capacity.
const ColdStartHeader = "X-Thaw-Cold-Start"

// Register adds the inference routes to mux. They expect auth.Require in
// front (the caller's user in the request context).
func (p *Proxy) Register(mux *http.ServeMux, wrap func(http.Handler) http.Handler) {
	for _, prefix := range []string{"/v1/openai", "/v1"} {
		mux.Handle("POST "+prefix+"/chat/completions", wrap(p.forward("/v1/chat/completions")))
		mux.Handle("POST "+prefix+"/completions", wrap(p.forward("/v1/completions")))
		mux.Handle("GET "+prefix+"/models", wrap(http.HandlerFunc(p.models)))
	}
	mux.Handle("POST /v1/inference/{owner}/{model}", wrap(http.HandlerFunc(p.native)))
}

// readBody reads a bounded JSON body and its "model" and "stream" fields.
func (p *Proxy) readBody(w http.ResponseWriter, r *http.Request) ([]byte, map[string]json.RawMessage, *httperr.Error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, p.cfg.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, nil, httperr.New(http.StatusRequestEntityTooLarge, "body_too_large", "", fmt.Sprintf("request body over %d bytes", p.cfg.MaxBody))
		}
		return nil, nil, httperr.New(http.StatusBadRequest, "bad_body", "", "could not read request body: "+err.Error())
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return nil, nil, httperr.New(http.StatusBadRequest, "invalid_json", "", "request body must be a JSON object")
	}
	return body, fields, nil
}

// forward serves an OpenAI-compatible POST by proxying it to an instance's
// upstreamPath.
func (p *Proxy) forward(upstreamPath string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, fields, herr := p.readBody(w, r)
		if herr != nil {
			httperr.Write(w, herr)
			return
		}
		var model string
		if raw, ok := fields["model"]; !ok || json.Unmarshal(raw, &model) != nil || model == "" {
			httperr.Encode(w, http.StatusBadRequest, "missing_model", "model", "model is required: \"<owner>/<model_name>\" or \"deploy_id:<id>\"")
			return
		}
		t, err := p.cfg.Resolver.Resolve(auth.User(r.Context()), model)
		if err != nil {
			p.writeErr(w, err, model)
			return
		}
		if model != t.Model {
			fields["model"], _ = json.Marshal(t.Model)
			if body, err = json.Marshal(fields); err != nil {
				httperr.Encode(w, http.StatusBadRequest, "invalid_json", "", "request body must be a JSON object")
				return
			}
		}
		p.serve(w, r, t, func(ep *endpoint, a *attempt) {
			out := r.Clone(context.WithValue(r.Context(), attemptKey{}, a))
			out.URL.Path, out.URL.RawPath = upstreamPath, ""
			out.URL.Host = ep.addr
			out.Body = io.NopCloser(bytes.NewReader(body))
			out.ContentLength = int64(len(body))
			out.Header.Del("Authorization") // the user's token never reaches a model server
			p.rp.ServeHTTP(w, out)
		})
	})
}

// serve acquires a slot on one of t's instances (holding while there is
// none), runs call on it, and releases the slot. A connection refused before
// the model server saw the request is retried on another slot.
func (p *Proxy) serve(w http.ResponseWriter, r *http.Request, t Target, call func(*endpoint, *attempt)) {
	ctx, span := p.tracer.Start(r.Context(), "thaw.inference", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("thaw.deploy_id", t.DeployID), attribute.String("thaw.model", t.Model)))
	defer span.End()
	r = r.WithContext(ctx)
	pl := p.pool(t.DeployID)
	start := time.Now()
	deadline := start.Add(p.cfg.HoldTimeout)
	const tries = 3
	for try := 1; ; try++ {
		ep, held, cold, err := pl.acquire(ctx, time.Until(deadline), p.cfg.MaxHeld)
		waited := time.Since(start)
		if held {
			span.AddEvent("released", trace.WithAttributes(attribute.Float64("thaw.held_seconds", waited.Seconds())))
			span.SetAttributes(attribute.Bool("thaw.cold", cold), attribute.Float64("thaw.held_seconds", waited.Seconds()))
		}
		if err != nil {
			if errors.Is(err, context.Canceled) {
				// The client left while held: nothing to answer.
				span.SetStatus(codes.Error, "client disconnected while held")
				return
			}
			span.SetStatus(codes.Error, err.Error())
			p.writeErr(w, err, t.Model)
			return
		}
		if cold && try == 1 {
			p.cold.Record(ctx, waited.Seconds(), metric.WithAttributes(attribute.String("deploy_id", t.DeployID), attribute.String("model", t.Model)))
		}
		if held {
			w.Header().Set(ColdStartHeader, waited.Round(time.Millisecond).String())
		}
		a := &attempt{retry: try < tries}
		otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(r.Header))
		call(ep, a)
		if a.dialFailed {
			pl.refused(ep)
		}
		pl.release(ep)
		if !a.dialFailed || !a.retry {
			return
		}
		p.log.Warn("instance refused connection; retrying on another", "deploy", t.DeployID, "instance", ep.id, "try", try)
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// writeErr maps request-path errors to HTTP statuses, in one place.
func (p *Proxy) writeErr(w http.ResponseWriter, err error, model string) {
	var failed *FailedError
	switch {
	case errors.Is(err, ErrUnknownModel), errors.Is(err, ErrGone):
		httperr.Encode(w, http.StatusNotFound, "model_not_found", "model", fmt.Sprintf("The model `%s` does not exist.", model))
	case errors.Is(err, ErrQueueFull):
		e := httperr.New(http.StatusTooManyRequests, "queue_full", "", fmt.Sprintf("too many requests waiting for %s; retry later", model))
		e.RetryAfter = time.Second
		httperr.Write(w, e)
	case errors.Is(err, ErrHoldTimeout), errors.Is(err, context.DeadlineExceeded):
		e := httperr.New(http.StatusServiceUnavailable, "no_capacity", "", fmt.Sprintf("no instance of %s became available within the hold timeout (%s)", model, p.cfg.HoldTimeout))
		e.RetryAfter = 30 * time.Second
		httperr.Write(w, e)
	case errors.As(err, &failed):
		e := httperr.New(http.StatusServiceUnavailable, "deployment_failed", "", fmt.Sprintf("%s cannot serve: %s", model, failed.Reason))
		e.RetryAfter = 30 * time.Second
		httperr.Write(w, e)
	default:
		p.log.Error("request failed", "model", model, "err", err)
		httperr.Encode(w, http.StatusBadGateway, "upstream_error", "", "could not reach the model server")
	}
}

func (p *Proxy) models(w http.ResponseWriter, r *http.Request) {
	type entry struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	out := struct {
		Object string  `json:"object"`
		Data   []entry `json:"data"`
	}{Object: "list", Data: []entry{}}
	for _, m := range p.cfg.Resolver.Models(auth.User(r.Context())) {
		out.Data = append(out.Data, entry{ID: m.ID, Object: "model", Created: m.Created.Unix(), OwnedBy: m.Owner})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// attempt records what happened to one forwarding attempt.
type attempt struct {
	retry      bool // another attempt may follow
	dialFailed bool // the model server never saw the request
}

type attemptKey struct{}

// dialTracking marks attempts whose connection could not be established, so
// they can be retried safely.
type dialTracking struct{ base http.RoundTripper }

func (d *dialTracking) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := d.base.RoundTrip(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			if a, ok := req.Context().Value(attemptKey{}).(*attempt); ok {
				a.dialFailed = true
			}
		}
	}
	return resp, err
}

func rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = pr.In.URL.Host
	pr.Out.Host = pr.In.URL.Host
	pr.Out.URL.Path = pr.In.URL.Path
}

func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	if a, ok := r.Context().Value(attemptKey{}).(*attempt); ok && a.dialFailed && a.retry {
		return // serve retries on another slot
	}
	if errors.Is(err, context.Canceled) {
		return
	}
	p.log.Warn("upstream error", "path", r.URL.Path, "host", r.URL.Host, "err", err)
	httperr.Encode(w, http.StatusBadGateway, "upstream_error", "", "the model server failed: "+strings.TrimSpace(err.Error()))
}
