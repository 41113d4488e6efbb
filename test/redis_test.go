package test

import (
	"github.com/thawhq/thaw/test/e2e"

	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startRedis starts a throw-away redis-server on a free loopback port and
// returns its address. Without redis-server on PATH the test fails in CI
// (env CI set) and is skipped elsewhere.
func startRedis(t *testing.T) string {
	t.Helper()
	return e2e.RedisT(t, e2e.RedisConfig{})
}

// redisCommands returns the server's total_commands_processed.
func redisCommands(t *testing.T, addr string) int64 {
	t.Helper()
	info, err := redisCmd(addr, "INFO stats")
	if err != nil {
		t.Fatalf("redis INFO: %v", err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_commands_processed:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("redis INFO: bad total_commands_processed %q", v)
			}
			return n
		}
	}
	t.Fatalf("redis INFO stats has no total_commands_processed:\n%s", info)
	return 0
}

// redisCmd sends one inline command and returns a simple-string or bulk
// reply. It is just enough RESP for PING and INFO.
func redisCmd(addr, cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, cmd+"\r\n"); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "+"):
		return line[1:], nil
	case strings.HasPrefix(line, "$"):
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("bad bulk length %q", line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	default:
		return "", fmt.Errorf("unexpected reply %q", line)
	}
}
