package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/api"
	"github.com/thawhq/thaw/localrt"
	"github.com/thawhq/thaw/nomad"
)

type fakeLocal map[string]localrt.GPUCount

func (f fakeLocal) GPUs() map[string]localrt.GPUCount { return f }

type fakeCluster struct {
	reads int
	err   error
}

func (f *fakeCluster) GPUs(context.Context) (map[string]nomad.GPUCount, error) {
	f.reads++
	return map[string]nomad.GPUCount{"H100-80GB": {Total: 8, Free: f.reads}}, f.err
}

func TestGPUSource(t *testing.T) {
	ctx := context.Background()
	if gpuSource(struct{}{}) != nil {
		t.Error("a runtime with no inventory gave a GPU source; want nil (the API lists the priced types)")
	}
	local, err := gpuSource(fakeLocal{"A100-80GB": {Total: 8, Free: 6}}).GPUs(ctx)
	if diff := cmp.Diff(map[string]api.GPUCount{"A100-80GB": {Total: 8, Free: 6}}, local); diff != "" || err != nil {
		t.Errorf("local GPUs = %v (-want +got):\n%s", err, diff)
	}

	cl := &fakeCluster{}
	src := gpuSource(cl)
	for range 3 {
		got, err := src.GPUs(ctx)
		if err != nil || got["H100-80GB"] != (api.GPUCount{Total: 8, Free: 1}) {
			t.Errorf("cluster GPUs = %v, %v; want the first read, 8 total 1 free", got, err)
		}
	}
	if cl.reads != 1 {
		t.Errorf("Nomad read %d times in a row, want once (cached)", cl.reads)
	}
	src.(*cachedGPUs).at = time.Now().Add(-time.Minute)
	cl.err = errors.New("nomad down")
	if _, err := src.GPUs(ctx); err == nil {
		t.Error("stale cache and Nomad down: no error")
	}
}
