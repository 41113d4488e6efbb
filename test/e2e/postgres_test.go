package e2e

import (
	"context"
	"database/sql"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
)

// query runs one query returning one text value on url.
func query(t *testing.T, url, q string) string {
	t.Helper()
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var v string
	if err := db.QueryRowContext(ctx, q).Scan(&v); err != nil {
		t.Fatalf("%s on %s: %v", q, url, err)
	}
	return v
}

func dials(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return err == nil
}

// TestPostgres: a cluster answers SQL on its loopback address only, as
// thaw, and Stop shuts it down and removes its directory.
func TestPostgres(t *testing.T) {
	p, err := RunPostgres(PostgresConfig{})
	Need(t, err)
	stopped := false
	defer func() {
		if !stopped {
			p.Stop()
		}
	}()
	if got := query(t, p.URL, "SELECT current_user"); got != "thaw" {
		t.Errorf("current_user = %q, want thaw", got)
	}
	if got := query(t, p.URL, "SHOW listen_addresses"); got != "127.0.0.1" {
		t.Errorf("listen_addresses = %q, want 127.0.0.1", got)
	}
	if got := query(t, p.URL, "SHOW port"); net.JoinHostPort("127.0.0.1", got) != p.Addr {
		t.Errorf("port = %s, want that of %s", got, p.Addr)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true
	if dials(p.Addr) {
		t.Errorf("%s still accepts connections after Stop", p.Addr)
	}
	if _, err := os.Stat(p.dir); !os.IsNotExist(err) {
		t.Errorf("directory %s not removed by Stop: %v", p.dir, err)
	}
}

// TestPostgresSweep: a cluster whose test process died without stopping it
// is stopped and removed by the next RunPostgres.
func TestPostgresSweep(t *testing.T) {
	orphan, err := RunPostgres(PostgresConfig{})
	Need(t, err)
	t.Cleanup(func() { orphan.Stop() })
	// A PID that existed and has exited: the owner that died.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(orphan.dir, "owner"), []byte(strconv.Itoa(dead.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	next := StartPostgres(t)
	if got := query(t, next, "SELECT 'ok'"); got != "ok" {
		t.Fatalf("the new cluster answered %q", got)
	}
	if dials(orphan.Addr) {
		t.Errorf("the orphaned cluster on %s still runs", orphan.Addr)
	}
	if _, err := os.Stat(orphan.dir); !os.IsNotExist(err) {
		t.Errorf("the orphaned cluster's directory %s is still there: %v", orphan.dir, err)
	}
}
