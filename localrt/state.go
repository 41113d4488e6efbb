package localrt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Files in Config.StateDir: stateFileName records the running children and
// the heartbeat, rewritten every Config.Heartbeat, so it stays small;
// endedFileName records the instances that ended, rewritten when one ends.
const (
	stateFileName = "localrt-pids.json"
	endedFileName = "localrt-ended.json"
)

// record identifies one child process on disk, well enough to tell it from an
// unrelated process that got the same PID after a reboot or PID wrap-around.
type record struct {
	ID  string `json:"id"`
	PID int    `json:"pid"`
	// Argv is the command line the child was started with; /proc/<pid>/cmdline
	// must still equal it.
	Argv []string `json:"argv"`
	// StartTime is field 22 of /proc/<pid>/stat (clock ticks after boot);
	// when non-zero it must still equal it.
	StartTime uint64 `json:"start_time,omitempty"`
	// DeployID is the instance's deployment, for the logs.
	DeployID string `json:"deploy_id,omitempty"`
	// Held is when the child started: its GPUs' holding began.
	Held time.Time `json:"held,omitzero"`
}

// How an ended instance's Released time was learnt.
const (
	// endExit: the runtime saw the process exit (waitid returned).
	endExit = "exit"
	// endHeartbeat: the process died with a thaw that was killed (its
	// children get Pdeathsig); Released is the state file's last
	// heartbeat, at most one Config.Heartbeat before the real end.
	endHeartbeat = "heartbeat"
	// endKilled: the process outlived a thaw that was killed, and the next
	// Run killed it; Released is when it sent SIGKILL.
	endKilled = "killed"
)

// ended records when an instance that ran freed its GPUs, so that
// Runtime.Ended answers after a restart. The ended file holds a list of
// them.
type ended struct {
	ID       string    `json:"id"`
	DeployID string    `json:"deploy_id,omitempty"`
	Held     time.Time `json:"held,omitzero"`
	Released time.Time `json:"released"`
	How      string    `json:"how"` // endExit, endHeartbeat or endKilled
}

// Retention of ended instances in the state file: a week, and at most
// endedMax of them (the latest). Enough for a meter that was down for a
// while to close what it missed.
const (
	endedRetention = 7 * 24 * time.Hour
	endedMax       = 1000
)

// state is the content of the state file.
type state struct {
	// AliveAt is when the runtime last wrote the file while it ran:
	// the children recorded were alive then (Config.Heartbeat apart).
	AliveAt  time.Time `json:"alive_at,omitzero"`
	Children []record  `json:"children"`
}

// endedList is the content of the ended file.
type endedList struct {
	Ended []ended `json:"ended"`
}

// writeState replaces the state file at path with st.
func writeState(path string, st state) error { return writeJSON(path, st) }

// writeEnded replaces the ended file at path with es.
func writeEnded(path string, es []ended) error { return writeJSON(path, endedList{Ended: es}) }

// readState reads the state file at path. A missing file is an empty state.
func readState(path string) (state, error) {
	var st state
	err := readJSON(path, &st)
	return st, err
}

// readEnded reads the ended file at path. A missing file is none.
func readEnded(path string) ([]ended, error) {
	var l endedList
	err := readJSON(path, &l)
	return l.Ended, err
}

// writeJSON replaces the file at path with v in JSON, atomically (a
// temporary file in the same directory, then rename), so that a crash leaves
// either the old record or the new one.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(append(b, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// readJSON reads the file at path into v. A missing file leaves v as it is.
func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// closeDead closes a recorded child that is gone at start: it died with the
// thaw that recorded it, which was killed (a clean stop records every end
// as it sees it). The children die with thaw (Pdeathsig), which was alive
// at aliveAt and had not written the next heartbeat: the end lies in
// [aliveAt, aliveAt + Heartbeat], and closing it at aliveAt counts no time
// the GPUs may not have been held. ok is false when the record has no time
// at all (a file of a thaw that did not record them). Pure.
func closeDead(rec record, aliveAt time.Time) (e ended, ok bool) {
	at := aliveAt
	if rec.Held.After(at) {
		at = rec.Held
	}
	if at.IsZero() {
		return ended{}, false
	}
	return ended{ID: rec.ID, DeployID: rec.DeployID, Held: rec.Held, Released: at, How: endHeartbeat}, true
}

// prune keeps the ended instances released within endedRetention of now,
// at most endedMax of them (the latest), sorted by Released. Pure.
func prune(es []ended, now time.Time) []ended {
	out := slices.DeleteFunc(slices.Clone(es), func(e ended) bool {
		return e.Released.Before(now.Add(-endedRetention))
	})
	slices.SortStableFunc(out, func(a, b ended) int { return a.Released.Compare(b.Released) })
	if len(out) > endedMax {
		out = out[len(out)-endedMax:]
	}
	return out
}

// procStartTime returns field 22 of /proc/<pid>/stat: when the process
// started, in clock ticks after boot.
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Field 2, the command name, is in parentheses and may contain spaces
	// and parentheses: the fields after it start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state), so field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields)+2)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// procArgv returns the command line of a running process.
func procArgv(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSuffix(b, []byte{0})
	if len(b) == 0 {
		return nil, nil // a zombie or kernel thread
	}
	return strings.Split(string(b), "\x00"), nil
}

// matches reports whether the process now at rec.PID is still the child that
// rec describes: same command line and, when recorded, same start time. A
// PID reused by another program, or by another run of the same program
// (different port, different start time), does not match.
func (rec record) matches() bool {
	if rec.PID <= 1 || len(rec.Argv) == 0 {
		return false
	}
	argv, err := procArgv(rec.PID)
	if err != nil || !slices.Equal(argv, rec.Argv) {
		return false
	}
	if rec.StartTime != 0 {
		st, err := procStartTime(rec.PID)
		if err != nil || st != rec.StartTime {
			return false
		}
	}
	return true
}

// recoverState reads the state and ended files (statePath, endedPath) that
// a previous run left and closes every child they do not say ended: it
// kills those that still run (the orphans a killed thaw left behind; it
// never kills a process that does not match its record), closed when it
// sent SIGKILL, and closes the others at the last heartbeat (closeDead).
// It returns the ended instances with the closings added, and the records
// of the processes it killed. now is read after each kill.
func recoverState(statePath, endedPath string, now func() time.Time) (ends []ended, killed []record, err error) {
	ends, err = readEnded(endedPath)
	if err != nil {
		return nil, nil, err
	}
	st, err := readState(statePath)
	if err != nil {
		return ends, nil, err
	}
	for _, rec := range st.Children {
		if slices.ContainsFunc(ends, func(e ended) bool { return e.ID == rec.ID }) {
			// Its end was recorded, and the run died before it rewrote
			// the state file.
			continue
		}
		if !rec.matches() {
			if e, ok := closeDead(rec, st.AliveAt); ok {
				ends = append(ends, e)
			}
			continue
		}
		// The child leads its own process group (Setpgid): kill the group,
		// so that processes it started die too, then the child itself in
		// case it left its group.
		syscall.Kill(-rec.PID, syscall.SIGKILL)
		syscall.Kill(rec.PID, syscall.SIGKILL)
		killed = append(killed, rec)
		ends = append(ends, ended{ID: rec.ID, DeployID: rec.DeployID, Held: rec.Held, Released: now(), How: endKilled})
	}
	return ends, killed, nil
}
