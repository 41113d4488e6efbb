package main

import (
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/jobs"
)

func TestParseServerFlags(t *testing.T) {
	t.Setenv("NOMAD_ADDR", "http://nomad.example:4646")
	t.Setenv("NOMAD_TOKEN", "secret-id")
	c, err := parseServerFlags([]string{"--redis-addr", "127.0.0.1:6379", "--engine", "sim", "--data-dir", "/srv/thaw"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got := []string{c.nomadAddr, c.nomadToken, string(c.engine), c.usersFile, c.addr}
	want := []string{"http://nomad.example:4646", "secret-id", string(jobs.EngineSim), "/srv/thaw/users", "127.0.0.1:8080"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "--redis-addr is required"},
		{[]string{"--redis-addr", "r:1", "--engine", "tgi"}, `--engine "tgi": want one of ["vllm" "vllm-exec" "sim"]`},
		{[]string{"--redis-addr", "r:1", "--gpu-quota", "-1"}, "must not be negative"},
		{[]string{"--redis-addr", "r:1", "extra"}, `unexpected argument "extra"`},
	} {
		if _, err := parseServerFlags(tt.args, io.Discard); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parseServerFlags(%q) = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}
