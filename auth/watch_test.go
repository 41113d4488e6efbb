package auth

import (
	"crypto/sha256"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/internal/logtest"
	"github.com/thawhq/thaw/internal/runtest"
)

var (
	lineAlice = "alice " + HashToken("tok-alice") + "\n"
	lineBob   = "bob " + HashToken("tok-bob") + "\n"
)

// authenticated returns who of alice and bob their tokens (tok-<name>, and
// tok-bob2 for bob's new token) authenticate as.
func authenticated(u *Users) []string {
	var got []string
	for _, tok := range []string{"tok-alice", "tok-bob", "tok-bob2"} {
		if name, ok := u.Lookup(tok); ok {
			got = append(got, name+"="+tok)
		}
	}
	return got
}

// replaceFile writes content beside path and renames it over path, as
// editors and `mv` do.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startWatcher loads path, runs a watcher on it (interval 1 s) until the
// test ends, and returns the users, its log and its reload channel.
func startWatcher(t *testing.T, path string) (*Users, *logtest.Buffer, chan<- os.Signal) {
	t.Helper()
	users, err := LoadUsersFile(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logtest.Buffer{}
	reload := make(chan os.Signal)
	w, err := NewUsersWatcher(UsersWatcherConfig{
		Path: path, Users: users, Reload: reload,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		t.Fatal(err)
	}
	runtest.Start(t, w.Run)
	synctest.Wait()
	if got := logs.Take(); got != "" {
		t.Errorf("an unchanged file logged at start:\n%s", got)
	}
	return users, logs, reload
}

// TestUsersWatcherFollowsFile steps through an operator's edits: each is
// seen within one interval; a broken, empty or missing file keeps the users
// loaded before and is logged once.
func TestUsersWatcherFollowsFile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "users")
		writeFile(t, path, lineAlice)
		users, logs, _ := startWatcher(t, path)
		steps := []struct {
			name    string
			edit    func()
			want    []string // who authenticates one interval later
			wantLog string   // in the log; "" means nothing logged
		}{
			{"add bob by rename", func() { replaceFile(t, path, lineAlice+lineBob) },
				[]string{"alice=tok-alice", "bob=tok-bob"}, "added=[bob]"},
			{"unchanged content rewritten", func() { writeFile(t, path, lineAlice+lineBob) },
				[]string{"alice=tok-alice", "bob=tok-bob"}, ""},
			{"new token for bob", func() { writeFile(t, path, lineAlice+"bob "+HashToken("tok-bob2")+"\n") },
				[]string{"alice=tok-alice", "bob=tok-bob2"}, "new_token=[bob]"},
			{"remove bob in place", func() { writeFile(t, path, "# bob left\n"+lineAlice) },
				[]string{"alice=tok-alice"}, "removed=[bob]"},
			{"broken line", func() { writeFile(t, path, lineAlice+"bob tok-bob\n") },
				[]string{"alice=tok-alice"}, "keeping the users loaded before"},
			{"empty file", func() { writeFile(t, path, "# nobody\n") },
				[]string{"alice=tok-alice"}, "lists no user"},
			{"file removed", func() { os.Remove(path) },
				[]string{"alice=tok-alice"}, "no such file"},
			{"back with bob", func() { replaceFile(t, path, lineAlice+lineBob) },
				[]string{"alice=tok-alice", "bob=tok-bob"}, "added=[bob]"},
		}
		for _, s := range steps {
			s.edit()
			time.Sleep(DefaultWatchInterval + time.Millisecond)
			synctest.Wait()
			if diff := cmp.Diff(s.want, authenticated(users)); diff != "" {
				t.Errorf("%s: authenticated (-want +got):\n%s", s.name, diff)
			}
			got := logs.Take()
			if s.wantLog == "" && got != "" || !strings.Contains(got, s.wantLog) || strings.Count(got, "\n") > 1 {
				t.Errorf("%s: logged %q, want one line with %q", s.name, got, s.wantLog)
			}
			// A problem that stays is not logged again.
			time.Sleep(10 * DefaultWatchInterval)
			synctest.Wait()
			if got := logs.Take(); got != "" {
				t.Errorf("%s: logged again while nothing changed: %q", s.name, got)
			}
		}
	})
}

// TestUsersWatcherSymlinkSwap: Kubernetes and Nomad templates publish a
// new version of a file by pointing a symlink at it; the path's own
// modification time and inode stay those of the link.
func TestUsersWatcherSymlinkSwap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "v1"), lineAlice+lineBob)
		writeFile(t, filepath.Join(dir, "v2"), lineAlice)
		path := filepath.Join(dir, "users")
		if err := os.Symlink("v1", path); err != nil {
			t.Fatal(err)
		}
		users, _, _ := startWatcher(t, path)
		if err := os.Symlink("v2", path+".new"); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
		time.Sleep(DefaultWatchInterval + time.Millisecond)
		synctest.Wait()
		if diff := cmp.Diff([]string{"alice=tok-alice"}, authenticated(users)); diff != "" {
			t.Errorf("after the swap, authenticated (-want +got):\n%s", diff)
		}
	})
}

// TestUsersWatcherReload: a reload (SIGHUP) applies the file at once,
// without waiting for the next read, and always says what it did.
func TestUsersWatcherReload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "users")
		writeFile(t, path, lineAlice+lineBob)
		users, logs, reload := startWatcher(t, path)
		start := time.Now()
		writeFile(t, path, lineAlice)
		reload <- syscall.SIGHUP
		synctest.Wait()
		if elapsed := time.Since(start); elapsed != 0 {
			t.Errorf("reload took %v of fake time, want none", elapsed)
		}
		if diff := cmp.Diff([]string{"alice=tok-alice"}, authenticated(users)); diff != "" {
			t.Errorf("after SIGHUP, authenticated (-want +got):\n%s", diff)
		}
		if got := logs.Take(); !strings.Contains(got, "removed=[bob]") || !strings.Contains(got, "forced=true") {
			t.Errorf("log %q, want the forced reload removing bob", got)
		}
		reload <- syscall.SIGHUP
		synctest.Wait()
		if got := logs.Take(); !strings.Contains(got, "users file loaded") || !strings.Contains(got, "forced=true") {
			t.Errorf("a reload of an unchanged file logged %q, want its outcome", got)
		}
		writeFile(t, path, "alice nope\n")
		reload <- syscall.SIGHUP
		synctest.Wait()
		if got := logs.Take(); !strings.Contains(got, "not applied") {
			t.Errorf("a reload of a broken file logged %q, want the error", got)
		}
		if diff := cmp.Diff([]string{"alice=tok-alice"}, authenticated(users)); diff != "" {
			t.Errorf("after a broken reload, authenticated (-want +got):\n%s", diff)
		}
	})
}

func TestNewUsersWatcherRefuses(t *testing.T) {
	users := NewUsers(map[string]string{"alice": "tok-alice"})
	for name, cfg := range map[string]UsersWatcherConfig{
		"no path":           {Users: users},
		"no users":          {Path: "users"},
		"negative interval": {Path: "users", Users: users, Interval: -time.Second},
	} {
		if _, err := NewUsersWatcher(cfg); err == nil {
			t.Errorf("%s: NewUsersWatcher accepted %+v", name, cfg)
		}
	}
}

// TestReplaceWhileLookingUp: lookups racing Replace see the old users or
// the new ones, never a torn map (run with -race).
func TestReplaceWhileLookingUp(t *testing.T) {
	users := NewUsers(map[string]string{"alice": "tok-alice"})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if name, ok := users.Lookup("tok-alice"); !ok || name != "alice" {
				t.Errorf("Lookup(tok-alice) = %q, %v during Replace", name, ok)
				return
			}
		}
	}()
	for i := range 1000 {
		hashes := map[string][32]byte{"alice": sha256.Sum256([]byte("tok-alice"))}
		if i%2 == 0 {
			hashes["bob"] = sha256.Sum256([]byte("tok-bob"))
		}
		users.Replace(hashes)
	}
	close(stop)
	wg.Wait()
}
