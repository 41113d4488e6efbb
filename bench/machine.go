package bench

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine describes where a run happened.
type Machine struct {
	NProc     int    `json:"nproc"`
	CPU       string `json:"cpu,omitempty"`
	MemoryMB  int    `json:"memory_mb"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go_version"`
	Date      string `json:"date"` // RFC 3339, UTC
}

// String is a one-line description, e.g. "2 CPUs (…), 24105 MB, Linux 6.8, go1.26.8, 2026-11-25T12:00:00Z".
func (m Machine) String() string {
	cpu := ""
	if m.CPU != "" {
		cpu = " (" + m.CPU + ")"
	}
	return fmt.Sprintf("%d CPUs%s, %d MB RAM, Linux %s, %s, %s", m.NProc, cpu, m.MemoryMB, m.Kernel, m.GoVersion, m.Date)
}

// ThisMachine describes the machine this process runs on, at now. Facts it
// cannot read (outside Linux) stay empty.
func ThisMachine(now time.Time) Machine {
	m := Machine{
		NProc:     runtime.NumCPU(),
		GoVersion: runtime.Version(),
		Date:      now.UTC().Format(time.RFC3339),
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if kb, err := ProcField("/proc/meminfo", "MemTotal"); err == nil {
		m.MemoryMB = int(kb / 1024)
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// ProcField reads a "Key:   123 kB" line of a /proc file such as
// /proc/meminfo or /proc/<pid>/status and returns its number (kB for
// memory fields).
func ProcField(path, key string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return parseProcField(string(b), key)
}

func parseProcField(text, key string) (int64, error) {
	for _, line := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != key {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			break
		}
		return strconv.ParseInt(fields[0], 10, 64)
	}
	return 0, fmt.Errorf("no %q field", key)
}
