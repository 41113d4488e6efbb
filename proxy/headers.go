package proxy

import (
	"net/http"
	"strings"
	"time"

	"github.com/thawhq/thaw/httperr"
)

// Response headers that tell a client how long its request waited.
const (
	// ColdStartHeader carries how long a request that arrived with no ready
	// instance was held until one started (e.g. "3.02s").
	ColdStartHeader = "X-Thaw-Cold-Start"
	// QueueTimeHeader carries how long a request to a deployment with a
	// ready instance waited for a free slot (all were busy).
	QueueTimeHeader = "X-Thaw-Queue-Time"
)

// HoldTimeoutHeader is a request header that lowers how long that request
// may be held waiting for capacity: a Go duration ("30s", "300ms"). It never
// raises the hold past Config.HoldTimeout; "0s" does not wait at all (the
// deployment is still woken).
const HoldTimeoutHeader = "X-Thaw-Hold-Timeout"

// holdFor returns the hold of a request with header h under the server's
// limit: limit, lowered by HoldTimeoutHeader.
func holdFor(h http.Header, limit time.Duration) (time.Duration, *httperr.Error) {
	v := strings.TrimSpace(h.Get(HoldTimeoutHeader))
	if v == "" {
		return limit, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, httperr.New(http.StatusBadRequest, "invalid_header", HoldTimeoutHeader,
			HoldTimeoutHeader+" must be a non-negative duration such as 30s or 300ms")
	}
	return min(d, limit), nil
}

// stampWait sets the header that tells how long the request waited before
// the attempt about to run: none when it did not wait.
func stampWait(h http.Header, held, cold bool, waited time.Duration) {
	h.Del(ColdStartHeader)
	h.Del(QueueTimeHeader)
	switch {
	case cold:
		h.Set(ColdStartHeader, waited.Round(time.Millisecond).String())
	case held:
		h.Set(QueueTimeHeader, waited.Round(time.Millisecond).String())
	}
}
