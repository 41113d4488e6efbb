package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/thawhq/thaw/test/testnet"
)

// ErrMissing marks an error about a binary the harness needs and does not
// find (bin/envoy, bin/nomad, redis-server, ...). Need skips on it outside
// CI.
var ErrMissing = errors.New("missing")

// RepoRoot is the directory of the module's go.mod.
func RepoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}

// RepoBin is bin/<name> of the repository (what `make deps` installs), or
// an error wrapping ErrMissing when it is not there.
func RepoBin(name string) (string, error) { return repoPath("bin", name) }

// PythonSDK is the repository's Python with the official OpenAI SDK
// (.venv-py/bin/python, which `make deps` makes with scripts/pyclient.sh),
// or an error wrapping ErrMissing when it is not there.
func PythonSDK() (string, error) { return repoPath(".venv-py", "bin", "python") }

// repoPath is the path below the repository's root that `make deps`
// installs, or an error wrapping ErrMissing when it is not there.
func repoPath(elem ...string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(append([]string{root}, elem...)...)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%w: %s (run `make deps`)", ErrMissing, p)
	}
	return p, nil
}

// LookPath is exec.LookPath with its error wrapping ErrMissing.
func LookPath(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%w: %s not on PATH (`make deps` installs it): %v", ErrMissing, name, err)
	}
	return p, nil
}

// build is the thaw binary built by ThawBin, once per process.
var build struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// ThawBin is the thaw binary: $THAW_BIN when set (`make e2e` builds
// bin/thaw), otherwise ./cmd/thaw built once per process into a temporary
// directory that Main removes.
func ThawBin() (string, error) {
	build.once.Do(func() {
		if build.bin = os.Getenv("THAW_BIN"); build.bin != "" {
			return
		}
		root, err := RepoRoot()
		if err != nil {
			build.err = err
			return
		}
		if build.dir, err = os.MkdirTemp("", "thaw-e2e-"); err != nil {
			build.err = err
			return
		}
		build.bin = filepath.Join(build.dir, "thaw")
		cmd := exec.Command("go", "build", "-o", build.bin, "./cmd/thaw")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build ./cmd/thaw: %v\n%s", err, out)
		}
	})
	return build.bin, build.err
}

// Main runs a suite's tests (TestMain: os.Exit(e2e.Main(m))) and removes
// the thaw binary ThawBin built, if it built one.
func Main(m *testing.M) int {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	return code
}

// Need fails t with err, or skips it when err wraps ErrMissing and the CI
// environment variable is unset: a developer without Envoy can run the
// rest, while CI cannot pass with a broken install. A nil err does nothing.
func Need(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, ErrMissing) && os.Getenv("CI") == "" {
		t.Skip(err)
	}
	t.Fatal(err)
}

// orFind leaves *bin as it is when set, and otherwise sets it to what find
// returns: a config's Bin defaults to the installed binary.
func orFind(bin *string, find func() (string, error)) error {
	if *bin != "" {
		return nil
	}
	var err error
	*bin, err = find()
	return err
}

// ThawT is ThawBin for a test (see Need).
func ThawT(t testing.TB) string {
	t.Helper()
	bin, err := ThawBin()
	Need(t, err)
	return bin
}

// FreeAddrT is testnet.FreeAddr for a test.
func FreeAddrT(t testing.TB) string {
	t.Helper()
	a, err := testnet.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}
