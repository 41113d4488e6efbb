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
)

// stateFileName is the file in Config.StateDir that records the children.
const stateFileName = "localrt-pids.json"

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
}

// state is the content of the state file.
type state struct {
	Children []record `json:"children"`
}

// writeState replaces the state file at path with recs, atomically (a
// temporary file in the same directory, then rename), so that a crash leaves
// either the old record or the new one.
func writeState(path string, recs []record) error {
	b, err := json.MarshalIndent(state{Children: recs}, "", "  ")
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

// readState reads the state file at path. A missing file is no children.
func readState(path string) ([]record, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s.Children, nil
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

// killOrphans kills the children recorded at path that still run: those a
// previous thaw left behind when it crashed. It never kills a process that
// does not match its record. It returns the records of the processes it
// killed, then removes the file.
func killOrphans(path string) ([]record, error) {
	recs, err := readState(path)
	if err != nil {
		return nil, err
	}
	var killed []record
	for _, rec := range recs {
		if !rec.matches() {
			continue
		}
		// The child leads its own process group (Setpgid): kill the group,
		// so that processes it started die too, then the child itself in
		// case it left its group.
		syscall.Kill(-rec.PID, syscall.SIGKILL)
		syscall.Kill(rec.PID, syscall.SIGKILL)
		killed = append(killed, rec)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return killed, err
	}
	return killed, nil
}
