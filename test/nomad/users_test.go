package nomadtest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/test/e2e"
)

// revokeBound is how soon a token removed from the users file must be
// refused everywhere: the watchers read the file every second.
const revokeBound = 3 * time.Second

// Where cluster.sh says its thaw server and activators listen.
var (
	clusterServer     = regexp.MustCompile(`thaw server itself: (http://\S+?)\)`)
	clusterActivators = regexp.MustCompile(`activators on ([0-9][0-9 ]*)\n`)
)

// usersCheck is one place a token is tried: a request whose status says
// whether the token authenticated (401 when it did not).
type usersCheck struct {
	name         string
	base         string
	method, path string
	body         any
}

// TestUsersFileReload: on the production topology (scripts/cluster.sh) an
// operator adds user bob to the users file that thaw server and both
// activators read; without a restart bob's token works on thaw server's API,
// through Envoy's edge (the API and inference, authorized by thaw server's
// /authz) and on each activator. The operator removes bob's line: within
// revokeBound his token gets 401 everywhere, while dev's keeps working. A
// users file emptied by mistake then locks nobody out.
func TestUsersFileReload(t *testing.T) {
	needCluster(t)
	dir := t.TempDir()
	c := e2e.StartClusterT(t, e2e.ClusterConfig{Bin: thawBin, Dir: dir, Args: []string{"--sim-startup", "300ms"}})
	out := c.Out.Tail(64 << 10)
	m, acts := clusterServer.FindStringSubmatch(out), clusterActivators.FindStringSubmatch(out)
	if m == nil || acts == nil {
		t.Fatalf("cluster.sh did not say where thaw server and the activators listen:\n%s", out)
	}
	usersFile := filepath.Join(dir, "thaw", "users")
	original, err := os.ReadFile(usersFile)
	if err != nil {
		t.Fatalf("cluster.sh's users file: %v", err)
	}

	const bobToken = "tok-bob-users-e2e"
	// Requests any authenticated user gets 200 for.
	checks := []usersCheck{
		{"thaw server's API", m[1], "GET", "/deploy/list", nil},
		{"the edge's API route", c.Edge, "GET", "/deploy/list", nil},
	}
	for _, port := range strings.Fields(acts[1]) {
		checks = append(checks, usersCheck{"activator :" + port, "http://127.0.0.1:" + port, "GET", "/v1/openai/models", nil})
	}
	appendLine(t, usersFile, "bob "+auth.HashToken(bobToken)+"\n")
	took, pending := until(t, checks, bobToken, func(status int) bool { return status == 200 })
	for _, ck := range pending {
		t.Errorf("bob's new token not accepted on %s within %s of being added", ck.name, revokeBound)
	}
	if len(pending) > 0 {
		t.FailNow()
	}
	t.Logf("bob's token accepted everywhere %s after its line was added", took)

	checks = append(checks, deployAndChat(t, c.Edge, strings.Fields(acts[1]), bobToken)...)
	for _, ck := range checks {
		if got := status(t, ck, bobToken); got != 200 {
			t.Errorf("bob on %s: HTTP %d, want 200", ck.name, got)
		}
	}

	// Revoke: the operator writes the file without bob and renames it
	// over the old one.
	replaceUsersFile(t, usersFile, string(original))
	took, pending = until(t, checks, bobToken, func(status int) bool { return status == 401 })
	for _, ck := range pending {
		t.Errorf("bob's revoked token not refused with 401 on %s within %s of its removal", ck.name, revokeBound)
	}
	t.Logf("bob's token refused everywhere %s after its line was removed", took)
	for _, ck := range checks {
		if got := status(t, ck, c.Token); got == 401 {
			t.Errorf("dev's token refused on %s after bob was removed", ck.name)
		}
	}

	// An operator's mistake: the file emptied. It is refused; dev keeps
	// working after the watchers have read it twice.
	replaceUsersFile(t, usersFile, "# everyone moved out\n")
	time.Sleep(2500 * time.Millisecond)
	for _, ck := range checks {
		if got := status(t, ck, c.Token); got == 401 {
			t.Errorf("after the users file was emptied, dev's token refused on %s (the old users must stay)", ck.name)
		}
	}
	if log := c.Out.Tail(64 << 10); !strings.Contains(log, "users file not applied") {
		t.Errorf("thaw server did not log that it refused the empty users file")
	}
}

// deployAndChat creates a deployment as the user of token through the
// edge and chats with it, then returns the inference checks on it: through
// the edge (authorized by thaw server's /authz, then straight to the warm
// instance) and on each activator.
func deployAndChat(t *testing.T, edge string, activatorPorts []string, token string) []usersCheck {
	t.Helper()
	s := &server{t: t, base: edge}
	name := uniqueName("bob")
	r, err := s.doAs(token, "POST", "/deploy/llm", map[string]any{
		"model_name": name, "gpu": "A100-80GB", "num_gpus": 1, "max_batch_size": 4,
		"hf": map[string]any{"repo": "org/model"}, "settings": map[string]any{"min_instances": 0, "max_instances": 1},
	})
	if err != nil || r.Status != 200 {
		t.Fatalf("bob creates a deployment through the edge: %v %s", err, r)
	}
	chat := map[string]any{"model": "bob/" + name, "max_tokens": 3, "messages": []map[string]string{{"role": "user", "content": "hi"}}}
	if msg := checkChat(s.doAs(token, "POST", "/v1/openai/chat/completions", chat)); msg != "" {
		t.Fatalf("bob's chat through the edge: %s", msg)
	}
	checks := []usersCheck{{"inference through the edge", edge, "POST", "/v1/openai/chat/completions", chat}}
	for _, port := range activatorPorts {
		checks = append(checks, usersCheck{"inference on activator :" + port, "http://127.0.0.1:" + port, "POST", "/v1/openai/chat/completions", chat})
	}
	return checks
}

// until sends each check with token every 100 ms until its status is
// what ok wants, for revokeBound at most. It returns how long that took
// and the checks still not ok.
func until(t *testing.T, checks []usersCheck, token string, ok func(status int) bool) (time.Duration, []usersCheck) {
	t.Helper()
	start := time.Now()
	pending := checks
	for {
		var still []usersCheck
		for _, ck := range pending {
			if !ok(status(t, ck, token)) {
				still = append(still, ck)
			}
		}
		pending = still
		if len(pending) == 0 || time.Since(start) > revokeBound {
			return time.Since(start).Round(100 * time.Millisecond), pending
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// status sends ck with token and returns the HTTP status (0 on a transport
// error, which the test reports).
func status(t *testing.T, ck usersCheck, token string) int {
	t.Helper()
	r, err := (&server{t: t, base: ck.base}).doAs(token, ck.method, ck.path, ck.body)
	if err != nil {
		t.Errorf("%s: %v", ck.name, err)
		return 0
	}
	return r.Status
}

// appendLine appends line to the users file, as `echo ... >> users` does.
func appendLine(t *testing.T, path, line string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// replaceUsersFile writes content beside path and renames it over path.
func replaceUsersFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := fmt.Sprintf("%s.%d", path, time.Now().UnixNano())
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
