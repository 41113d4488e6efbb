package e2e

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestNomadReady: the agent is ready with its node's GPUs fingerprinted and
// only once the keyring has an active key.
func TestNomadReady(t *testing.T) {
	keyState := ""
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/nodes":
			w.Write([]byte(`[{"Status":"ready","NodeResources":{"Devices":[{"Instances":[{},{},{},{}]}]}}]`))
		case "/v1/operator/keyring/keys":
			if keyState == "" {
				w.Write([]byte(`[]`))
				return
			}
			w.Write([]byte(`[{"State":"` + keyState + `"}]`))
		}
	}))
	defer srv.Close()
	n := &Nomad{URL: srv.URL}
	if n.ready(4) {
		t.Error("ready with no keyring key")
	}
	keyState = "active"
	if !n.ready(4) {
		t.Error("not ready with 4 GPUs and an active key")
	}
	if n.ready(6) {
		t.Error("ready with 4 of 6 GPUs")
	}
}
