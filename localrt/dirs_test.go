package localrt

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/thawhq/thaw/fleet"
)

// TestStopLeavesNothing: an instance runs in its own directory under the
// state dir; once stopped, a process it started and left behind (one that
// ignores SIGTERM, as a model server's worker may) is gone, and so is its
// directory.
func TestStopLeavesNothing(t *testing.T) {
	state := t.TempDir()
	h := start(t, Config{Inventory: map[string]int{"A100-80GB": 1}, StateDir: state})
	id := h.startInst(fleet.Spec{Model: "leave-child", GPU: "A100-80GB", NumGPUs: 1})
	dial(t, h.waitFor(id, fleet.PhaseRunning).Addr)
	dir := filepath.Join(state, "instances", id)
	if _, err := os.Stat(filepath.Join(dir, "here")); err != nil {
		t.Errorf("the instance did not run in its own directory: %v", err)
	}
	var child int
	re := regexp.MustCompile(`stream=stdout line="child (\d+)"`)
	eventually(t, 5*time.Second, func() bool {
		m := re.FindStringSubmatch(h.logs.String())
		if m != nil {
			child, _ = strconv.Atoi(m[1])
		}
		return child != 0
	}, func() string { return "the helper's child pid was not logged:\n" + h.logs.String() })
	t.Cleanup(func() { syscallKill(child) }) // if the check below fails
	if !alive(child) {
		t.Fatalf("child %d is not running", child)
	}
	if err := h.rt.Stop(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() bool { return !alive(child) },
		func() string { return fmt.Sprintf("child %d outlived its stopped instance", child) })
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("instance directory %s after stop: %v, want it removed", dir, err)
	}
}
