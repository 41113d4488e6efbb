package endpoints

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/httperr"
	"github.com/thawhq/thaw/internal/bubbletest"
	"github.com/thawhq/thaw/proxy"
)

const overLimit = "monthly spending limit reached: 3.00 USD spent of 3.00 USD"

// verdicts is the spending enforcer as the Publisher asks it (Blocked).
type verdicts struct {
	// mu guards blocked.
	mu      sync.Mutex
	blocked map[string]string // owner -> message
}

func (v *verdicts) Blocked(owner string) (string, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	msg, ok := v.blocked[owner]
	return msg, ok
}

// set blocks owner with msg; "" unblocks.
func (v *verdicts) set(owner, msg string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if msg == "" {
		delete(v.blocked, owner)
		return
	}
	v.blocked[owner] = msg
}

// wakes counts the deployments an activator woke.
type wakes struct {
	mu sync.Mutex
	n  map[string]int
}

func (w *wakes) Set(string, int, int) {}
func (w *wakes) Wake(id string)       { w.mu.Lock(); w.n[id]++; w.mu.Unlock() }

// setupVerdicts runs a Publisher asking v and a Subscriber, with d1
// (alice/m) and d2 (bob/m) published and known to the Subscriber.
func setupVerdicts(t *testing.T, v *verdicts) (*Publisher, *Subscriber) {
	t.Helper()
	pub, sub, _, _, _ := setup(t, func(c *PublisherConfig) { c.Blocked = v.Blocked })
	pub.SetEndpoints("d1", 8, nil)
	pub.SetEndpoints("d2", 4, nil)
	bubbletest.Eventually(t, "both deployments known", func() bool {
		return len(sub.Models("alice")) == 1 && len(sub.Models("bob")) == 1
	})
	return pub, sub
}

// refusal is the spending refusal Resolve returned, or nil.
func refusal(err error) *httperr.Error {
	var e *httperr.Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// TestReplicaRefusesAUserOverTheirLimit: a replica's activator answers a
// blocked user's request with OpenAI's 429 insufficient_quota at once, by
// name or by deploy_id, holds nothing and wakes nothing; another user is
// served as before.
func TestReplicaRefusesAUserOverTheirLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := &verdicts{blocked: map[string]string{"alice": overLimit}}
		_, sub := setupVerdicts(t, v)
		w := &wakes{n: map[string]int{}}
		px, err := proxy.New(proxy.Config{Resolver: sub, Demand: w, HoldTimeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		mux := http.NewServeMux()
		px.Register(mux, func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
				h.ServeHTTP(rw, r.WithContext(auth.WithUser(r.Context(), "alice")))
			})
		})
		for _, model := range []string{"alice/m", "deploy_id:d1"} {
			req := httptest.NewRequest(http.MethodPost, "/v1/openai/chat/completions",
				strings.NewReader(`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			start := time.Now()
			mux.ServeHTTP(rec, req)
			if d := time.Since(start); d > 0 {
				t.Errorf("%s: answered after %v (held), want at once", model, d)
			}
			if rec.Code != http.StatusTooManyRequests {
				t.Fatalf("%s: status %d, want 429: %s", model, rec.Code, rec.Body)
			}
			var body httperr.Body
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("%s: body %q: %v", model, rec.Body, err)
			}
			want := httperr.Detail{Message: overLimit, Type: "insufficient_quota", Code: "insufficient_quota"}
			if diff := cmp.Diff(want, body.Error); diff != "" {
				t.Errorf("%s: error (-want +got):\n%s", model, diff)
			}
		}
		w.mu.Lock()
		if len(w.n) != 0 {
			t.Errorf("woke %v for a blocked user", w.n)
		}
		w.mu.Unlock()
		if got, err := sub.Resolve("bob", "bob/m"); err != nil || got.DeployID != "d2" {
			t.Errorf("bob (not blocked) resolved to %v, %v", got, err)
		}
	})
}

// TestVerdictChangesReachReplicas: OwnerChanged republishes the owner's
// records, so a replica refuses a user within moments of their block (well
// before the 5s resync) and serves them again once unblocked; a verdict
// the Publisher was not told of is published at the next resync.
func TestVerdictChangesReachReplicas(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := &verdicts{blocked: map[string]string{}}
		pub, sub := setupVerdicts(t, v)
		if _, err := sub.Resolve("alice", "alice/m"); err != nil {
			t.Fatalf("alice before her limit: %v", err)
		}

		v.set("alice", overLimit)
		pub.OwnerChanged("alice")
		start := time.Now()
		bubbletest.Eventually(t, "alice refused", func() bool {
			_, err := sub.Resolve("alice", "alice/m")
			e := refusal(err)
			return e != nil && e.Status == http.StatusTooManyRequests && e.Code == "insufficient_quota" && e.Message == overLimit
		})
		if d := time.Since(start); d >= time.Second {
			t.Errorf("the block reached the replica after %v, want well before the resync", d)
		}
		if _, err := sub.Resolve("bob", "bob/m"); err != nil {
			t.Errorf("bob refused with alice: %v", err)
		}

		v.set("alice", "")
		pub.OwnerChanged("alice")
		bubbletest.Eventually(t, "alice served again", func() bool {
			got, err := sub.Resolve("alice", "alice/m")
			return err == nil && got.DeployID == "d1"
		})

		// Nobody calls OwnerChanged: the resync (every 5s) carries the
		// verdict all the same.
		v.set("alice", overLimit)
		time.Sleep(11 * time.Second)
		synctest.Wait()
		if _, err := sub.Resolve("alice", "alice/m"); refusal(err) == nil {
			t.Errorf("alice after two resyncs: %v, want 429 insufficient_quota", err)
		}
	})
}
