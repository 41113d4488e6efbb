package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/thawhq/thaw/jobs"
	"github.com/thawhq/thaw/localrt"
	"github.com/thawhq/thaw/vllm"
)

func TestDevEngineFlags(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "vllm")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir()) // no vllm on PATH
	c, err := parseDevFlags([]string{"--engine", "vllm", "--vllm-bin", bin, "--vllm-device", "cpu", "--vllm-kv-cache-gib", "2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// The compile caches are shared by default under the data dir.
	want := localrt.Config{Engine: localrt.EngineVLLM, VLLMBinary: bin, VLLMDevice: vllm.DeviceCPU, VLLMKVCacheGiB: 2,
		VLLMCacheDir: filepath.Join(".thaw", "vllm-cache")}
	if diff := cmp.Diff(want, c.engine); diff != "" {
		t.Errorf("engine config (-want +got):\n%s", diff)
	}
	if c, err = parseDevFlags([]string{"--engine", "vllm", "--vllm-bin", bin, "--vllm-cache-dir", "/var/cache/v"}, io.Discard); err != nil || c.engine.VLLMCacheDir != "/var/cache/v" {
		t.Errorf("--vllm-cache-dir /var/cache/v: %+v, %v", c.engine, err)
	}
	if c, err = parseDevFlags(nil, io.Discard); err != nil || c.engine.Engine != localrt.EngineSim {
		t.Errorf("default engine = %+v, %v; want sim", c.engine, err)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--engine", "tgi"}, `--engine "tgi": want sim or vllm`},
		{[]string{"--engine", "vllm", "--vllm-bin", filepath.Join(t.TempDir(), "vllm")}, "--engine vllm: vllm: no vllm executable"},
		// The test binary's directory has no vllm, nor has PATH.
		{[]string{"--engine", "vllm"}, "--engine vllm: vllm: no vllm executable: tried"},
		{[]string{"--engine", "vllm", "--vllm-bin", bin, "--vllm-device", "tpu"}, `--vllm-device: vllm: device "tpu"`},
		{[]string{"--engine", "vllm", "--vllm-bin", bin, "--vllm-kv-cache-gib", "0"}, "--vllm-kv-cache-gib 0: want at least 1"},
	} {
		if _, err := parseDevFlags(tt.args, io.Discard); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parseDevFlags(%q) = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}

func TestServerVLLMFlags(t *testing.T) {
	fromFile := jobs.Config{VLLMBinary: "/opt/a/vllm", VLLMDevice: "cpu", VLLMKVCacheGiB: 4, HFCacheHostPath: "/srv/a"}
	for _, tt := range []struct {
		name string
		args []string
		want jobs.Config
	}{
		{"jobs.json as is", nil, fromFile},
		{"flags override", []string{"--vllm-bin", "/opt/b/vllm", "--vllm-device", "gpu", "--vllm-kv-cache-gib", "2", "--hf-cache", "/srv/b"},
			jobs.Config{VLLMBinary: "/opt/b/vllm", VLLMDevice: "gpu", VLLMKVCacheGiB: 2, HFCacheHostPath: "/srv/b"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseServerFlags(append([]string{"--redis-addr", "r:1", "--engine", "vllm-exec"}, tt.args...), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			got := fromFile
			if err := c.vllm.applyServer(&got, c.set, c.hfCache, c.engine); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("jobs config (-want +got):\n%s", diff)
			}
		})
	}
	c, err := parseServerFlags([]string{"--redis-addr", "r:1", "--engine", "vllm-exec"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var none jobs.Config
	if err := c.vllm.applyServer(&none, c.set, c.hfCache, c.engine); err == nil || !strings.Contains(err.Error(), "needs --vllm-bin") {
		t.Errorf("vllm-exec without a binary: %v, want an error asking for --vllm-bin", err)
	}
}
