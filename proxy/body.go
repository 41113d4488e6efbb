package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/httperr"
	"github.com/thawhq/thaw/httpserve"
)

// modelUsage is the message of a request without a usable "model".
const modelUsage = "model is required: " + deploy.ModelRefUsage

// readRequest reads what every inference request starts with: its hold
// (holdFor) and its body (readBody), checked in that order.
func (p *Proxy) readRequest(w http.ResponseWriter, r *http.Request) (hold time.Duration, body []byte, herr *httperr.Error) {
	if hold, herr = holdFor(r.Header, p.cfg.HoldTimeout); herr != nil {
		return 0, nil, herr
	}
	if body, herr = p.readBody(w, r); herr != nil {
		return 0, nil, herr
	}
	return hold, body, nil
}

// readBody reads a request body of at most p.cfg.MaxBody bytes: 413 over
// it, 408 when the body deadline (httpserve) passes first.
func (p *Proxy) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *httperr.Error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, p.cfg.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, httperr.New(http.StatusRequestEntityTooLarge, "body_too_large", "", fmt.Sprintf("request body over %d bytes", p.cfg.MaxBody))
		}
		if httpserve.IsTimeout(err) {
			return nil, httperr.New(http.StatusRequestTimeout, "body_timeout", "", "the request body did not arrive in time")
		}
		// The error names this server's address: keep it out of the answer.
		p.log.Debug("could not read request body", "err", err)
		return nil, httperr.New(http.StatusBadRequest, "bad_body", "", "could not read the request body")
	}
	return body, nil
}

// parseInference reads an OpenAI-compatible request body: a JSON object with
// a non-empty string "model". A body accepted has a non-empty model; a body
// rejected gets a 400.
func parseInference(body []byte) (fields map[string]json.RawMessage, model string, herr *httperr.Error) {
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return nil, "", httperr.New(http.StatusBadRequest, "invalid_json", "", "request body must be a JSON object")
	}
	raw, ok := fields["model"]
	if !ok || json.Unmarshal(raw, &model) != nil || model == "" {
		return nil, "", httperr.New(http.StatusBadRequest, "missing_model", "model", modelUsage)
	}
	return fields, model, nil
}

// withModel returns the body of fields with "model" set to model, the name
// the model server serves; other fields are kept as sent.
func withModel(fields map[string]json.RawMessage, model string) ([]byte, error) {
	raw, err := json.Marshal(model)
	if err != nil {
		return nil, err
	}
	out := make(map[string]json.RawMessage, len(fields))
	for k, v := range fields {
		out[k] = v
	}
	out["model"] = raw
	return json.Marshal(out)
}
