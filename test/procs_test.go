package test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// procInfo identifies one process: a PID plus its start time, so a reused
// PID is not mistaken for the same process.
type procInfo struct {
	PID     int
	PPID    int
	PGID    int
	State   byte
	Start   uint64
	Cmdline string
	args    []string
}

func (p procInfo) String() string { return fmt.Sprintf("pid %d [%s]", p.PID, p.Cmdline) }

// readProc reads /proc/<pid>/stat and cmdline.
func readProc(pid int) (procInfo, bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procInfo{}, false
	}
	// The command name is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return procInfo{}, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 20 {
		return procInfo{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	pgid, _ := strconv.Atoi(f[2])
	start, _ := strconv.ParseUint(f[19], 10, 64)
	info := procInfo{PID: pid, PPID: ppid, PGID: pgid, State: f[0][0], Start: start}
	if cl, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
		info.args = strings.Split(strings.TrimRight(string(cl), "\x00"), "\x00")
		info.Cmdline = strings.Join(info.args, " ")
	}
	return info, true
}

// allProcs lists every process this user can see.
func allProcs() []procInfo {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var ps []procInfo
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			ps = append(ps, p)
		}
	}
	return ps
}

// alive reports whether the same process (same PID and start time) still
// exists and is not a zombie.
func (p procInfo) alive() bool {
	now, ok := readProc(p.PID)
	return ok && now.Start == p.Start && now.State != 'Z'
}

// isSim reports whether the process runs the simulator (`thaw sim ...`).
func (p procInfo) isSim() bool {
	return len(p.args) > 1 && slices.Contains(p.args[1:], "sim")
}

// simsUnder returns the live simulator processes descending from root.
func simsUnder(root int) []procInfo {
	ps := allProcs()
	children := map[int][]procInfo{}
	for _, p := range ps {
		children[p.PPID] = append(children[p.PPID], p)
	}
	var sims []procInfo
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range children[pid] {
			if c.isSim() && c.State != 'Z' {
				sims = append(sims, c)
			}
			queue = append(queue, c.PID)
		}
	}
	return sims
}

// procsInGroup returns the live processes in process group pgid.
func procsInGroup(pgid int) []procInfo {
	var out []procInfo
	for _, p := range allProcs() {
		if p.PGID == pgid && p.State != 'Z' {
			out = append(out, p)
		}
	}
	return out
}

// simsFor returns the live simulator processes of thaw's binary whose
// command line mentions name (a unique model name).
func simsFor(name string) []procInfo {
	var out []procInfo
	for _, p := range allProcs() {
		if p.State == 'Z' || !p.isSim() || !strings.Contains(p.Cmdline, name) {
			continue
		}
		if filepath.Base(p.args[0]) == filepath.Base(thawBin) || strings.Contains(p.Cmdline, thawBin) {
			out = append(out, p)
		}
	}
	return out
}

// waitGone fails the test unless every process in ps has exited within
// timeout.
func waitGone(t *testing.T, what string, ps []procInfo, timeout time.Duration) {
	t.Helper()
	var left []procInfo
	waitFor(timeout, 100*time.Millisecond, func() bool {
		left = left[:0]
		for _, p := range ps {
			if p.alive() {
				left = append(left, p)
			}
		}
		return len(left) == 0
	})
	if len(left) > 0 {
		t.Errorf("%s: %d simulator process(es) still alive after %v: %v", what, len(left), timeout, left)
	}
}

// waitNoSims fails the test unless no simulator for any of names is alive
// within timeout.
func waitNoSims(t *testing.T, what string, names []string, timeout time.Duration) {
	t.Helper()
	var left []procInfo
	waitFor(timeout, 100*time.Millisecond, func() bool {
		left = nil
		for _, n := range names {
			left = append(left, simsFor(n)...)
		}
		return len(left) == 0
	})
	if len(left) > 0 {
		t.Errorf("%s: simulator process(es) still alive after %v: %v", what, timeout, left)
	}
}
