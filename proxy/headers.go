package proxy

import (
	"net/http"
	"strings"
	"time"

	"github.com/thawhq/thaw/httperr"
	"github.com/thawhq/thaw/routing"
)

// holdFor returns the hold of a request with header h under the server's
// limit: limit, lowered by routing.HoldTimeoutHeader.
func holdFor(h http.Header, limit time.Duration) (time.Duration, *httperr.Error) {
	v := strings.TrimSpace(h.Get(routing.HoldTimeoutHeader))
	if v == "" {
		return limit, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, httperr.New(http.StatusBadRequest, "invalid_header", routing.HoldTimeoutHeader,
			routing.HoldTimeoutHeader+" must be a non-negative duration such as 30s or 300ms")
	}
	return min(d, limit), nil
}

// stampWait sets the header that tells how long the request waited before
// the attempt about to run: none when it did not wait.
func stampWait(h http.Header, held, cold bool, waited time.Duration) {
	h.Del(routing.ColdStartHeader)
	h.Del(routing.QueueTimeHeader)
	switch {
	case cold:
		h.Set(routing.ColdStartHeader, waited.Round(time.Millisecond).String())
	case held:
		h.Set(routing.QueueTimeHeader, waited.Round(time.Millisecond).String())
	}
}
