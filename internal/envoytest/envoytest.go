// Package envoytest checks Envoy configurations with the real Envoy that
// `make deps` installs (scripts/envoy.sh: bin/envoy).
package envoytest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// Validate runs `envoy --mode validate` on config (a bootstrap, JSON or
// YAML) and fails the test when Envoy refuses it. Without bin/envoy it
// fails under CI (CI set: make deps installs it) and only logs elsewhere.
func Validate(t testing.TB, config []byte) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	bin := filepath.Join(filepath.Dir(file), "..", "..", "bin", "envoy")
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s missing (make deps): cannot validate the Envoy configuration", bin)
		}
		t.Logf("%s not installed (make deps): configuration not validated by Envoy", bin)
		return
	}
	f := filepath.Join(t.TempDir(), "envoy.json")
	if err := os.WriteFile(f, config, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--mode", "validate", "-c", f, "--disable-hot-restart").CombinedOutput()
	if err != nil {
		t.Errorf("envoy --mode validate: %v\n%s", err, out)
	}
}
