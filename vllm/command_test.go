package vllm

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestArgs(t *testing.T) {
	spec := Spec{
		Repo: "org/model", Model: "alice/m", MaxBatchSize: 8, NumGPUs: 2,
	}
	withRev := spec
	withRev.Revision, withRev.ExtraArgs = "0e9e39f", []string{"--dtype", "half"}
	for _, tc := range []struct {
		name       string
		spec       Spec
		dev        Device
		host, port string
		want       []string
	}{
		{"gpu", spec, DeviceGPU, "0.0.0.0", "8000", []string{
			"serve", "org/model", "--served-model-name", "alice/m", "--max-num-seqs", "8",
			"--tensor-parallel-size", "2", "--host", "0.0.0.0", "--port", "8000",
		}},
		{"cpu: no tensor parallelism", spec, DeviceCPU, "127.0.0.1", "20000", []string{
			"serve", "org/model", "--served-model-name", "alice/m", "--max-num-seqs", "8",
			"--host", "127.0.0.1", "--port", "20000",
		}},
		{"revision, extra args, Nomad's port", withRev, DeviceGPU, "${NOMAD_IP_http}", "${NOMAD_PORT_http}", []string{
			"serve", "org/model", "--served-model-name", "alice/m", "--max-num-seqs", "8",
			"--tensor-parallel-size", "2", "--revision", "0e9e39f",
			"--host", "${NOMAD_IP_http}", "--port", "${NOMAD_PORT_http}", "--dtype", "half",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, Args(tc.spec, tc.dev, tc.host, tc.port)); diff != "" {
				t.Errorf("Args (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEnv(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   Settings
		want []string
	}{
		{"gpu in a container", Settings{Device: DeviceGPU}, nil},
		{"gpu with a directory", Settings{Device: DeviceGPU, Dir: "/d/i1"}, []string{
			"VLLM_CACHE_ROOT=/d/i1/vllm-cache", "TORCHINDUCTOR_CACHE_DIR=/d/i1/torchinductor", "TMPDIR=/d/i1", "VLLM_RPC_BASE_PATH=/tmp",
		}},
		{"cpu, default KV cache", Settings{Device: DeviceCPU, Dir: "/d/i1"}, []string{
			"VLLM_CPU_KVCACHE_SPACE=1",
			"VLLM_CACHE_ROOT=/d/i1/vllm-cache", "TORCHINDUCTOR_CACHE_DIR=/d/i1/torchinductor", "TMPDIR=/d/i1", "VLLM_RPC_BASE_PATH=/tmp",
		}},
		{"shared compile caches", Settings{Device: DeviceCPU, Dir: "/d/i1", CacheDir: "/c"}, []string{
			"VLLM_CPU_KVCACHE_SPACE=1",
			"VLLM_CACHE_ROOT=/c/vllm-cache", "TORCHINDUCTOR_CACHE_DIR=/c/torchinductor", "TMPDIR=/d/i1", "VLLM_RPC_BASE_PATH=/tmp",
		}},
		{"cpu on Nomad", Settings{Device: DeviceCPU, KVCacheGiB: 4, Dir: "${NOMAD_TASK_DIR}"}, []string{
			"VLLM_CPU_KVCACHE_SPACE=4",
			"VLLM_CACHE_ROOT=${NOMAD_TASK_DIR}/vllm-cache", "TORCHINDUCTOR_CACHE_DIR=${NOMAD_TASK_DIR}/torchinductor",
			"TMPDIR=${NOMAD_TASK_DIR}", "VLLM_RPC_BASE_PATH=/tmp",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, Env(tc.st)); diff != "" {
				t.Errorf("Env (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseDevice(t *testing.T) {
	for _, s := range []string{"gpu", "cpu"} {
		if d, err := ParseDevice(s); err != nil || string(d) != s {
			t.Errorf("ParseDevice(%q) = %q, %v", s, d, err)
		}
	}
	if _, err := ParseDevice("tpu"); err == nil {
		t.Error("ParseDevice(tpu): no error")
	}
}

func TestFindBinary(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "thaw")
	next := filepath.Join(dir, "vllm")
	if err := os.WriteFile(next, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir())

	if got, err := FindBinary("", exe); err != nil || got != next {
		t.Errorf("FindBinary next to thaw = %q, %v; want %q", got, err, next)
	}
	if got, err := FindBinary(next, ""); err != nil || got != next {
		t.Errorf("FindBinary(explicit) = %q, %v; want %q", got, err, next)
	}
	for _, tc := range []struct{ name, path, exe string }{
		{"not executable", plain, exe},
		{"missing", filepath.Join(dir, "nope"), exe},
		{"none next to thaw, none on PATH", "", filepath.Join(t.TempDir(), "thaw")},
	} {
		if _, err := FindBinary(tc.path, tc.exe); !errors.Is(err, ErrNoBinary) {
			t.Errorf("%s: err = %v, want ErrNoBinary", tc.name, err)
		}
	}
}
