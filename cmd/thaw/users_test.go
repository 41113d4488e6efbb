package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/thawhq/thaw/auth"
)

// lineWriter hands each log line to the test as it is written; lines
// beyond its buffer are dropped rather than block the logger.
type lineWriter chan string

func (w lineWriter) Write(p []byte) (int, error) {
	select {
	case w <- string(p):
	default:
	}
	return len(p), nil
}

// waitLog returns the first line logged that contains want, failing the
// test after 10 s.
func waitLog(t *testing.T, lines <-chan string, want string) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l := <-lines:
			if strings.Contains(l, want) {
				return l
			}
		case <-timeout:
			t.Fatalf("no log line with %q", want)
		}
	}
}

// TestWatchUsersSIGHUP: thaw server and thaw activator apply the users file
// at once on SIGHUP; the process keeps running.
func TestWatchUsersSIGHUP(t *testing.T) {
	// Our own subscription: a SIGHUP never kills the test binary, even
	// one sent before watchUsers subscribes.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	path := filepath.Join(t.TempDir(), "users")
	alice, bob := "alice "+auth.HashToken("tok-alice")+"\n", "bob "+auth.HashToken("tok-bob")+"\n"
	if err := os.WriteFile(path, []byte(alice+bob), 0o600); err != nil {
		t.Fatal(err)
	}
	defer slog.SetDefault(slog.Default()) // startProcess replaces it
	var flags processFlags
	flags.level = slog.LevelDebug
	lines := make(lineWriter, 100)
	p, err := startProcess(t.Context(), processConfig{Service: "thaw-test", Flags: flags, EmbeddedRedis: true, UsersFile: path, Stderr: lines})
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.watchUsers(ctx) }()
	// The watcher's first read logs (at debug level) once it listens.
	waitLog(t, lines, "users file loaded")

	if err := os.WriteFile(path, []byte(alice), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	line := waitLog(t, lines, "forced=true")
	if !strings.Contains(line, "removed=[bob]") {
		t.Errorf("SIGHUP logged %q, want bob removed", line)
	}
	if _, ok := p.Users.Lookup("tok-bob"); ok {
		t.Error("bob's token still authenticates after SIGHUP")
	}
	if name, ok := p.Users.Lookup("tok-alice"); !ok || name != "alice" {
		t.Errorf("Lookup(tok-alice) = %q, %v after SIGHUP", name, ok)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("watchUsers = %v, want nil when stopped", err)
	}
}

// TestWatchUsersNoFile: thaw dev's process has no users file to follow.
func TestWatchUsersNoFile(t *testing.T) {
	p := &process{Log: slog.New(slog.DiscardHandler)}
	if err := p.watchUsers(t.Context()); err != nil {
		t.Errorf("watchUsers without a users file = %v, want nil at once", err)
	}
}
