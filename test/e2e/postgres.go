package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/thawhq/thaw/test/testnet"
)

// PostgresConfig says how to start one throw-away PostgreSQL cluster. Zero
// values pick the defaults noted on each field.
type PostgresConfig struct {
	// BinDir holds initdb and pg_ctl; default the newest
	// /usr/lib/postgresql/<version>/bin (Debian's layout, scripts/postgres.sh
	// installs it), else the directory of initdb on PATH.
	BinDir string
}

// Postgres is one running PostgreSQL cluster on a loopback port, in a
// temporary directory of its own (data, Unix socket and log), with trust
// authentication for the user thaw and fsync off: for tests only.
type Postgres struct {
	// URL is a connection URL for the database "postgres" as user thaw.
	URL  string
	Addr string // 127.0.0.1:port

	bin  string // BinDir
	dir  string // the temporary directory; removed by Stop
	data string // dir/data
	log  string // dir/log, the server's output
	user string // "postgres" when we run as root (PostgreSQL refuses root), else ""
}

// pgPrefix names the temporary directories RunPostgres makes; an owner
// file in each holds the PID of the process that made it, so that a later
// RunPostgres can stop clusters whose test process died without Stop.
const pgPrefix = "thaw-e2e-pg-"

// RunPostgres creates a cluster with initdb and starts it with pg_ctl,
// listening on 127.0.0.1 at a free port and on a Unix socket in its own
// directory; it returns once the server accepts connections. Clusters left
// behind by test processes that died are stopped and removed first.
//
// pg_ctl runs the server detached, so it does not die with the caller as
// Proc's children do: Stop it (StartPostgres registers that with the test).
// PostgreSQL refuses to run as root: as root, the commands run as the
// system user postgres (runuser) and the directory is given to it.
func RunPostgres(cfg PostgresConfig) (*Postgres, error) {
	bin, err := pgBinDir(cfg.BinDir)
	if err != nil {
		return nil, err
	}
	p := &Postgres{bin: bin}
	if os.Geteuid() == 0 {
		p.user = "postgres"
	}
	sweepPostgres(p)
	p.dir, err = os.MkdirTemp("", pgPrefix)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(p.dir, "owner"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		p.cleanup()
		return nil, err
	}
	if p.user != "" {
		u, err := user.Lookup(p.user)
		if err != nil {
			p.cleanup()
			return nil, fmt.Errorf("%w: system user postgres (`make deps` creates it with the postgresql package): %v", ErrMissing, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(p.dir, uid, gid); err != nil {
			p.cleanup()
			return nil, err
		}
	}
	p.data, p.log = filepath.Join(p.dir, "data"), filepath.Join(p.dir, "log")
	if out, err := p.run("initdb", "-D", p.data, "-U", "thaw", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		p.cleanup()
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	port, err := testnet.FreePort()
	if err != nil {
		p.cleanup()
		return nil, err
	}
	p.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p.URL = fmt.Sprintf("postgres://thaw@%s/postgres?sslmode=disable", p.Addr)
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off", port, p.dir)
	if out, err := p.run("pg_ctl", "-D", p.data, "-l", p.log, "-o", opts, "-w", "-t", "60", "start"); err != nil {
		p.stop("immediate")
		p.cleanup()
		return nil, fmt.Errorf("pg_ctl start on %s: %v\n%s\nserver log:\n%s", p.Addr, err, out, p.Log())
	}
	return p, nil
}

// Stop stops the server (fast shutdown: sessions are ended, nothing is
// waited for) and removes its directory.
func (p *Postgres) Stop() error {
	err := p.stop("fast")
	if err != nil {
		p.stop("immediate")
	}
	p.cleanup()
	return err
}

// Log is the tail of the server's log.
func (p *Postgres) Log() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 16<<10 {
		b = b[len(b)-16<<10:]
	}
	return string(b)
}

func (p *Postgres) stop(mode string) error {
	if out, err := p.run("pg_ctl", "-D", p.data, "-m", mode, "-w", "-t", "30", "stop"); err != nil {
		return fmt.Errorf("pg_ctl stop (%s) on %s: %v\n%s", mode, p.Addr, err, out)
	}
	return nil
}

func (p *Postgres) cleanup() {
	if p.dir != "" {
		os.RemoveAll(p.dir)
	}
}

// run runs one of the cluster's binaries, as p.user when set, and returns
// its output.
func (p *Postgres) run(name string, args ...string) (string, error) {
	argv := append([]string{filepath.Join(p.bin, name)}, args...)
	if p.user != "" {
		argv = append([]string{"runuser", "-u", p.user, "--"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = CleanEnv()
	cmd.Dir = os.TempDir() // readable by p.user, unlike the caller's directory perhaps
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// pgBinDir finds the directory holding initdb and pg_ctl.
func pgBinDir(dir string) (string, error) {
	if dir == "" {
		found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
		slices.SortFunc(found, func(a, b string) int { return pgVersion(a) - pgVersion(b) })
		if len(found) > 0 {
			dir = filepath.Dir(found[len(found)-1])
		} else if initdb, err := exec.LookPath("initdb"); err == nil {
			dir = filepath.Dir(initdb)
		} else {
			return "", fmt.Errorf("%w: PostgreSQL's initdb is in neither /usr/lib/postgresql/*/bin nor PATH (`make deps` installs it: scripts/postgres.sh)", ErrMissing)
		}
	}
	for _, name := range []string{"initdb", "pg_ctl"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return "", fmt.Errorf("%w: %s: %v", ErrMissing, name, err)
		}
	}
	return dir, nil
}

// pgVersion is the major version in a path /usr/lib/postgresql/<v>/bin/...
func pgVersion(path string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(path))))
	return v
}

// sweepPostgres stops and removes the clusters of RunPostgres callers that
// are gone (their owner process no longer exists), using p's binaries.
func sweepPostgres(p *Postgres) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), pgPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "owner"))
		if err != nil {
			continue // being set up, or not ours
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		old := &Postgres{bin: p.bin, user: p.user, dir: dir, data: filepath.Join(dir, "data")}
		if _, err := os.Stat(filepath.Join(old.data, "postmaster.pid")); err == nil {
			old.stop("immediate")
		}
		old.cleanup()
	}
}

// processAlive reports whether a process with this PID exists.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// StartPostgres is RunPostgres for a test (see Need): it returns the URL
// and stops the cluster when the test ends, logging the server's log if the
// test failed.
func StartPostgres(t testing.TB) string {
	t.Helper()
	p, err := RunPostgres(PostgresConfig{})
	Need(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postgres %s log (tail):\n%s", p.Addr, p.Log())
		}
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
	})
	return p.URL
}
