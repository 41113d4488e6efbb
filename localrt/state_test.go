package localrt

import (
	"context"
	"fmt"
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
	endedPath := filepath.Join(filepath.Dir(path), endedFileName)
	if st, err := readState(path); err != nil || st.Children != nil || !st.AliveAt.IsZero() {
		t.Fatalf("readState(missing) = %+v, %v; want nothing", st, err)
	}
	if es, err := readEnded(endedPath); err != nil || es != nil {
		t.Fatalf("readEnded(missing) = %+v, %v; want nothing", es, err)
	}
	want := state{
		AliveAt: t0.Add(time.Minute),
		Children: []record{{ID: "a", PID: 42, Argv: []string{"thaw", "sim", "--port", "1"}, StartTime: 7,
			DeployID: "d1", Held: t0}},
	}
	wantEnded := []ended{{ID: "b", DeployID: "d1", Held: t0, Released: t0.Add(time.Second), How: endExit}}
	if err := writeEnded(endedPath, wantEnded); err != nil {
		t.Fatal(err)
	}
	if got, err := readEnded(endedPath); err != nil || !cmp.Equal(wantEnded, got) {
		t.Errorf("ended round trip: %+v, %v; want %+v", got, err, wantEnded)
	}
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
	if len(entries) != 2 {
		t.Errorf("directory holds %d files, want only the state and ended files (no temp file left)", len(entries))
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
	orphanRec.Held = t0
	// Processes that got a recorded PID later: another program, and the
	// same command line started at another time.
	other, otherRec := sleeper(t, "61")
	otherRec.Argv = []string{"/usr/bin/thaw", "sim", "--port", "1234"}
	again, againRec := sleeper(t, "62")
	againRec.StartTime--
	if err := writeState(filepath.Join(dir, stateFileName), state{Children: []record{orphanRec, otherRec, againRec}}); err != nil {
		t.Fatal(err)
	}

	before := time.Now()
	h := start(t, Config{StateDir: dir})
	if !killed(t, orphan) {
		t.Errorf("the recorded orphan was not killed")
	}
	// Closed when it was killed.
	at, ok, err := h.rt.Ended(context.Background(), orphanRec.ID)
	if err != nil || !ok || at.Before(before) || at.After(time.Now()) {
		t.Errorf("Ended(orphan) = %v, %v, %v; want its kill time, after %v", at, ok, err, before)
	}
	h.stop()
	for _, cmd := range []*exec.Cmd{other, again} {
		if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
			t.Errorf("%v was killed though it does not match its record: %v", cmd.Args, err)
		}
	}
	st, err := readState(filepath.Join(dir, stateFileName))
	if err != nil || len(st.Children) != 0 {
		t.Errorf("state file after Run: %+v, %v; want no child", st, err)
	}
	es, err := readEnded(filepath.Join(dir, endedFileName))
	if err != nil || len(es) != 1 || es[0].ID != orphanRec.ID || es[0].How != endKilled || !es[0].Held.Equal(t0) {
		t.Errorf("ended file: %+v, %v; want the orphan, killed", es, err)
	}
}

// t0 is a time instances started at in the tests.
var t0 = time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)

func TestCloseDead(t *testing.T) {
	rec := record{ID: "i1", DeployID: "d1", Held: t0}
	tests := []struct {
		name    string
		rec     record
		aliveAt time.Time
		want    ended
		ok      bool
	}{
		{"closed at the last heartbeat", rec, t0.Add(time.Hour),
			ended{ID: "i1", DeployID: "d1", Held: t0, Released: t0.Add(time.Hour), How: endHeartbeat}, true},
		{"started after it: closed at its start", rec, t0.Add(-time.Second),
			ended{ID: "i1", DeployID: "d1", Held: t0, Released: t0, How: endHeartbeat}, true},
		{"no start time recorded", record{ID: "i1"}, t0,
			ended{ID: "i1", Released: t0, How: endHeartbeat}, true},
		{"nothing known", record{ID: "i1"}, time.Time{}, ended{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := closeDead(tt.rec, tt.aliveAt)
			if ok != tt.ok {
				t.Errorf("ok = %v, want %v", ok, tt.ok)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("closeDead (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPrune(t *testing.T) {
	now := t0.Add(30 * 24 * time.Hour)
	at := func(id string, ago time.Duration) ended { return ended{ID: id, Released: now.Add(-ago), How: endExit} }
	got := prune([]ended{at("week-old", endedRetention+time.Second), at("new", time.Second), at("day-old", 24*time.Hour)}, now)
	want := []ended{at("day-old", 24*time.Hour), at("new", time.Second)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("prune (-want +got):\n%s", diff)
	}

	var many []ended
	for i := range endedMax + 5 {
		many = append(many, at(fmt.Sprint(i), time.Duration(i)*time.Second))
	}
	got = prune(many, now)
	if len(got) != endedMax || got[0].ID != fmt.Sprint(endedMax-1) || got[len(got)-1].ID != "0" {
		t.Errorf("prune of %d: %d kept, from %s to %s; want the latest %d", len(many), len(got), got[0].ID, got[len(got)-1].ID, endedMax)
	}
}
