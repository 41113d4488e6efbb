package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestModelRetrieve: OpenAI SDKs' models.retrieve sends the id, which has a
// slash, raw or escaped; only the caller's own models are found.
func TestModelRetrieve(t *testing.T) {
	const aliceM = `{"id":"alice/m","object":"model","created":1700000000,"owned_by":"alice"}`
	tests := []struct {
		name, user, path string
		want             string // the model object; "" for 404
	}{
		{"raw slash", "alice", "/v1/openai/models/alice/m", aliceM},
		{"escaped slash", "alice", "/v1/openai/models/alice%2Fm", aliceM},
		{"escaped slash, lower case", "alice", "/v1/models/alice%2fm", aliceM},
		{"v1 prefix", "alice", "/v1/models/alice/m", aliceM},
		{"unknown model", "alice", "/v1/openai/models/alice/nope", ""},
		{"another user's model", "bob", "/v1/openai/models/alice/m", ""},
		{"another user's model, escaped", "bob", "/v1/models/alice%2Fm", ""},
		{"deploy_id is not a model id", "alice", "/v1/openai/models/deploy_id:d1", ""},
		{"doubly escaped", "alice", "/v1/openai/models/alice%252Fm", ""},
	}
	h := newHarness(t, Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.do(context.Background(), tt.user, http.MethodGet, tt.path, "", nil)
			if r.err != nil {
				t.Fatal(r.err)
			}
			if tt.want == "" {
				got, msg := errOf(t, r)
				want := apiErr{Status: 404, Type: "not_found_error", Code: "model_not_found", Param: strp("model")}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("error (-want +got):\n%s\nmessage: %s", diff, msg)
				}
				return
			}
			var got, want any
			_ = json.Unmarshal([]byte(tt.want), &want)
			if err := json.Unmarshal([]byte(r.body), &got); err != nil || r.status != http.StatusOK {
				t.Fatalf("status %d body %s (%v)", r.status, r.body, err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("model object (-want +got):\n%s", diff)
			}
		})
	}
	if r := h.do(context.Background(), "", http.MethodGet, "/v1/openai/models/alice/m", "", nil); r.status != http.StatusUnauthorized {
		t.Errorf("without a token: %d %s, want 401", r.status, r.body)
	}
}
