package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/thawhq/thaw/httperr"
)

// maxErrorBody bounds what is read of a model server's error answer.
const maxErrorBody = 1 << 20

// maxErrorMessage bounds the message passed on from a model server.
const maxErrorMessage = 4 << 10

// attempt records what happened to one forwarding attempt.
type attempt struct {
	retry      bool // another attempt may follow a hang-up
	dialFailed bool // the model server never saw the request
	// hungUp: the model server closed a kept-alive connection before
	// answering: it died or restarted under the request, or closed the
	// connection as idle just as it was reused.
	hungUp bool
	reused bool // the attempt went on a kept-alive connection
}

// resend says whether the request may go again to another slot: nothing of
// an answer reached the client. A refused connection never reached the
// model server; a kept-alive one closed before any answer means the server
// went away (killed, crashed, restarted). Inference has no side effect but
// its cost, so such a request is sent again, as Envoy's retry_on
// "connect-failure,reset" would.
func (a *attempt) resend() bool { return a.dialFailed || a.hungUp }

// retries says whether serve sends the request again rather than answer
// an error: always after a refused connection (the request is held for
// another instance, within its hold timeout: Nomad may take seconds to
// report an instance it killed), after a hang-up while retries remain.
func (a *attempt) retries() bool { return a.dialFailed || (a.hungUp && a.retry) }

type attemptKey struct{}

// withAttempt is ctx for one forwarding attempt: it carries a, for
// dialTracking and upstreamError, and a client trace noting whether the
// attempt reuses a kept-alive connection. The caller derives its outbound
// request from it (it clones the request anyway), so nothing is copied
// again per round trip.
func withAttempt(ctx context.Context, a *attempt) context.Context {
	ctx = context.WithValue(ctx, attemptKey{}, a)
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(c httptrace.GotConnInfo) { a.reused = c.Reused },
	})
}

// dialTracking marks attempts whose model server cannot have answered (see
// attempt.resend), so they can be retried.
type dialTracking struct{ base http.RoundTripper }

func (d *dialTracking) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := d.base.RoundTrip(req)
	if a, ok := req.Context().Value(attemptKey{}).(*attempt); ok && err != nil {
		var op *net.OpError
		switch {
		case errors.As(err, &op) && op.Op == "dial":
			a.dialFailed = true
		case a.reused && req.Context().Err() == nil &&
			(errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)):
			a.hungUp = true
		}
	}
	return resp, err
}

func rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = pr.In.URL.Host
	pr.Out.Host = pr.In.URL.Host
	pr.Out.URL.Path = pr.In.URL.Path
	stripInternal(pr.Out.Header)
}

// stripInternal removes from h what must never reach a model server: the
// caller's token and thaw's own headers (routing, grant, hold timeout).
func stripInternal(h http.Header) {
	h.Del("Authorization")
	for k := range h {
		if strings.HasPrefix(k, "X-Thaw-") {
			delete(h, k)
		}
	}
}

// upstreamError is the ReverseProxy's ErrorHandler: the model server could
// not be reached or failed before its response headers. The client gets a
// plain message; the detail (addresses, OS errors) goes to the log only.
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	a, _ := r.Context().Value(attemptKey{}).(*attempt)
	if a != nil && a.retries() {
		return // serve retries on another slot
	}
	if r.Context().Err() != nil || errors.Is(err, context.Canceled) {
		return // the client left: nobody to answer
	}
	p.log.Warn("model server failed", "host", r.URL.Host, "path", r.URL.Path, "err", err)
	// A refused connection never gets here (serve holds it for another
	// instance): the server was reached and failed.
	httperr.Encode(w, http.StatusBadGateway, "upstream_error", "", "the model server failed to answer")
}

// modifyResponse is the ReverseProxy's ModifyResponse: it rewrites a model
// server's error answer into thaw's OpenAI shape, status unchanged. Other
// answers (streams among them) pass untouched.
func (p *Proxy) modifyResponse(resp *http.Response) error {
	if resp.StatusCode < 400 {
		return nil
	}
	if enc := resp.Header.Get("Content-Encoding"); enc != "" && enc != "identity" {
		return nil // not ours to decode
	}
	e, err := p.readUpstreamError(resp)
	if err != nil {
		return err // upstreamError answers 502
	}
	b, err := json.Marshal(e.Body())
	if err != nil {
		return err
	}
	b = append(b, '\n')
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Set("Content-Type", "application/json")
	resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
	return nil
}

// readUpstreamError reads (at most maxErrorBody of) resp's error answer and
// closes its body.
func (p *Proxy) readUpstreamError(resp *http.Response) (*httperr.Error, error) {
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody+1))
	if err != nil {
		return nil, fmt.Errorf("read the model server's error answer: %w", err)
	}
	if len(body) > maxErrorBody {
		body = nil // too big to be an error message
	}
	e := upstreamErr(resp.StatusCode, resp.Header, body)
	if e.Status >= 500 {
		p.log.Warn("model server error", "status", resp.StatusCode, "body", httperr.Truncate(string(body), maxErrorMessage))
	}
	return e, nil
}

// upstreamErr turns a model server's error answer (vLLM's and OpenAI's
// {"error":{...}}, older vLLMs' {"object":"error","message",...} or
// FastAPI's {"detail":...}) into thaw's, keeping the status, the message
// (of a 4xx: a 5xx's may carry server paths, so it is replaced), the param,
// and a string code: the model server's own, or one for the status.
func upstreamErr(status int, h http.Header, body []byte) *httperr.Error {
	msg, param, code := errorFields(h.Get("Content-Type"), body)
	if code == "" {
		code = codeFor(status)
	}
	if msg == "" || status >= 500 {
		msg = fmt.Sprintf("the model server answered %d %s", status, http.StatusText(status))
	}
	e := httperr.New(status, code, param, httperr.Truncate(msg, maxErrorMessage))
	if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil && s > 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

// errorFields reads the message, param and string code of an error body;
// each is "" when the body does not say.
func errorFields(contentType string, body []byte) (msg, param, code string) {
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt == "text/plain" && utf8.Valid(body) {
		return strings.TrimSpace(string(body)), "", ""
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil {
		return "", "", ""
	}
	fields := top
	var inner map[string]json.RawMessage
	if json.Unmarshal(top["error"], &inner) == nil && inner != nil {
		fields = inner // {"error":{...}}
	}
	msg = firstString(fields["message"], top["error"])
	if msg == "" {
		msg, param = fastAPIDetail(top["detail"])
	}
	if p := firstString(fields["param"]); p != "" {
		// vLLM 0.32 names a field of an invalid body "body.max_tokens"
		// (where the request's JSON begins, pydantic's location); the
		// client knows it as "max_tokens".
		param = strings.TrimPrefix(p, "body.")
	}
	return msg, param, firstString(fields["code"])
}

// fastAPIDetail reads FastAPI's "detail": a string, or a validation error
// list [{"loc":["body","max_tokens"],"msg":"..."}], whose first loc names
// the param.
func fastAPIDetail(raw json.RawMessage) (msg, param string) {
	if s := firstString(raw); s != "" {
		return s, ""
	}
	var items []struct {
		Loc []any  `json:"loc"`
		Msg string `json:"msg"`
	}
	if json.Unmarshal(raw, &items) != nil {
		return "", ""
	}
	var msgs []string
	for i, it := range items {
		loc := locPath(it.Loc)
		if i == 0 {
			param = loc
		}
		if loc != "" {
			msgs = append(msgs, loc+": "+it.Msg)
		} else if it.Msg != "" {
			msgs = append(msgs, it.Msg)
		}
	}
	return strings.Join(msgs, "; "), param
}

// locPath turns FastAPI's loc (["body","messages",0,"content"]) into
// "messages.0.content".
func locPath(loc []any) string {
	if len(loc) > 0 && loc[0] == "body" {
		loc = loc[1:]
	}
	parts := make([]string, 0, len(loc))
	for _, l := range loc {
		parts = append(parts, fmt.Sprint(l))
	}
	return strings.Join(parts, ".")
}

// firstString returns the first of raws that is a non-empty JSON string.
func firstString(raws ...json.RawMessage) string {
	for _, raw := range raws {
		var s string
		if json.Unmarshal(raw, &s) == nil && s != "" {
			return s
		}
	}
	return ""
}

// codeFor is the code of an error answer that has no string code.
func codeFor(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "bad_request"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusMethodNotAllowed:
		return "method_not_allowed"
	case http.StatusRequestTimeout:
		return "request_timeout"
	case http.StatusRequestEntityTooLarge:
		return "body_too_large"
	case http.StatusUnprocessableEntity:
		return "invalid_request"
	case http.StatusTooManyRequests:
		return "rate_limited"
	case http.StatusNotImplemented:
		return "not_implemented"
	case http.StatusServiceUnavailable:
		return "unavailable"
	case http.StatusGatewayTimeout:
		return "timeout"
	}
	if status >= 500 {
		return "upstream_error"
	}
	return "invalid_request"
}
