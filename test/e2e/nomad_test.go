package e2e

import (
	"net/http"
	"net/http/httptest"
	"strings"
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

// TestNomadClientRegistered: a restarted agent counts as back only once its
// own client has heartbeated its server (a heartbeat TTL in its stats).
func TestNomadClientRegistered(t *testing.T) {
	ttl := "0s"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/agent/self" {
			w.Write([]byte(`{"stats":{"client":{"heartbeat_ttl":"` + ttl + `","last_heartbeat":"286ms"}}}`))
		}
	}))
	defer srv.Close()
	n := &Nomad{URL: srv.URL}
	if n.clientRegistered() {
		t.Error("registered with a heartbeat TTL of 0s (the client has not heartbeated yet)")
	}
	ttl = "14.609582154s"
	if !n.clientRegistered() {
		t.Error("not registered with a heartbeat TTL of 14.6s")
	}
}

// TestNomadHaltNeedsPersistent: a -dev agent cannot be halted and resumed
// (it would come back empty).
func TestNomadHaltNeedsPersistent(t *testing.T) {
	n := &Nomad{}
	if err := n.Halt(); err == nil || !strings.Contains(err.Error(), "Persistent") {
		t.Errorf("Halt of a -dev agent: %v, want an error naming NomadConfig.Persistent", err)
	}
	if err := n.Resume(); err == nil {
		t.Error("Resume of a -dev agent: no error")
	}
}
