package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/httperr"
	"github.com/thawhq/thaw/routing"
)

// Register adds the inference and model routes to mux: each of
// routing.OpenAIPaths under both of its spellings, the native path, and
// GET /v1/models. They expect auth.Require in front (the caller's user in
// the request context).
func (p *Proxy) Register(mux *http.ServeMux, wrap func(http.Handler) http.Handler) {
	for _, path := range routing.OpenAIPaths() {
		mux.Handle("POST "+path, wrap(p.forward(path)))
		mux.Handle("POST "+routing.Alias(path), wrap(p.forward(path)))
	}
	for _, prefix := range []string{routing.OpenAIAliasPrefix, routing.OpenAIPrefix} {
		mux.Handle("GET "+prefix+"/models", wrap(http.HandlerFunc(p.models)))
		// A model id has a slash ("owner/name"), sent raw or as %2F: the
		// wildcard's value is unescaped either way.
		mux.Handle("GET "+prefix+"/models/{model...}", wrap(http.HandlerFunc(p.model)))
	}
	mux.Handle("POST "+routing.NativePrefix+"{owner}/{model}", wrap(http.HandlerFunc(p.native)))
}

// forward serves an OpenAI-compatible POST by proxying it to an instance's
// upstreamPath.
func (p *Proxy) forward(upstreamPath string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hold, body, herr := p.readRequest(w, r)
		if herr != nil {
			httperr.Write(w, herr)
			return
		}
		fields, model, herr := parseInference(body)
		if herr != nil {
			httperr.Write(w, herr)
			return
		}
		t, err := p.resolve(r, model)
		if err != nil {
			p.writeErr(w, err, model)
			return
		}
		if model != t.Model {
			if body, err = withModel(fields, t.Model); err != nil {
				httperr.Encode(w, http.StatusBadRequest, "invalid_json", "", "request body must be a JSON object")
				return
			}
		}
		p.serve(w, r, t, hold, func(ep *endpoint, a *attempt) {
			// The client's context: the model server sees the request
			// cancelled when the client leaves.
			out := r.Clone(withAttempt(r.Context(), a))
			out.URL.Path, out.URL.RawPath = upstreamPath, ""
			out.URL.Host = ep.addr
			out.Body = io.NopCloser(bytes.NewReader(body))
			out.ContentLength = int64(len(body))
			// The body is a JSON object (parseInference): say so, whatever
			// the client sent. vLLM answers 415 to any other type, and
			// `curl -d` sends a form's.
			out.Header.Set("Content-Type", "application/json")
			p.rp.ServeHTTP(w, out)
		})
	})
}

// request is one client request across its forwarding attempts.
type request struct {
	target   Target
	pool     *pool
	call     func(*endpoint, *attempt) // forwards to an instance
	start    time.Time
	hold     time.Duration // effective hold (routing.HoldTimeoutHeader applied)
	deadline time.Time     // start + hold
	held     bool          // some attempt waited in the queue
	cold     bool          // it arrived with no ready instance
}

// serve acquires a slot on one of t's instances (holding at most hold while
// there is none), runs call on it, and gives the slot back however call
// ends. A request the model server cannot have answered (attempt.resend:
// connection refused, or a kept-alive connection closed under it) is
// retried: after a refused connection always, within the request's hold
// (an instance Nomad killed refuses until the fleet hears of it, seconds
// later, and brings a replacement), after a hang-up up to twice. An
// instance that refused a connection is avoided for a while, so with no
// other one the request is held for the replacement; one that closed a
// kept-alive connection under it is tried last (it may only have closed an
// idle connection as it was reused: the retry's fresh connection tells).
func (p *Proxy) serve(w http.ResponseWriter, r *http.Request, t Target, hold time.Duration, call func(*endpoint, *attempt)) {
	ctx, span := p.tracer.Start(r.Context(), "thaw.inference", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("thaw.deploy_id", t.DeployID), attribute.String("thaw.model", t.Model)))
	defer span.End()
	otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(r.Header))
	now := time.Now()
	rq := &request{target: t, pool: p.pool(t.DeployID), call: call, start: now, hold: hold, deadline: now.Add(hold)}
	const hangUps = 2 // resends after a hang-up
	for try, hung := 1, 0; ; try++ {
		a := &attempt{retry: hung < hangUps}
		ep := p.try(ctx, w, rq, a, try == 1)
		if ep == nil || !a.retries() {
			return
		}
		if !a.dialFailed {
			hung++
		}
		p.log.Warn("instance failed the request before answering; retrying", "deploy", t.DeployID, "instance", ep.id,
			"refused", a.dialFailed, "try", try)
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// try runs one attempt: acquire a slot, call, release the slot (deferred,
// so that the http.ErrAbortHandler panic of a client gone mid-response
// releases it too). It returns the endpoint used, nil when there was none
// (the error answered).
func (p *Proxy) try(ctx context.Context, w http.ResponseWriter, rq *request, a *attempt, first bool) *endpoint {
	span := trace.SpanFromContext(ctx)
	l, g, err := rq.pool.acquire(ctx, time.Until(rq.deadline), p.cfg.MaxHeld)
	waited := time.Since(rq.start)
	if g.held {
		rq.held, rq.cold = true, rq.cold || g.cold
		span.AddEvent("released", trace.WithAttributes(attribute.Float64("thaw.held_seconds", waited.Seconds())))
		span.SetAttributes(attribute.Bool("thaw.cold", rq.cold), attribute.Float64("thaw.held_seconds", waited.Seconds()))
	}
	if err != nil {
		p.acquireFailed(ctx, w, rq, err, waited)
		return nil
	}
	defer l.Release()
	defer p.noteLeft(ctx, rq)
	if g.cold && first {
		p.cold.Record(ctx, waited.Seconds(), metric.WithAttributes(attribute.String("deploy_id", rq.target.DeployID), attribute.String("model", rq.target.Model)))
	}
	stampWait(w.Header(), rq.held, rq.cold, waited)
	rq.call(l.ep, a)
	if a.resend() {
		rq.pool.failedBefore(l.ep, a.dialFailed)
	}
	return l.ep
}

// acquireFailed answers a request that got no slot.
func (p *Proxy) acquireFailed(ctx context.Context, w http.ResponseWriter, rq *request, err error, waited time.Duration) {
	span := trace.SpanFromContext(ctx)
	if errors.Is(err, context.Canceled) {
		// The client left while held: nothing to answer.
		span.SetStatus(codes.Error, "client disconnected while held")
		p.log.Debug("client left", "deploy", rq.target.DeployID, "while", "held", "after", waited)
		return
	}
	span.SetStatus(codes.Error, err.Error())
	if errors.Is(err, ErrHoldTimeout) {
		err = &holdExpiredError{hold: rq.hold}
	}
	p.writeErr(w, err, rq.target.Model)
}

// noteLeft logs how long the request ran if its context ended before its
// handler did: the client left (its slot is released all the same).
func (p *Proxy) noteLeft(ctx context.Context, rq *request) {
	if ctx.Err() != nil {
		p.log.Debug("client left", "deploy", rq.target.DeployID, "while", "in flight", "after", time.Since(rq.start))
	}
}

// holdExpiredError is ErrHoldTimeout with the hold that expired.
type holdExpiredError struct{ hold time.Duration }

func (e *holdExpiredError) Error() string { return fmt.Sprintf("%v (%s)", ErrHoldTimeout, e.hold) }
func (e *holdExpiredError) Unwrap() error { return ErrHoldTimeout }

// writeErr maps request-path errors to HTTP statuses, in one place.
func (p *Proxy) writeErr(w http.ResponseWriter, err error, model string) {
	var failed *FailedError
	var expired *holdExpiredError
	var refused *httperr.Error
	switch {
	case errors.As(err, &refused): // the resolver's own answer (a spending limit)
		httperr.Write(w, refused)
	case errors.Is(err, ErrUnknownModel), errors.Is(err, ErrGone):
		httperr.Encode(w, http.StatusNotFound, "model_not_found", "model", fmt.Sprintf("The model `%s` does not exist.", model))
	case errors.Is(err, ErrQueueFull):
		e := httperr.New(http.StatusTooManyRequests, "queue_full", "", fmt.Sprintf("too many requests waiting for %s; retry later", model))
		e.RetryAfter = time.Second
		httperr.Write(w, e)
	case errors.Is(err, ErrHoldTimeout), errors.Is(err, context.DeadlineExceeded):
		hold := p.cfg.HoldTimeout
		if errors.As(err, &expired) {
			hold = expired.hold
		}
		e := httperr.New(http.StatusServiceUnavailable, "no_capacity", "", fmt.Sprintf("no instance of %s became available within the hold timeout (%s)", model, hold))
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

// resolve finds the caller's deployment named model. A request the edge
// authenticated by a grant may only use the grant's deployment: another
// does not exist for it.
func (p *Proxy) resolve(r *http.Request, model string) (Target, error) {
	t, err := p.cfg.Resolver.Resolve(auth.User(r.Context()), model)
	if err != nil {
		return t, err
	}
	if scope, ok := auth.Scope(r.Context()); ok && scope != t.DeployID {
		return Target{}, ErrUnknownModel
	}
	return t, nil
}
