package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// UsageItem is an item of GET /usage as a client reads it. The JSON names
// are the public contract, written here apart from the product's types so
// that renaming one fails the suites.
type UsageItem struct {
	DeployID          string  `json:"deploy_id"`
	GPU               string  `json:"gpu"`
	NumGPUs           int     `json:"num_gpus"`
	GPUSeconds        float64 `json:"gpu_seconds"`
	LoadingSeconds    float64 `json:"loading_seconds"`
	NeverReadySeconds float64 `json:"never_ready_seconds"`
	CostUSD           float64 `json:"cost_usd"`
	Requests          int64   `json:"requests"`
}

// UsageReport is GET /usage's (and GET /deploy/{id}/usage's) body.
type UsageReport struct {
	Items []UsageItem `json:"items"`
	Total UsageItem   `json:"total"`
}

// SpendingEvent is the part of a spending-limit webhook's body the suites
// read.
type SpendingEvent struct {
	Type      string  `json:"type"`
	Threshold int     `json:"threshold_percent"`
	SpentUSD  float64 `json:"spent_usd"`
	LimitUSD  float64 `json:"limit_usd"`
	Blocked   bool    `json:"blocked"`
}

// WebhookPost is one post a Webhooks receiver accepted.
type WebhookPost struct {
	Event string // X-Thaw-Event
	Body  SpendingEvent
}

// Webhooks is a user's webhook endpoint on loopback: it checks each post's
// X-Thaw-Signature (sha256=<hex HMAC-SHA256 of the body under the secret>)
// and keeps the good ones in order.
type Webhooks struct {
	*httptest.Server
	// mu guards posts and bad.
	mu    sync.Mutex
	posts []WebhookPost
	bad   int
}

// ReceiveWebhooks starts a receiver for posts signed with secret; the
// test's cleanup stops it.
func ReceiveWebhooks(t testing.TB, secret string) *Webhooks {
	t.Helper()
	h := &Webhooks{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		m := hmac.New(sha256.New, []byte(secret))
		m.Write(body)
		var post WebhookPost
		h.mu.Lock()
		defer h.mu.Unlock()
		if err != nil || !hmac.Equal([]byte(r.Header.Get("X-Thaw-Signature")), []byte("sha256="+hex.EncodeToString(m.Sum(nil)))) ||
			json.Unmarshal(body, &post.Body) != nil {
			h.bad++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		post.Event = r.Header.Get("X-Thaw-Event")
		h.posts = append(h.posts, post)
	}))
	t.Cleanup(h.Close)
	return h
}

// Posts are the accepted posts, in order.
func (h *Webhooks) Posts() []WebhookPost {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]WebhookPost(nil), h.posts...)
}

// Bad is how many posts had a bad signature or body.
func (h *Webhooks) Bad() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bad
}

// Thresholds are the threshold_percent of the accepted posts, in order.
func (h *Webhooks) Thresholds() []int {
	var out []int
	for _, p := range h.Posts() {
		out = append(out, p.Body.Threshold)
	}
	return out
}
