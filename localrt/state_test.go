package localrt

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestStateFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), stateFileName)
	if recs, err := readState(path); err != nil || recs != nil {
		t.Fatalf("readState(missing) = %v, %v; want nothing", recs, err)
	}
	want := []record{{ID: "a", PID: 42, Argv: []string{"thaw", "sim", "--port", "1"}, StartTime: 7}}
	if err := writeState(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := readState(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d files, want only the state file (no temp file left)", len(entries))
	}
}

// sleeper starts `sleep 60` in its own process group and returns it with
// its record.
func sleeper(t *testing.T, arg string) (*exec.Cmd, record) {
	t.Helper()
	cmd := exec.Command("sleep", arg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	st, err := procStartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return cmd, record{ID: "x", PID: cmd.Process.Pid, Argv: cmd.Args, StartTime: st}
}

// exited waits up to 5s for cmd to exit and reports whether it was killed.
func killed(t *testing.T, cmd *exec.Cmd) bool {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		return !cmd.ProcessState.Exited() // ended by a signal
	case <-time.After(5 * time.Second):
		return false
	}
}

func TestRunKillsOrphans(t *testing.T) {
	dir := t.TempDir()
	orphan, orphanRec := sleeper(t, "60")
	// Processes that got a recorded PID later: another program, and the
	// same command line started at another time.
	other, otherRec := sleeper(t, "61")
	otherRec.Argv = []string{"/usr/bin/thaw", "sim", "--port", "1234"}
	again, againRec := sleeper(t, "62")
	againRec.StartTime--
	if err := writeState(filepath.Join(dir, stateFileName), []record{orphanRec, otherRec, againRec}); err != nil {
		t.Fatal(err)
	}

	h := start(t, Config{StateDir: dir})
	if !killed(t, orphan) {
		t.Errorf("the recorded orphan was not killed")
	}
	h.stop()
	for _, cmd := range []*exec.Cmd{other, again} {
		if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
			t.Errorf("%v was killed though it does not match its record: %v", cmd.Args, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, stateFileName)); !os.IsNotExist(err) {
		t.Errorf("state file still there after Run: %v", err)
	}
}
